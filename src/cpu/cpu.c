/*
 * cpu.c - the "cpu" engine: a loaded model (src/model) run on the host with OpenBLAS, float32.
 *
 * At create every weight is converted once to float32 in the engine's own aligned buffers (half
 * types widened exactly), and the layer list is compiled into ops: a linear layer followed by an
 * activation becomes one op, so bias and activation are applied in a single pass over the GEMM's
 * output. A batch's valid rows are packed into a scratch matrix (unaligned input rows are fine),
 * pushed through the ops in chunks of at most `chunk` rows, and scattered to their output slots.
 * Synchronous (reap == NULL): submit() has finished the batch when it returns.
 *
 * Threads: submit() on one engine is not reentrant (the scratch buffers are the engine's); OpenBLAS
 * may use several threads inside a GEMM. openblas_set_num_threads() is process-wide.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "engine/engine.h"
#include "model/model.h"

/* Scratch bytes per activation buffer; a batch wider than this is run in several chunks. */
#define CPU_SCRATCH_BYTES (32u << 20)

/* OpenBLAS's own prototype (cblas.h declares it too, but not every cblas.h does). */
void openblas_set_num_threads(int num_threads);

enum cpu_op_kind { OP_LINEAR, OP_ACT, OP_LAYERNORM, OP_SOFTMAX };

struct cpu_op {
    enum cpu_op_kind kind;
    enum oag_layer_kind act;    /* OP_LINEAR: fused activation (OAG_L_LINEAR: none); OP_ACT */
    uint32_t in, out;           /* widths */
    float *w;                   /* linear [out, in] row-major; layernorm [out] */
    float *b;                   /* [out], zeros when the model has none */
    float eps;
};

struct oag_engine {
    const struct oag_model *model;
    uint32_t in_bytes, out_bytes;
    uint32_t in_dim, out_dim;
    uint32_t chunk;             /* rows per forward pass */
    uint32_t nops;
    struct cpu_op *ops;
    float *act[2];              /* chunk x max_dim each */
    uint32_t *rows;             /* chunk: the batch row of each packed row */
};

__attribute__((format(printf, 1, 2)))
static void cpu_log(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: error: engine cpu: %s\n", program_invocation_short_name, buf);
}

static float *falloc(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n * sizeof(float) : 64))
        return NULL;
    return p;
}

/* A float32 copy of tensor t (n elements), or zeros when t is absent. */
static float *convert(const struct oag_tensor *t, size_t n)
{
    float *p = falloc(n);
    if (!p)
        return NULL;
    if (t->data)
        oag_to_f32(p, t->data, t->dtype, n);
    else
        memset(p, 0, n * sizeof *p);
    return p;
}

static int is_act(enum oag_layer_kind k)
{
    return k == OAG_L_RELU || k == OAG_L_GELU || k == OAG_L_SILU || k == OAG_L_TANH;
}

static void cpu_destroy(struct oag_engine *e)
{
    if (!e)
        return;
    for (uint32_t i = 0; e->ops && i < e->nops; i++) {
        free(e->ops[i].w);
        free(e->ops[i].b);
    }
    free(e->ops);
    free(e->act[0]);
    free(e->act[1]);
    free(e->rows);
    free(e);
}

static int cpu_create(struct oag_engine **out, const struct oag_engine_params *p)
{
    const struct oag_model *m = p->model;
    struct oag_engine *e = NULL;
    int rc;

    if (!m) {
        cpu_log("no model: the cpu engine needs one (--model DIR)");
        return -EINVAL;
    }
    if (p->max_batch == 0) {
        cpu_log("max_batch is 0");
        return -EINVAL;
    }
    uint64_t in_bytes = (uint64_t)m->input_dim * 4, out_bytes = (uint64_t)m->output_dim * 4;
    if (in_bytes > p->max_payload || out_bytes > p->max_payload) {
        cpu_log("model '%s' needs %llu-byte input rows and %llu-byte output rows, more than "
                "max_payload %u", m->name, (unsigned long long)in_bytes,
                (unsigned long long)out_bytes, p->max_payload);
        return -EINVAL;
    }
    e = calloc(1, sizeof *e);
    if (!e)
        goto nomem;
    e->model = m;
    e->in_dim = m->input_dim;
    e->out_dim = m->output_dim;
    e->in_bytes = (uint32_t)in_bytes;
    e->out_bytes = (uint32_t)out_bytes;
    e->ops = calloc(m->nlayers ? m->nlayers : 1, sizeof *e->ops);
    if (!e->ops)
        goto nomem;

    for (uint32_t i = 0; i < m->nlayers; i++) {
        const struct oag_layer *l = &m->layers[i];
        struct cpu_op *op = &e->ops[e->nops++];
        op->in = l->in_dim;
        op->out = l->out_dim;
        op->act = l->kind;
        switch (l->kind) {
        case OAG_L_LINEAR:
            op->kind = OP_LINEAR;
            op->act = OAG_L_LINEAR;
            op->w = convert(&l->weight, (size_t)l->out_dim * l->in_dim);
            op->b = convert(&l->bias, l->out_dim);
            if (!op->w || !op->b)
                goto nomem;
            if (i + 1 < m->nlayers && is_act(m->layers[i + 1].kind))
                op->act = m->layers[++i].kind;              /* fused into this op */
            break;
        case OAG_L_LAYERNORM:
            op->kind = OP_LAYERNORM;
            op->eps = l->eps;
            op->w = convert(&l->weight, l->out_dim);
            op->b = convert(&l->bias, l->out_dim);
            if (!op->w || !op->b)
                goto nomem;
            break;
        case OAG_L_SOFTMAX:
            op->kind = OP_SOFTMAX;
            break;
        default:
            op->kind = OP_ACT;
            break;
        }
    }

    uint64_t rows = CPU_SCRATCH_BYTES / ((uint64_t)m->max_dim * 4);
    e->chunk = (uint32_t)(rows < 1 ? 1 : rows < p->max_batch ? rows : p->max_batch);
    e->act[0] = falloc((size_t)e->chunk * m->max_dim);
    e->act[1] = falloc((size_t)e->chunk * m->max_dim);
    e->rows = calloc(e->chunk, sizeof *e->rows);
    if (!e->act[0] || !e->act[1] || !e->rows)
        goto nomem;
    if (p->threads > 0)
        openblas_set_num_threads(p->threads);
    *out = e;
    return 0;

nomem:
    rc = -ENOMEM;
    cpu_log("out of memory for model '%s' (%llu bytes of weights as float32)",
            m->name, (unsigned long long)m->param_bytes * (m->dtype == OAG_DT_F32 ? 1 : 2));
    cpu_destroy(e);
    return rc;
}

/* ---- kernels ------------------------------------------------------------------------------ */

static inline float act_relu(float v) { return v < 0.0f ? 0.0f : v; }     /* NaN stays NaN */
static inline float act_gelu(float v) { return 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2)); }
static inline float act_silu(float v) { return v / (1.0f + expf(-v)); }

/* y[r, j] = act(y[r, j] + b[j]) for m rows of width n: one pass after the GEMM. */
static void bias_act(float *y, uint32_t m, uint32_t n, const float *b, enum oag_layer_kind act)
{
    for (uint32_t r = 0; r < m; r++) {
        float *row = y + (size_t)r * n;
        switch (act) {
        case OAG_L_RELU:
            for (uint32_t j = 0; j < n; j++) row[j] = act_relu(row[j] + b[j]);
            break;
        case OAG_L_GELU:
            for (uint32_t j = 0; j < n; j++) row[j] = act_gelu(row[j] + b[j]);
            break;
        case OAG_L_SILU:
            for (uint32_t j = 0; j < n; j++) row[j] = act_silu(row[j] + b[j]);
            break;
        case OAG_L_TANH:
            for (uint32_t j = 0; j < n; j++) row[j] = tanhf(row[j] + b[j]);
            break;
        default:
            for (uint32_t j = 0; j < n; j++) row[j] += b[j];
            break;
        }
    }
}

static void act_only(float *x, size_t n, enum oag_layer_kind act)
{
    switch (act) {
    case OAG_L_RELU: for (size_t j = 0; j < n; j++) x[j] = act_relu(x[j]); break;
    case OAG_L_GELU: for (size_t j = 0; j < n; j++) x[j] = act_gelu(x[j]); break;
    case OAG_L_SILU: for (size_t j = 0; j < n; j++) x[j] = act_silu(x[j]); break;
    case OAG_L_TANH: for (size_t j = 0; j < n; j++) x[j] = tanhf(x[j]); break;
    default: break;
    }
}

/* torch.nn.LayerNorm over each row: biased variance, two passes, sums in double. */
static void layernorm(float *x, uint32_t m, uint32_t n, const float *w, const float *b,
                      float eps)
{
    for (uint32_t r = 0; r < m; r++) {
        float *row = x + (size_t)r * n;
        double sum = 0, sq = 0;
        for (uint32_t j = 0; j < n; j++)
            sum += row[j];
        double mean = sum / n;
        for (uint32_t j = 0; j < n; j++) {
            double d = row[j] - mean;
            sq += d * d;
        }
        float inv = (float)(1.0 / sqrt(sq / n + eps));
        float fmean = (float)mean;
        for (uint32_t j = 0; j < n; j++)
            row[j] = (row[j] - fmean) * inv * w[j] + b[j];
    }
}

/* Softmax over each row, shifted by the row's maximum so exp never overflows. */
static void softmax(float *x, uint32_t m, uint32_t n)
{
    for (uint32_t r = 0; r < m; r++) {
        float *row = x + (size_t)r * n;
        float mx = row[0];
        for (uint32_t j = 1; j < n; j++)
            if (row[j] > mx)
                mx = row[j];
        double sum = 0;
        for (uint32_t j = 0; j < n; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (uint32_t j = 0; j < n; j++)
            row[j] *= inv;
    }
}

/* Runs m packed rows (in e->act[0]) through every op; returns the buffer with the result. */
static float *forward(struct oag_engine *e, uint32_t m)
{
    float *x = e->act[0], *y = e->act[1];
    for (uint32_t i = 0; i < e->nops; i++) {
        const struct cpu_op *op = &e->ops[i];
        switch (op->kind) {
        case OP_LINEAR: {
            /* y[m, out] = x[m, in] . w[out, in]^T */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)op->out,
                        (int)op->in, 1.0f, x, (int)op->in, op->w, (int)op->in, 0.0f, y,
                        (int)op->out);
            bias_act(y, m, op->out, op->b, op->act);
            float *t = x;
            x = y;
            y = t;
            break;
        }
        case OP_ACT:
            act_only(x, (size_t)m * op->out, op->act);
            break;
        case OP_LAYERNORM:
            layernorm(x, m, op->out, op->w, op->b, op->eps);
            break;
        case OP_SOFTMAX:
            softmax(x, m, op->out);
            break;
        }
    }
    return x;
}

static int cpu_submit(struct oag_engine *e, struct oag_batch *b)
{
    if (b->out_stride < e->out_bytes || (b->n > 1 && b->in_stride < e->in_bytes)) {
        /* Slots too small for this model: nothing can be computed. */
        int rc = b->out_stride < e->out_bytes ? -EMSGSIZE : -EINVAL;
        for (uint32_t i = 0; i < b->n; i++) {
            b->out_len[i] = 0;
            b->status[i] = rc;
        }
        b->whole_rc = rc;
        return rc;
    }
    uint32_t i = 0;
    while (i < b->n) {
        uint32_t m = 0;
        for (; i < b->n && m < e->chunk; i++) {
            if (b->in_len[i] != e->in_bytes) {
                b->out_len[i] = 0;
                b->status[i] = -EINVAL;
                continue;
            }
            /* memcpy: the slot need not be 4-byte aligned. */
            memcpy(e->act[0] + (size_t)m * e->in_dim,
                   b->in_ptr ? b->in_ptr[i] : b->in + (size_t)i * b->in_stride, e->in_bytes);
            e->rows[m++] = i;
        }
        if (m == 0)
            continue;
        const float *res = forward(e, m);
        for (uint32_t k = 0; k < m; k++) {
            uint32_t r = e->rows[k];
            memcpy(b->out_ptr ? b->out_ptr[r] : b->out + (size_t)r * b->out_stride,
                   res + (size_t)k * e->out_dim, e->out_bytes);
            b->out_len[r] = e->out_bytes;
            b->status[r] = 0;
        }
    }
    b->whole_rc = 0;
    return 0;
}

static uint32_t cpu_out_row_bytes(struct oag_engine *e)
{
    return e->out_bytes;
}

/* Rows by pointer need nothing of host memory on the CPU: the rows are read and written where
 * they are (gathered into the engine's own matrix anyway). */
static int cpu_host_register(struct oag_engine *e, void *p, size_t len)
{
    (void)e;
    (void)p;
    (void)len;
    return 0;
}

static void cpu_host_unregister(void *p) { (void)p; }

const struct oag_engine_ops engine_cpu_ops = {
    .name = "cpu",
    .create = cpu_create,
    .destroy = cpu_destroy,
    .submit = cpu_submit,
    .out_row_bytes = cpu_out_row_bytes,
    .host_register = cpu_host_register,
    .host_unregister = cpu_host_unregister,
};
