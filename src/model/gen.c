/*
 * gen.c - writes random model folders (see gen.h). The header is built first (every offset is
 * known from the dimensions), then each tensor is generated and converted chunk by chunk.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen.h"

#define GEN_MAX_DIM (1u << 20)
#define CHUNK_ELEMS 65536u

struct gen_tensor {
    char name[32];
    uint32_t rows, cols;        /* cols 0: 1-D */
    uint64_t begin, end;
    float center, bound;        /* values uniform in [center - bound, center + bound) */
    uint64_t seed;
};

__attribute__((format(printf, 4, 5)))
static int gen_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A growable string for the JSON texts. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

__attribute__((format(printf, 2, 3)))
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static const char *kind_name(enum oag_layer_kind k)
{
    static const char *const names[] = { "linear", "relu", "gelu", "silu", "tanh", "layernorm",
                                         "softmax" };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : NULL;
}

/* Returns 0 or the write's negative errno (captured at once, before anything else sets it). */
static int write_all(FILE *f, const void *p, size_t n)
{
    if (fwrite(p, 1, n, f) == n)
        return 0;
    return errno ? -errno : -EIO;
}

/* Generates tensor t's values in chunks and appends them in dtype dt. */
static int write_tensor(FILE *f, const struct gen_tensor *t, enum oag_dtype dt,
                        unsigned char *buf)
{
    uint64_t n = (uint64_t)t->rows * (t->cols ? t->cols : 1);
    uint64_t s = t->seed;
    size_t esz = oag_dtype_size(dt);
    while (n) {
        size_t c = n < CHUNK_ELEMS ? (size_t)n : CHUNK_ELEMS;
        for (size_t i = 0; i < c; i++) {
            double u = (double)(splitmix64(&s) >> 11) * 0x1p-53;        /* [0, 1) */
            float v = (float)(t->center + (2.0 * u - 1.0) * t->bound);
            if (dt == OAG_DT_F32) {
                memcpy(buf + 4 * i, &v, 4);
            } else {
                uint16_t h = dt == OAG_DT_F16 ? oag_f32_to_f16(v) : oag_f32_to_bf16(v);
                memcpy(buf + 2 * i, &h, 2);
            }
        }
        int rc = write_all(f, buf, c * esz);
        if (rc)
            return rc;
        n -= c;
    }
    return 0;
}

/* Writes text to dir/name through dir/name.tmp and a rename. */
static int write_file(const char *dir, const char *name, const char *text, size_t len,
                      char *err, size_t errlen)
{
    char path[4096], tmp[4096 + 8];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wbe");
    if (!f)
        return gen_fail(err, errlen, -errno, "%s: %s", tmp, strerror(errno));
    errno = 0;
    int rc = write_all(f, text, len);
    if (fclose(f) != 0 && !rc)
        rc = errno ? -errno : -EIO;
    if (rc) {
        unlink(tmp);
        return gen_fail(err, errlen, rc, "%s: write failed: %s", tmp, strerror(-rc));
    }
    if (rename(tmp, path) < 0) {
        rc = -errno;
        unlink(tmp);
        return gen_fail(err, errlen, rc, "%s: rename: %s", path, strerror(-rc));
    }
    return 0;
}

int oag_model_generate(const char *dir, const struct oag_gen_spec *spec, char *err,
                       size_t errlen)
{
    const struct oag_gen_layer *L = spec->layers;
    struct gen_tensor *ts = NULL;
    struct sbuf hdr = { 0 }, cfg = { 0 };
    unsigned char *buf = NULL;
    FILE *f = NULL;
    char path[4096], tmp[4096 + 8];
    int rc;

    if (!dir || !*dir || strlen(dir) > 4000)
        return gen_fail(err, errlen, -EINVAL, "gen: bad output folder");
    if (spec->input_dim == 0 || spec->input_dim > GEN_MAX_DIM)
        return gen_fail(err, errlen, spec->input_dim ? -EFBIG : -EINVAL,
                        "gen: input_dim %u is not in 1..%u", spec->input_dim, GEN_MAX_DIM);
    if (spec->nlayers == 0 || !L || (unsigned)spec->dtype > OAG_DT_BF16 || spec->misalign > 7)
        return gen_fail(err, errlen, -EINVAL, "gen: no layers, bad dtype or bad misalign");
    if (spec->name) {
        size_t nl = strlen(spec->name);
        if (nl == 0 || nl > 63 || strpbrk(spec->name, "\"\\%"))
            return gen_fail(err, errlen, -EINVAL, "gen: name must be 1..63 characters without "
                            "quotes, backslashes or '%%'");
        for (size_t i = 0; i < nl; i++)
            if ((unsigned char)spec->name[i] < 0x20)
                return gen_fail(err, errlen, -EINVAL, "gen: name has a control character");
    }
    ts = calloc((size_t)spec->nlayers * 2, sizeof *ts);
    if (!ts)
        return gen_fail(err, errlen, -ENOMEM, "gen: out of memory");

    /* Walk the layers: widths, tensors, offsets, and the config text. */
    size_t nt = 0;
    uint64_t off = 0;
    uint32_t width = spec->input_dim;
    size_t esz = oag_dtype_size(spec->dtype);
    sb_printf(&cfg, "{\n  \"format\": \"oag-mlp\",\n  \"version\": 1,\n  \"name\": \"%s\",\n"
              "  \"dtype\": \"%s\",\n  \"input_dim\": %u,\n  \"output_dim\": %%OUT%%,\n"
              "  \"layers\": [\n", spec->name ? spec->name : "random",
              oag_dtype_name(spec->dtype), spec->input_dim);
    for (uint32_t i = 0; i < spec->nlayers; i++) {
        const char *kn = kind_name(L[i].kind);
        if (!kn) {
            rc = gen_fail(err, errlen, -EINVAL, "gen: layers[%u]: unknown kind %d", i,
                          (int)L[i].kind);
            goto out;
        }
        if (L[i].kind == OAG_L_SOFTMAX && i + 1 != spec->nlayers) {
            rc = gen_fail(err, errlen, -EINVAL, "gen: layers[%u]: softmax must be last", i);
            goto out;
        }
        sb_printf(&cfg, "    {\"type\": \"%s\"", kn);
        if (L[i].kind == OAG_L_LINEAR || L[i].kind == OAG_L_LAYERNORM) {
            uint32_t out = L[i].kind == OAG_L_LINEAR ? L[i].out_dim : width;
            if (out == 0 || out > GEN_MAX_DIM) {
                rc = gen_fail(err, errlen, out ? -EFBIG : -EINVAL,
                              "gen: layers[%u]: out_dim %u is not in 1..%u", i, out, GEN_MAX_DIM);
                goto out;
            }
            int lin = L[i].kind == OAG_L_LINEAR;
            float bound = lin ? (float)(1.0 / sqrt((double)width)) : 0.25f;
            for (int b = 0; b <= (L[i].bias ? 1 : 0); b++) {
                struct gen_tensor *t = &ts[nt++];
                snprintf(t->name, sizeof t->name, "%u.%s", i, b ? "bias" : "weight");
                t->rows = out;
                t->cols = lin && !b ? width : 0;
                t->center = !lin && !b ? 1.0f : 0.0f;
                t->bound = bound;
                t->seed = spec->seed * 0x9e3779b97f4a7c15ull + i * 2u + (unsigned)b + 1;
                t->begin = off;
                off += (uint64_t)t->rows * (t->cols ? t->cols : 1) * esz;
                t->end = off;
                sb_printf(&cfg, ", \"%s\": \"%s\"", b ? "bias" : "weight", t->name);
            }
            if (L[i].kind == OAG_L_LAYERNORM)
                sb_printf(&cfg, ", \"eps\": %.9g", L[i].eps > 0 ? (double)L[i].eps : 1e-5);
            width = out;
        }
        sb_printf(&cfg, "}%s\n", i + 1 < spec->nlayers ? "," : "");
    }
    sb_printf(&cfg, "  ]\n}\n");

    /* The header: tensors in file order, padded with spaces to 8 bytes, then misalign. */
    sb_printf(&hdr, "{\"__metadata__\":{\"format\":\"pt\",\"generator\":\"oag-gen-model\"}");
    for (size_t i = 0; i < nt; i++) {
        if (ts[i].cols)
            sb_printf(&hdr, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%u,%u],\"data_offsets\":"
                      "[%llu,%llu]}", ts[i].name, spec->dtype == OAG_DT_F32 ? "F32" :
                      spec->dtype == OAG_DT_F16 ? "F16" : "BF16", ts[i].rows, ts[i].cols,
                      (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
        else
            sb_printf(&hdr, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%u],\"data_offsets\":"
                      "[%llu,%llu]}", ts[i].name, spec->dtype == OAG_DT_F32 ? "F32" :
                      spec->dtype == OAG_DT_F16 ? "F16" : "BF16", ts[i].rows,
                      (unsigned long long)ts[i].begin, (unsigned long long)ts[i].end);
    }
    sb_printf(&hdr, "}");
    while (!hdr.oom && (hdr.len + 8) % 8)
        sb_printf(&hdr, " ");
    for (uint32_t i = 0; i < spec->misalign; i++)
        sb_printf(&hdr, " ");
    if (hdr.oom || cfg.oom) {
        rc = gen_fail(err, errlen, -ENOMEM, "gen: out of memory");
        goto out;
    }

    /* Patch output_dim into the config now that the width chain is known. */
    {
        char *mark = strstr(cfg.p, "%OUT%");
        char num[16];
        int nl = snprintf(num, sizeof num, "%u", width);
        memmove(mark + nl, mark + 5, strlen(mark + 5) + 1);
        memcpy(mark, num, (size_t)nl);
        cfg.len = strlen(cfg.p);
    }

    if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
        rc = gen_fail(err, errlen, -errno, "gen: mkdir %s: %s", dir, strerror(errno));
        goto out;
    }
    buf = malloc((size_t)CHUNK_ELEMS * 4);
    if (!buf) {
        rc = gen_fail(err, errlen, -ENOMEM, "gen: out of memory");
        goto out;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    f = fopen(tmp, "wbe");
    if (!f) {
        rc = gen_fail(err, errlen, -errno, "gen: %s: %s", tmp, strerror(errno));
        goto out;
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hdr.len >> (8 * i));
    errno = 0;
    rc = write_all(f, len8, 8);
    if (!rc)
        rc = write_all(f, hdr.p, hdr.len);
    for (size_t i = 0; !rc && i < nt; i++)
        rc = write_tensor(f, &ts[i], spec->dtype, buf);
    if (fclose(f) != 0 && !rc)
        rc = errno ? -errno : -EIO;
    f = NULL;
    if (rc) {
        unlink(tmp);
        rc = gen_fail(err, errlen, rc, "gen: %s: write failed: %s", tmp, strerror(-rc));
        goto out;
    }
    if (rename(tmp, path) < 0) {
        rc = -errno;
        unlink(tmp);
        rc = gen_fail(err, errlen, rc, "gen: rename %s: %s", path, strerror(-rc));
        goto out;
    }
    rc = write_file(dir, "config.json", cfg.p, cfg.len, err, errlen);
out:
    free(buf);
    free(ts);
    free(hdr.p);
    free(cfg.p);
    return rc;
}
