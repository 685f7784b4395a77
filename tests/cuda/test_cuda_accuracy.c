/*
 * test_cuda_accuracy - the cuda engine against a float64 reference (and against the cpu engine
 * when it is built) on random models of every layer kind and weight dtype, loaded from disk by
 * the real loader (so weights are uploaded from the mmap, misaligned tensors included).
 * Bounds per dtype: t_bound() in cu_test.h. Exits 77 without a GPU.
 */
#include "cu_models.h"
#include "cu_test.h"
#include "cuda/cuda_engine.h"

#ifdef CU_TEST_CPU
extern const struct oag_engine_ops engine_cpu_ops;
#endif

static double run_engine(const struct oag_engine_ops *ops, const struct oag_model *m,
                         const float *x, uint32_t n, const double *ref, const char *what,
                         float **keep)
{
    uint32_t wide = m->input_dim > m->output_dim ? m->input_dim : m->output_dim;
    struct oag_engine_params p = { .max_batch = 64, .model = m, .device = 0,
                                   .max_payload = wide * 4 };
    if (ops != &engine_cuda_ops)
        p.device = -1;
    struct oag_engine *e = NULL;
    int rc = ops->create(&e, &p);
    CHECK(rc == 0, "%s: %s create: %d", what, ops->name, rc);
    if (rc)
        return INFINITY;
    struct t_batch tb;
    t_batch_init(&tb, ops, e, 64, m->input_dim * 4, m->output_dim * 4);
    t_batch_fill(&tb, x, n, m->input_dim);
    rc = t_run(&tb);
    CHECK(rc == 0, "%s: %s batch: %d", what, ops->name, rc);
    for (uint32_t r = 0; r < n; r++) {
        CHECK(tb.b.status[r] == 0, "%s: row %u status %d", what, r, tb.b.status[r]);
        CHECK(tb.b.out_len[r] == m->output_dim * 4, "%s: row %u out_len %u", what, r,
              tb.b.out_len[r]);
    }
    double err = rc ? INFINITY : t_err(tb.b.out, tb.b.out_stride, ref, n, m->output_dim, NULL);
    if (keep) {
        *keep = malloc((size_t)n * m->output_dim * 4);
        memcpy(*keep, tb.b.out, (size_t)n * m->output_dim * 4);
    }
    t_batch_fini(&tb);
    ops->destroy(e);
    return err;
}

int main(void)
{
    if (oag__cuda_device_count() <= 0) {
        printf("test_cuda_accuracy: no CUDA device, skipped\n");
        return T_SKIP;
    }
    static const enum oag_dtype dts[] = { OAG_DT_F32, OAG_DT_F16, OAG_DT_BF16 };
    const uint32_t n = 37;
    t_tmp_init();
    printf("%-10s %-9s %12s %12s %12s %9s\n", "model", "dtype", "cuda err", "cpu err",
           "cuda-vs-cpu", "bound");
    for (size_t s = 0; s < T_NSPECS; s++)
        for (size_t d = 0; d < 3; d++) {
            const struct t_spec *sp = &t_specs[s];
            struct t_model tm;
            t_model_make(&tm, sp->name, dts[d], sp->in_dim, sp->n, sp->L, 100 + s, sp->misalign);
            const struct oag_model *m = tm.m;
            char what[64];
            snprintf(what, sizeof what, "%s/%s", sp->name, oag_dtype_name(dts[d]));
            float *x = t_input(n, m->input_dim, -2, 2);
            double *ref = malloc((size_t)n * m->output_dim * sizeof *ref);
            t_ref(m, x, n, ref);
            float *ycu = NULL;
            double ecu = run_engine(&engine_cuda_ops, m, x, n, ref, what, &ycu);
            CHECK(ecu <= t_bound(dts[d]), "%s: cuda error %.3e > %.1e", what, ecu,
                  t_bound(dts[d]));
            double ecpu = NAN, ediff = NAN;
#ifdef CU_TEST_CPU
            float *ycpu = NULL;
            ecpu = run_engine(&engine_cpu_ops, m, x, n, ref, what, &ycpu);
            CHECK(ecpu <= 1e-4, "%s: cpu error %.3e", what, ecpu);
            if (ycu && ycpu) {
                /* the two engines against each other, the cpu one as the reference */
                double *r2 = malloc((size_t)n * m->output_dim * sizeof *r2);
                for (size_t i = 0; i < (size_t)n * m->output_dim; i++)
                    r2[i] = ycpu[i];
                ediff = t_err((const uint8_t *)ycu, m->output_dim * 4, r2, n, m->output_dim,
                              NULL);
                CHECK(ediff <= t_bound(dts[d]) + 1e-4, "%s: cuda vs cpu %.3e", what, ediff);
                free(r2);
            }
            free(ycpu);
#endif
            printf("%-10s %-9s %12.3e %12.3e %12.3e %9.1e\n", sp->name, oag_dtype_name(dts[d]),
                   ecu, ecpu, ediff, t_bound(dts[d]));
            free(ycu);
            free(x);
            free(ref);
            t_model_free(&tm);
        }
    t_tmp_fini();
    if (t_failures) {
        fprintf(stderr, "test_cuda_accuracy: %d failure(s)\n", t_failures);
        return 1;
    }
    printf("test_cuda_accuracy: ok\n");
    return 0;
}
