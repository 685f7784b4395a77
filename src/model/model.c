/*
 * model.c - loads and validates a model folder: config.json (cJSON) + model.safetensors (mmap).
 *
 * Both files are untrusted input. Every number taken from them is checked as an integer against
 * its limit before it is used in arithmetic, every offset against the mapping's size, and every
 * failure ends in one message that names the file, the tensor or key, and the problem. The data
 * section is never copied: tensors point into a read-only mapping, which is not necessarily
 * aligned for float loads (the header length is arbitrary), so readers go through oag_to_f32.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "model.h"

#define CONFIG_FILE "config.json"
#define TENSOR_FILE "model.safetensors"

/* Limits: anything past them is refused with -EFBIG, never allocated. */
#define MAX_CONFIG_BYTES  (16u << 20)
#define MAX_HEADER_BYTES  (100u << 20)
#define MAX_DIM           (1u << 20)       /* one dimension of a tensor or an activation */
#define MAX_LAYERS        65536u
#define MAX_TENSORS       (1u << 20)
#define MAX_NAME_BYTES    1024u
#define MAX_SAFE_INT      (1ull << 53)     /* integers a JSON double holds exactly */

/* One entry of the safetensors header, validated. */
struct st_tensor {
    const char *name;              /* into the names arena */
    enum oag_dtype dtype;
    uint32_t ndim;
    uint32_t shape[2];
    uint64_t begin, end;           /* relative to the data section, begin < end <= data size */
};

/* Everything the loader allocates besides the model and its layer array. */
struct model_store {
    char *names;                   /* tensor names, NUL-separated */
    struct st_tensor *tensors;     /* sorted by name */
    uint32_t ntensors;
    const unsigned char *data;     /* the data section: map + 8 + header length */
};

struct loader {
    char *err;
    size_t errlen;
    const char *dir;
};

__attribute__((format(printf, 3, 4)))
static int fail(struct loader *ld, int rc, const char *fmt, ...)
{
    if (ld->err && ld->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ld->err, ld->errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* A name from the file, fit for a one-line message: printable ASCII only, at most 64 chars. */
static const char *printable(const char *s, char *buf, size_t len)
{
    size_t i = 0;
    for (; s[i] && i + 4 < len && i < 64; i++)
        buf[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
    if (s[i] && i + 4 <= len) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

/* ---- JSON helpers ----------------------------------------------------------------------- */

/* Reads a non-negative JSON integer <= max. Returns 0, -EINVAL (not a number, not an integer,
 * negative, not finite) or -EFBIG (larger than max). */
static int json_uint(const cJSON *v, uint64_t max, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -EINVAL;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d != floor(d))
        return -EINVAL;
    if (d >= (double)MAX_SAFE_INT || (uint64_t)d > max)
        return -EFBIG;
    *out = (uint64_t)d;
    return 0;
}

static const char *json_type(const cJSON *v)
{
    if (!v) return "missing";
    if (cJSON_IsString(v)) return "a string";
    if (cJSON_IsNumber(v)) return "a number";
    if (cJSON_IsBool(v)) return "a boolean";
    if (cJSON_IsNull(v)) return "null";
    if (cJSON_IsArray(v)) return "an array";
    if (cJSON_IsObject(v)) return "an object";
    return "invalid";
}

/* Case-sensitive member lookup that refuses duplicates. Returns 0 and *out (NULL when absent),
 * or -EINVAL when the key occurs twice. */
static int json_member(const cJSON *obj, const char *key, const cJSON **out)
{
    const cJSON *found = NULL;
    for (const cJSON *c = obj->child; c; c = c->next)
        if (c->string && !strcmp(c->string, key)) {
            if (found)
                return -EINVAL;
            found = c;
        }
    *out = found;
    return 0;
}

/* Parses len bytes at text (NUL-terminated at text[len]); trailing whitespace is allowed.
 * Returns the tree, or NULL with *where set to the byte offset of the error. */
static cJSON *json_parse(const char *text, size_t len, size_t *where)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        *where = end && end >= text ? (size_t)(end - text) : 0;
        return NULL;
    }
    size_t pos = (size_t)(end - text);
    while (pos < len && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' ||
                         text[pos] == '\r'))
        pos++;
    if (pos != len) {
        cJSON_Delete(root);
        *where = pos;
        return NULL;
    }
    return root;
}

/* ---- files ------------------------------------------------------------------------------ */

static int open_in_dir(struct loader *ld, const char *file, char *path, size_t pathlen)
{
    int n = snprintf(path, pathlen, "%s/%s", ld->dir, file);
    if (n < 0 || (size_t)n >= pathlen)
        return fail(ld, -ENAMETOOLONG, "%s: path too long", file);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        return fail(ld, rc, "%s: cannot open %s: %s", file, path, strerror(errno));
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int rc = -errno;
        close(fd);
        return fail(ld, rc, "%s: cannot stat %s: %s", file, path, strerror(-rc));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(ld, -EINVAL, "%s: %s is not a regular file", file, path);
    }
    return fd;
}

/* Reads config.json whole (it is small) into a NUL-terminated buffer and parses it. */
static int read_config(struct loader *ld, cJSON **out)
{
    char path[PATH_MAX];
    int fd = open_in_dir(ld, CONFIG_FILE, path, sizeof path);
    if (fd < 0)
        return fd;
    int rc;
    char *buf = NULL;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        rc = fail(ld, -errno, CONFIG_FILE ": cannot stat: %s", strerror(errno));
        goto out;
    }
    if ((uint64_t)st.st_size > MAX_CONFIG_BYTES) {
        rc = fail(ld, -EFBIG, CONFIG_FILE ": %lld bytes, more than the %u MiB limit",
                  (long long)st.st_size, MAX_CONFIG_BYTES >> 20);
        goto out;
    }
    size_t size = (size_t)st.st_size;
    buf = malloc(size + 1);
    if (!buf) {
        rc = fail(ld, -ENOMEM, CONFIG_FILE ": out of memory");
        goto out;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = fail(ld, -errno, CONFIG_FILE ": read: %s", strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    if (memchr(buf, '\0', got)) {
        rc = fail(ld, -EINVAL, CONFIG_FILE ": bad JSON: NUL byte at byte %zu",
                  (size_t)((char *)memchr(buf, '\0', got) - buf));
        goto out;
    }
    size_t where = 0;
    *out = json_parse(buf, got, &where);
    if (!*out) {
        rc = fail(ld, -EINVAL, CONFIG_FILE ": bad JSON near byte %zu of %zu", where, got);
        goto out;
    }
    if (!cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        rc = fail(ld, -EINVAL, CONFIG_FILE ": bad config: the top level is not a JSON object");
        goto out;
    }
    rc = 0;
out:
    free(buf);
    close(fd);
    return rc;
}

/* ---- safetensors header ----------------------------------------------------------------- */

static int dtype_from_st(const char *s, enum oag_dtype *dt)
{
    if (!strcmp(s, "F32")) { *dt = OAG_DT_F32; return 0; }
    if (!strcmp(s, "F16")) { *dt = OAG_DT_F16; return 0; }
    if (!strcmp(s, "BF16")) { *dt = OAG_DT_BF16; return 0; }
    return -EINVAL;
}

static const char *st_dtype_name(enum oag_dtype dt)
{
    return dt == OAG_DT_F32 ? "F32" : dt == OAG_DT_F16 ? "F16" : "BF16";
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct st_tensor *)a)->name, ((const struct st_tensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const struct st_tensor *x = *(const struct st_tensor *const *)a;
    const struct st_tensor *y = *(const struct st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

/* Validates one header entry (name already copied to t->name). */
static int parse_tensor(struct loader *ld, const cJSON *e, struct st_tensor *t,
                        enum oag_dtype want, uint64_t data_size)
{
    char nb[80];
    const char *nm = printable(t->name, nb, sizeof nb);
    const cJSON *dt, *shape, *offs;

    if (!cJSON_IsObject(e))
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': entry is %s, not an object", nm,
                    json_type(e));
    if (json_member(e, "dtype", &dt) || json_member(e, "shape", &shape) ||
        json_member(e, "data_offsets", &offs))
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': duplicate key", nm);
    if (!dt)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': 'dtype' is missing", nm);
    if (!cJSON_IsString(dt))
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': 'dtype' is %s, not a string", nm,
                    json_type(dt));
    if (dtype_from_st(dt->valuestring, &t->dtype)) {
        char db[80];
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': unsupported dtype '%s' "
                    "(F32, F16 and BF16 are)", nm, printable(dt->valuestring, db, sizeof db));
    }
    if (t->dtype != want)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': dtype %s but config.json says %s",
                    nm, st_dtype_name(t->dtype), oag_dtype_name(want));

    if (!shape)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': 'shape' is missing", nm);
    if (!cJSON_IsArray(shape))
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': 'shape' is %s, not an array", nm,
                    json_type(shape));
    int nd = cJSON_GetArraySize(shape);
    if (nd < 1 || nd > 2)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': shape has %d dimensions "
                    "(only 1-D and 2-D tensors are allowed)", nm, nd);
    t->ndim = (uint32_t)nd;
    t->shape[1] = 1;
    uint64_t elems = 1;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t v;
        int rc = json_uint(d, MAX_DIM, &v);
        if (rc == -EFBIG)
            return fail(ld, -EFBIG, TENSOR_FILE ": tensor '%s': shape[%d] is larger than the "
                        "limit %u", nm, i, MAX_DIM);
        if (rc || v == 0)
            return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': shape[%d] is not a positive "
                        "integer", nm, i);
        t->shape[i] = (uint32_t)v;
        elems *= v;                                 /* <= 2^40: no overflow */
    }
    uint64_t nbytes = elems * oag_dtype_size(t->dtype);

    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': 'data_offsets' is not an array "
                    "of two integers", nm);
    uint64_t b, en;
    int rb = json_uint(offs->child, UINT64_MAX, &b);
    int re = json_uint(offs->child->next, UINT64_MAX, &en);
    if (rb == -EINVAL || re == -EINVAL)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': data_offsets are not non-negative "
                    "integers", nm);
    if (rb || re || b > data_size || en > data_size) {
        if (rb || re)
            return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': data_offsets exceed the data "
                        "section (%llu bytes)", nm, (unsigned long long)data_size);
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': data_offsets [%llu, %llu) exceed "
                    "the data section (%llu bytes)", nm, (unsigned long long)b,
                    (unsigned long long)en, (unsigned long long)data_size);
    }
    if (b > en)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': data_offsets [%llu, %llu) end "
                    "before they begin", nm, (unsigned long long)b, (unsigned long long)en);
    if (en - b != nbytes)
        return fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s': data_offsets [%llu, %llu) hold "
                    "%llu bytes but shape [%u%s%.0u] of %s needs %llu", nm, (unsigned long long)b,
                    (unsigned long long)en, (unsigned long long)(en - b), t->shape[0],
                    t->ndim == 2 ? ", " : "", t->ndim == 2 ? t->shape[1] : 0,
                    st_dtype_name(t->dtype), (unsigned long long)nbytes);
    t->begin = b;
    t->end = en;
    return 0;
}

/* Parses and validates the whole header into st (names arena + table sorted by name). */
static int parse_header(struct loader *ld, const char *hdr, size_t hlen, uint64_t data_size,
                        enum oag_dtype want, struct model_store *st)
{
    int rc;
    size_t where = 0;
    const struct st_tensor **by_begin = NULL;
    const char *nul = memchr(hdr, '\0', hlen);
    if (nul)
        return fail(ld, -EINVAL, TENSOR_FILE ": header is not valid JSON: NUL byte at byte %zu",
                    (size_t)(nul - hdr));
    cJSON *root = json_parse(hdr, hlen, &where);
    if (!root)
        return fail(ld, -EINVAL, TENSOR_FILE ": header is not valid JSON (error near byte %zu "
                    "of %zu)", where, hlen);
    if (!cJSON_IsObject(root)) {
        rc = fail(ld, -EINVAL, TENSOR_FILE ": header is %s, not a JSON object", json_type(root));
        goto out;
    }

    /* Count entries and name bytes first: one allocation each. */
    size_t n = 0, name_bytes = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                rc = fail(ld, -EINVAL, TENSOR_FILE ": '__metadata__' is %s, not an object",
                          json_type(e));
                goto out;
            }
            continue;
        }
        size_t l = strlen(e->string);
        if (l == 0 || l > MAX_NAME_BYTES) {
            rc = fail(ld, -EINVAL, TENSOR_FILE ": a tensor name is %s", l ? "longer than 1024 "
                      "bytes" : "empty");
            goto out;
        }
        if (++n > MAX_TENSORS) {
            rc = fail(ld, -EFBIG, TENSOR_FILE ": more than %u tensors", MAX_TENSORS);
            goto out;
        }
        name_bytes += l + 1;
    }
    if (n == 0) {                   /* valid: a model of activations only needs no tensor */
        rc = 0;
        goto out;
    }
    st->names = malloc(name_bytes);
    st->tensors = calloc(n, sizeof *st->tensors);
    by_begin = malloc(n * sizeof *by_begin);
    if (!st->names || !st->tensors || !by_begin) {
        rc = fail(ld, -ENOMEM, TENSOR_FILE ": out of memory for %zu tensors", n);
        goto out;
    }
    st->ntensors = (uint32_t)n;

    char *np = st->names;
    size_t i = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (!strcmp(e->string, "__metadata__"))
            continue;
        size_t l = strlen(e->string);
        memcpy(np, e->string, l + 1);
        st->tensors[i].name = np;
        np += l + 1;
        rc = parse_tensor(ld, e, &st->tensors[i], want, data_size);
        if (rc)
            goto out;
        i++;
    }

    qsort(st->tensors, n, sizeof *st->tensors, cmp_name);
    for (i = 1; i < n; i++)
        if (!strcmp(st->tensors[i - 1].name, st->tensors[i].name)) {
            char nb[80];
            rc = fail(ld, -EINVAL, TENSOR_FILE ": tensor '%s' is listed twice in the header",
                      printable(st->tensors[i].name, nb, sizeof nb));
            goto out;
        }

    for (i = 0; i < n; i++)
        by_begin[i] = &st->tensors[i];
    qsort(by_begin, n, sizeof *by_begin, cmp_begin);
    for (i = 1; i < n; i++)
        if (by_begin[i]->begin < by_begin[i - 1]->end) {
            char na[80], nb[80];
            rc = fail(ld, -EINVAL, TENSOR_FILE ": tensors '%s' [%llu, %llu) and '%s' [%llu, %llu) "
                      "overlap", printable(by_begin[i - 1]->name, na, sizeof na),
                      (unsigned long long)by_begin[i - 1]->begin,
                      (unsigned long long)by_begin[i - 1]->end,
                      printable(by_begin[i]->name, nb, sizeof nb),
                      (unsigned long long)by_begin[i]->begin,
                      (unsigned long long)by_begin[i]->end);
            goto out;
        }
    rc = 0;
out:
    free(by_begin);
    cJSON_Delete(root);
    return rc;
}

static const struct st_tensor *find_tensor(const struct model_store *st, const char *name)
{
    struct st_tensor key = { .name = name };
    if (st->ntensors == 0)
        return NULL;
    return bsearch(&key, st->tensors, st->ntensors, sizeof key, cmp_name);
}

/* ---- config ----------------------------------------------------------------------------- */

/* Reads a required (or optional, when opt) positive dimension. */
static int config_dim(struct loader *ld, const cJSON *cfg, const char *key, uint32_t *out)
{
    const cJSON *v;
    if (json_member(cfg, key, &v))
        return fail(ld, -EINVAL, CONFIG_FILE ": key '%s' appears twice", key);
    if (!v)
        return fail(ld, -EINVAL, CONFIG_FILE ": key '%s' is missing", key);
    uint64_t d;
    int rc = json_uint(v, MAX_DIM, &d);
    if (rc == -EFBIG)
        return fail(ld, -EFBIG, CONFIG_FILE ": '%s' is larger than the limit %u", key, MAX_DIM);
    if (rc || d == 0) {
        if (cJSON_IsNumber(v))
            return fail(ld, -EINVAL, CONFIG_FILE ": '%s' is %g, not a positive integer", key,
                        v->valuedouble);
        return fail(ld, -EINVAL, CONFIG_FILE ": '%s' is %s, not a positive integer", key,
                    json_type(v));
    }
    *out = (uint32_t)d;
    return 0;
}

/* Looks up a string member; *out NULL when absent (and !required). */
static int config_string(struct loader *ld, const cJSON *obj, const char *where, const char *key,
                         int required, const char **out)
{
    const cJSON *v;
    *out = NULL;
    if (json_member(obj, key, &v))
        return fail(ld, -EINVAL, CONFIG_FILE ": %skey '%s' appears twice", where, key);
    if (!v || (!required && cJSON_IsNull(v))) {
        if (required)
            return fail(ld, -EINVAL, CONFIG_FILE ": %skey '%s' is missing", where, key);
        return 0;
    }
    if (!cJSON_IsString(v))
        return fail(ld, -EINVAL, CONFIG_FILE ": %s'%s' is %s, not a string", where, key,
                    json_type(v));
    *out = v->valuestring;
    return 0;
}

/* Resolves a layer's tensor and checks its shape: cols == 0 means 1-D [rows]; otherwise 2-D
 * [rows, cols], where rows == 0 accepts any row count. */
static int layer_tensor(struct loader *ld, const char *where, const char *key, const char *name,
                        const struct model_store *st, const void *data, uint32_t rows,
                        uint32_t cols, struct oag_tensor *out)
{
    char nb[80];
    const struct st_tensor *t = find_tensor(st, name);
    if (!t)
        return fail(ld, -EINVAL, "%s'%s': tensor '%s' not found in " TENSOR_FILE, where, key,
                    printable(name, nb, sizeof nb));
    printable(name, nb, sizeof nb);
    if (cols == 0) {
        if (t->ndim != 1 || t->shape[0] != rows)
            return fail(ld, -EINVAL, "%s'%s': tensor '%s' has shape [%u%s%.0u], expected [%u]",
                        where, key, nb, t->shape[0], t->ndim == 2 ? ", " : "",
                        t->ndim == 2 ? t->shape[1] : 0, rows);
    } else if (t->ndim != 2 || t->shape[1] != cols || (rows && t->shape[0] != rows)) {
        return fail(ld, -EINVAL, "%s'%s': tensor '%s' has shape [%u%s%.0u], expected [%s%.0u, %u]"
                    " (input width %u)", where, key, nb, t->shape[0], t->ndim == 2 ? ", " : "",
                    t->ndim == 2 ? t->shape[1] : 0, rows ? "" : "out", rows, cols, cols);
    }
    out->name = t->name;
    out->dtype = t->dtype;
    out->ndim = t->ndim;
    out->shape[0] = t->shape[0];
    out->shape[1] = t->shape[1];
    out->data = (const unsigned char *)data + t->begin;
    out->nbytes = t->end - t->begin;
    return 0;
}

static const struct {
    const char *name;
    enum oag_layer_kind kind;
} layer_types[] = {
    { "linear", OAG_L_LINEAR }, { "relu", OAG_L_RELU }, { "gelu", OAG_L_GELU },
    { "silu", OAG_L_SILU }, { "tanh", OAG_L_TANH }, { "layernorm", OAG_L_LAYERNORM },
    { "softmax", OAG_L_SOFTMAX },
};

/* Builds m->layers from the config's layer list, chaining widths from input_dim. */
static int parse_layers(struct loader *ld, const cJSON *cfg, const struct model_store *st,
                        const void *data, struct oag_model *m)
{
    const cJSON *list;
    if (json_member(cfg, "layers", &list))
        return fail(ld, -EINVAL, CONFIG_FILE ": key 'layers' appears twice");
    if (!list)
        return fail(ld, -EINVAL, CONFIG_FILE ": key 'layers' is missing");
    if (!cJSON_IsArray(list))
        return fail(ld, -EINVAL, CONFIG_FILE ": 'layers' is %s, not an array", json_type(list));
    int n = cJSON_GetArraySize(list);
    if (n < 1)
        return fail(ld, -EINVAL, CONFIG_FILE ": 'layers' is empty");
    if ((unsigned)n > MAX_LAYERS)
        return fail(ld, -EFBIG, CONFIG_FILE ": 'layers' has %d entries, more than the limit %u",
                    n, MAX_LAYERS);
    m->layers = calloc((size_t)n, sizeof *m->layers);
    if (!m->layers)
        return fail(ld, -ENOMEM, CONFIG_FILE ": out of memory for %d layers", n);
    m->nlayers = (uint32_t)n;

    uint32_t width = m->input_dim;
    m->max_dim = width;
    int i = 0;
    for (const cJSON *lj = list->child; lj; lj = lj->next, i++) {
        struct oag_layer *l = &m->layers[i];
        char where[48];
        snprintf(where, sizeof where, "layers[%d]: ", i);
        int rc;
        if (!cJSON_IsObject(lj))
            return fail(ld, -EINVAL, CONFIG_FILE ": layers[%d] is %s, not an object", i,
                        json_type(lj));
        const char *type;
        char cwhere[64];
        snprintf(cwhere, sizeof cwhere, CONFIG_FILE ": layers[%d]: ", i);
        if ((rc = config_string(ld, lj, where, "type", 1, &type)))
            return rc;
        size_t k = 0;
        while (k < sizeof layer_types / sizeof layer_types[0] && strcmp(layer_types[k].name, type))
            k++;
        if (k == sizeof layer_types / sizeof layer_types[0]) {
            char tb[80];
            return fail(ld, -EINVAL, CONFIG_FILE ": layers[%d]: unknown layer type '%s' (known: "
                        "linear, relu, gelu, silu, tanh, layernorm, softmax)", i,
                        printable(type, tb, sizeof tb));
        }
        l->kind = layer_types[k].kind;
        l->in_dim = l->out_dim = width;

        const char *wname = NULL, *bname = NULL;
        if (l->kind == OAG_L_LINEAR || l->kind == OAG_L_LAYERNORM) {
            if ((rc = config_string(ld, lj, where, "weight", 1, &wname)) ||
                (rc = config_string(ld, lj, where, "bias", 0, &bname)))
                return rc;
        }
        switch (l->kind) {
        case OAG_L_LINEAR:
            /* [out, in]: in must be the running width; out sets the next width. */
            if ((rc = layer_tensor(ld, cwhere, "weight", wname, st, data, 0, width,
                                   &l->weight)))
                return rc;
            l->out_dim = l->weight.shape[0];
            if (bname && (rc = layer_tensor(ld, cwhere, "bias", bname, st, data,
                                            l->out_dim, 0, &l->bias)))
                return rc;
            break;
        case OAG_L_LAYERNORM: {
            if ((rc = layer_tensor(ld, cwhere, "weight", wname, st, data, width, 0,
                                   &l->weight)))
                return rc;
            if (bname && (rc = layer_tensor(ld, cwhere, "bias", bname, st, data, width, 0,
                                            &l->bias)))
                return rc;
            const cJSON *eps;
            if (json_member(lj, "eps", &eps))
                return fail(ld, -EINVAL, "%skey 'eps' appears twice", cwhere);
            l->eps = 1e-5f;
            if (eps) {
                if (!cJSON_IsNumber(eps) || !isfinite(eps->valuedouble) ||
                    eps->valuedouble <= 0 || eps->valuedouble > 1 ||
                    (float)eps->valuedouble <= 0)
                    return fail(ld, -EINVAL, "%s'eps' is not a number in (0, 1]", cwhere);
                l->eps = (float)eps->valuedouble;
            }
            break;
        }
        case OAG_L_SOFTMAX:
            if (lj->next)
                return fail(ld, -EINVAL, "%ssoftmax must be the last layer (%d more after it)",
                            cwhere, n - 1 - i);
            break;
        default:
            break;
        }
        width = l->out_dim;
        if (width > m->max_dim)
            m->max_dim = width;
    }
    if (width != m->output_dim)
        return fail(ld, -EINVAL, CONFIG_FILE ": the layers end with width %u but 'output_dim' is "
                    "%u", width, m->output_dim);
    return 0;
}

/* Reads the top-level config keys into m (dtype, dims, name); layers come later. */
static int parse_config_head(struct loader *ld, const cJSON *cfg, struct oag_model *m)
{
    int rc;
    const char *s;
    const cJSON *v;

    if ((rc = config_string(ld, cfg, "", "format", 1, &s)))
        return rc;
    if (strcmp(s, "oag-mlp"))
        return fail(ld, -EINVAL, CONFIG_FILE ": 'format' is not \"oag-mlp\"");
    if (json_member(cfg, "version", &v))
        return fail(ld, -EINVAL, CONFIG_FILE ": key 'version' appears twice");
    if (!v)
        return fail(ld, -EINVAL, CONFIG_FILE ": key 'version' is missing");
    uint64_t ver;
    if (json_uint(v, UINT32_MAX, &ver) || ver != 1)
        return fail(ld, -EINVAL, CONFIG_FILE ": 'version' is not 1 (the only version this "
                    "loader reads)");

    if ((rc = config_string(ld, cfg, "", "name", 0, &s)))
        return rc;
    if (s) {
        if (strlen(s) >= sizeof m->name)
            return fail(ld, -EINVAL, CONFIG_FILE ": 'name' is longer than %zu characters",
                        sizeof m->name - 1);
        snprintf(m->name, sizeof m->name, "%s", s);
    } else {
        const char *base = strrchr(m->path, '/');
        const char *dflt = base && base[1] ? base + 1 : m->path;
        size_t l = strnlen(dflt, sizeof m->name - 1);          /* truncated: fine for a default */
        memcpy(m->name, dflt, l);
        m->name[l] = '\0';
    }

    if ((rc = config_string(ld, cfg, "", "dtype", 1, &s)))
        return rc;
    if (!strcmp(s, "float32"))
        m->dtype = OAG_DT_F32;
    else if (!strcmp(s, "float16"))
        m->dtype = OAG_DT_F16;
    else if (!strcmp(s, "bfloat16"))
        m->dtype = OAG_DT_BF16;
    else {
        char db[80];
        return fail(ld, -EINVAL, CONFIG_FILE ": 'dtype' is '%s', not float32, float16 or "
                    "bfloat16", printable(s, db, sizeof db));
    }
    if ((rc = config_dim(ld, cfg, "input_dim", &m->input_dim)) ||
        (rc = config_dim(ld, cfg, "output_dim", &m->output_dim)))
        return rc;
    return 0;
}

/* ---- load / free ------------------------------------------------------------------------ */

/* Maps model.safetensors and validates its header into st. */
static int map_tensors(struct loader *ld, struct oag_model *m, struct model_store *st)
{
    char path[PATH_MAX];
    int fd = open_in_dir(ld, TENSOR_FILE, path, sizeof path);
    if (fd < 0)
        return fd;
    int rc;
    char *hdr = NULL;
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        rc = fail(ld, -errno, TENSOR_FILE ": cannot stat: %s", strerror(errno));
        goto out;
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8) {
        rc = fail(ld, -EINVAL, TENSOR_FILE ": truncated: %llu bytes, shorter than the 8-byte "
                  "header length", (unsigned long long)size);
        goto out;
    }
    if (size > SIZE_MAX) {
        rc = fail(ld, -EFBIG, TENSOR_FILE ": %llu bytes do not fit the address space",
                  (unsigned long long)size);
        goto out;
    }
    void *map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rc = fail(ld, errno == ENOMEM ? -ENOMEM : -errno, TENSOR_FILE ": mmap of %llu bytes: %s",
                  (unsigned long long)size, strerror(errno));
        goto out;
    }
    m->map = map;
    m->map_size = (size_t)size;

    uint64_t hlen = 0;
    const unsigned char *p = map;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen > MAX_HEADER_BYTES) {
        rc = fail(ld, -EFBIG, TENSOR_FILE ": header length %llu is larger than the %u MiB limit",
                  (unsigned long long)hlen, MAX_HEADER_BYTES >> 20);
        goto out;
    }
    if (hlen > size - 8) {
        rc = fail(ld, -EINVAL, TENSOR_FILE ": header length %llu runs past the end of the file "
                  "(%llu bytes)", (unsigned long long)hlen, (unsigned long long)size);
        goto out;
    }
    if (hlen < 2) {
        rc = fail(ld, -EINVAL, TENSOR_FILE ": header length %llu is too short for a JSON object",
                  (unsigned long long)hlen);
        goto out;
    }
    /* A private NUL-terminated copy of the header only: cJSON wants a string. */
    hdr = malloc((size_t)hlen + 1);
    if (!hdr) {
        rc = fail(ld, -ENOMEM, TENSOR_FILE ": out of memory for a %llu-byte header",
                  (unsigned long long)hlen);
        goto out;
    }
    memcpy(hdr, p + 8, (size_t)hlen);
    hdr[hlen] = '\0';
    rc = parse_header(ld, hdr, (size_t)hlen, size - 8 - hlen, m->dtype, st);
    if (rc)
        goto out;
    st->data = p + 8 + hlen;
    m->param_bytes = 0;
    for (uint32_t i = 0; i < st->ntensors; i++)
        m->param_bytes += st->tensors[i].end - st->tensors[i].begin;
    rc = 0;
out:
    free(hdr);
    close(fd);
    return rc;
}

static void store_free(struct model_store *st)
{
    if (!st)
        return;
    free(st->names);
    free(st->tensors);
    free(st);
}

int oag_model_load(struct oag_model **out, const char *dir, char *err, size_t errlen)
{
    struct loader ld = { .err = err, .errlen = errlen, .dir = dir };
    cJSON *cfg = NULL;
    struct model_store *st = NULL;
    int rc;

    if (err && errlen)
        err[0] = '\0';
    *out = NULL;
    if (!dir)
        return fail(&ld, -EINVAL, "no model folder given");
    struct oag_model *m = calloc(1, sizeof *m);
    st = calloc(1, sizeof *st);
    if (!m || !st) {
        rc = fail(&ld, -ENOMEM, "out of memory");
        goto fail;
    }
    m->priv = st;
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    if (dl == 0 || dl >= sizeof m->path) {
        rc = fail(&ld, dl ? -ENAMETOOLONG : -EINVAL, "model folder path is %s",
                  dl ? "longer than 255 characters" : "empty");
        goto fail;
    }
    memcpy(m->path, dir, dl);
    m->path[dl] = '\0';
    ld.dir = m->path;

    if ((rc = read_config(&ld, &cfg)) || (rc = parse_config_head(&ld, cfg, m)) ||
        (rc = map_tensors(&ld, m, st)))
        goto fail;
    if ((rc = parse_layers(&ld, cfg, st, st->data, m)))
        goto fail;
    cJSON_Delete(cfg);
    *out = m;
    return 0;

fail:
    cJSON_Delete(cfg);
    oag_model_free(m);
    if (!m)
        store_free(st);
    return rc;
}

void oag_model_free(struct oag_model *m)
{
    if (!m)
        return;
    if (m->map)
        munmap((void *)m->map, m->map_size);
    free(m->layers);
    store_free(m->priv);
    free(m);
}
