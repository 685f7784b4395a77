/*
 * model.h - a feed-forward model loaded from a folder: config.json + model.safetensors.
 *
 * The safetensors file is mmap'ed read-only and never copied whole; tensors point into the
 * mapping. Everything (header JSON, offsets, sizes, dtypes, shapes, the config's layer list) is
 * validated before oag_model_load() returns, so an engine never sees a malformed model.
 *
 * config.json:
 *   {
 *     "format": "oag-mlp", "version": 1,
 *     "name": "demo",                    optional, <= 63 chars
 *     "dtype": "float32" | "float16" | "bfloat16",   dtype of every weight tensor
 *     "input_dim": 768, "output_dim": 768,
 *     "layers": [
 *       {"type": "linear", "weight": "0.weight", "bias": "0.bias"},   bias optional;
 *                                          weight shape [out, in] as in torch.nn.Linear
 *       {"type": "relu"} | {"type": "gelu"} | {"type": "silu"} | {"type": "tanh"},
 *       {"type": "layernorm", "weight": "2.weight", "bias": "2.bias", "eps": 1e-5},
 *       {"type": "softmax"}                 only as the last layer
 *     ]
 *   }
 * A task's input is one row of input_dim float32 values; its result one row of output_dim
 * float32 values (little-endian), whatever the weights' dtype.
 */
#ifndef OAG_MODEL_MODEL_H
#define OAG_MODEL_MODEL_H

#include <stddef.h>
#include <stdint.h>

enum oag_dtype { OAG_DT_F32 = 0, OAG_DT_F16 = 1, OAG_DT_BF16 = 2 };

enum oag_layer_kind {
    OAG_L_LINEAR = 0, OAG_L_RELU, OAG_L_GELU, OAG_L_SILU, OAG_L_TANH, OAG_L_LAYERNORM,
    OAG_L_SOFTMAX,
};

struct oag_tensor {
    const char *name;        /* points into the model's own storage */
    enum oag_dtype dtype;
    uint32_t ndim;           /* 1 or 2 */
    uint32_t shape[2];       /* [rows, cols] for 2-D ([out, in] for a linear weight); [n, 1] 1-D */
    const void *data;        /* into the read-only mapping; NULL when absent (no bias) */
    uint64_t nbytes;
};

struct oag_layer {
    enum oag_layer_kind kind;
    uint32_t in_dim, out_dim;   /* width of this layer's input and output */
    struct oag_tensor weight;   /* linear: [out, in]; layernorm: [dim] */
    struct oag_tensor bias;     /* linear: [out] or absent; layernorm: [dim] */
    float eps;                  /* layernorm */
};

struct oag_model {
    char name[64];
    char path[256];             /* the folder it was loaded from */
    enum oag_dtype dtype;
    uint32_t input_dim, output_dim;
    uint32_t max_dim;           /* widest activation, for scratch buffers */
    uint32_t nlayers;
    struct oag_layer *layers;
    uint64_t param_bytes;       /* bytes of all tensors in the file */
    const void *map;            /* the safetensors mapping */
    size_t map_size;
    void *priv;                 /* loader's own storage */
};

/* Loads and validates the model in folder dir. Returns 0 and *out, or a negative errno with a
 * one-line message in err naming the file, the tensor or key, and the problem:
 * -ENOENT (missing file), -EINVAL (bad JSON, bad config, shape/dtype mismatch, bad offsets),
 * -EFBIG (absurd sizes), -ENOMEM. Never returns a partially valid model. */
/* Details of the loader (model.c): on failure *out is NULL. Other errnos: -ENAMETOOLONG (dir
 * longer than path[] holds), -EACCES etc. from open(). Limits (-EFBIG past them): header 100 MiB,
 * config.json 16 MiB, any dimension 1 << 20, 65536 layers. Every tensor in the file must have
 * the config's dtype, a 1-D or 2-D shape of positive dims, and offsets inside the data section
 * that do not overlap; unreferenced tensors are allowed. A linear or layernorm "bias" may be
 * absent or null; layernorm "eps" defaults to 1e-5. "name" defaults to the folder's name.
 * Tensor data is not aligned in general: read it through oag_to_f32. The mapping is of the
 * file as it is: a file truncated by someone else while loaded makes readers fault (SIGBUS),
 * so replace model files by rename, never in place. Safe to call from several threads. */
int oag_model_load(struct oag_model **out, const char *dir, char *err, size_t errlen);

/* Unmaps and frees; NULL is a no-op. Engines must be done with the tensors first. */
void oag_model_free(struct oag_model *m);

/* Bytes per element; name ("float32", ...). */
size_t oag_dtype_size(enum oag_dtype dt);
const char *oag_dtype_name(enum oag_dtype dt);

/* Half conversions (round to nearest even for float -> half). */
float oag_f16_to_f32(uint16_t h);
float oag_bf16_to_f32(uint16_t h);
uint16_t oag_f32_to_f16(float f);
uint16_t oag_f32_to_bf16(float f);

/* Converts n elements of src (dtype dt) to float32. */
void oag_to_f32(float *dst, const void *src, enum oag_dtype dt, size_t n);

#endif
