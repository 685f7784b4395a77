/* plan.c - layer list -> op sequence for the CUDA engine (see plan.h for the buffer rules). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"

static int is_act(enum oag_layer_kind k)
{
    return k == OAG_L_RELU || k == OAG_L_GELU || k == OAG_L_SILU || k == OAG_L_TANH;
}

static enum cu_act act_of(enum oag_layer_kind k)
{
    switch (k) {
    case OAG_L_RELU: return CU_ACT_RELU;
    case OAG_L_GELU: return CU_ACT_GELU;
    case OAG_L_SILU: return CU_ACT_SILU;
    case OAG_L_TANH: return CU_ACT_TANH;
    default: return CU_ACT_NONE;
    }
}

static size_t dt_size(enum oag_dtype dt) { return dt == OAG_DT_F32 ? 4 : 2; }

static const char *dt_name(enum oag_dtype dt)
{
    return dt == OAG_DT_F32 ? "float32" : dt == OAG_DT_F16 ? "float16" : "bfloat16";
}

static int tensor_ok(const struct oag_tensor *t, enum oag_dtype dt, uint32_t rows, uint32_t cols)
{
    if (!t->data)
        return 0;
    uint64_t want = (uint64_t)rows * cols;
    uint32_t have_cols = t->ndim == 2 ? t->shape[1] : 1;
    return t->dtype == dt && t->shape[0] == rows && have_cols == cols &&
           t->nbytes == want * dt_size(dt);
}

/* Where the output of the layer before layer `next` goes. */
static void dst_for(const struct oag_model *m, uint32_t next, int half, enum cu_buf *buf,
                    enum cu_dt *dt)
{
    if (next >= m->nlayers) {
        *buf = CU_YOUT;
        *dt = CU_F32;
    } else if (half && m->layers[next].kind == OAG_L_LINEAR) {
        *buf = CU_H;
        *dt = (enum cu_dt)m->dtype;
    } else {
        *buf = CU_A;
        *dt = CU_F32;
    }
}

int cu_plan_build(struct cu_plan *p, const struct oag_model *m, char *msg, size_t msglen)
{
    memset(p, 0, sizeof *p);
    if (!m || m->input_dim == 0 || m->output_dim == 0) {
        snprintf(msg, msglen, "model: no input or output width");
        return -EINVAL;
    }
    if (m->dtype != OAG_DT_F32 && m->dtype != OAG_DT_F16 && m->dtype != OAG_DT_BF16) {
        snprintf(msg, msglen, "model: unknown dtype %d", (int)m->dtype);
        return -EINVAL;
    }
    /* Worst case: a conversion plus two ops per layer, or one copy for an empty model. */
    struct cu_op *ops = calloc((size_t)m->nlayers * 2 + 2, sizeof *ops);
    if (!ops)
        return -ENOMEM;
    const int half = m->dtype != OAG_DT_F32;
    uint32_t n = 0, width = m->input_dim > m->output_dim ? m->input_dim : m->output_dim;
    uint32_t cur_w = m->input_dim;
    enum cu_buf cur = CU_XIN;
    enum cu_dt cur_dt = CU_F32;
    int need_h = 0;

    for (uint32_t i = 0; i < m->nlayers; i++) {
        const struct oag_layer *L = &m->layers[i];
        if (L->in_dim != cur_w || L->out_dim == 0) {
            snprintf(msg, msglen, "layer %u: input width %u, previous output %u", i, L->in_dim,
                     cur_w);
            goto inval;
        }
        if (L->out_dim > width)
            width = L->out_dim;
        enum cu_buf dst;
        enum cu_dt dst_dt;
        struct cu_op *o = &ops[n];
        if (L->kind == OAG_L_LINEAR) {
            if (!tensor_ok(&L->weight, m->dtype, L->out_dim, L->in_dim)) {
                snprintf(msg, msglen, "layer %u: linear weight is not %s [%u, %u]", i,
                         dt_name(m->dtype), L->out_dim, L->in_dim);
                goto inval;
            }
            if (L->bias.data && !tensor_ok(&L->bias, m->dtype, L->out_dim, 1)) {
                snprintf(msg, msglen, "layer %u: linear bias is not %s [%u]", i,
                         dt_name(m->dtype), L->out_dim);
                goto inval;
            }
            enum cu_dt gemm_dt = (enum cu_dt)m->dtype;
            if (cur_dt != gemm_dt) {
                /* only a half model's first layer: XIN (fp32) -> H */
                *o = (struct cu_op){ .kind = CU_OP_ACT, .src = cur, .dst = CU_H, .src_dt = cur_dt,
                                     .dst_dt = gemm_dt, .in_cols = cur_w, .out_cols = cur_w,
                                     .act = CU_ACT_NONE, .layer = i };
                o = &ops[++n];
                cur = CU_H;
                cur_dt = gemm_dt;
            }
            if (cur == CU_H)
                need_h = 1;
            *o = (struct cu_op){ .kind = CU_OP_GEMM, .src = cur, .dst = CU_G, .src_dt = cur_dt,
                                 .dst_dt = CU_F32, .in_cols = L->in_dim, .out_cols = L->out_dim,
                                 .layer = i };
            o = &ops[++n];
            uint32_t lin = i;
            enum cu_act act = CU_ACT_NONE;
            if (i + 1 < m->nlayers && is_act(m->layers[i + 1].kind)) {
                act = act_of(m->layers[i + 1].kind);
                i++;
            }
            dst_for(m, i + 1, half, &dst, &dst_dt);
            *o = (struct cu_op){ .kind = CU_OP_BIAS_ACT, .src = CU_G, .dst = dst,
                                 .src_dt = CU_F32, .dst_dt = dst_dt, .in_cols = L->out_dim,
                                 .out_cols = L->out_dim, .act = act, .layer = lin };
        } else if (is_act(L->kind) || L->kind == OAG_L_LAYERNORM || L->kind == OAG_L_SOFTMAX) {
            if (L->out_dim != L->in_dim) {
                snprintf(msg, msglen, "layer %u: %u -> %u for a width-preserving layer", i,
                         L->in_dim, L->out_dim);
                goto inval;
            }
            dst_for(m, i + 1, half, &dst, &dst_dt);
            *o = (struct cu_op){ .src = cur, .dst = dst, .src_dt = cur_dt, .dst_dt = dst_dt,
                                 .in_cols = L->in_dim, .out_cols = L->out_dim, .layer = i };
            if (L->kind == OAG_L_LAYERNORM) {
                if ((L->weight.data && !tensor_ok(&L->weight, m->dtype, L->in_dim, 1)) ||
                    (L->bias.data && !tensor_ok(&L->bias, m->dtype, L->in_dim, 1))) {
                    snprintf(msg, msglen, "layer %u: layernorm weight/bias is not %s [%u]", i,
                             dt_name(m->dtype), L->in_dim);
                    goto inval;
                }
                o->kind = CU_OP_LAYERNORM;
                o->eps = L->eps;
            } else if (L->kind == OAG_L_SOFTMAX) {
                o->kind = CU_OP_SOFTMAX;
            } else {
                o->kind = CU_OP_ACT;
                o->act = act_of(L->kind);
            }
        } else {
            snprintf(msg, msglen, "layer %u: unknown kind %d", i, (int)L->kind);
            goto inval;
        }
        n++;
        cur = dst;
        cur_dt = dst_dt;
        cur_w = L->out_dim;
    }
    if (cur_w != m->output_dim) {
        snprintf(msg, msglen, "model: last layer gives %u values, output_dim is %u", cur_w,
                 m->output_dim);
        goto inval;
    }
    if (n == 0) /* no layers: the output is the input */
        ops[n++] = (struct cu_op){ .kind = CU_OP_ACT, .src = CU_XIN, .dst = CU_YOUT,
                                   .src_dt = CU_F32, .dst_dt = CU_F32, .in_cols = cur_w,
                                   .out_cols = cur_w, .act = CU_ACT_NONE };
    p->ops = ops;
    p->nops = n;
    p->width = width;
    p->need_h = need_h;
    return 0;
inval:
    free(ops);
    return -EINVAL;
}

void cu_plan_fini(struct cu_plan *p)
{
    free(p->ops);
    memset(p, 0, sizeof *p);
}

const char *cu_op_name(enum cu_op_kind k)
{
    static const char *const names[] = { "act", "gemm", "bias_act", "layernorm", "softmax" };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

const char *cu_buf_name(enum cu_buf b)
{
    static const char *const names[] = { "XIN", "A", "G", "H", "YOUT" };
    return (unsigned)b < sizeof names / sizeof names[0] ? names[b] : "?";
}
