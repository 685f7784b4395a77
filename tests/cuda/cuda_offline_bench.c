/*
 * cuda_offline_bench - the cuda engine's offline throughput per batch size, next to a plain
 * cuBLAS baseline (bench_base.cu) measured in the same run. Not a test.
 *
 *   cuda_offline_bench [RUNS [MODEL]]   RUNS: timed repetitions per point (0 or absent: 200 up
 *                                       to batch 512, 50 above); MODEL: only that one
 *
 * Models (fp16, written by the model generator to a temporary folder, loaded by the loader):
 *   mlp768     Linear(768,768) ReLU Linear(768,768)
 *   mlp4096x4  Linear(4096,4096) ReLU x3, Linear(4096,4096)
 * Per batch size n = 1, 2, 4, ..., 8192, float32 rows in and out of pinned host buffers
 * (the engine's host_alloc; the baseline's cudaHostAlloc):
 *   base us      baseline: one forward as a CUDA graph (copies included), launch + stream sync,
 *                median of RUNS
 *   engine us    one batch: submit(), poll() on event_fd(), reap(); median of RUNS
 *   pipe items/s the engine kept full (max_inflight batches in flight) for RUNS batches
 *   ptr items/s  the same with rows by pointer (batches up to PTR_MAX rows): every row in its own
 *                slot of a registered region laid out like 64 agents' lanes (payload arrays:
 *                consecutive slots' rows adjacent), a batch taking 8 consecutive slots from each lane in turn, as
 *                the batcher does; the ratio ptr/pipe is what moving rows by the gather and
 *                scatter kernels costs the device, with no supervisor or agent involved.
 *                $OAG_BENCH_REGION picks the region's memory: shared (default: MAP_SHARED
 *                4 KB pages, as lanes are), thp (private, madvise(MADV_HUGEPAGE)) or pinned
 *                (the engine's host_alloc)
 */
#include <sys/mman.h>
#include <cuda_runtime_api.h>
#include <time.h>

#include "bench_base.h"
#include "cu_test.h"
#include "cuda/cuda_engine.h"

static const struct oag_engine_ops *ops = &engine_cuda_ops;

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define PTR_MAX 2048u
#define PTR_LANES 64u
#define NB_MAX 6 /* batches the bench keeps in flight at most */

/* Points batch j's n rows at lane slots (see the top): in from the first half of the region,
 * out from the second. */
static void ptr_place(struct oag_batch *b, uint8_t *region, size_t half, uint32_t slot,
                      uint32_t j, uint32_t n)
{
    const uint32_t per_lane = NB_MAX * PTR_MAX / PTR_LANES; /* slots per lane: a batch each */
    for (uint32_t r = 0; r < n; r++) {
        uint32_t lane = (r / 8) % PTR_LANES;
        uint32_t k = j * (PTR_MAX / PTR_LANES) + (r / (8 * PTR_LANES)) * 8 + r % 8;
        size_t off = ((size_t)lane * per_lane + k) * slot;
        b->in_ptr[r] = region + off;
        b->out_ptr[r] = region + half + off;
    }
}

static void bench_model(const char *name, uint32_t width, uint32_t nlin, int runs_arg)
{
    struct oag_gen_layer L[16];
    uint32_t nl = 0;
    for (uint32_t i = 0; i < nlin; i++) {
        L[nl++] = (struct oag_gen_layer){ .kind = OAG_L_LINEAR, .out_dim = width, .bias = 1 };
        if (i + 1 < nlin)
            L[nl++] = (struct oag_gen_layer){ .kind = OAG_L_RELU };
    }
    struct t_model tm;
    double t0 = now_us();
    t_model_make(&tm, name, OAG_DT_F16, width, nl, L, 1, 0);
    const struct oag_model *m = tm.m;
    printf("\n%s: fp16, %u linear layers %ux%u, %.1f MB of weights (written and loaded in "
           "%.0f ms)\n", name, nlin, width, width, m->param_bytes / 1e6, (now_us() - t0) / 1e3);

    const uint32_t max_batch = 8192;
    struct oag_engine_params p = { .max_batch = max_batch, .max_payload = width * 4, .model = m,
                                   .device = 0 };
    struct oag_engine *e = NULL;
    t0 = now_us();
    int rc = ops->create(&e, &p);
    if (rc) {
        fprintf(stderr, "%s: engine create: %d\n", name, rc);
        t_failures++;
        t_model_free(&tm);
        return;
    }
    printf("engine create (upload, %u slots x 14 graphs): %.0f ms\n", ops->inflight(e),
           (now_us() - t0) / 1e3);

    const void *w[16], *b[16];
    unsigned dims[17];
    dims[0] = width;
    for (uint32_t i = 0, k = 0; i < m->nlayers; i++)
        if (m->layers[i].kind == OAG_L_LINEAR) {
            w[k] = m->layers[i].weight.data;
            b[k] = m->layers[i].bias.data;
            dims[++k] = m->layers[i].out_dim;
        }
    struct base *base = NULL;
    if (base_create(&base, 0, nlin, dims, w, b, max_batch)) {
        fprintf(stderr, "%s: baseline create failed\n", name);
        t_failures++;
    }

    enum { NB = NB_MAX };
    struct t_batch tb[NB];
    float *x = t_input(max_batch, width, -1, 1);
    for (int i = 0; i < NB; i++) {
        t_batch_init(&tb[i], ops, e, max_batch, width * 4, width * 4);
        t_batch_fill(&tb[i], x, max_batch, width);
    }
    free(x);

    /* Rows by pointer: a registered region like the lanes of 64 agents; the batches' row
     * pointers (ip, op) are only in place while that column is measured. */
    const uint8_t **ip[NB] = { 0 };
    uint8_t **op[NB] = { 0 };
    uint32_t slot = (width * 4 + 63) & ~63u; /* a lane's payload stride */
    size_t half = (size_t)NB_MAX * PTR_MAX * slot;
    const char *kind = getenv("OAG_BENCH_REGION");
    kind = kind ? kind : "shared";
    uint8_t *region = MAP_FAILED;
    int by_ptr = 0;
    if (!strcmp(kind, "pinned")) {
        void *p = ops->host_alloc ? ops->host_alloc(e, 2 * half) : NULL;
        region = p ? p : MAP_FAILED;
        by_ptr = p != NULL;
    } else {
        int thp = !strcmp(kind, "thp");
        region = mmap(NULL, 2 * half, PROT_READ | PROT_WRITE,
                      (thp ? MAP_PRIVATE : MAP_SHARED) | MAP_ANONYMOUS, -1, 0);
        if (thp && region != MAP_FAILED && madvise(region, 2 * half, MADV_HUGEPAGE) != 0)
            printf("(madvise MADV_HUGEPAGE: %s)\n", strerror(errno));
        by_ptr = region != MAP_FAILED && ops->host_register &&
                 ops->host_register(e, region, 2 * half) == 0;
    }
    printf("rows by pointer from a %s region\n", kind);
    if (by_ptr) {
        float *xr = t_input(1, width, -1, 1);
        for (size_t k = 0; k < 3 * (size_t)PTR_MAX; k++)
            memcpy(region + k * slot, xr, width * 4);
        free(xr);
        for (int i = 0; i < NB; i++) {
            ip[i] = calloc(PTR_MAX, sizeof *ip[i]);
            op[i] = calloc(PTR_MAX, sizeof *op[i]);
        }
    } else {
        printf("(rows by pointer not measured: no registered host memory on this device)\n");
    }

    printf("%6s %10s %10s %7s %12s %12s %14s %14s %5s\n", "batch", "base us", "engine us",
           "ratio", "base it/s", "engine it/s", "pipe it/s", "ptr it/s", "runs");
    for (uint32_t n = 1; n <= max_batch; n *= 2) {
        int runs = runs_arg > 0 ? runs_arg : n <= 512 ? 200 : 50;
        double base_us = base ? base_median_us(base, n, runs) : -1;

        double *t = malloc((size_t)runs * sizeof *t);
        for (int i = 0; i < NB; i++)
            tb[i].b.n = n;
        for (int i = -5; i < runs; i++) {
            double a = now_us();
            rc = t_run(&tb[0]);
            double d = now_us() - a;
            if (rc) {
                fprintf(stderr, "%s: batch of %u: %d\n", name, n, rc);
                t_failures++;
                break;
            }
            if (i >= 0)
                t[i] = d;
        }
        qsort(t, runs, sizeof *t, cmp_d);
        double eng_us = t[runs / 2];
        free(t);

        /* pipelined: keep every slot busy */
        uint32_t inflight = ops->inflight(e) < NB ? ops->inflight(e) : NB;
        int submitted = 0, reaped = 0;
        double a = now_us();
        while (reaped < runs) {
            while (submitted < runs && submitted - reaped < (int)inflight) {
                if (ops->submit(e, &tb[submitted % inflight].b)) {
                    fprintf(stderr, "%s: pipelined submit failed\n", name);
                    t_failures++;
                    goto out;
                }
                submitted++;
            }
            struct oag_batch *got = t_reap_wait(ops, e, 20000);
            if (!got || got->whole_rc) {
                fprintf(stderr, "%s: pipelined batch failed\n", name);
                t_failures++;
                goto out;
            }
            reaped++;
        }
        double pipe = (double)runs * n / ((now_us() - a) / 1e6);

        /* the same, rows by pointer */
        double ptr = 0;
        if (by_ptr && n <= PTR_MAX) {
            for (uint32_t i = 0; i < inflight; i++) {
                tb[i].b.in_ptr = ip[i];
                tb[i].b.out_ptr = op[i];
                ptr_place(&tb[i].b, region, half, slot, i, n);
            }
            submitted = reaped = 0;
            a = now_us();
            while (reaped < runs) {
                while (submitted < runs && submitted - reaped < (int)inflight) {
                    if (ops->submit(e, &tb[submitted % inflight].b)) {
                        fprintf(stderr, "%s: by-pointer submit failed\n", name);
                        t_failures++;
                        goto out;
                    }
                    submitted++;
                }
                struct oag_batch *got = t_reap_wait(ops, e, 20000);
                if (!got || got->whole_rc) {
                    fprintf(stderr, "%s: by-pointer batch failed\n", name);
                    t_failures++;
                    goto out;
                }
                reaped++;
            }
            ptr = (double)runs * n / ((now_us() - a) / 1e6);
            for (uint32_t i = 0; i < inflight; i++) {
                tb[i].b.in_ptr = NULL;
                tb[i].b.out_ptr = NULL;
            }
        }
        printf("%6u %10.1f %10.1f %7.2f %12.0f %12.0f %14.0f %14.0f %5d\n", n, base_us, eng_us,
               eng_us / base_us, n / (base_us / 1e6), n / (eng_us / 1e6), pipe, ptr, runs);
        fflush(stdout);
    }
out:
    for (int i = 0; i < NB; i++) {
        tb[i].b.in_ptr = NULL;
        tb[i].b.out_ptr = NULL;
        free((void *)ip[i]);
        free(op[i]);
        t_batch_fini(&tb[i]);
    }
    if (!strcmp(kind, "pinned")) {
        if (by_ptr)
            ops->host_free(e, region);
    } else {
        if (by_ptr)
            ops->host_unregister(region);
        if (region != MAP_FAILED)
            munmap(region, 2 * half);
    }
    base_destroy(base);
    ops->destroy(e);
    t_model_free(&tm);
}

int main(int argc, char **argv)
{
    int n = oag__cuda_device_count();
    if (n <= 0) {
        printf("cuda_offline_bench: no CUDA device\n");
        return T_SKIP;
    }
    int runs = argc > 1 ? atoi(argv[1]) : 0;
    struct cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
        printf("device 0: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount,
               prop.totalGlobalMem / 1073741824.0);
    const char *only = argc > 2 ? argv[2] : NULL;
    const char *tf = getenv("OAG_CUDA_SPIN_US");
    printf("completion spin cap %s us; times are wall-clock on the host\n",
           tf ? tf : "1000 (default)");
    t_tmp_init();
    if (!only || !strcmp(only, "mlp768"))
        bench_model("mlp768", 768, 2, runs);
    if (!only || !strcmp(only, "mlp4096x4"))
        bench_model("mlp4096x4", 4096, 4, runs);
    t_tmp_fini();
    return t_failures ? 1 : 0;
}
