/*
 * cu_test.h - helpers shared by the CUDA engine tests (header-only, static functions): random
 * model folders written by the generator and loaded by the real loader, a float64 reference
 * forward pass, batches in engine-allocated (pinned) buffers, and an error metric.
 *
 * Error metric: max over the output of |y - ref| / rms(ref), i.e. the worst error relative to
 * the typical output magnitude (softmax outputs and near-zero values are judged on the same
 * scale as the rest). Bounds per weight dtype are in t_bound().
 */
#ifndef OAG_TESTS_CU_TEST_H
#define OAG_TESTS_CU_TEST_H

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/engine.h"
#include "model/gen.h"
#include "model/model.h"

#define T_SKIP 77

static int t_failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            t_failures++;                                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                                     \
    CHECK((long long)(a) == (long long)(b), "%s = %lld, expected %lld", #a, (long long)(a), \
          (long long)(b))

static uint64_t t_rng = 0x9e3779b97f4a7c15ull;

static inline double t_uniform(double lo, double hi)
{
    t_rng ^= t_rng << 13;
    t_rng ^= t_rng >> 7;
    t_rng ^= t_rng << 17;
    return lo + (hi - lo) * (double)(t_rng >> 11) / 9007199254740992.0;
}

static inline double t_bound(enum oag_dtype dt)
{
    /* fp32: SGEMM with fp32 accumulation, errors ~1e-6; fp16 (unit roundoff 2^-11) and bf16
     * (2^-8) round each GEMM input once: a few roundoffs relative to rms, with margin */
    return dt == OAG_DT_F32 ? 1e-4 : dt == OAG_DT_F16 ? 1e-2 : 5e-2;
}

/* ---- model folders ---- */

struct t_model {
    char dir[512];
    struct oag_model *m;
};

static char t_tmp[256];

static inline void t_tmp_init(void)
{
    const char *base = getenv("TMPDIR");
    snprintf(t_tmp, sizeof t_tmp, "%s/oagcuXXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(t_tmp)) {
        perror("mkdtemp");
        exit(1);
    }
}

static inline void t_model_free(struct t_model *t)
{
    char p[600];
    oag_model_free(t->m);
    t->m = NULL;
    snprintf(p, sizeof p, "%s/config.json", t->dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", t->dir);
    unlink(p);
    rmdir(t->dir);
}

static inline void t_tmp_fini(void) { rmdir(t_tmp); }

/* Writes and loads a model; exits 1 when that fails (the generator or loader is broken). */
static inline void t_model_make(struct t_model *t, const char *name, enum oag_dtype dt,
                                uint32_t in_dim, uint32_t n, const struct oag_gen_layer *layers,
                                uint64_t seed, uint32_t misalign)
{
    char err[256];
    snprintf(t->dir, sizeof t->dir, "%s/%s-%s", t_tmp, name, oag_dtype_name(dt));
    struct oag_gen_spec spec = { .name = name, .dtype = dt, .input_dim = in_dim, .nlayers = n,
                                 .layers = layers, .seed = seed, .misalign = misalign };
    int rc = oag_model_generate(t->dir, &spec, err, sizeof err);
    if (!rc)
        rc = oag_model_load(&t->m, t->dir, err, sizeof err);
    if (rc) {
        fprintf(stderr, "model %s: %s (%d)\n", t->dir, err, rc);
        exit(1);
    }
}

/* ---- float64 reference ---- */

static inline double *t_decode(const struct oag_tensor *t, size_t n)
{
    if (!t->data)
        return NULL;
    float *f = malloc(n * sizeof *f);
    double *d = malloc(n * sizeof *d);
    oag_to_f32(f, t->data, t->dtype, n);
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

/* y[n, output_dim] = model(x[n, input_dim]) in float64 from the exact (decoded) weights. */
static inline void t_ref(const struct oag_model *m, const float *x, uint32_t n, double *y)
{
    uint32_t w = m->max_dim;
    for (uint32_t i = 0; i < m->nlayers; i++)
        if (m->layers[i].out_dim > w)
            w = m->layers[i].out_dim;
    if (m->input_dim > w)
        w = m->input_dim;
    double *a = malloc(w * sizeof *a), *b = malloc(w * sizeof *b);
    double **W = calloc(m->nlayers, sizeof *W), **B = calloc(m->nlayers, sizeof *B);
    for (uint32_t l = 0; l < m->nlayers; l++) {
        const struct oag_layer *L = &m->layers[l];
        if (L->kind == OAG_L_LINEAR) {
            W[l] = t_decode(&L->weight, (size_t)L->out_dim * L->in_dim);
            B[l] = t_decode(&L->bias, L->out_dim);
        } else if (L->kind == OAG_L_LAYERNORM) {
            W[l] = t_decode(&L->weight, L->in_dim);
            B[l] = t_decode(&L->bias, L->in_dim);
        }
    }
    for (uint32_t r = 0; r < n; r++) {
        uint32_t cw = m->input_dim;
        for (uint32_t i = 0; i < cw; i++)
            a[i] = x[(size_t)r * m->input_dim + i];
        for (uint32_t l = 0; l < m->nlayers; l++) {
            const struct oag_layer *L = &m->layers[l];
            switch (L->kind) {
            case OAG_L_LINEAR:
                for (uint32_t o = 0; o < L->out_dim; o++) {
                    double s = B[l] ? B[l][o] : 0;
                    const double *wr = W[l] + (size_t)o * L->in_dim;
                    for (uint32_t i = 0; i < L->in_dim; i++)
                        s += wr[i] * a[i];
                    b[o] = s;
                }
                memcpy(a, b, L->out_dim * sizeof *a);
                break;
            case OAG_L_RELU:
                for (uint32_t i = 0; i < cw; i++)
                    a[i] = a[i] > 0 ? a[i] : 0;
                break;
            case OAG_L_GELU:
                for (uint32_t i = 0; i < cw; i++)
                    a[i] = 0.5 * a[i] * (1 + erf(a[i] / sqrt(2.0)));
                break;
            case OAG_L_SILU:
                for (uint32_t i = 0; i < cw; i++)
                    a[i] = a[i] / (1 + exp(-a[i]));
                break;
            case OAG_L_TANH:
                for (uint32_t i = 0; i < cw; i++)
                    a[i] = tanh(a[i]);
                break;
            case OAG_L_LAYERNORM: {
                double mean = 0, var = 0;
                for (uint32_t i = 0; i < cw; i++)
                    mean += a[i];
                mean /= cw;
                for (uint32_t i = 0; i < cw; i++)
                    var += (a[i] - mean) * (a[i] - mean);
                var /= cw;
                double rs = 1 / sqrt(var + L->eps);
                for (uint32_t i = 0; i < cw; i++)
                    a[i] = (a[i] - mean) * rs * (W[l] ? W[l][i] : 1) + (B[l] ? B[l][i] : 0);
                break;
            }
            case OAG_L_SOFTMAX: {
                double mx = -INFINITY, s = 0;
                for (uint32_t i = 0; i < cw; i++)
                    mx = a[i] > mx ? a[i] : mx;
                for (uint32_t i = 0; i < cw; i++)
                    s += (a[i] = exp(a[i] - mx));
                for (uint32_t i = 0; i < cw; i++)
                    a[i] /= s;
                break;
            }
            }
            cw = L->out_dim;
        }
        memcpy(y + (size_t)r * m->output_dim, a, m->output_dim * sizeof *a);
    }
    for (uint32_t l = 0; l < m->nlayers; l++) {
        free(W[l]);
        free(B[l]);
    }
    free(W);
    free(B);
    free(a);
    free(b);
}

/* max |y - ref| / rms(ref) over rows whose ok[r] is set (ok NULL: all); y rows at a stride. */
static inline double t_err(const uint8_t *y, uint32_t y_stride, const double *ref, uint32_t n,
                    uint32_t cols, const int *ok)
{
    double ss = 0, mx = 0;
    size_t cnt = 0;
    for (uint32_t r = 0; r < n; r++)
        if (!ok || ok[r])
            for (uint32_t c = 0; c < cols; c++, cnt++)
                ss += ref[(size_t)r * cols + c] * ref[(size_t)r * cols + c];
    double rms = sqrt(ss / (cnt ? cnt : 1)) + 1e-30;
    for (uint32_t r = 0; r < n; r++) {
        if (ok && !ok[r])
            continue;
        const float *row = (const float *)(y + (size_t)r * y_stride);
        for (uint32_t c = 0; c < cols; c++) {
            double d = fabs((double)row[c] - ref[(size_t)r * cols + c]);
            if (!(d <= mx)) /* NaN counts as infinitely wrong */
                mx = isnan(d) ? INFINITY : d;
        }
    }
    return mx / rms;
}

/* ---- batches ---- */

struct t_batch {
    struct oag_batch b;
    const struct oag_engine_ops *ops;
    struct oag_engine *e;
    uint32_t cap;
};

static inline void t_batch_init(struct t_batch *t, const struct oag_engine_ops *ops,
                         struct oag_engine *e, uint32_t cap, uint32_t in_stride,
                         uint32_t out_stride)
{
    memset(t, 0, sizeof *t);
    t->ops = ops;
    t->e = e;
    t->cap = cap;
    t->b.in_stride = in_stride;
    t->b.out_stride = out_stride;
    size_t ib = (size_t)cap * in_stride, ob = (size_t)cap * out_stride;
    t->b.in = ops->host_alloc ? ops->host_alloc(e, ib) : malloc(ib);
    t->b.out = ops->host_alloc ? ops->host_alloc(e, ob) : malloc(ob);
    t->b.in_len = calloc(cap, sizeof *t->b.in_len);
    t->b.out_len = calloc(cap, sizeof *t->b.out_len);
    t->b.status = calloc(cap, sizeof *t->b.status);
    if (!t->b.in || !t->b.out || !t->b.in_len || !t->b.out_len || !t->b.status) {
        fprintf(stderr, "batch buffers: out of memory\n");
        exit(1);
    }
    memset(t->b.out, 0xff, ob); /* NaN everywhere: rows never written are caught */
}

static inline void t_batch_fini(struct t_batch *t)
{
    if (t->ops->host_free) {
        t->ops->host_free(t->e, t->b.in);
        t->ops->host_free(t->e, t->b.out);
    } else {
        free(t->b.in);
        free(t->b.out);
    }
    free(t->b.in_len);
    free(t->b.out_len);
    free(t->b.status);
}

/* Rows x[n, dim] into the batch; in_len set to dim * 4. */
static inline void t_batch_fill(struct t_batch *t, const float *x, uint32_t n, uint32_t dim)
{
    t->b.n = n;
    for (uint32_t r = 0; r < n; r++) {
        memcpy(t->b.in + (size_t)r * t->b.in_stride, x + (size_t)r * dim, dim * 4);
        t->b.in_len[r] = dim * 4;
        t->b.status[r] = 12345;
    }
    memset(t->b.out, 0xff, (size_t)n * t->b.out_stride);
}

/* The next reaped batch of an async engine, waiting on its eventfd up to ms; NULL on timeout. */
static inline struct oag_batch *t_reap_wait(const struct oag_engine_ops *ops, struct oag_engine *e,
                                     int ms)
{
    struct pollfd p = { .fd = ops->event_fd(e), .events = POLLIN };
    for (int waited = 0;;) {
        struct oag_batch *b = ops->reap(e);
        if (b)
            return b;
        if (waited >= ms)
            return NULL;
        if (poll(&p, 1, 100) == 0)
            waited += 100;
    }
}

/* Submits and waits. Returns submit's error, -ETIMEDOUT, or the batch's whole_rc. */
static inline int t_run(struct t_batch *t)
{
    t->b.whole_rc = 12345;
    int rc = t->ops->submit(t->e, &t->b);
    if (rc || !t->ops->reap)
        return rc ? rc : t->b.whole_rc;
    struct oag_batch *got = t_reap_wait(t->ops, t->e, 20000);
    if (!got)
        return -ETIMEDOUT;
    if (got != &t->b) {
        fprintf(stderr, "reap returned another batch\n");
        return -EPROTO;
    }
    return got->whole_rc;
}

static inline float *t_input(uint32_t n, uint32_t dim, double lo, double hi)
{
    float *x = malloc((size_t)n * dim * sizeof *x);
    for (size_t i = 0; i < (size_t)n * dim; i++)
        x[i] = (float)t_uniform(lo, hi);
    return x;
}

#endif
