/*
 * test_cuda_plan - the CUDA engine's planner (src/cuda/plan.c), without a GPU: for every test
 * model and dtype, the op sequence obeys the buffer rules of plan.h, and a host interpreter of
 * the ops (float32 math, half rounding exactly where the plan stores half) matches the float64
 * reference within the dtype's bound. Also: layer lists the engine must refuse.
 */
#include "cu_models.h"
#include "cu_test.h"
#include "cuda/plan.h"

static float round_dt(float v, enum cu_dt dt)
{
    if (dt == CU_F16)
        return oag_f16_to_f32(oag_f32_to_f16(v));
    if (dt == CU_BF16)
        return oag_bf16_to_f32(oag_f32_to_bf16(v));
    return v;
}

static float act(float x, enum cu_act a)
{
    switch (a) {
    case CU_ACT_RELU: return x > 0 ? x : 0;
    case CU_ACT_GELU: return 0.5f * x * (1.f + erff(x * 0.70710678f));
    case CU_ACT_SILU: return x / (1.f + expf(-x));
    case CU_ACT_TANH: return tanhf(x);
    default: return x;
    }
}

static float *decode(const struct oag_tensor *t, size_t n)
{
    if (!t->data)
        return NULL;
    float *f = malloc(n * sizeof *f);
    oag_to_f32(f, t->data, t->dtype, n);
    return f;
}

/* Runs plan p for rows x[n, in] into y[n, out], as the GPU would. */
static void interpret(const struct cu_plan *p, const struct oag_model *m, const float *x,
                      uint32_t n, float *y)
{
    float *buf[CU_NBUF];
    size_t cap = (size_t)n * p->width;
    for (int b = 0; b < CU_NBUF; b++)
        buf[b] = calloc(cap, sizeof(float));
    memcpy(buf[CU_XIN], x, (size_t)n * m->input_dim * sizeof(float));
    for (uint32_t i = 0; i < p->nops; i++) {
        const struct cu_op *o = &p->ops[i];
        const struct oag_layer *L = &m->layers[o->layer];
        float *src = buf[o->src], *dst = buf[o->dst];
        switch (o->kind) {
        case CU_OP_ACT:
            for (size_t k = 0; k < (size_t)n * o->in_cols; k++)
                dst[k] = round_dt(act(src[k], o->act), o->dst_dt);
            break;
        case CU_OP_GEMM: {
            float *w = decode(&L->weight, (size_t)L->out_dim * L->in_dim);
            for (uint32_t r = 0; r < n; r++)
                for (uint32_t c = 0; c < o->out_cols; c++) {
                    double s = 0;
                    for (uint32_t k = 0; k < o->in_cols; k++)
                        s += (double)w[(size_t)c * o->in_cols + k] *
                             src[(size_t)r * o->in_cols + k];
                    dst[(size_t)r * o->out_cols + c] = (float)s;
                }
            free(w);
            break;
        }
        case CU_OP_BIAS_ACT: {
            float *bias = decode(&L->bias, L->out_dim);
            for (uint32_t r = 0; r < n; r++)
                for (uint32_t c = 0; c < o->out_cols; c++) {
                    size_t k = (size_t)r * o->out_cols + c;
                    dst[k] = round_dt(act(src[k] + (bias ? bias[c] : 0.f), o->act), o->dst_dt);
                }
            free(bias);
            break;
        }
        case CU_OP_LAYERNORM: {
            float *w = decode(&L->weight, L->in_dim), *b = decode(&L->bias, L->in_dim);
            for (uint32_t r = 0; r < n; r++) {
                float *row = src + (size_t)r * o->in_cols, *out = dst + (size_t)r * o->in_cols;
                float mean = 0, var = 0;
                for (uint32_t c = 0; c < o->in_cols; c++)
                    mean += row[c];
                mean /= o->in_cols;
                for (uint32_t c = 0; c < o->in_cols; c++)
                    var += (row[c] - mean) * (row[c] - mean);
                float rs = 1.f / sqrtf(var / o->in_cols + o->eps);
                for (uint32_t c = 0; c < o->in_cols; c++)
                    out[c] = round_dt((row[c] - mean) * rs * (w ? w[c] : 1.f) + (b ? b[c] : 0.f),
                                      o->dst_dt);
            }
            free(w);
            free(b);
            break;
        }
        case CU_OP_SOFTMAX:
            for (uint32_t r = 0; r < n; r++) {
                float *row = src + (size_t)r * o->in_cols, *out = dst + (size_t)r * o->in_cols;
                float mx = -INFINITY, s = 0;
                for (uint32_t c = 0; c < o->in_cols; c++)
                    mx = fmaxf(mx, row[c]);
                for (uint32_t c = 0; c < o->in_cols; c++)
                    s += expf(row[c] - mx);
                for (uint32_t c = 0; c < o->in_cols; c++)
                    out[c] = round_dt(expf(row[c] - mx) / s, o->dst_dt);
            }
            break;
        }
    }
    memcpy(y, buf[CU_YOUT], (size_t)n * m->output_dim * sizeof(float));
    for (int b = 0; b < CU_NBUF; b++)
        free(buf[b]);
}

static void check_rules(const struct cu_plan *p, const struct oag_model *m, const char *what)
{
    const int half = m->dtype != OAG_DT_F32;
    int converts = 0;
    CHECK(p->nops > 0, "%s: empty plan", what);
    CHECK(p->ops[p->nops - 1].dst == CU_YOUT, "%s: last op writes %s", what,
          cu_buf_name(p->ops[p->nops - 1].dst));
    for (uint32_t i = 0; i < p->nops; i++) {
        const struct cu_op *o = &p->ops[i];
        if (i + 1 < p->nops)
            CHECK(o->dst != CU_YOUT, "%s: op %u writes YOUT early", what, i);
        CHECK(o->dst != CU_XIN, "%s: op %u writes XIN", what, i);
        CHECK((o->dst == CU_H) == (o->dst_dt != CU_F32), "%s: op %u: H <-> half", what, i);
        if (o->kind == CU_OP_GEMM) {
            CHECK(o->dst == CU_G, "%s: gemm %u writes %s", what, i, cu_buf_name(o->dst));
            CHECK(half ? o->src == CU_H : (o->src == CU_XIN || o->src == CU_A),
                  "%s: gemm %u reads %s", what, i, cu_buf_name(o->src));
            CHECK(i + 1 < p->nops && p->ops[i + 1].kind == CU_OP_BIAS_ACT,
                  "%s: gemm %u has no epilogue", what, i);
        } else {
            CHECK(o->src != CU_H && o->src_dt == CU_F32, "%s: op %u reads half", what, i);
            if (o->kind == CU_OP_BIAS_ACT)
                CHECK(o->src == CU_G, "%s: epilogue %u reads %s", what, i, cu_buf_name(o->src));
        }
        if (o->kind == CU_OP_ACT && o->act == CU_ACT_NONE)
            converts++;
    }
    CHECK(converts <= 1, "%s: %d conversions", what, converts);
    int gemms = 0;
    for (uint32_t i = 0; i < p->nops; i++)
        gemms += p->ops[i].kind == CU_OP_GEMM;
    CHECK(p->need_h == (half && gemms > 0), "%s: need_h %d", what, p->need_h);
}

static void refuse(const char *what, struct oag_model *m)
{
    struct cu_plan p;
    char msg[160] = "";
    int rc = cu_plan_build(&p, m, msg, sizeof msg);
    CHECK_EQ(rc, -EINVAL);
    CHECK(msg[0], "%s: no message", what);
    printf("  refused %-28s %s\n", what, msg);
}

int main(void)
{
    static const enum oag_dtype dts[] = { OAG_DT_F32, OAG_DT_F16, OAG_DT_BF16 };
    const uint32_t n = 9;
    t_tmp_init();
    printf("%-10s %-9s %4s %12s %9s\n", "model", "dtype", "ops", "err/rms", "bound");
    for (size_t s = 0; s < T_NSPECS; s++)
        for (size_t d = 0; d < 3; d++) {
            const struct t_spec *sp = &t_specs[s];
            struct t_model tm;
            t_model_make(&tm, sp->name, dts[d], sp->in_dim, sp->n, sp->L, 7 + s, sp->misalign);
            struct oag_model *m = tm.m;
            char what[64], msg[160];
            snprintf(what, sizeof what, "%s/%s", sp->name, oag_dtype_name(dts[d]));
            struct cu_plan p;
            int rc = cu_plan_build(&p, m, msg, sizeof msg);
            CHECK(rc == 0, "%s: %s", what, msg);
            if (rc) {
                t_model_free(&tm);
                continue;
            }
            check_rules(&p, m, what);
            float *x = t_input(n, m->input_dim, -2, 2);
            float *y = malloc((size_t)n * m->output_dim * sizeof *y);
            double *ref = malloc((size_t)n * m->output_dim * sizeof *ref);
            interpret(&p, m, x, n, y);
            t_ref(m, x, n, ref);
            double err = t_err((const uint8_t *)y, m->output_dim * 4, ref, n, m->output_dim, NULL);
            printf("%-10s %-9s %4u %12.3e %9.1e\n", sp->name, oag_dtype_name(dts[d]), p.nops,
                   err, t_bound(dts[d]));
            CHECK(err <= t_bound(dts[d]), "%s: error %.3e", what, err);
            free(x);
            free(y);
            free(ref);
            cu_plan_fini(&p);
            t_model_free(&tm);
        }

    /* Models the loader would never hand over, built by hand: the engine must still refuse. */
    struct t_model tm;
    t_model_make(&tm, "refuse", OAG_DT_F16, 64, 3, t_specs[1].L, 1, 0);
    struct oag_model *m = tm.m;
    m->layers[2].in_dim = 95;
    refuse("width chain broken", m);
    m->layers[2].in_dim = 96;
    m->layers[0].weight.dtype = OAG_DT_BF16;
    refuse("weight of another dtype", m);
    m->layers[0].weight.dtype = OAG_DT_F16;
    m->layers[0].weight.shape[0] = 95;
    refuse("weight of another shape", m);
    m->layers[0].weight.shape[0] = 96;
    m->output_dim = 34;
    refuse("output_dim mismatch", m);
    m->output_dim = 33;
    m->layers[1].kind = (enum oag_layer_kind)99;
    refuse("unknown layer kind", m);
    m->layers[1].kind = OAG_L_RELU;
    struct cu_plan p;
    char msg[160];
    CHECK_EQ(cu_plan_build(&p, m, msg, sizeof msg), 0);
    cu_plan_fini(&p);
    t_model_free(&tm);
    t_tmp_fini();

    if (t_failures) {
        fprintf(stderr, "test_cuda_plan: %d failure(s)\n", t_failures);
        return 1;
    }
    printf("test_cuda_plan: ok\n");
    return 0;
}
