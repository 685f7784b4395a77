/*
 * test_cuda_rowptr - rows by pointer: the engine reads inputs from, and writes results into,
 * host memory the scheduler registered (an agent's lane: a shared memfd mapping), at whatever
 * slot each row has, with no copy through the batch buffers.
 *
 * Checks, for batches of 1, 7 and 64 rows (fp16 and fp32 models):
 *   - host_register of a MAP_SHARED memfd region succeeds, counted (a second registration of the
 *     same region, then two unregistrations);
 *   - results written to the out pointers match the float64 reference, including rows 16-byte
 *     aligned (the lanes' slots), rows only 4-byte aligned, and rows pointing into the batch's
 *     own pinned buffers (rows the scheduler copied) mixed in the same batch;
 *   - a row of the wrong size fails alone with -EINVAL and its output slot is left untouched;
 *   - memory beyond each row's output is never written (guard bytes around every slot);
 *   - by-pointer and plain batches in flight together (3) each come back right, in order;
 *   - runs: rows adjacent in host memory (a lane's consecutive payloads) go by the copy engines
 *     once a run reaches OAG_CUDA_DMA_MIN bytes (set low here): runs of 1..13 rows with copied
 *     rows and a failed row breaking them come back right, with nothing written between runs or
 *     into the failed row's slot, and the engine's counters show rows moved by copy engine;
 *     a batch that is one whole run (no row left to the kernels: the plan's graph alone) too;
 *   - the launch thread (OAG_CUDA_LAUNCHER=1, in the 4-block pass; the other pass enqueues
 *     everything on the caller's thread): a batch with runs, a plain one
 *     and a by-pointer one without runs in flight together come back in order, each right; a
 *     launch refused on the launch thread fails that batch alone (-EIO) and the next batch
 *     with runs is right.
 * Both launch shapes of the gather/scatter kernels: one block per row (the default) and a few
 * blocks walking the rows (OAG_CUDA_ROW_BLOCKS=4).
 * Exits 77 without a GPU, or when the device cannot use registered host memory by pointer.
 */
#include <sys/mman.h>

#include "cu_test.h"
#include "cuda/cuda_engine.h"

static const struct oag_engine_ops *ops = &engine_cuda_ops;

#define SLOT 1152u          /* a lane's payload stride, with room for guards between rows */
#define LANE_BYTES (4u << 20)
#define GUARD 0xa5

struct lane {
    uint8_t *map;
    size_t len;
};

static uint8_t *in_slot(struct lane *l, uint32_t r) { return l->map + 4096 + (size_t)r * SLOT + 32; }
static uint8_t *out_slot(struct lane *l, uint32_t r)
{
    return l->map + LANE_BYTES / 2 + (size_t)r * SLOT + 32;
}

/* Per row of the batch being checked: guard bytes expected just before / just after its output
 * (rows in a run have neighbours there instead). */
static uint8_t g_before[64], g_after[64];

/* Fills a by-pointer batch of n rows: inputs x, placed as described at the top. bad: a row given
 * the wrong length (or UINT32_MAX for none). */
static void place(struct t_batch *tb, struct lane *l, const float *x, uint32_t n, uint32_t dim,
                  uint32_t bad)
{
    tb->b.n = n;
    for (uint32_t r = 0; r < n; r++) {
        const uint8_t *src;
        uint8_t *dst;
        if (r % 5 == 2) { /* a copied row: in the batch's own buffers */
            src = tb->b.in + (size_t)r * tb->b.in_stride;
            dst = tb->b.out + (size_t)r * tb->b.out_stride;
        } else if (r % 5 == 3) { /* 4-byte aligned only */
            src = in_slot(l, r) + 4;
            dst = out_slot(l, r) + 4;
        } else {
            src = in_slot(l, r);
            dst = out_slot(l, r);
        }
        g_before[r] = g_after[r] = r % 5 != 2;
        memcpy((uint8_t *)src, x + (size_t)r * dim, dim * 4);
        tb->b.in_ptr[r] = src;
        tb->b.out_ptr[r] = dst;
        tb->b.in_len[r] = r == bad ? dim * 4 - 4 : dim * 4;
        tb->b.status[r] = 12345;
    }
}

/* A by-pointer batch in runs: rows packed back to back in host memory (in and out), runs of
 * 1, 2, 3, 5, 8, 13 rows with a free row between runs; unless whole, every 7th row is a copied
 * one (batch buffers), which ends the run. whole: one run of all n rows. */
static void place_runs(struct t_batch *tb, struct lane *l, const float *x, uint32_t n,
                       uint32_t dim, uint32_t odim, uint32_t bad, int whole)
{
    static const uint32_t lens[] = { 1, 2, 3, 5, 8, 13 };
    uint8_t *ib = l->map + 4096, *ob = l->map + LANE_BYTES / 2;
    uint32_t pos = 0, k = 0, left = lens[0];
    int first = 1;
    tb->b.n = n;
    for (uint32_t r = 0; r < n; r++) {
        const uint8_t *src;
        uint8_t *dst;
        if (!whole && r % 7 == 6) {
            src = tb->b.in + (size_t)r * tb->b.in_stride;
            dst = tb->b.out + (size_t)r * tb->b.out_stride;
            g_before[r] = g_after[r] = 0;
        } else {
            src = ib + (size_t)pos * dim * 4;
            dst = ob + (size_t)pos * odim * 4;
            g_before[r] = (uint8_t)first; /* the free row before the run */
            g_after[r] = 0;
            first = 0;
            pos++;
            if (!whole && --left == 0) {
                g_after[r] = 1; /* the free row after the run */
                first = 1;
                pos++;
                k = (k + 1) % (sizeof lens / sizeof lens[0]);
                left = lens[k];
            }
            if (r + 1 == n)
                g_after[r] = 1;
        }
        memcpy((uint8_t *)src, x + (size_t)r * dim, dim * 4);
        tb->b.in_ptr[r] = src;
        tb->b.out_ptr[r] = dst;
        tb->b.in_len[r] = r == bad ? dim * 4 - 4 : dim * 4;
        tb->b.status[r] = 12345;
    }
}

/* Checks a finished by-pointer batch against the reference; guard bytes around each output. */
static void verify(const char *what, struct t_batch *tb, const struct oag_model *m,
                   const float *x, uint32_t bad)
{
    uint32_t n = tb->b.n, od = m->output_dim;
    double *ref = malloc((size_t)n * od * sizeof *ref);
    uint8_t *y = malloc((size_t)n * od * 4);
    int *ok = malloc(n * sizeof *ok);
    t_ref(m, x, n, ref);
    for (uint32_t r = 0; r < n; r++) {
        ok[r] = r != bad;
        int want = ok[r] ? 0 : -EINVAL;
        CHECK(tb->b.status[r] == want, "%s: row %u status %d", what, r, tb->b.status[r]);
        const uint8_t *o = tb->b.out_ptr[r];
        if (ok[r]) {
            memcpy(y + (size_t)r * od * 4, o, od * 4);
        } else {
            memset(y + (size_t)r * od * 4, 0, od * 4);
            for (uint32_t i = 0; i < od * 4; i++)
                if (o[i] != GUARD) {
                    CHECK(0, "%s: failed row %u: its output slot was written", what, r);
                    break;
                }
        }
        if (g_after[r]) /* lane slots: nothing written past the row */
            CHECK(o[od * 4] == GUARD && o[od * 4 + 1] == GUARD, "%s: row %u: written past its "
                  "end", what, r);
        if (g_before[r])
            CHECK(o[-1] == GUARD, "%s: row %u: written before its start", what, r);
    }
    double err = t_err(y, od * 4, ref, n, od, ok);
    printf("  %-28s n=%-3u err/rms %.3e\n", what, n, err);
    CHECK(err <= t_bound(m->dtype), "%s: error %.3e", what, err);
    free(ok);
    free(y);
    free(ref);
}

static void run_model(const struct oag_model *m)
{
    const uint32_t mb = 64;
    struct oag_engine_params p = { .max_batch = mb, .max_payload = SLOT - 32, .model = m,
                                   .device = 0 };
    struct oag_engine *e = NULL;
    int rc = ops->create(&e, &p);
    CHECK_EQ(rc, 0);
    if (rc)
        return;
    struct lane l = { .len = LANE_BYTES };
    int fd = memfd_create("rowptr-lane", MFD_CLOEXEC);
    CHECK(fd >= 0 && ftruncate(fd, (off_t)l.len) == 0, "memfd");
    l.map = mmap(NULL, l.len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(l.map != MAP_FAILED, "mmap");
    close(fd);
    rc = ops->host_register(e, l.map, l.len);
    if (rc == -ENOTSUP) {
        printf("  device cannot use registered host memory by pointer: skipped\n");
        munmap(l.map, l.len);
        ops->destroy(e);
        exit(T_SKIP);
    }
    CHECK_EQ(rc, 0);
    CHECK_EQ(ops->host_register(e, l.map, l.len), 0); /* counted */

    struct t_batch tb[3];
    for (int i = 0; i < 3; i++) {
        t_batch_init(&tb[i], ops, e, mb, SLOT - 32, SLOT - 32);
        tb[i].b.in_ptr = calloc(mb, sizeof *tb[i].b.in_ptr);
        tb[i].b.out_ptr = calloc(mb, sizeof *tb[i].b.out_ptr);
    }
    const uint32_t ns[] = { 64, 1, 7 };
    for (int k = 0; k < 3; k++) {
        char what[96];
        snprintf(what, sizeof what, "%s by pointer (blocks %s)", oag_dtype_name(m->dtype),
                 getenv("OAG_CUDA_ROW_BLOCKS"));
        float *x = t_input(ns[k], m->input_dim, -2, 2);
        memset(l.map, GUARD, l.len);
        memset(tb[0].b.out, GUARD, (size_t)mb * tb[0].b.out_stride);
        uint32_t bad = ns[k] > 1 ? ns[k] - 2 : UINT32_MAX;
        place(&tb[0], &l, x, ns[k], m->input_dim, bad);
        CHECK_EQ(t_run(&tb[0]), 0);
        verify(what, &tb[0], m, x, bad);
        free(x);
    }

    /* Three in flight: by pointer, plain, by pointer (rows of the two by-pointer batches in
     * different slots). They come back in order, each right. */
    float *x0 = t_input(40, m->input_dim, -2, 2), *x1 = t_input(33, m->input_dim, -2, 2),
          *x2 = t_input(17, m->input_dim, -2, 2);
    memset(l.map, GUARD, l.len);
    place(&tb[0], &l, x0, 40, m->input_dim, UINT32_MAX);
    const uint8_t **ip = tb[1].b.in_ptr;
    uint8_t **op = tb[1].b.out_ptr;
    tb[1].b.in_ptr = NULL;
    tb[1].b.out_ptr = NULL;
    t_batch_fill(&tb[1], x1, 33, m->input_dim);
    struct lane l2 = { .map = l.map + 48 * SLOT, .len = l.len - 48 * SLOT };
    place(&tb[2], &l2, x2, 17, m->input_dim, UINT32_MAX);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(ops->submit(e, &tb[i].b), 0);
    for (int i = 0; i < 3; i++) {
        struct oag_batch *got = t_reap_wait(ops, e, 20000);
        CHECK(got == &tb[i].b, "in flight: batch %d came back out of order", i);
        if (got)
            CHECK_EQ(got->whole_rc, 0);
    }
    verify("in flight, by pointer", &tb[0], m, x0, UINT32_MAX);
    uint32_t od = m->output_dim;
    double *ref = malloc((size_t)33 * od * sizeof *ref);
    t_ref(m, x1, 33, ref);
    double err = t_err(tb[1].b.out, tb[1].b.out_stride, ref, 33, od, NULL);
    printf("  %-28s n=%-3u err/rms %.3e\n", "in flight, plain", 33u, err);
    CHECK(err <= t_bound(m->dtype), "plain batch in flight: error %.3e", err);
    free(ref);
    verify("in flight, by pointer (2)", &tb[2], m, x2, UINT32_MAX);
    tb[1].b.in_ptr = ip;
    tb[1].b.out_ptr = op;
    free(x0);
    free(x1);
    free(x2);

    /* Runs by the copy engines (OAG_CUDA_DMA_MIN is 1024 here: runs of 2+ input rows, 4+
     * output rows). */
    for (int whole = 0; whole < 2; whole++) {
        const uint32_t n = whole ? 64 : 61;
        float *x = t_input(n, m->input_dim, -2, 2);
        memset(l.map, GUARD, l.len);
        memset(tb[0].b.out, GUARD, (size_t)mb * tb[0].b.out_stride);
        uint32_t bad = whole ? UINT32_MAX : 17; /* inside the run of 8 */
        struct oag_cuda_stats st0, st1;
        oag__cuda_stats(e, &st0);
        place_runs(&tb[0], &l, x, n, m->input_dim, m->output_dim, bad, whole);
        CHECK_EQ(t_run(&tb[0]), 0);
        oag__cuda_stats(e, &st1);
        char what[96];
        snprintf(what, sizeof what, "%s runs%s", oag_dtype_name(m->dtype), whole ? ", whole" : "");
        verify(what, &tb[0], m, x, bad);
        uint64_t dma = st1.dma_rows - st0.dma_rows, kern = st1.kern_rows - st0.kern_rows;
        printf("  %-28s rows by copy engine %llu, by kernel %llu (in + out)\n", what,
               (unsigned long long)dma, (unsigned long long)kern);
        if (whole)
            CHECK(dma == 2 * n && kern == 0, "%s: %llu rows by copy engine, %llu by kernel", what,
                  (unsigned long long)dma, (unsigned long long)kern);
        else
            CHECK(dma >= n && kern > 0, "%s: %llu rows by copy engine, %llu by kernel", what,
                  (unsigned long long)dma, (unsigned long long)kern);
        free(x);
    }

    /* In flight through the launch thread: runs (handed over), plain and by pointer without
     * runs (queued behind it), in order. */
    {
        float *xa = t_input(64, m->input_dim, -2, 2), *xb = t_input(33, m->input_dim, -2, 2),
              *xc = t_input(17, m->input_dim, -2, 2);
        memset(l.map, GUARD, l.len);
        memset(tb[0].b.out, GUARD, (size_t)mb * tb[0].b.out_stride);
        place_runs(&tb[0], &l, xa, 64, m->input_dim, m->output_dim, UINT32_MAX, 1);
        uint8_t gb[64], ga[64];
        memcpy(gb, g_before, sizeof gb);
        memcpy(ga, g_after, sizeof ga);
        const uint8_t **ip1 = tb[1].b.in_ptr;
        uint8_t **op1 = tb[1].b.out_ptr;
        tb[1].b.in_ptr = NULL;
        tb[1].b.out_ptr = NULL;
        t_batch_fill(&tb[1], xb, 33, m->input_dim);
        /* the third's rows sit in slots past the packed ones */
        struct lane l3 = { .map = l.map + 48 * SLOT, .len = l.len - 48 * SLOT };
        place(&tb[2], &l3, xc, 17, m->input_dim, UINT32_MAX);
        for (int i = 0; i < 3; i++)
            CHECK_EQ(ops->submit(e, &tb[i].b), 0);
        for (int i = 0; i < 3; i++) {
            struct oag_batch *got = t_reap_wait(ops, e, 20000);
            CHECK(got == &tb[i].b, "launch thread: batch %d came back out of order", i);
            if (got)
                CHECK_EQ(got->whole_rc, 0);
        }
        verify("launch thread, by pointer", &tb[2], m, xc, UINT32_MAX);
        memcpy(g_before, gb, sizeof gb);
        memcpy(g_after, ga, sizeof ga);
        verify("launch thread, runs", &tb[0], m, xa, UINT32_MAX);
        uint32_t od = m->output_dim;
        double *rb = malloc((size_t)33 * od * sizeof *rb);
        t_ref(m, xb, 33, rb);
        double eb = t_err(tb[1].b.out, tb[1].b.out_stride, rb, 33, od, NULL);
        CHECK(eb <= t_bound(m->dtype), "plain batch behind the launch thread: error %.3e", eb);
        free(rb);
        tb[1].b.in_ptr = ip1;
        tb[1].b.out_ptr = op1;

        /* a refused launch on the launch thread: that batch alone fails */
        memset(l.map, GUARD, l.len);
        place_runs(&tb[0], &l, xa, 64, m->input_dim, m->output_dim, UINT32_MAX, 1);
        oag__cuda_fault_next(e, OAG_CUDA_FAULT_LAUNCH);
        CHECK_EQ(t_run(&tb[0]), -EIO);
        memset(l.map, GUARD, l.len);
        place_runs(&tb[0], &l, xa, 64, m->input_dim, m->output_dim, UINT32_MAX, 1);
        CHECK_EQ(t_run(&tb[0]), 0);
        verify("runs after a refused launch", &tb[0], m, xa, UINT32_MAX);
        free(xa);
        free(xb);
        free(xc);
    }

    for (int i = 0; i < 3; i++) {
        free(tb[i].b.in_ptr);
        free(tb[i].b.out_ptr);
        t_batch_fini(&tb[i]);
    }
    ops->host_unregister(l.map);
    ops->host_unregister(l.map);
    ops->destroy(e);
    munmap(l.map, l.len);
}

int main(void)
{
    if (oag__cuda_device_count() <= 0) {
        printf("test_cuda_rowptr: no CUDA device, skipped\n");
        return T_SKIP;
    }
    t_tmp_init();
    static const struct oag_gen_layer L[] = {
        { .kind = OAG_L_LINEAR, .out_dim = 192, .bias = 1 }, { .kind = OAG_L_RELU },
        { .kind = OAG_L_LINEAR, .out_dim = 72, .bias = 1 },
    };
    static const enum oag_dtype dts[] = { OAG_DT_F16, OAG_DT_F32 };
    /* read by create(): one block per row (the default), and 4 blocks walking the rows */
    static const char *const blocks[] = { "0", "4" };
    setenv("OAG_CUDA_DMA_MIN", "1024", 1);
    for (int k = 0; k < 2; k++) {
        setenv("OAG_CUDA_ROW_BLOCKS", blocks[k], 1);
        setenv("OAG_CUDA_LAUNCHER", k ? "1" : "0", 1); /* the launch thread with 4 blocks */
        for (int d = 0; d < 2; d++) {
            struct t_model tm;
            t_model_make(&tm, "rowptr", dts[d], 128, 3, L, 7 + d, 0);
            run_model(tm.m);
            t_model_free(&tm);
        }
    }
    t_tmp_fini();
    if (t_failures) {
        fprintf(stderr, "test_cuda_rowptr: %d failure(s)\n", t_failures);
        return 1;
    }
    printf("test_cuda_rowptr: ok\n");
    return 0;
}
