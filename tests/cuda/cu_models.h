/*
 * cu_models.h - the model shapes the CUDA tests run: each layer kind alone and in the
 * combinations the planner treats differently (activation first, activation after layernorm,
 * linear without bias, layernorm without bias, softmax last, misaligned tensor data).
 */
#ifndef OAG_TESTS_CU_MODELS_H
#define OAG_TESTS_CU_MODELS_H

#include "model/gen.h"

struct t_spec {
    const char *name;
    uint32_t in_dim, n;
    struct oag_gen_layer L[8];
    uint32_t misalign;
};

#define T_LIN(o, b) { .kind = OAG_L_LINEAR, .out_dim = (o), .bias = (b) }
#define T_LN(b) { .kind = OAG_L_LAYERNORM, .bias = (b) }
#define T_K(k) { .kind = (k) }

static const struct t_spec t_specs[] = {
    { "linear", 40, 1, { T_LIN(24, 1) }, 0 },
    { "relu", 64, 3, { T_LIN(96, 1), T_K(OAG_L_RELU), T_LIN(33, 1) }, 0 },
    { "gelu", 64, 3, { T_LIN(80, 1), T_K(OAG_L_GELU), T_LIN(16, 1) }, 3 },
    { "silu", 48, 3, { T_LIN(72, 1), T_K(OAG_L_SILU), T_LIN(20, 0) }, 0 },
    { "tanh", 50, 3, { T_LIN(64, 0), T_K(OAG_L_TANH), T_LIN(30, 1) }, 5 },
    { "layernorm", 48, 1, { T_LN(0) }, 0 },
    { "ln-mlp", 48, 4, { T_LIN(64, 1), T_LN(1), T_K(OAG_L_GELU), T_LIN(32, 1) }, 0 },
    { "softmax", 32, 2, { T_LIN(10, 1), T_K(OAG_L_SOFTMAX) }, 0 },
    { "act-first", 40, 3, { T_K(OAG_L_RELU), T_LIN(36, 1), T_K(OAG_L_TANH) }, 0 },
    { "deep", 128, 7, { T_LIN(256, 1), T_K(OAG_L_RELU), T_LIN(256, 1), T_K(OAG_L_SILU), T_LN(1),
                        T_LIN(64, 1), T_K(OAG_L_SOFTMAX) }, 1 },
    { "mlp768", 768, 3, { T_LIN(768, 1), T_K(OAG_L_RELU), T_LIN(768, 1) }, 0 },
};
#define T_NSPECS (sizeof t_specs / sizeof t_specs[0])

#endif
