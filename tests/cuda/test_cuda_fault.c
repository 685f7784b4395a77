/*
 * test_cuda_fault - injected failures that leave the CUDA context usable: an absurd device
 * allocation on the batch path (whole_rc -ENOMEM) and a kernel launch the runtime refuses
 * (whole_rc -EIO, the slot rebuilt). Each fails exactly its own batch, every row of it, and
 * the next batch is correct; a failure between two other batches in flight leaves them intact
 * and in order. Exits 77 without a GPU. (The sticky kind, a trap on the device, is
 * test_cuda_reset.)
 */
#include "cu_test.h"
#include "cuda/cuda_engine.h"

static const struct oag_engine_ops *ops = &engine_cuda_ops;
static struct t_model tm;
static struct oag_engine *e;

static void good(struct t_batch *tb, uint32_t n, const char *what)
{
    const struct oag_model *m = tm.m;
    float *x = t_input(n, m->input_dim, -2, 2);
    double *ref = malloc((size_t)n * m->output_dim * sizeof *ref);
    t_ref(m, x, n, ref);
    t_batch_fill(tb, x, n, m->input_dim);
    int rc = t_run(tb);
    CHECK(rc == 0, "%s: rc %d", what, rc);
    double err = t_err(tb->b.out, tb->b.out_stride, ref, n, m->output_dim, NULL);
    CHECK(err <= t_bound(m->dtype), "%s: error %.3e", what, err);
    for (uint32_t r = 0; r < n; r++)
        CHECK(tb->b.status[r] == 0, "%s: row %u status %d", what, r, tb->b.status[r]);
    printf("  %-40s rc %d err/rms %.3e\n", what, rc, err);
    free(x);
    free(ref);
}

static void failing(struct t_batch *tb, enum oag_cuda_fault f, int want, const char *what)
{
    const struct oag_model *m = tm.m;
    float *x = t_input(20, m->input_dim, -2, 2);
    t_batch_fill(tb, x, 20, m->input_dim);
    oag__cuda_fault_next(e, f);
    int rc = t_run(tb);
    CHECK(rc == want, "%s: rc %d, expected %d", what, rc, want);
    for (uint32_t r = 0; r < 20; r++) {
        CHECK(tb->b.status[r] == want, "%s: row %u status %d", what, r, tb->b.status[r]);
        CHECK(tb->b.out_len[r] == 0, "%s: row %u out_len %u", what, r, tb->b.out_len[r]);
    }
    printf("  %-40s rc %d (%s)\n", what, rc, strerror(-rc));
    free(x);
}

int main(void)
{
    if (oag__cuda_device_count() <= 0) {
        printf("test_cuda_fault: no CUDA device, skipped\n");
        return T_SKIP;
    }
    t_tmp_init();
    static const struct oag_gen_layer L[] = {
        { .kind = OAG_L_LINEAR, .out_dim = 128, .bias = 1 }, { .kind = OAG_L_RELU },
        { .kind = OAG_L_LINEAR, .out_dim = 32, .bias = 1 },
    };
    t_model_make(&tm, "fault", OAG_DT_F16, 64, 3, L, 5, 0);
    struct oag_engine_params p = { .max_batch = 64, .max_payload = 256, .model = tm.m,
                                   .device = 0 };
    int rc = ops->create(&e, &p);
    CHECK_EQ(rc, 0);
    if (rc)
        return 1;
    struct t_batch tb[3];
    for (int i = 0; i < 3; i++)
        t_batch_init(&tb[i], ops, e, 64, 256, 128);

    good(&tb[0], 40, "before");
    failing(&tb[0], OAG_CUDA_FAULT_ALLOC, -ENOMEM, "absurd allocation");
    good(&tb[0], 40, "after the allocation failure");
    failing(&tb[1], OAG_CUDA_FAULT_LAUNCH, -EIO, "refused launch");
    good(&tb[1], 40, "after the refused launch");
    struct oag_cuda_stats st;
    oag__cuda_stats(e, &st);
    CHECK(st.slot_rebuilds >= 2, "slot rebuilds %llu", (unsigned long long)st.slot_rebuilds);
    CHECK_EQ(st.resets, 0);
    CHECK_EQ(st.failed, 2);

    /* ok, failing, ok: all three in flight at once */
    const struct oag_model *m = tm.m;
    float *x[3];
    double *ref[3];
    for (int i = 0; i < 3; i++) {
        x[i] = t_input(50, m->input_dim, -2, 2);
        ref[i] = malloc((size_t)50 * m->output_dim * sizeof *ref[i]);
        t_ref(m, x[i], 50, ref[i]);
        t_batch_fill(&tb[i], x[i], 50, m->input_dim);
        if (i == 1)
            oag__cuda_fault_next(e, OAG_CUDA_FAULT_LAUNCH);
        CHECK_EQ(ops->submit(e, &tb[i].b), 0);
    }
    for (int i = 0; i < 3; i++) {
        struct oag_batch *b = t_reap_wait(ops, e, 20000);
        CHECK(b == &tb[i].b, "reap %d: wrong batch", i);
        if (b != &tb[i].b)
            continue;
        if (i == 1) {
            CHECK_EQ(b->whole_rc, -EIO);
        } else {
            CHECK_EQ(b->whole_rc, 0);
            double err = t_err(b->out, b->out_stride, ref[i], 50, m->output_dim, NULL);
            CHECK(err <= t_bound(m->dtype), "in flight %d: error %.3e", i, err);
            printf("  in flight %d around a failing batch        err/rms %.3e\n", i, err);
        }
        free(x[i]);
        free(ref[i]);
    }
    good(&tb[2], 64, "after all");

    for (int i = 0; i < 3; i++)
        t_batch_fini(&tb[i]);
    ops->destroy(e);
    t_model_free(&tm);
    t_tmp_fini();
    if (t_failures) {
        fprintf(stderr, "test_cuda_fault: %d failure(s)\n", t_failures);
        return 1;
    }
    printf("test_cuda_fault: ok\n");
    return 0;
}
