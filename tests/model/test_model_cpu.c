/*
 * test_model_cpu - the cpu engine against a float64 reference computed here.
 *
 * For each dtype and each layer type (alone, fused after a linear, standalone after a layernorm,
 * deep mixes, activation-only models), a random model is written with oag_model_generate(),
 * loaded, and run through the "cpu" engine (found through the registry) on a batch whose input
 * rows are misaligned, with rows of the wrong size mixed in. Two references:
 *   - from the loaded tensors, decoded here independently (ldexp, not oag_to_f32): the engine
 *     may differ only by float32 arithmetic, whatever the dtype;
 *   - from the same model written as float32 (the generator draws the same values before
 *     rounding): the difference is the dtype's quantisation, bounded per dtype.
 * Also: create's refusals, out_row_bytes, slots too small, n = 0, chunking (n > max_batch).
 *
 * Usage: test_model_cpu [--gen-tool PATH]   also runs the oag-gen-model binary once
 *        test_model_cpu --check DIR          compares with DIR/sample_input.f32 and
 *                                            DIR/sample_output.f32 (tools/export-model.py --demo)
 * Exit: 0 pass, 1 fail, 77 skip.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/engine.h"
#include "model/gen.h"
#include "model/model.h"

static int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

static char tmp_root[] = "/tmp/oag-test-model-XXXXXX";

static uint64_t rng_state = 0x1234567;
static double urand(void)               /* [0, 1) */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1p-53;
}

/* ---- the float64 reference ------------------------------------------------------------- */

/* One element of t, decoded without the library's conversion code. */
static double elem(const struct oag_tensor *t, size_t i)
{
    const unsigned char *p = t->data;
    if (t->dtype == OAG_DT_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h = (uint16_t)(p[2 * i] | p[2 * i + 1] << 8);
    if (t->dtype == OAG_DT_BF16) {
        uint32_t u = (uint32_t)h << 16;
        float f;
        memcpy(&f, &u, 4);
        return f;
    }
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : ldexp(1024 + m, e - 25);
    return s ? -v : v;
}

/* Runs one input row through model m in double. */
static void ref_forward(const struct oag_model *m, const double *in, double *out)
{
    size_t md = m->max_dim;
    double *x = calloc(md, sizeof *x), *y = calloc(md, sizeof *y);
    memcpy(x, in, m->input_dim * sizeof *x);
    for (uint32_t li = 0; li < m->nlayers; li++) {
        const struct oag_layer *l = &m->layers[li];
        uint32_t n = l->out_dim;
        switch (l->kind) {
        case OAG_L_LINEAR:
            for (uint32_t o = 0; o < n; o++) {
                double s = l->bias.data ? elem(&l->bias, o) : 0;
                for (uint32_t k = 0; k < l->in_dim; k++)
                    s += elem(&l->weight, (size_t)o * l->in_dim + k) * x[k];
                y[o] = s;
            }
            memcpy(x, y, n * sizeof *x);
            break;
        case OAG_L_RELU: for (uint32_t j = 0; j < n; j++) x[j] = x[j] < 0 ? 0 : x[j]; break;
        case OAG_L_GELU:
            for (uint32_t j = 0; j < n; j++) x[j] = 0.5 * x[j] * (1 + erf(x[j] / sqrt(2.0)));
            break;
        case OAG_L_SILU: for (uint32_t j = 0; j < n; j++) x[j] = x[j] / (1 + exp(-x[j])); break;
        case OAG_L_TANH: for (uint32_t j = 0; j < n; j++) x[j] = tanh(x[j]); break;
        case OAG_L_LAYERNORM: {
            double mean = 0, var = 0;
            for (uint32_t j = 0; j < n; j++) mean += x[j];
            mean /= n;
            for (uint32_t j = 0; j < n; j++) var += (x[j] - mean) * (x[j] - mean);
            var /= n;
            double inv = 1 / sqrt(var + (double)l->eps);
            for (uint32_t j = 0; j < n; j++)
                x[j] = (x[j] - mean) * inv * elem(&l->weight, j) +
                       (l->bias.data ? elem(&l->bias, j) : 0);
            break;
        }
        case OAG_L_SOFTMAX: {
            double mx = x[0], sum = 0;
            for (uint32_t j = 1; j < n; j++) mx = x[j] > mx ? x[j] : mx;
            for (uint32_t j = 0; j < n; j++) sum += (x[j] = exp(x[j] - mx));
            for (uint32_t j = 0; j < n; j++) x[j] /= sum;
            break;
        }
        }
    }
    memcpy(out, x, m->output_dim * sizeof *out);
    free(x);
    free(y);
}

/* max |got - ref| / max |ref| over one row. */
static double row_err(const float *got, const double *ref, uint32_t n)
{
    double e = 0, s = 1e-30;
    for (uint32_t j = 0; j < n; j++) {
        double d = fabs((double)got[j] - ref[j]);
        if (!(d <= e)) e = d;                       /* NaN propagates */
        if (fabs(ref[j]) > s) s = fabs(ref[j]);
    }
    return e / s;
}

/* ---- running the engine ---------------------------------------------------------------- */

static const struct oag_engine_ops *cpu;

struct run {
    uint32_t n, in_stride, out_stride;
    uint8_t *inbuf, *outbuf;       /* allocations; in/out are misaligned by one byte */
    struct oag_batch b;
    double *x;                     /* n x input_dim, the inputs as doubles */
};

/* Builds a batch of n rows for m: row 3 is scaled by 1000 (softmax stability), rows 5 and 8 have
 * a wrong length. */
static void run_init(struct run *r, const struct oag_model *m, uint32_t n)
{
    uint32_t in_bytes = m->input_dim * 4, out_bytes = m->output_dim * 4;
    memset(r, 0, sizeof *r);
    r->n = n;
    r->in_stride = in_bytes + 3;
    r->out_stride = out_bytes + 5;
    r->inbuf = malloc((size_t)n * r->in_stride + 2);
    r->outbuf = malloc((size_t)n * r->out_stride + 2);
    r->x = calloc((size_t)n * m->input_dim + 1, sizeof *r->x);
    r->b.n = n;
    r->b.in_stride = r->in_stride;
    r->b.out_stride = r->out_stride;
    r->b.in = r->inbuf + 1;
    r->b.out = r->outbuf + 1;
    r->b.in_len = calloc(n + 1, 4);
    r->b.out_len = calloc(n + 1, 4);
    r->b.status = calloc(n + 1, 4);
    memset(r->outbuf, 0xab, (size_t)n * r->out_stride + 2);
    for (uint32_t i = 0; i < n; i++) {
        double scale = i == 3 ? 1000 : 2;
        for (uint32_t j = 0; j < m->input_dim; j++) {
            float v = (float)((2 * urand() - 1) * scale);
            r->x[(size_t)i * m->input_dim + j] = v;
            memcpy(r->b.in + (size_t)i * r->in_stride + 4 * j, &v, 4);
        }
        r->b.in_len[i] = in_bytes;
        r->b.status[i] = 12345;
    }
    if (n > 5)
        r->b.in_len[5] = in_bytes - 4;
    if (n > 8)
        r->b.in_len[8] = in_bytes + 4;
}

static void run_free(struct run *r)
{
    free(r->inbuf);
    free(r->outbuf);
    free(r->x);
    free(r->b.in_len);
    free(r->b.out_len);
    free(r->b.status);
}

static int bad_row(const struct run *r, uint32_t i)
{
    return (r->n > 5 && i == 5) || (r->n > 8 && i == 8);
}

/* Compares the batch's outputs with m's reference (exact check: tol) and, when q is given, with
 * the float32 twin q (quantisation check: qtol, rows of O(1) inputs only). */
static void check_outputs(const char *label, const struct run *r, const struct oag_model *m,
                          double tol, const struct oag_model *q, double qtol)
{
    uint32_t od = m->output_dim;
    double *ref = calloc(od, sizeof *ref);
    float *got = calloc(od, sizeof *got);
    double worst = 0, qworst = 0;
    for (uint32_t i = 0; i < r->n; i++) {
        const uint8_t *slot = r->b.out + (size_t)i * r->out_stride;
        if (bad_row(r, i)) {
            CHECK(r->b.status[i] == -EINVAL, "%s row %u: status %d, want -EINVAL", label, i,
                  r->b.status[i]);
            CHECK(r->b.out_len[i] == 0, "%s row %u: out_len %u", label, i, r->b.out_len[i]);
            CHECK(slot[0] == 0xab && slot[od * 4 - 1] == 0xab, "%s row %u: bad row's slot "
                  "written", label, i);
            continue;
        }
        CHECK(r->b.status[i] == 0, "%s row %u: status %d", label, i, r->b.status[i]);
        CHECK(r->b.out_len[i] == od * 4, "%s row %u: out_len %u", label, i, r->b.out_len[i]);
        CHECK(slot[od * 4] == 0xab, "%s row %u: wrote past out_len", label, i);
        memcpy(got, slot, od * 4);
        ref_forward(m, r->x + (size_t)i * m->input_dim, ref);
        double e = row_err(got, ref, od);
        if (!(e <= worst)) worst = e;
        CHECK(e <= tol, "%s row %u: relative error %.3g > %.3g (got[0] %.9g ref[0] %.9g)", label,
              i, e, tol, got[0], ref[0]);
        if (q && i != 3) {
            ref_forward(q, r->x + (size_t)i * m->input_dim, ref);
            e = row_err(got, ref, od);
            if (!(e <= qworst)) qworst = e;
            CHECK(e <= qtol, "%s row %u: error vs the float32 model %.3g > %.3g", label, i, e,
                  qtol);
        }
    }
    printf("  %-34s rel err %.2e (bound %.0e)", label, worst, tol);
    if (q)
        printf(", vs float32 model %.2e (bound %.0e)", qworst, qtol);
    printf("\n");
    free(ref);
    free(got);
}

static struct oag_engine *make_engine(const struct oag_model *m, uint32_t max_batch)
{
    struct oag_engine_params p = { .max_batch = max_batch, .max_payload = 4096, .model = m,
                                   .device = -1, .threads = 1 };
    struct oag_engine *e = NULL;
    int rc = cpu->create(&e, &p);
    CHECK(rc == 0, "create: %s", strerror(-rc));
    return rc ? NULL : e;
}

/* ---- the cases ------------------------------------------------------------------------- */

#define LIN(o, b) { .kind = OAG_L_LINEAR, .out_dim = (o), .bias = (b) }
#define ACT(k) { .kind = (k) }
#define LN(b) { .kind = OAG_L_LAYERNORM, .bias = (b), .eps = 1e-5f }

struct mcase {
    const char *name;
    uint32_t input_dim;
    uint32_t nlayers;
    struct oag_gen_layer layers[16];
};

static const struct mcase cases[] = {
    { "linear", 37, 1, { LIN(11, 1) } },
    { "linear-nobias", 37, 1, { LIN(11, 0) } },
    { "linear-relu", 37, 3, { LIN(29, 1), ACT(OAG_L_RELU), LIN(11, 1) } },
    { "linear-gelu", 37, 3, { LIN(29, 1), ACT(OAG_L_GELU), LIN(11, 1) } },
    { "linear-silu", 37, 3, { LIN(29, 0), ACT(OAG_L_SILU), LIN(11, 1) } },
    { "linear-tanh", 37, 3, { LIN(29, 1), ACT(OAG_L_TANH), LIN(11, 0) } },
    { "layernorm", 37, 2, { LN(1), LIN(11, 1) } },
    { "layernorm-nobias-then-act", 37, 4, { LIN(29, 1), LN(0), ACT(OAG_L_GELU), LIN(11, 1) } },
    { "softmax", 37, 2, { LIN(11, 1), ACT(OAG_L_SOFTMAX) } },
    { "acts-only", 37, 5, { ACT(OAG_L_TANH), ACT(OAG_L_RELU), ACT(OAG_L_GELU), ACT(OAG_L_SILU),
                            ACT(OAG_L_SOFTMAX) } },
    { "deep", 37, 12, { LIN(64, 1), ACT(OAG_L_GELU), LN(1), LIN(64, 1), ACT(OAG_L_RELU),
                        LIN(48, 0), ACT(OAG_L_TANH), LIN(32, 1), ACT(OAG_L_SILU), LN(1),
                        LIN(11, 1), ACT(OAG_L_SOFTMAX) } },
};

/* Exact bound (same weights, float32 arithmetic) and quantisation bound per dtype. */
static const double tol_exact[3] = { 1e-5, 1e-5, 1e-5 };
static const double tol_quant[3] = { 3e-5, 5e-3, 4e-2 };

static int gen_load(const char *dir, const struct mcase *c, enum oag_dtype dt, uint32_t misalign,
                    struct oag_model **m)
{
    char err[512];
    struct oag_gen_spec spec = { .name = c->name, .dtype = dt, .input_dim = c->input_dim,
                                 .nlayers = c->nlayers, .layers = c->layers, .seed = 42,
                                 .misalign = misalign };
    int rc = oag_model_generate(dir, &spec, err, sizeof err);
    CHECK(rc == 0, "generate %s: %s", c->name, err);
    if (rc)
        return rc;
    rc = oag_model_load(m, dir, err, sizeof err);
    CHECK(rc == 0, "load %s: %s", c->name, err);
    return rc;
}

static void test_case(const struct mcase *c, enum oag_dtype dt, uint32_t misalign)
{
    char dir[512], dir32[512], label[96];
    struct oag_model *m = NULL, *q = NULL;
    snprintf(dir, sizeof dir, "%s/%s-%s", tmp_root, c->name, oag_dtype_name(dt));
    snprintf(dir32, sizeof dir32, "%s/%s-f32twin", tmp_root, c->name);
    if (gen_load(dir, c, dt, misalign, &m) || gen_load(dir32, c, OAG_DT_F32, 0, &q))
        goto out;
    CHECK(m->dtype == dt, "dtype");
    /* The data section is misaligned as asked, so the engine must not load floats in place. */
    uintptr_t first = UINTPTR_MAX;
    for (uint32_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].weight.data && (uintptr_t)m->layers[i].weight.data < first)
            first = (uintptr_t)m->layers[i].weight.data;
    if (first != UINTPTR_MAX)
        CHECK((first - (uintptr_t)m->map) % 8 == misalign, "%s: data misalignment", c->name);

    struct oag_engine *e = make_engine(m, 16);
    if (!e)
        goto out;
    CHECK(cpu->out_row_bytes(e) == m->output_dim * 4, "out_row_bytes %u",
          cpu->out_row_bytes(e));
    struct run r;
    run_init(&r, m, 13);
    int rc = cpu->submit(e, &r.b);
    CHECK(rc == 0 && r.b.whole_rc == 0, "submit %s: %d/%d", c->name, rc, r.b.whole_rc);
    snprintf(label, sizeof label, "%s %s", c->name, oag_dtype_name(dt));
    check_outputs(label, &r, m, tol_exact[dt], q, tol_quant[dt]);
    run_free(&r);

    /* The same rows in chunks: an engine made for batches of 4 given 13 rows. */
    struct oag_engine *e4 = make_engine(m, 4);
    if (e4) {
        run_init(&r, m, 13);
        rc = cpu->submit(e4, &r.b);
        CHECK(rc == 0, "submit chunked: %d", rc);
        snprintf(label, sizeof label, "%s %s chunked", c->name, oag_dtype_name(dt));
        check_outputs(label, &r, m, tol_exact[dt], NULL, 0);
        run_free(&r);
        cpu->destroy(e4);
    }
    cpu->destroy(e);
out:
    oag_model_free(m);
    oag_model_free(q);
}

/* create's refusals, slots too small, empty batches. */
static void test_contract(void)
{
    struct oag_model *m = NULL;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/contract", tmp_root);
    if (gen_load(dir, &cases[2], OAG_DT_F32, 0, &m))
        return;
    struct oag_engine *e = NULL;
    struct oag_engine_params p = { .max_batch = 8, .max_payload = 4096, .model = NULL,
                                   .threads = 1 };
    CHECK(cpu->create(&e, &p) == -EINVAL, "no model");
    p.model = m;
    p.max_payload = 37 * 4 - 1;                     /* input row does not fit */
    CHECK(cpu->create(&e, &p) == -EINVAL, "input > max_payload");
    p.max_payload = 37 * 4;                         /* both fit exactly */
    CHECK(cpu->create(&e, &p) == 0, "rows fit exactly");
    cpu->destroy(e);
    e = NULL;
    p.max_batch = 0;
    CHECK(cpu->create(&e, &p) == -EINVAL, "max_batch 0");
    cpu->destroy(NULL);

    e = make_engine(m, 8);
    if (!e)
        goto out;
    struct run r;
    run_init(&r, m, 4);
    r.b.out_stride = m->output_dim * 4 - 1;
    int rc = cpu->submit(e, &r.b);
    CHECK(rc == -EMSGSIZE && r.b.whole_rc == -EMSGSIZE, "small out slots: %d", rc);
    for (uint32_t i = 0; i < 4; i++)
        CHECK(r.b.status[i] == -EMSGSIZE && r.b.out_len[i] == 0, "row %u status %d", i,
              r.b.status[i]);
    r.b.out_stride = r.out_stride;
    r.b.n = 0;
    r.b.whole_rc = 99;
    CHECK(cpu->submit(e, &r.b) == 0 && r.b.whole_rc == 0, "empty batch");
    r.b.n = 1;
    CHECK(cpu->submit(e, &r.b) == 0 && r.b.status[0] == 0, "one row");
    run_free(&r);
    cpu->destroy(e);
out:
    oag_model_free(m);
}

/* The oag-gen-model binary: flags -> a model that loads and runs. */
static void test_gen_tool(const char *tool)
{
    char dir[512], cmd[1536];
    snprintf(dir, sizeof dir, "%s/tool", tmp_root);
    snprintf(cmd, sizeof cmd, "'%s' --out '%s' --input 24 --hidden 40 --output 7 --layers 3 "
             "--dtype bfloat16 --act silu --layernorm --softmax --seed 9 >/dev/null", tool, dir);
    int st = system(cmd);
    CHECK(st == 0, "%s: status %d", cmd, st);
    struct oag_model *m = NULL;
    char err[512];
    if (st || oag_model_load(&m, dir, err, sizeof err)) {
        CHECK(0, "tool model does not load");
        return;
    }
    CHECK(m->nlayers == 3 + 2 * 2 + 1 && m->input_dim == 24 && m->output_dim == 7 &&
          m->max_dim == 40 && m->dtype == OAG_DT_BF16, "tool model shape");
    struct oag_engine *e = make_engine(m, 16);
    if (e) {
        struct run r;
        run_init(&r, m, 10);
        CHECK(cpu->submit(e, &r.b) == 0, "submit");
        check_outputs("oag-gen-model bfloat16", &r, m, tol_exact[OAG_DT_BF16], NULL, 0);
        run_free(&r);
        cpu->destroy(e);
    }
    oag_model_free(m);
    snprintf(cmd, sizeof cmd, "'%s' --out '%s' --dtype float64 2>/dev/null", tool, dir);
    st = system(cmd);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "bad flag: status %d", st);
}

/* DIR/sample_input.f32 through the engine against DIR/sample_output.f32 (from torch). */
static int check_dir(const char *dir)
{
    char err[512], path[1024];
    struct oag_model *m;
    int rc = oag_model_load(&m, dir, err, sizeof err);
    if (rc) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    float *in = NULL, *want = NULL;
    size_t nin = 0, nout = 0;
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, k ? "sample_output.f32" : "sample_input.f32");
        FILE *f = fopen(path, "rb");
        if (!f) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            return 1;
        }
        fseek(f, 0, SEEK_END);
        size_t len = (size_t)ftell(f);
        rewind(f);
        float *buf = malloc(len + 4);
        if (fread(buf, 1, len, f) != len) {
            fclose(f);
            return 1;
        }
        fclose(f);
        if (k) { want = buf; nout = len / 4; } else { in = buf; nin = len / 4; }
    }
    uint32_t n = (uint32_t)(nin / m->input_dim);
    if (n == 0 || nin != (size_t)n * m->input_dim || nout != (size_t)n * m->output_dim) {
        fprintf(stderr, "sample sizes do not match the model\n");
        return 1;
    }
    struct oag_engine *e = make_engine(m, n);
    if (!e)
        return 1;
    struct oag_batch b = { .n = n, .in_stride = m->input_dim * 4, .out_stride = m->output_dim * 4,
                           .in = (uint8_t *)in, .out = malloc((size_t)n * m->output_dim * 4),
                           .in_len = calloc(n, 4), .out_len = calloc(n, 4),
                           .status = calloc(n, 4) };
    for (uint32_t i = 0; i < n; i++)
        b.in_len[i] = m->input_dim * 4;
    rc = cpu->submit(e, &b);
    double worst = 0, *ref = calloc(m->output_dim, sizeof *ref);
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        for (uint32_t j = 0; j < m->output_dim; j++)
            ref[j] = want[(size_t)i * m->output_dim + j];
        double err_i = row_err((float *)b.out + (size_t)i * m->output_dim, ref, m->output_dim);
        if (!(err_i <= worst))
            worst = err_i;
    }
    printf("check %s: %u rows, max relative error vs torch %.3g\n", dir, n, worst);
    int ok = rc == 0 && worst <= 1e-4;
    cpu->destroy(e);
    oag_model_free(m);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *tool = NULL;
    cpu = engine_lookup("cpu");
    if (!cpu) {
        printf("SKIP: no cpu engine in this build (have: %s)\n", engine_names());
        return 77;
    }
    if (argc == 3 && !strcmp(argv[1], "--check"))
        return check_dir(argv[2]);
    if (argc == 3 && !strcmp(argv[1], "--gen-tool"))
        tool = argv[2];
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    CHECK(cpu->reap == NULL && !strcmp(cpu->name, "cpu"), "synchronous engine named cpu");

    for (int dt = OAG_DT_F32; dt <= OAG_DT_BF16; dt++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            test_case(&cases[i], (enum oag_dtype)dt, (uint32_t)(i + (size_t)dt) % 8);
    test_contract();
    if (tool)
        test_gen_tool(tool);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", tmp_root);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
