/*
 * plan.h - a model's layer list turned into the op sequence the CUDA engine records into a graph.
 *
 * Pure host code with no CUDA in it, so it is unit-tested on machines without a GPU.
 *
 * Buffers of one slot (rows = the bucket being captured; every matrix is packed row-major, its
 * row stride is the width of the op that wrote it):
 *   XIN   float32 [rows, input_dim]   the batch's rows copied from the host
 *   A     float32 [rows, width]       activations between non-GEMM ops (ops may run in place)
 *   G     float32 [rows, width]       every GEMM's output (fp32 accumulate, fp32 store)
 *   H     model dtype [rows, width]   the next GEMM's input; only for fp16/bf16 models
 *   YOUT  float32 [rows, output_dim]  the last op's output, copied back to the host
 *
 * Rules: a GEMM reads XIN/A (fp32 models) or H (half models) and writes G; the op after a GEMM
 * is its epilogue (bias + the activation that follows the linear, fused) reading G; every other
 * op reads XIN, A or G as float32. An op writes H when the next layer is a linear of a half
 * model (so the rounding to half happens once, in the producer), YOUT when it is the last op,
 * and A otherwise. Only a half model whose first layer is a linear needs a standalone
 * conversion (XIN -> H).
 */
#ifndef OAG_CUDA_PLAN_H
#define OAG_CUDA_PLAN_H

#include <stdint.h>

#include "model/model.h"

enum cu_buf { CU_XIN = 0, CU_A, CU_G, CU_H, CU_YOUT, CU_NBUF };

/* Element types as the kernels see them (same values as enum oag_dtype). */
enum cu_dt { CU_F32 = OAG_DT_F32, CU_F16 = OAG_DT_F16, CU_BF16 = OAG_DT_BF16 };

enum cu_act { CU_ACT_NONE = 0, CU_ACT_RELU, CU_ACT_GELU, CU_ACT_SILU, CU_ACT_TANH };

enum cu_op_kind {
    CU_OP_ACT = 0,     /* dst = act(src), elementwise; CU_ACT_NONE is a plain conversion */
    CU_OP_GEMM,        /* G = src @ W^T (layer's weight) */
    CU_OP_BIAS_ACT,    /* dst = act(G + bias) (bias may be absent) */
    CU_OP_LAYERNORM,   /* dst = (src - mean) / sqrt(var + eps) * w + b, per row */
    CU_OP_SOFTMAX,     /* dst = softmax(src), per row */
};

struct cu_op {
    enum cu_op_kind kind;
    enum cu_buf src, dst;
    enum cu_dt src_dt, dst_dt;
    uint32_t in_cols, out_cols;   /* width read per row, width written per row */
    enum cu_act act;
    uint32_t layer;               /* model layer whose tensors the op uses (GEMM, BIAS_ACT, LN) */
    float eps;
};

struct cu_plan {
    uint32_t nops;
    struct cu_op *ops;            /* owned; cu_plan_fini frees */
    uint32_t width;               /* widest activation: columns of A, G and H */
    int need_h;                   /* H is used (half model with a linear layer) */
};

/* Builds the plan for m. Returns 0, -EINVAL (a layer list the engine cannot run: inconsistent
 * dims, a weight of another dtype or shape, an unknown kind; msg says which layer) or -ENOMEM.
 * On failure *p is left empty. Not thread-safe on the same plan; pure otherwise. */
int cu_plan_build(struct cu_plan *p, const struct oag_model *m, char *msg, size_t msglen);
void cu_plan_fini(struct cu_plan *p);

/* Name of an op kind / buffer, for logs and tests. */
const char *cu_op_name(enum cu_op_kind k);
const char *cu_buf_name(enum cu_buf b);

#endif
