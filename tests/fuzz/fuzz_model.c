/*
 * fuzz_model.c - libFuzzer harness for the model loader (src/model/model.c): config.json
 * (cJSON, then the oag-mlp schema) and the safetensors header (length, JSON, dtypes, shapes,
 * offsets).
 *
 * Input: u16 little-endian length L, then L bytes of config.json, then the whole
 * model.safetensors file. Both are written into a private temporary folder and loaded through
 * the real oag_model_load(). A model that loads must hold what model.h promises: every tensor's
 * bytes inside the mapping and equal to its shape times its dtype size, layer widths chained;
 * the harness then reads every weight through oag_to_f32 (a read past the mapping faults).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/model.h"

static char dir[64];

static void cleanup(void)
{
    char p[128];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

static void write_file(const char *name, const uint8_t *d, size_t n)
{
    char p[128];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        abort();
    while (n > 0) {
        ssize_t w = write(fd, d, n);
        if (w <= 0)
            abort();
        d += w;
        n -= (size_t)w;
    }
    close(fd);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(dir, sizeof dir, "/tmp/oag-fuzz-model-XXXXXX");
    if (!mkdtemp(dir))
        abort();
    atexit(cleanup);
    return 0;
}

static void check_tensor(const struct oag_model *m, const struct oag_tensor *t, int required)
{
    if (!t->data) {
        if (required)
            abort(); /* a required tensor absent from a loaded model */
        return;
    }
    const uint8_t *base = m->map, *p = t->data;
    uint64_t elems = (uint64_t)t->shape[0] * (t->ndim == 2 ? t->shape[1] : 1);
    if (t->ndim < 1 || t->ndim > 2 || t->nbytes != elems * oag_dtype_size(t->dtype) ||
        p < base || (uint64_t)(p - base) > m->map_size || t->nbytes > m->map_size - (uint64_t)(p - base))
        abort();
    float tmp[256];
    for (uint64_t i = 0; i < elems; i += 256) {
        size_t n = elems - i < 256 ? (size_t)(elems - i) : 256;
        oag_to_f32(tmp, p + i * oag_dtype_size(t->dtype), t->dtype, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t clen = (size_t)data[0] | (size_t)data[1] << 8;
    if (clen > size - 2)
        clen = size - 2;
    write_file("config.json", data + 2, clen);
    write_file("model.safetensors", data + 2 + clen, size - 2 - clen);

    struct oag_model *m = NULL;
    char err[256];
    int rc = oag_model_load(&m, dir, err, sizeof err);
    if (getenv("OAG_FUZZ_VERBOSE"))
        fprintf(stderr, "oag_model_load: %d %s\n", rc, err);
    if (rc == 0) {
        if (!m || m->nlayers == 0 || !m->layers)
            abort();
        uint32_t width = m->input_dim;
        for (uint32_t i = 0; i < m->nlayers; i++) {
            const struct oag_layer *l = &m->layers[i];
            if (l->in_dim != width || l->in_dim > m->max_dim || l->out_dim > m->max_dim)
                abort(); /* layer widths must chain */
            if (l->kind == OAG_L_LINEAR) {
                check_tensor(m, &l->weight, 1);
                check_tensor(m, &l->bias, 0);
                if (l->weight.shape[0] != l->out_dim || l->weight.shape[1] != l->in_dim)
                    abort();
            } else if (l->kind == OAG_L_LAYERNORM) {
                check_tensor(m, &l->weight, 1);
                check_tensor(m, &l->bias, 0);
            }
            width = l->out_dim;
        }
        if (width != m->output_dim)
            abort();
        oag_model_free(m);
    } else {
        if (m || err[0] == '\0' || rc >= 0)
            abort(); /* a refusal leaves nothing behind and always says why */
    }
    return 0;
}
