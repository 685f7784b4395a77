/*
 * test_cuda_golden.c - the cuda engine against PyTorch: DIR is a folder written by
 * `tools/export-model.py --demo DIR` (config.json, model.safetensors, sample_input.f32 and the
 * sample_output.f32 torch computed). Runs every sample row through the cuda engine (engine-pinned
 * buffers, asynchronous submit/reap) and compares with torch's output, relative to each row's
 * largest value: fp32 within 1e-4, fp16 1e-2, bf16 5e-2 (the weights' precision).
 *   test_cuda_golden DIR     (exit 77 without a GPU or without DIR)
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "model/model.h"

static float *read_all(const char *dir, const char *name, size_t *n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    float *buf = malloc((size_t)len + 4);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);
    *n = (size_t)len / 4;
    return buf;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        printf("SKIP: usage: test_cuda_golden DIR (from tools/export-model.py --demo DIR)\n");
        return 77;
    }
    const struct oag_engine_ops *ops = engine_lookup("cuda");
    if (!ops) {
        printf("SKIP: no cuda engine in this build\n");
        return 77;
    }
    char err[512];
    struct oag_model *m;
    if (oag_model_load(&m, argv[1], err, sizeof err)) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    size_t nin, nout;
    float *in = read_all(argv[1], "sample_input.f32", &nin);
    float *want = read_all(argv[1], "sample_output.f32", &nout);
    if (!in || !want)
        return 1;
    uint32_t n = (uint32_t)(nin / m->input_dim);
    if (!n || nin != (size_t)n * m->input_dim || nout != (size_t)n * m->output_dim) {
        fprintf(stderr, "sample sizes do not match the model\n");
        return 1;
    }
    uint32_t payload = (m->input_dim > m->output_dim ? m->input_dim : m->output_dim) * 4;
    struct oag_engine_params p = { .max_batch = n, .max_payload = payload, .model = m,
                                   .device = 0 };
    struct oag_engine *e;
    int rc = ops->create(&e, &p);
    if (rc == -ENODEV) {
        printf("SKIP: no GPU\n");
        return 77;
    }
    if (rc) {
        fprintf(stderr, "create: %s\n", strerror(-rc));
        return 1;
    }
    uint32_t ostride = ops->out_row_bytes ? ops->out_row_bytes(e) : payload;
    struct oag_batch b = { .n = n, .in_stride = m->input_dim * 4, .out_stride = ostride };
    b.in = ops->host_alloc(e, (size_t)n * b.in_stride);
    b.out = ops->host_alloc(e, (size_t)n * ostride);
    b.in_len = calloc(n, 4);
    b.out_len = calloc(n, 4);
    b.status = calloc(n, 4);
    memcpy(b.in, in, (size_t)n * b.in_stride);
    for (uint32_t i = 0; i < n; i++)
        b.in_len[i] = m->input_dim * 4;
    rc = ops->submit(e, &b);
    struct oag_batch *done = NULL;
    while (rc == 0 && !(done = ops->reap(e))) {
        struct pollfd pf = { .fd = ops->event_fd(e), .events = POLLIN };
        poll(&pf, 1, 1000);
    }
    double worst = 0;
    int bad = rc != 0 || !done || done->whole_rc != 0;
    for (uint32_t i = 0; !bad && i < n; i++) {
        const float *got = (const float *)(b.out + (size_t)i * ostride);
        const float *ref = want + (size_t)i * m->output_dim;
        double e_i = 0, s = 1e-30;
        for (uint32_t j = 0; j < m->output_dim; j++) {
            double d = fabs((double)got[j] - ref[j]);
            if (!(d <= e_i))
                e_i = d;
            if (fabs(ref[j]) > s)
                s = fabs(ref[j]);
        }
        if (!(e_i / s <= worst))
            worst = e_i / s;
        bad |= b.status[i] != 0;
    }
    double tol = m->dtype == OAG_DT_F32 ? 1e-4 : m->dtype == OAG_DT_F16 ? 1e-2 : 5e-2;
    printf("cuda vs torch, %s (%s): %u rows, max relative error %.3g (bound %g)\n", argv[1],
           oag_dtype_name(m->dtype), n, worst, tol);
    bad |= !(worst <= tol);
    ops->host_free(e, b.in);
    ops->host_free(e, b.out);
    ops->destroy(e);
    oag_model_free(m);
    printf(bad ? "FAIL\n" : "PASS\n");
    return bad ? 1 : 0;
}
