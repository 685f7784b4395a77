/*
 * gen.h - writes a random model folder (config.json + model.safetensors) in the format model.h
 * reads. Used by tools/oag-gen-model and the tests; not needed by the supervisor.
 */
#ifndef OAG_MODEL_GEN_H
#define OAG_MODEL_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

struct oag_gen_layer {
    enum oag_layer_kind kind;
    uint32_t out_dim;           /* linear: output width; ignored otherwise */
    int bias;                   /* linear, layernorm: write a bias tensor */
    float eps;                  /* layernorm; 0: 1e-5 */
};

struct oag_gen_spec {
    const char *name;           /* config "name"; NULL: "random" */
    enum oag_dtype dtype;
    uint32_t input_dim;
    uint32_t nlayers;
    const struct oag_gen_layer *layers;
    uint64_t seed;
    uint32_t misalign;          /* 0..7 spaces after the 8-byte-padded header, so that the data
                                   section starts misaligned (tests of unaligned loads) */
};

/* Writes spec as a model folder dir (created if missing; existing files replaced atomically by
 * rename). The output is the last layer's width. Tensors are named "<layer index>.weight" and
 * "<layer index>.bias" as torch.nn.Sequential names them. Linear weights and biases are
 * uniform(-1/sqrt(in), 1/sqrt(in)) (torch's default init, so activations stay O(1)); layernorm
 * weights 1 + uniform(-0.25, 0.25), biases uniform(-0.25, 0.25). The same spec and seed give the
 * same bytes. The tensor file is streamed through a small buffer: any size works in O(1) memory.
 * Returns 0, or a negative errno with a one-line message in err: -EINVAL (invalid spec: the same
 * rules as the loader), -EFBIG (a dimension over 1 << 20), or the errno of a failed write. */
int oag_model_generate(const char *dir, const struct oag_gen_spec *spec, char *err,
                       size_t errlen);

#endif
