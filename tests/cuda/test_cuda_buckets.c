/*
 * test_cuda_buckets - graphs per batch-size bucket: batches of 1, 3, 32, 100 and max rows give
 * correct results with the default buckets (powers of two up to max_batch) and with the
 * scheduler's own list; padded rows never leak into results; strided rows (payload slots wider
 * than a row) copy correctly; a row of the wrong size fails alone with -EINVAL; three batches
 * in flight (OAG_CUDA_INFLIGHT=3: the engine says 3) come back in submission order; a fourth
 * is refused with -EBUSY; a batch over
 * max_batch with -EINVAL; an empty batch completes. Exits 77 without a GPU.
 */
#include "cu_test.h"
#include "cuda/cuda_engine.h"

static const struct oag_engine_ops *ops = &engine_cuda_ops;

static void check_rows(const char *what, const struct t_batch *tb, const struct oag_model *m,
                       const float *x, const int *ok, enum oag_dtype dt)
{
    uint32_t n = tb->b.n;
    double *ref = malloc((size_t)n * m->output_dim * sizeof *ref);
    t_ref(m, x, n, ref);
    for (uint32_t r = 0; r < n; r++) {
        int want = !ok || ok[r] ? 0 : -EINVAL;
        CHECK(tb->b.status[r] == want, "%s: row %u status %d", what, r, tb->b.status[r]);
        CHECK(tb->b.out_len[r] == (want ? 0 : m->output_dim * 4), "%s: row %u out_len %u", what,
              r, tb->b.out_len[r]);
    }
    double err = t_err(tb->b.out, tb->b.out_stride, ref, n, m->output_dim, ok);
    printf("  %-34s n=%-4u err/rms %.3e\n", what, n, err);
    CHECK(err <= t_bound(dt), "%s: n=%u error %.3e", what, n, err);
    free(ref);
}

static void sizes(const char *name, const struct oag_model *m, uint32_t max_batch,
                  const uint32_t *buckets, uint32_t nb, const uint32_t *want_b, uint32_t nwant,
                  uint32_t slot_bytes)
{
    struct oag_engine_params p = { .max_batch = max_batch, .max_payload = slot_bytes,
                                   .model = m, .device = 0, .buckets = buckets, .nbuckets = nb };
    struct oag_engine *e = NULL;
    int rc = ops->create(&e, &p);
    CHECK_EQ(rc, 0);
    if (rc)
        return;
    CHECK_EQ(ops->inflight(e), 3u);
    struct oag_cuda_stats st;
    oag__cuda_stats(e, &st);
    CHECK_EQ(st.nbuckets, nwant);
    printf("%s: buckets", name);
    for (uint32_t i = 0; i < st.nbuckets; i++) {
        printf(" %u", st.buckets[i]);
        if (i < nwant)
            CHECK(st.buckets[i] == want_b[i], "bucket %u is %u, expected %u", i, st.buckets[i],
                  want_b[i]);
    }
    printf("\n");

    const uint32_t ns[] = { 1, 3, 32, 100, max_batch };
    struct t_batch tb;
    t_batch_init(&tb, ops, e, max_batch, slot_bytes, slot_bytes);
    /* Big first, so small batches run on buffers holding another batch's rows: any row
     * beyond n that leaked into the results would show. */
    for (int k = 4; k >= 0; k--) {
        char what[64];
        snprintf(what, sizeof what, "%s n=%u", name, ns[k]);
        float *x = t_input(ns[k], m->input_dim, -2, 2);
        t_batch_fill(&tb, x, ns[k], m->input_dim);
        rc = t_run(&tb);
        CHECK(rc == 0, "%s: rc %d", what, rc);
        check_rows(what, &tb, m, x, NULL, m->dtype);
        free(x);
    }

    /* A row of the wrong size fails alone. */
    float *x = t_input(32, m->input_dim, -2, 2);
    t_batch_fill(&tb, x, 32, m->input_dim);
    tb.b.in_len[5] = 4;
    tb.b.in_len[17] = m->input_dim * 4 + 4;
    int ok[32];
    for (int i = 0; i < 32; i++)
        ok[i] = i != 5 && i != 17;
    CHECK_EQ(t_run(&tb), 0);
    check_rows("bad rows 5 and 17", &tb, m, x, ok, m->dtype);
    free(x);

    /* Three in flight, reaped in order; a fourth is refused. */
    struct t_batch fl[4];
    float *xs[3];
    const uint32_t fn[3] = { 100, 3, max_batch };
    for (int i = 0; i < 4; i++)
        t_batch_init(&fl[i], ops, e, max_batch, slot_bytes, slot_bytes);
    for (int i = 0; i < 3; i++) {
        xs[i] = t_input(fn[i], m->input_dim, -2, 2);
        t_batch_fill(&fl[i], xs[i], fn[i], m->input_dim);
        CHECK_EQ(ops->submit(e, &fl[i].b), 0);
    }
    t_batch_fill(&fl[3], xs[1], 3, m->input_dim);
    CHECK_EQ(ops->submit(e, &fl[3].b), -EBUSY);
    for (int i = 0; i < 3; i++) {
        struct oag_batch *b = t_reap_wait(ops, e, 20000);
        CHECK(b == &fl[i].b, "reap %d returned batch %p, expected %p", i, (void *)b,
              (void *)&fl[i].b);
        if (b == &fl[i].b) {
            CHECK_EQ(b->whole_rc, 0);
            check_rows("in flight", &fl[i], m, xs[i], NULL, m->dtype);
        }
    }
    CHECK(ops->reap(e) == NULL, "a fourth batch was reaped");
    for (int i = 0; i < 3; i++)
        free(xs[i]);
    for (int i = 0; i < 4; i++)
        t_batch_fini(&fl[i]);

    /* Over max_batch; empty. */
    tb.b.n = max_batch + 1;
    CHECK_EQ(ops->submit(e, &tb.b), -EINVAL);
    tb.b.n = 0;
    CHECK_EQ(t_run(&tb), 0);
    t_batch_fini(&tb);
    ops->destroy(e);
}

int main(void)
{
    if (oag__cuda_device_count() <= 0) {
        printf("test_cuda_buckets: no CUDA device, skipped\n");
        return T_SKIP;
    }
    t_tmp_init();
    setenv("OAG_CUDA_INFLIGHT", "3", 1); /* read by create() */
    static const struct oag_gen_layer L[] = {
        { .kind = OAG_L_LINEAR, .out_dim = 256, .bias = 1 }, { .kind = OAG_L_GELU },
        { .kind = OAG_L_LINEAR, .out_dim = 40, .bias = 1 },
    };
    static const enum oag_dtype dts[] = { OAG_DT_F16, OAG_DT_F32, OAG_DT_BF16 };
    for (int d = 0; d < 3; d++) {
        struct t_model tm;
        t_model_make(&tm, "buckets", dts[d], 96, 3, L, 42 + d, 0);
        char name[64];
        snprintf(name, sizeof name, "%s default", oag_dtype_name(dts[d]));
        static const uint32_t pow2[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256 };
        /* packed rows (stride = row bytes) */
        sizes(name, tm.m, 256, NULL, 0, pow2, 9, 96 * 4);
        /* the scheduler's list, max_batch not in it; rows in wider payload slots (strided) */
        static const uint32_t mine[] = { 8, 48, 150 };
        static const uint32_t want[] = { 8, 48, 150, 200 };
        snprintf(name, sizeof name, "%s given", oag_dtype_name(dts[d]));
        sizes(name, tm.m, 200, mine, 3, want, 4, 1024);
        t_model_free(&tm);
    }
    t_tmp_fini();
    if (t_failures) {
        fprintf(stderr, "test_cuda_buckets: %d failure(s)\n", t_failures);
        return 1;
    }
    printf("test_cuda_buckets: ok\n");
    return 0;
}
