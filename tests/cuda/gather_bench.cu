/*
 * gather_bench - how fast can the device read rows that sit in registered host memory (agents'
 * lane slots: a shared memfd mapping, rows at a slot stride) and write results back there?
 * Not a test: a measurement behind the cuda engine's choice of how rows by pointer travel.
 *
 *   gather_bench [ROW_BYTES [ROWS [SLOT_BYTES [RUN]]]]   (default 16384 512 16448 8)
 *
 * Variants, each timed with events over many repetitions, GB/s of row bytes moved one way:
 *   dma-h2d / dma-d2h   cudaMemcpyAsync of ROWS * ROW_BYTES contiguous pinned bytes (the copy
 *                       engines: the offline engine's path, the ceiling)
 *   ld16                one block per row, each thread 16-byte loads in a loop (the engine's
 *                       gather kernel)
 *   ld16x4              the same with 4 independent 16-byte loads in flight per thread
 *   bulk                one block per row, the row fetched with the Hopper bulk copy unit
 *                       (cuda::memcpy_async into shared memory), then stored
 *   st16                scatter: one block per row, 16-byte stores into host rows
 *   ld-gN / st-gN       N blocks walking the rows, 4 accesses in flight per thread (the
 *                       engine's kernels: they leave the other multiprocessors free)
 *   b3d-h2d / b3d-d2h   the copy engines fed with strided runs: RUN consecutive slots (a
 *                       lane's rows in a batch) per operation, one cudaMemcpy3DBatchAsync for
 *                       the whole batch; "host us" is the call's own time on the CPU
 *   b3d-both            both directions at once, on two streams (GB/s each way)
 *   kern-both           ld-g32 and st-g32 at once, on two streams (GB/s each way)
 *   b3d+st              inputs by b3d-h2d, results by st-g32, at once
 *   ld+b3d              inputs by ld-g32, results by b3d-d2h, at once
 *   busy / both+busy    a compute kernel filling every multiprocessor for about one batch's
 *                       copy time, alone, then with kern-both beside it (low priority stream):
 *                       whether the copies overlap compute or wait for it; then the same with
 *                       the SMs split by green contexts (GREEN_SMS for the copies, default 16,
 *                       the rest for compute)
 *   b1d-h2d / b1d-d2h   the copy engines fed with contiguous runs: the RUN rows of a lane packed
 *                       with no header between them (payload arrays), one 1-D copy per run, one
 *                       cudaMemcpyBatchAsync a batch
 *   b1d-both            both directions at once, on two streams (GB/s each way)
 *   m1d-both            the same runs by one cudaMemcpyAsync each, both directions, each
 *                       direction spread over two streams (copy engines in parallel)
 *   (GB_HUGE=1|2 backs the region with huge pages: hugetlb, or shmem THP by madvise;
 *   GB_PIECE=BYTES registers the region in pieces, as many lanes are; GB_ORDER=any and
 *   GB_FLAGS=0 change the batched copies' attributes)
 *   ldw-gN / stw-gN     one warp per row, N blocks of 256 threads, 8 16-byte accesses in
 *                       flight per thread (ldw4: 4); warp-bothN: both directions at once;
 *                       mix-bothN: ldw-gN and st-gN at once (warps gather, blocks scatter)
 *   b1d-tN              b1d-both enqueued by N threads, each its share of the runs on
 *                       streams of its own: does the host time of transfers overlap?
 *   tma-ld-gN / tma-st-gN  the Hopper bulk copy unit (cp.async.bulk, one issuing thread a
 *                       block, 8 rows in flight a block through shared memory); tma-bothN both
 *                       at once; tma-ld+st-g32 and ldw+tma-st32 mixed with the SM kernels
 *   X+dma-d2h / dma-h2d+X  one direction by an SM kernel over the lane's rows, the other as one
 *                       contiguous pinned batch by the copy engine, at once (what rows by
 *                       pointer one way and a contiguous staging area the other way would get)
 *   pin-* / reg-*       one contiguous copy a batch from/to pinned memory (cudaHostAlloc) or a
 *                       contiguous range of the registered memfd mapping (what the shared
 *                       result area is), one way and both ways at once
 *   cold / fresh / fresh-nt / fresh-dem / fresh-clwb  one contiguous H2D and the ld-g32
 *                       gather of rows nobody wrote since, of rows 8 host threads wrote just
 *                       before (plain stores: modified in their caches), of rows written with
 *                       streaming stores, and of rows written plainly and then demoted to the
 *                       L3 (cldemote) or written back (clwb) line by line
 *   cpu-tN              N host threads copying the rows from their slots into a contiguous
 *                       pinned buffer and back out to other slots (the host's share if rows
 *                       were staged for the copy engines), GB/s each way
 */
#include <pthread.h>
#include <time.h>
#include <cuda.h>
#include <cuda/barrier>
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <emmintrin.h>

#define CK(x)                                                                                 \
    do {                                                                                      \
        cudaError_t e_ = (x);                                                                 \
        if (e_ != cudaSuccess) {                                                              \
            fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                          \
        }                                                                                     \
    } while (0)

__global__ void ld16(uint8_t *dst, const uint8_t *const *src, uint32_t row)
{
    const uint8_t *s = src[blockIdx.x];
    uint8_t *d = dst + (size_t)blockIdx.x * row;
    for (uint32_t i = threadIdx.x * 16; i < row; i += blockDim.x * 16)
        *(uint4 *)(d + i) = *(const uint4 *)(s + i);
}

__global__ void ld16x4(uint8_t *dst, const uint8_t *const *src, uint32_t row)
{
    const uint8_t *s = src[blockIdx.x];
    uint8_t *d = dst + (size_t)blockIdx.x * row;
    const uint32_t step = blockDim.x * 16;
    for (uint32_t i = threadIdx.x * 16; i < row; i += 4 * step) {
        uint4 v[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (i + k * step < row)
                v[k] = __ldcs((const uint4 *)(s + i + k * step));
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (i + k * step < row)
                *(uint4 *)(d + i + k * step) = v[k];
    }
}

__global__ void bulk(uint8_t *dst, const uint8_t *const *src, uint32_t row)
{
    extern __shared__ __align__(128) uint8_t sm[];
#pragma nv_diag_suppress static_var_with_dynamic_init
    __shared__ cuda::barrier<cuda::thread_scope_block> bar;
    if (threadIdx.x == 0)
        init(&bar, blockDim.x);
    __syncthreads();
    const uint8_t *s = src[blockIdx.x];
    if (threadIdx.x == 0)
        cuda::memcpy_async(sm, s, cuda::aligned_size_t<16>(row), bar);
    bar.arrive_and_wait();
    uint8_t *d = dst + (size_t)blockIdx.x * row;
    for (uint32_t i = threadIdx.x * 16; i < row; i += blockDim.x * 16)
        *(uint4 *)(d + i) = *(const uint4 *)(sm + i);
}

/* One row, 4 independent 16-byte accesses in flight per thread (both g kernels). */
__device__ __forceinline__ void copy_row4(uint8_t *d, const uint8_t *s, uint32_t row)
{
    const uint32_t step = blockDim.x * 16;
    for (uint32_t i = threadIdx.x * 16; i < row; i += 4 * step) {
        uint4 v[4];
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (i + k * step < row)
                v[k] = *(const uint4 *)(s + i + k * step);
#pragma unroll
        for (int k = 0; k < 4; k++)
            if (i + k * step < row)
                *(uint4 *)(d + i + k * step) = v[k];
    }
}

__global__ void ld16x4g(uint8_t *dst, const uint8_t *const *src, uint32_t row, uint32_t rows)
{
    for (uint32_t r = blockIdx.x; r < rows; r += gridDim.x)
        copy_row4(dst + (size_t)r * row, src[r], row);
}

__global__ void st16x4g(uint8_t *const *dst, const uint8_t *src, uint32_t row, uint32_t rows)
{
    for (uint32_t r = blockIdx.x; r < rows; r += gridDim.x)
        copy_row4(dst[r], src + (size_t)r * row, row);
}

__global__ void st16(uint8_t *const *dst, const uint8_t *src, uint32_t row)
{
    uint8_t *d = dst[blockIdx.x];
    const uint8_t *s = src + (size_t)blockIdx.x * row;
    for (uint32_t i = threadIdx.x * 16; i < row; i += blockDim.x * 16)
        *(uint4 *)(d + i) = *(const uint4 *)(s + i);
}

/* One warp per row, up to U independent 16-byte accesses in flight per thread (U x 512 bytes a
 * warp): a block of 256 threads has 8 rows in flight where the block-per-row kernels have one
 * (a 3 KB row keeps only 192 of their 256 threads busy, one access each). */
template <int U>
__device__ __forceinline__ void warp_row(uint8_t *d, const uint8_t *s, uint32_t row, unsigned ln)
{
    for (uint32_t i = ln * 16; i < row; i += U * 512) {
        uint4 v[U];
#pragma unroll
        for (int k = 0; k < U; k++)
            if (i + k * 512 < row)
                v[k] = *(const uint4 *)(s + i + k * 512);
#pragma unroll
        for (int k = 0; k < U; k++)
            if (i + k * 512 < row)
                *(uint4 *)(d + i + k * 512) = v[k];
    }
}

template <int U>
__global__ void ldw(uint8_t *dst, const uint8_t *const *src, uint32_t row, uint32_t rows)
{
    const unsigned ln = threadIdx.x & 31;
    const uint32_t w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, nw = (gridDim.x * blockDim.x) >> 5;
    for (uint32_t r = w; r < rows; r += nw)
        warp_row<U>(dst + (size_t)r * row, src[r], row, ln);
}

template <int U>
__global__ void stw(uint8_t *const *dst, const uint8_t *src, uint32_t row, uint32_t rows)
{
    const unsigned ln = threadIdx.x & 31;
    const uint32_t w = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, nw = (gridDim.x * blockDim.x) >> 5;
    for (uint32_t r = w; r < rows; r += nw)
        warp_row<U>(dst[r], src + (size_t)r * row, row, ln);
}

/* The Hopper bulk copy unit (TMA, cp.async.bulk), one thread a block issuing: rows come from
 * global memory (host rows through the mapping, or device rows) into shared memory, completing
 * on an mbarrier, and go out by a bulk store from shared memory; S rows in flight a block.
 * Does the bulk unit cross the bus in bigger requests than the SMs' loads and stores? Rows and
 * addresses must be 16-byte multiples. */
__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

__device__ __forceinline__ void tma_load(uint32_t dst, const void *src, uint32_t bytes, uint32_t bar)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
                 : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}

__device__ __forceinline__ void tma_wait(uint32_t bar, uint32_t parity)
{
    asm volatile("{\n\t.reg .pred p;\n"
                 "W: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n\t"
                 "@!p bra W;\n}" ::"r"(bar), "r"(parity) : "memory");
}

__device__ __forceinline__ void tma_store(void *dst, uint32_t src, uint32_t bytes)
{
    asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;" ::"l"(dst), "r"(src),
                 "r"(bytes) : "memory");
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
}

/* gather (dir 0): host rows src[r] -> dev + r*row; scatter (dir 1): dev + r*row -> dst[r] */
template <int S>
__global__ void tma_rows(uint8_t *const *host, uint8_t *dev, uint32_t row, uint32_t rows, int dir)
{
    extern __shared__ __align__(128) uint8_t sm[];
    __shared__ __align__(8) uint64_t bar[S];
    if (threadIdx.x != 0)
        return;
    for (int k = 0; k < S; k++)
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_u32(&bar[k])));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    uint32_t n = rows > blockIdx.x ? (rows - blockIdx.x + gridDim.x - 1) / gridDim.x : 0;
#define TMA_ROW(j) (blockIdx.x + (j) * gridDim.x)
#define TMA_SRC(r) (dir ? (const void *)(dev + (size_t)(r) * row) : (const void *)host[r])
#define TMA_DST(r) (dir ? (void *)host[r] : (void *)(dev + (size_t)(r) * row))
    for (uint32_t j = 0; j < n && j < S; j++)
        tma_load(smem_u32(sm + (size_t)j * row), TMA_SRC(TMA_ROW(j)), row, smem_u32(&bar[j]));
    for (uint32_t j = 0; j < n; j++) {
        uint32_t s = j % S;
        tma_wait(smem_u32(&bar[s]), (j / S) & 1);
        tma_store(TMA_DST(TMA_ROW(j)), smem_u32(sm + (size_t)s * row), row);
        if (j + S < n) {
            /* the stage is free once its store (just issued) has read it out */
            asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
            tma_load(smem_u32(sm + (size_t)s * row), TMA_SRC(TMA_ROW(j + S)), row,
                     smem_u32(&bar[s]));
        }
    }
    asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
#undef TMA_ROW
#undef TMA_SRC
#undef TMA_DST
}

__global__ void busy(float *out, int iters)
{
    float a = threadIdx.x * 1e-3f, b = 1.0001f;
    for (int i = 0; i < iters; i++)
        a = fmaf(a, b, 1e-7f);
    if (a == 12345.0f)
        out[threadIdx.x] = a;
}

struct cpu_job {
    uint8_t *map, *pin;
    uint32_t row, slot, rows, first, last;
    int reps;
};

static void *cpu_copy(void *arg)
{
    struct cpu_job *j = (struct cpu_job *)arg;
    for (int i = 0; i < j->reps; i++)
        for (uint32_t r = j->first; r < j->last; r++) {
            memcpy(j->pin + (size_t)r * j->row, j->map + 32 + (size_t)r * j->slot, j->row);
            memcpy(j->map + 32 + (size_t)(j->rows + r) * j->slot,
                   j->pin + (size_t)r * j->row, j->row);
        }
    return NULL;
}

static double host_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* One cudaMemcpy3DBatchAsync moving rows in runs of `run` consecutive host slots: h2d from the
 * slots at host (pitch slot) into dev (pitch row), or the reverse. Returns the call's host us. */
static double b3d(cudaMemcpy3DBatchOp *ops, uint8_t *host, uint8_t *dev, uint32_t rows,
                  uint32_t row, uint32_t slot, uint32_t run, int h2d, cudaStream_t st)
{
    uint32_t n = 0;
    for (uint32_t r = 0; r < rows; r += run, n++) {
        uint32_t h = rows - r < run ? rows - r : run;
        cudaMemcpy3DOperand hs = {}, ds = {};
        hs.type = ds.type = cudaMemcpyOperandTypePointer;
        hs.op.ptr.ptr = host + (size_t)r * slot;
        hs.op.ptr.rowLength = slot;
        ds.op.ptr.ptr = dev + (size_t)r * row;
        ds.op.ptr.rowLength = row;
        ops[n] = cudaMemcpy3DBatchOp{};
        ops[n].src = h2d ? hs : ds;
        ops[n].dst = h2d ? ds : hs;
        ops[n].extent = make_cudaExtent(row, h, 1);
        ops[n].srcAccessOrder = cudaMemcpySrcAccessOrderStream;
        ops[n].flags = cudaMemcpyFlagPreferOverlapWithCompute;
    }
    double a = host_us();
    CK(cudaMemcpy3DBatchAsync(n, ops, 0, st));
    return host_us() - a;
}

/* One cudaMemcpyBatchAsync of contiguous runs: `run` packed rows per 1-D copy. Host us. */
static double b1d(void **d, void **s, size_t *sz, uint8_t *host, uint8_t *dev, uint32_t rows,
                  uint32_t row, uint32_t run, int h2d, cudaStream_t st)
{
    size_t n = 0;
    for (uint32_t r = 0; r < rows; r += run, n++) {
        uint32_t h = rows - r < run ? rows - r : run;
        d[n] = h2d ? dev + (size_t)r * row : host + (size_t)r * row;
        s[n] = h2d ? host + (size_t)r * row : dev + (size_t)r * row;
        sz[n] = (size_t)h * row;
    }
    cudaMemcpyAttributes at = {};
    /* GB_ORDER=any: the driver may read the sources in any order; GB_FLAGS=0: no overlap hint */
    const char *ord = getenv("GB_ORDER"), *fl = getenv("GB_FLAGS");
    at.srcAccessOrder = ord && !strcmp(ord, "any") ? cudaMemcpySrcAccessOrderAny
                                                   : cudaMemcpySrcAccessOrderStream;
    at.flags = fl && *fl == '0' ? 0 : cudaMemcpyFlagPreferOverlapWithCompute;
    size_t idx = 0;
    double a = host_us();
    CK(cudaMemcpyBatchAsync(d, s, sz, n, &at, &idx, 1, st));
    return host_us() - a;
}

/* The same runs by one cudaMemcpyAsync each, alternating over two streams. Host us. */
static double m1d(uint8_t *host, uint8_t *dev, uint32_t rows, uint32_t row, uint32_t run,
                  int h2d, cudaStream_t s0, cudaStream_t s1)
{
    double a = host_us();
    for (uint32_t r = 0, k = 0; r < rows; r += run, k++) {
        uint32_t h = rows - r < run ? rows - r : run;
        uint8_t *hp = host + (size_t)r * row, *dp = dev + (size_t)r * row;
        CK(cudaMemcpyAsync(h2d ? dp : hp, h2d ? hp : dp, (size_t)h * row,
                           h2d ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost,
                           k & 1 ? s1 : s0));
    }
    return host_us() - a;
}

/* st waits for what has been enqueued on `from` so far. */
static void join(cudaStream_t st, cudaStream_t from)
{
    cudaEvent_t j;
    CK(cudaEventCreateWithFlags(&j, cudaEventDisableTiming));
    CK(cudaEventRecord(j, from));
    CK(cudaStreamWaitEvent(st, j, 0));
    CK(cudaEventDestroy(j));
}

/* Ends a timed run on st and st2 (st2 joined into st): ms since event a was recorded. */
static float two_streams_ms(cudaEvent_t a, cudaEvent_t b, cudaStream_t st, cudaStream_t st2)
{
    CK(cudaGetLastError());
    join(st, st2);
    CK(cudaEventRecord(b, st));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    return ms;
}

/* b1d from several threads: each enqueues the runs of its share of the rows, both directions,
 * on streams of its own; does a transfer's host time overlap across threads? */
struct b1d_job {
    pthread_barrier_t *bar;
    uint8_t *in, *out, *dev, *dev2;
    uint32_t r0, r1, row, run;
    int reps;
    cudaStream_t sa, sb;
};

static void *b1d_thread(void *arg)
{
    struct b1d_job *j = (struct b1d_job *)arg;
    uint32_t n = j->r1 - j->r0;
    void **d = (void **)calloc(n, sizeof(void *)), **s = (void **)calloc(n, sizeof(void *));
    size_t *z = (size_t *)calloc(n, sizeof(size_t));
    size_t off = (size_t)j->r0 * j->row;
    for (int i = 0; i < j->reps; i++) {
        pthread_barrier_wait(j->bar);
        b1d(d, s, z, j->in + off, j->dev + off, n, j->row, j->run, 1, j->sa);
        b1d(d, s, z, j->out + off, j->dev2 + off, n, j->row, j->run, 0, j->sb);
        pthread_barrier_wait(j->bar);
    }
    free(d);
    free(s);
    free(z);
    return NULL;
}

/* fresh-*: host threads writing a batch's rows just before the device reads them, as agents
 * do: with plain stores the lines sit modified in those cores' caches when the copy engines or
 * the gather kernel read them; with streaming stores (nt) they have gone to memory. */
struct fresh_job {
    uint8_t *base;
    size_t bytes;
    int nt;
    uint8_t val;
};

static void *fresh_write(void *arg)
{
    struct fresh_job *j = (struct fresh_job *)arg;
    if (j->nt != 1) {
        memset(j->base, j->val, j->bytes);
        uintptr_t a = (uintptr_t)j->base, e = a + j->bytes;
        if (j->nt == 2)
            for (; a < e; a += 64)
                __asm__ volatile(".byte 0x0f, 0x1c, 0x00" ::"a"(a) : "memory"); /* cldemote */
        else if (j->nt == 3) {
            for (; a < e; a += 64)
                __asm__ volatile(".byte 0x66, 0x0f, 0xae, 0x30" ::"a"(a) : "memory"); /* clwb */
            _mm_sfence();
        }
        return NULL;
    }
    __m128i v = _mm_set1_epi8((char)j->val);
    for (size_t o = 0; o + 16 <= j->bytes; o += 16)
        _mm_stream_si128((__m128i *)(j->base + o), v);
    _mm_sfence();
    return NULL;
}

static void fresh_rows(uint8_t *base, size_t bytes, int nthreads, int nt, uint8_t val)
{
    pthread_t th[16];
    struct fresh_job jobs[16];
    size_t part = (bytes / (size_t)nthreads) & ~(size_t)63;
    for (int k = 0; k < nthreads; k++) {
        jobs[k].base = base + (size_t)k * part;
        jobs[k].bytes = k == nthreads - 1 ? bytes - (size_t)k * part : part;
        jobs[k].nt = nt;
        jobs[k].val = val;
        pthread_create(&th[k], NULL, fresh_write, &jobs[k]);
    }
    for (int k = 0; k < nthreads; k++)
        pthread_join(th[k], NULL);
}

int main(int argc, char **argv)
{
    uint32_t row = argc > 1 ? (uint32_t)atoi(argv[1]) : 16384;
    uint32_t rows = argc > 2 ? (uint32_t)atoi(argv[2]) : 512;
    uint32_t slot = argc > 3 ? (uint32_t)atoi(argv[3]) : row + 64;
    uint32_t run = argc > 4 ? (uint32_t)atoi(argv[4]) : 8;
    if (run == 0)
        run = 1;
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("gather_bench: no CUDA device\n");
        return 77;
    }
    size_t lane = (size_t)slot * rows * 2 + 4096;
    /* GB_HUGE=1: the region in 2 MB huge pages (a hugetlb memfd); GB_HUGE=2: a plain memfd
     * with MADV_HUGEPAGE (shmem transparent huge pages): does the device's address
     * translation of rows spread over many pages (many lanes) cost bandwidth? */
    const char *huge_s = getenv("GB_HUGE");
    int huge = huge_s ? atoi(huge_s) : 0;
    if (huge == 1)
        lane = (lane + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    int fd = memfd_create("gb-lane", huge == 1 ? MFD_HUGETLB : 0);
    if (fd < 0 || ftruncate(fd, (off_t)lane) != 0) {
        perror("gather_bench: memfd");
        return 1;
    }
    uint8_t *map = (uint8_t *)mmap(NULL, lane, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (map == MAP_FAILED) {
        perror("gather_bench: mmap");
        return 1;
    }
    if (huge == 2 && madvise(map, lane, MADV_HUGEPAGE) != 0)
        perror("gather_bench: madvise(MADV_HUGEPAGE)");
    memset(map, 1, lane);
    if (huge) {
        FILE *sm = fopen("/proc/self/smaps_rollup", "r");
        char line[256];
        while (sm && fgets(line, sizeof line, sm))
            if (strstr(line, "Huge") || strstr(line, "Pmd"))
                printf("  %s", line);
        if (sm)
            fclose(sm);
    }
    /* GB_PIECE=BYTES: the region registered in pieces of that many bytes (page multiple), as
     * many agents' lanes are: does the host time of a transfer grow with the registrations?
     * With pieces of RUN rows, every packed run (b1d) lies in one piece. */
    const char *piece_s = getenv("GB_PIECE");
    size_t piece = piece_s ? (size_t)atol(piece_s) : lane;
    if (piece < 4096 || piece % 4096)
        piece = lane;
    size_t nregs = 0;
    for (size_t off = 0; off < lane; off += piece, nregs++)
        CK(cudaHostRegister(map + off, off + piece < lane ? piece : lane - off,
                            cudaHostRegisterPortable | cudaHostRegisterMapped));
    uint8_t **in_ptr, **out_ptr, *pin, *dev;
    CK(cudaHostAlloc((void **)&in_ptr, rows * sizeof(void *), cudaHostAllocMapped));
    CK(cudaHostAlloc((void **)&out_ptr, rows * sizeof(void *), cudaHostAllocMapped));
    CK(cudaHostAlloc((void **)&pin, (size_t)rows * row, cudaHostAllocDefault));
    CK(cudaMalloc((void **)&dev, (size_t)rows * row));
    for (uint32_t r = 0; r < rows; r++) {
        in_ptr[r] = map + 32 + (size_t)r * slot;
        out_ptr[r] = map + 32 + (size_t)(rows + r) * slot;
    }
    cudaStream_t st, st2;
    CK(cudaStreamCreate(&st));
    CK(cudaStreamCreate(&st2));
    uint8_t *dev2;
    CK(cudaMalloc((void **)&dev2, (size_t)rows * row));
    cudaMemcpy3DBatchOp *bops = (cudaMemcpy3DBatchOp *)calloc(rows, sizeof *bops);
    cudaMemcpy3DBatchOp *bops2 = (cudaMemcpy3DBatchOp *)calloc(rows, sizeof *bops2);
    uint8_t *in0 = map + 32, *out0 = map + 32 + (size_t)rows * slot;
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    const int reps = 50;
    double bytes = (double)rows * row * reps;
    CK(cudaFuncSetAttribute(bulk, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)row));
    printf("gather_bench: %u rows of %u bytes, slot %u (%.1f MB a batch), runs of %u; region "
           "in %zu registration(s)\n", rows, row, slot, rows * (double)row / 1e6, run, nregs);
    /* Contiguous copies, pinned (cudaHostAlloc) against the registered memfd mapping: the
     * shared result area is such a mapping (the region), the offline ceiling's buffers are
     * pinned. GB/s one way; "both" runs H2D and D2H at once on two streams (each way). With
     * the region in pieces (GB_PIECE) a range would span registrations: not measured. */
    if (nregs == 1) {
        size_t nb = (size_t)rows * row;
        uint8_t *regc = map, *regc2 = map + nb; /* two contiguous ranges of the mapping */
        uint8_t *pin2c;
        CK(cudaHostAlloc((void **)&pin2c, nb, cudaHostAllocDefault));
        const char *cname[] = { "pin-h2d", "reg-h2d", "pin-d2h", "reg-d2h", "pin-both",
                                "reg-both" };
        for (int v = 0; v < 6; v++) {
            float ms = 0;
            for (int pass = 0; pass < 2; pass++) {
                CK(cudaEventRecord(a, st));
                CK(cudaStreamWaitEvent(st2, a, 0));
                for (int i = 0; i < reps; i++) {
                    uint8_t *h = v % 2 ? regc : pin, *h2 = v % 2 ? regc2 : pin2c;
                    if (v < 2)
                        CK(cudaMemcpyAsync(dev, h, nb, cudaMemcpyHostToDevice, st));
                    else if (v < 4)
                        CK(cudaMemcpyAsync(h, dev, nb, cudaMemcpyDeviceToHost, st));
                    else {
                        CK(cudaMemcpyAsync(dev, h, nb, cudaMemcpyHostToDevice, st));
                        CK(cudaMemcpyAsync(h2, dev2, nb, cudaMemcpyDeviceToHost, st2));
                    }
                }
                cudaEvent_t c2;
                CK(cudaEventCreate(&c2));
                CK(cudaEventRecord(c2, st2));
                CK(cudaStreamWaitEvent(st, c2, 0));
                CK(cudaEventRecord(b, st));
                CK(cudaEventSynchronize(b));
                CK(cudaEventElapsedTime(&ms, a, b));
                CK(cudaEventDestroy(c2));
            }
            printf("  %-12s %6.1f GB/s%s\n", cname[v], bytes / (ms / 1e3) / 1e9,
                   v >= 4 ? " each way" : "");
        }
        CK(cudaFreeHost(pin2c));
    }
    /* fresh-*: the rows written by 8 host threads before each copy (plain stores, or nt:
     * streaming stores), against rows nobody touched since (cold): one contiguous H2D from the
     * registered mapping, and the gather kernel over the slots; device time only. */
    if (nregs == 1) {
        size_t nb = (size_t)rows * row;
        const char *fname[] = { "cold", "fresh", "fresh-nt", "fresh-dem", "fresh-clwb" };
        for (int mode = 0; mode < 5; mode++) {
            double ms_dma = 0, ms_ld = 0;
            for (int i = 0; i < reps; i++) {
                if (mode)
                    fresh_rows(map, nb, 8, mode - 1, (uint8_t)i);
                float ms;
                CK(cudaEventRecord(a, st));
                CK(cudaMemcpyAsync(dev, map, nb, cudaMemcpyHostToDevice, st));
                CK(cudaEventRecord(b, st));
                CK(cudaEventSynchronize(b));
                CK(cudaEventElapsedTime(&ms, a, b));
                ms_dma += ms;
                if (mode)
                    fresh_rows(map, nb, 8, mode - 1, (uint8_t)(i + 1));
                for (uint32_t r = 0; r < rows; r++)
                    in_ptr[r] = map + (size_t)r * row;
                CK(cudaEventRecord(a, st));
                ld16x4g<<<32, 256, 0, st>>>(dev, in_ptr, row, rows);
                CK(cudaEventRecord(b, st));
                CK(cudaEventSynchronize(b));
                CK(cudaEventElapsedTime(&ms, a, b));
                ms_ld += ms;
            }
            printf("  %-9s dma-h2d %6.1f GB/s, ld-g32 %6.1f GB/s\n", fname[mode],
                   (double)nb * reps / (ms_dma / 1e3) / 1e9, (double)nb * reps / (ms_ld / 1e3) / 1e9);
        }
        for (uint32_t r = 0; r < rows; r++)
            in_ptr[r] = map + 32 + (size_t)r * slot;
    }
    /* packed runs (b1d, m1d): the lane's rows with no header between them */
    uint8_t *pin0 = map, *pout0 = map + (size_t)rows * row;
    void **bd = (void **)calloc(rows, sizeof(void *)), **bs = (void **)calloc(rows, sizeof(void *));
    void **bd2 = (void **)calloc(rows, sizeof(void *)), **bs2 = (void **)calloc(rows, sizeof(void *));
    size_t *bz = (size_t *)calloc(rows, sizeof(size_t)), *bz2 = (size_t *)calloc(rows, sizeof(size_t));
    cudaStream_t st3, st4;
    CK(cudaStreamCreate(&st3));
    CK(cudaStreamCreate(&st4));
    for (int v = 0; v < 22; v++) {
        const char *name[] = { "dma-h2d", "dma-d2h", "ld16", "ld16x4", "bulk", "st16",
                               "ld-g16", "ld-g32", "ld-g64", "st-g16", "st-g32", "st-g64",
                               "b3d-h2d", "b3d-d2h", "b3d-both", "kern-both", "b3d+st",
                               "ld+b3d", "b1d-h2d", "b1d-d2h", "b1d-both", "m1d-both" };
        const unsigned g = v >= 6 && v < 12 ? 16u << ((v - 6) % 3) : 0;
        if (nregs > 1 && v >= 12 && v <= 17 && v != 15)
            continue; /* strided runs would cross the pieces */
        double hus = 0;
        for (int pass = 0; pass < 2; pass++) { /* warm, then timed */
            hus = 0;
            CK(cudaEventRecord(a, st));
            if (v >= 14) { /* the other streams start with the first */
                CK(cudaStreamWaitEvent(st2, a, 0));
                CK(cudaStreamWaitEvent(st3, a, 0));
                CK(cudaStreamWaitEvent(st4, a, 0));
            }
            for (int i = 0; i < reps && v >= 12; i++) {
                switch (v) {
                case 12: hus += b3d(bops, in0, dev, rows, row, slot, run, 1, st); break;
                case 13: hus += b3d(bops, out0, dev, rows, row, slot, run, 0, st); break;
                case 14:
                    hus += b3d(bops, in0, dev, rows, row, slot, run, 1, st);
                    hus += b3d(bops2, out0, dev2, rows, row, slot, run, 0, st2);
                    break;
                case 15:
                    ld16x4g<<<32, 256, 0, st>>>(dev, in_ptr, row, rows);
                    st16x4g<<<32, 256, 0, st2>>>(out_ptr, dev2, row, rows);
                    break;
                case 16:
                    hus += b3d(bops, in0, dev, rows, row, slot, run, 1, st);
                    st16x4g<<<32, 256, 0, st2>>>(out_ptr, dev2, row, rows);
                    break;
                case 17:
                    ld16x4g<<<32, 256, 0, st>>>(dev, in_ptr, row, rows);
                    hus += b3d(bops2, out0, dev2, rows, row, slot, run, 0, st2);
                    break;
                case 18: hus += b1d(bd, bs, bz, pin0, dev, rows, row, run, 1, st); break;
                case 19: hus += b1d(bd, bs, bz, pout0, dev, rows, row, run, 0, st); break;
                case 20:
                    hus += b1d(bd, bs, bz, pin0, dev, rows, row, run, 1, st);
                    hus += b1d(bd2, bs2, bz2, pout0, dev2, rows, row, run, 0, st2);
                    break;
                default:
                    hus += m1d(pin0, dev, rows, row, run, 1, st, st3);
                    hus += m1d(pout0, dev2, rows, row, run, 0, st2, st4);
                    break;
                }
            }
            if (v >= 14) {
                join(st, st2);
                join(st, st3);
                join(st, st4);
            }
            for (int i = 0; i < reps && v < 12; i++) {
                switch (v) {
                case 0: CK(cudaMemcpyAsync(dev, pin, (size_t)rows * row, cudaMemcpyHostToDevice, st)); break;
                case 1: CK(cudaMemcpyAsync(pin, dev, (size_t)rows * row, cudaMemcpyDeviceToHost, st)); break;
                case 2: ld16<<<rows, 256, 0, st>>>(dev, in_ptr, row); break;
                case 3: ld16x4<<<rows, 256, 0, st>>>(dev, in_ptr, row); break;
                case 4: bulk<<<rows, 256, row, st>>>(dev, in_ptr, row); break;
                case 5: st16<<<rows, 256, 0, st>>>(out_ptr, dev, row); break;
                case 6: case 7: case 8: ld16x4g<<<g, 256, 0, st>>>(dev, in_ptr, row, rows); break;
                default: st16x4g<<<g, 256, 0, st>>>(out_ptr, dev, row, rows); break;
                }
            }
            CK(cudaGetLastError());
            CK(cudaEventRecord(b, st));
            CK(cudaEventSynchronize(b));
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, a, b));
            if (pass && v >= 12)
                printf("  %-9s %7.1f GB/s each way  (%.1f us a batch; host %.1f us a batch)\n",
                       name[v], bytes / (ms * 1e6), ms * 1e3 / reps, hus / reps);
            else if (pass)
                printf("  %-9s %7.1f GB/s  (%.1f us a batch)\n", name[v], bytes / (ms * 1e6),
                       ms * 1e3 / reps);
        }
    }
    {
        /* warp per row (ldw/stw, 8 accesses in flight a thread; -u4: 4): blocks of 256 */
        struct { const char *name; int dir; unsigned g; int u; } wv[] = {
            { "ldw-g16", 1, 16, 8 }, { "ldw-g32", 1, 32, 8 }, { "ldw-g64", 1, 64, 8 },
            { "ldw-g132", 1, 132, 8 }, { "ldw4-g32", 1, 32, 4 }, { "stw-g16", 2, 16, 8 },
            { "stw-g32", 2, 32, 8 }, { "stw-g64", 2, 64, 8 }, { "warp-both16", 3, 16, 8 },
            { "warp-both32", 3, 32, 8 }, { "warp-both64", 3, 64, 8 },
            { "mix-both32", 5, 32, 8 }, { "mix-both16", 5, 16, 8 },
            { "kern-both", 4, 32, 8 } }; /* kern-both again: the baseline in the same block */
        for (unsigned v = 0; v < sizeof wv / sizeof wv[0]; v++) {
            for (int pass = 0; pass < 2; pass++) {
                CK(cudaEventRecord(a, st));
                CK(cudaStreamWaitEvent(st2, a, 0));
                for (int i = 0; i < reps; i++) {
                    if ((wv[v].dir & 1) || wv[v].dir == 4) {
                        if (wv[v].dir == 4)
                            ld16x4g<<<32, 256, 0, st>>>(dev, in_ptr, row, rows);
                        else if (wv[v].u == 4)
                            ldw<4><<<wv[v].g, 256, 0, st>>>(dev, in_ptr, row, rows);
                        else
                            ldw<8><<<wv[v].g, 256, 0, st>>>(dev, in_ptr, row, rows);
                    }
                    if (wv[v].dir == 4 || wv[v].dir == 5) /* mix: warps gather, blocks scatter */
                        st16x4g<<<wv[v].g, 256, 0, st2>>>(out_ptr, dev2, row, rows);
                    else if (wv[v].dir & 2)
                        stw<8><<<wv[v].g, 256, 0, wv[v].dir == 3 ? st2 : st>>>(out_ptr, dev2, row, rows);
                }
                float ms = two_streams_ms(a, b, st, st2);
                if (pass)
                    printf("  %-11s %7.1f GB/s%s  (%.1f us a batch)\n", wv[v].name,
                           bytes / (ms * 1e6), wv[v].dir >= 3 ? " each way" : "",
                           ms * 1e3 / reps);
            }
        }
        /* the bulk copy unit: tma-ld / tma-st alone, both at once, and mixed with the SM
         * kernels (tma gathers + blocks scatter; warps gather + tma scatters) */
        const int tS = row * 8u <= 160u * 1024u ? 8 : 4;
        const size_t tsm = (size_t)tS * row;
        CK(cudaFuncSetAttribute(tma_rows<8>, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
        CK(cudaFuncSetAttribute(tma_rows<4>, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024));
        int tma_ok = row % 16 == 0 && slot % 16 == 0 && tsm <= 200u * 1024u;
        struct { const char *name; int ld, st; unsigned g; } tv[] = {
            { "tma-ld-g32", 1, 0, 32 }, { "tma-ld-g132", 1, 0, 132 }, { "tma-st-g32", 0, 1, 32 },
            { "tma-st-g132", 0, 1, 132 }, { "tma-both16", 1, 1, 16 }, { "tma-both32", 1, 1, 32 },
            { "tma-both66", 1, 1, 66 }, { "tma-both132", 1, 1, 132 },
            { "tma-ld+st-g32", 1, 2, 32 }, { "ldw+tma-st32", 2, 1, 32 },
            { "ldw+dma-d2h", 2, 4, 32 }, { "ld16+dma-d2h", 4, 4, 0 },
            { "ld-g32+dma-d2h", 3, 4, 32 }, { "dma-h2d+st16", 5, 5, 0 },
            { "dma-h2d+st-g32", 5, 2, 32 }, { "dma-h2d+stw32", 5, 6, 32 },
            { "dma-both", 5, 4, 0 },
            { "kern-both", 3, 3, 32 } }; /* the baseline again, in this block */
        uint8_t *pin2;
        CK(cudaHostAlloc((void **)&pin2, (size_t)rows * row, cudaHostAllocDefault));
        for (unsigned v = 0; tma_ok && v < sizeof tv / sizeof tv[0]; v++) {
            for (int pass = 0; pass < 2; pass++) {
                CK(cudaEventRecord(a, st));
                CK(cudaStreamWaitEvent(st2, a, 0));
                for (int i = 0; i < reps; i++) {
                    unsigned g = tv[v].g;
                    if (tv[v].ld == 1) {
                        if (tS == 8)
                            tma_rows<8><<<g, 32, tsm, st>>>(in_ptr, dev, row, rows, 0);
                        else
                            tma_rows<4><<<g, 32, tsm, st>>>(in_ptr, dev, row, rows, 0);
                    } else if (tv[v].ld == 2) {
                        ldw<8><<<g, 256, 0, st>>>(dev, in_ptr, row, rows);
                    } else if (tv[v].ld == 3) {
                        ld16x4g<<<g, 256, 0, st>>>(dev, in_ptr, row, rows);
                    } else if (tv[v].ld == 4) {
                        ld16<<<rows, 256, 0, st>>>(dev, in_ptr, row);
                    } else if (tv[v].ld == 5) { /* a contiguous pinned batch, copy engine */
                        CK(cudaMemcpyAsync(dev, pin, (size_t)rows * row, cudaMemcpyHostToDevice, st));
                    }
                    if (tv[v].st == 1) {
                        if (tS == 8)
                            tma_rows<8><<<g, 32, tsm, st2>>>(out_ptr, dev2, row, rows, 1);
                        else
                            tma_rows<4><<<g, 32, tsm, st2>>>(out_ptr, dev2, row, rows, 1);
                    } else if (tv[v].st == 4) { /* results to a contiguous pinned batch */
                        CK(cudaMemcpyAsync(pin2, dev2, (size_t)rows * row, cudaMemcpyDeviceToHost, st2));
                    } else if (tv[v].st == 5) {
                        st16<<<rows, 256, 0, st2>>>(out_ptr, dev2, row);
                    } else if (tv[v].st == 6) {
                        stw<8><<<g, 256, 0, st2>>>(out_ptr, dev2, row, rows);
                    } else if (tv[v].st >= 2) {
                        st16x4g<<<g, 256, 0, st2>>>(out_ptr, dev2, row, rows);
                    }
                }
                float ms = two_streams_ms(a, b, st, st2);
                if (pass)
                    printf("  %-13s %7.1f GB/s%s  (%.1f us a batch; %d stages)\n", tv[v].name,
                           bytes / (ms * 1e6), tv[v].ld && tv[v].st ? " each way" : "",
                           ms * 1e3 / reps, tS);
            }
        }
        if (tma_ok) {
            memset(map + 32 + (size_t)(rows - 2) * slot, 6, row);
            if (tS == 8)
                tma_rows<8><<<32, 32, tsm, st>>>(in_ptr, dev, row, rows, 0);
            else
                tma_rows<4><<<32, 32, tsm, st>>>(in_ptr, dev, row, rows, 0);
            CK(cudaMemcpy(pin, dev + (size_t)(rows - 2) * row, row, cudaMemcpyDeviceToHost));
            int ok = pin[0] == 6 && pin[row - 1] == 6;
            CK(cudaMemset(dev2, 8, (size_t)rows * row));
            if (tS == 8)
                tma_rows<8><<<32, 32, tsm, st>>>(out_ptr, dev2, row, rows, 1);
            else
                tma_rows<4><<<32, 32, tsm, st>>>(out_ptr, dev2, row, rows, 1);
            CK(cudaStreamSynchronize(st));
            ok = ok && out_ptr[rows - 2][0] == 8 && out_ptr[rows - 2][row - 1] == 8;
            printf("  check tma: %s\n", ok ? "ok" : "WRONG");
        } else {
            printf("  tma: rows or slots not 16-byte multiples, skipped\n");
        }
        /* check: warp-gathered rows are the lane's, warp-scattered rows land in the slots */
        memset(map + 32 + (size_t)(rows - 1) * slot, 3, row);
        ldw<8><<<32, 256, 0, st>>>(dev, in_ptr, row, rows);
        CK(cudaMemcpy(pin, dev + (size_t)(rows - 1) * row, row, cudaMemcpyDeviceToHost));
        int ok = pin[0] == 3 && pin[row - 1] == 3;
        CK(cudaMemset(dev2, 4, (size_t)rows * row));
        stw<8><<<32, 256, 0, st>>>(out_ptr, dev2, row, rows);
        CK(cudaStreamSynchronize(st));
        ok = ok && out_ptr[rows - 1][0] == 4 && out_ptr[rows - 1][row - 1] == 4;
        printf("  check warp: %s\n", ok ? "ok" : "WRONG");
    }
    {
        /* compute beside the copies: calibrate busy to ~ the kern-both time, then both */
        int lo, hi;
        CK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
        cudaStream_t sc, sh1, sh2;
        CK(cudaStreamCreateWithPriority(&sc, cudaStreamNonBlocking, lo));
        CK(cudaStreamCreateWithPriority(&sh1, cudaStreamNonBlocking, hi));
        CK(cudaStreamCreateWithPriority(&sh2, cudaStreamNonBlocking, hi));
        int sms = 0;
        CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
        float *junk;
        CK(cudaMalloc((void **)&junk, 4096));
        int iters = 20000;
        float ms = 0;
        for (int pass = 0; pass < 3; pass++) {
            CK(cudaEventRecord(a, sc));
            busy<<<sms * 8, 256, 0, sc>>>(junk, iters);
            CK(cudaEventRecord(b, sc));
            CK(cudaEventSynchronize(b));
            CK(cudaEventElapsedTime(&ms, a, b));
            if (pass < 2 && ms > 0)
                iters = (int)(iters * (0.28 * rows * (double)row / 8.4e6) / ms);
        }
        float t_busy = ms;
        CK(cudaEventRecord(a, sc));
        CK(cudaStreamWaitEvent(sh1, a, 0));
        CK(cudaStreamWaitEvent(sh2, a, 0));
        busy<<<sms * 8, 256, 0, sc>>>(junk, iters);
        ld16x4g<<<32, 256, 0, sh1>>>(dev, in_ptr, row, rows);
        st16x4g<<<32, 256, 0, sh2>>>(out_ptr, dev2, row, rows);
        join(sc, sh1);
        join(sc, sh2);
        CK(cudaEventRecord(b, sc));
        CK(cudaEventSynchronize(b));
        float t_both = 0;
        CK(cudaEventElapsedTime(&t_both, a, b));
        CK(cudaEventRecord(a, sh1));
        CK(cudaStreamWaitEvent(sh2, a, 0));
        ld16x4g<<<32, 256, 0, sh1>>>(dev, in_ptr, row, rows);
        st16x4g<<<32, 256, 0, sh2>>>(out_ptr, dev2, row, rows);
        join(sh1, sh2);
        CK(cudaEventRecord(b, sh1));
        CK(cudaEventSynchronize(b));
        float t_copy = 0;
        CK(cudaEventElapsedTime(&t_copy, a, b));
        printf("  busy       %7.1f us alone; copies both ways %.1f us alone; together %.1f us "
               "(sum %.1f, max %.1f)\n", t_busy * 1e3, t_copy * 1e3, t_both * 1e3,
               (t_busy + t_copy) * 1e3, (t_busy > t_copy ? t_busy : t_copy) * 1e3);
    }
    {
        /* The same with the SMs split: copies in a green context of GREEN_SMS SMs, compute in
         * one of the rest. */
        const char *gs = getenv("GREEN_SMS");
        unsigned want = gs ? (unsigned)atoi(gs) : 16;
        CUdevice d;
        CUdevResource all, part[1], rest;
        unsigned nb = 1;
        CUdevResourceDesc dcopy, dcomp;
        CUgreenCtx gcopy, gcomp;
        CUstream scopy, scomp, scopy2;
        if (cuDeviceGet(&d, 0) != CUDA_SUCCESS ||
            cuDeviceGetDevResource(d, &all, CU_DEV_RESOURCE_TYPE_SM) != CUDA_SUCCESS ||
            cuDevSmResourceSplitByCount(part, &nb, &all, &rest, 0, want) != CUDA_SUCCESS ||
            cuDevResourceGenerateDesc(&dcopy, &part[0], 1) != CUDA_SUCCESS ||
            cuDevResourceGenerateDesc(&dcomp, &rest, 1) != CUDA_SUCCESS ||
            cuGreenCtxCreate(&gcopy, dcopy, d, CU_GREEN_CTX_DEFAULT_STREAM) != CUDA_SUCCESS ||
            cuGreenCtxCreate(&gcomp, dcomp, d, CU_GREEN_CTX_DEFAULT_STREAM) != CUDA_SUCCESS ||
            cuGreenCtxStreamCreate(&scopy, gcopy, CU_STREAM_NON_BLOCKING, 0) != CUDA_SUCCESS ||
            cuGreenCtxStreamCreate(&scopy2, gcopy, CU_STREAM_NON_BLOCKING, 0) != CUDA_SUCCESS ||
            cuGreenCtxStreamCreate(&scomp, gcomp, CU_STREAM_NON_BLOCKING, 0) != CUDA_SUCCESS) {
            printf("  green contexts: not available here\n");
        } else {
            float junk_ms = 0, t_c = 0, t_x = 0, t_b = 0;
            float *junk;
            CK(cudaMalloc((void **)&junk, 4096));
            int iters = 20000;
            for (int pass = 0; pass < 3; pass++) {
                CK(cudaEventRecord(a, scomp));
                busy<<<rest.sm.smCount * 8, 256, 0, scomp>>>(junk, iters);
                CK(cudaEventRecord(b, scomp));
                CK(cudaEventSynchronize(b));
                CK(cudaEventElapsedTime(&junk_ms, a, b));
                if (pass < 2 && junk_ms > 0)
                    iters = (int)(iters * (0.28 * rows * (double)row / 8.4e6) / junk_ms);
            }
            t_c = junk_ms;
            for (int both = 0; both < 2; both++) {
                CK(cudaEventRecord(a, scomp));
                CK(cudaStreamWaitEvent(scopy, a, 0));
                CK(cudaStreamWaitEvent(scopy2, a, 0));
                if (both)
                    busy<<<rest.sm.smCount * 8, 256, 0, scomp>>>(junk, iters);
                ld16x4g<<<part[0].sm.smCount * 2, 256, 0, scopy>>>(dev, in_ptr, row, rows);
                st16x4g<<<part[0].sm.smCount * 2, 256, 0, scopy2>>>(out_ptr, dev2, row, rows);
                join(scomp, scopy);
                join(scomp, scopy2);
                CK(cudaEventRecord(b, scomp));
                CK(cudaEventSynchronize(b));
                CK(cudaEventElapsedTime(both ? &t_b : &t_x, a, b));
            }
            printf("  green %u+%u SMs: busy %.1f us alone; copies both ways %.1f us alone "
                   "(%.1f GB/s each way); together %.1f us\n", part[0].sm.smCount,
                   rest.sm.smCount, t_c * 1e3, t_x * 1e3, rows * (double)row / (t_x * 1e6),
                   t_b * 1e3);
        }
    }
    for (unsigned nt = 1; nt <= 4; nt *= 2) {
        /* b1d-both issued by nt threads (runs split between them), host time of a batch */
        pthread_barrier_t bar;
        pthread_barrier_init(&bar, NULL, nt + 1);
        pthread_t th[4];
        struct b1d_job jobs[4];
        uint32_t per = (rows / nt + run - 1) / run * run;
        CK(cudaEventRecord(a, st));
        for (unsigned k = 0; k < nt; k++) {
            uint32_t r0 = k * per < rows ? k * per : rows, r1 = r0 + per < rows ? r0 + per : rows;
            jobs[k] = (struct b1d_job){ &bar, pin0, pout0, dev, dev2, r0, r1, row, run, reps, 0, 0 };
            CK(cudaStreamCreateWithFlags(&jobs[k].sa, cudaStreamNonBlocking));
            CK(cudaStreamCreateWithFlags(&jobs[k].sb, cudaStreamNonBlocking));
            CK(cudaStreamWaitEvent(jobs[k].sa, a, 0));
            CK(cudaStreamWaitEvent(jobs[k].sb, a, 0));
            pthread_create(&th[k], NULL, b1d_thread, &jobs[k]);
        }
        double t0 = host_us();
        for (int i = 0; i < reps; i++) {
            pthread_barrier_wait(&bar);
            pthread_barrier_wait(&bar);
        }
        double hus = host_us() - t0;
        for (unsigned k = 0; k < nt; k++) {
            pthread_join(th[k], NULL);
            join(st, jobs[k].sa);
            join(st, jobs[k].sb);
        }
        CK(cudaEventRecord(b, st));
        CK(cudaEventSynchronize(b));
        float ms = 0;
        CK(cudaEventElapsedTime(&ms, a, b));
        printf("  b1d-t%u    %7.1f GB/s each way  (%.1f us a batch; host %.1f us a batch, "
               "%u threads)\n", nt, bytes / (ms * 1e6), ms * 1e3 / reps, hus / reps, nt);
        for (unsigned k = 0; k < nt; k++) {
            CK(cudaStreamDestroy(jobs[k].sa));
            CK(cudaStreamDestroy(jobs[k].sb));
        }
        pthread_barrier_destroy(&bar);
    }
    for (unsigned nt = 2; nt <= 8; nt *= 2) {
        pthread_t th[8];
        struct cpu_job jobs[8];
        double t0 = host_us();
        for (unsigned k = 0; k < nt; k++) {
            jobs[k] = (struct cpu_job){ map, pin, row, slot, rows, rows * k / nt,
                                        rows * (k + 1) / nt, reps };
            pthread_create(&th[k], NULL, cpu_copy, &jobs[k]);
        }
        for (unsigned k = 0; k < nt; k++)
            pthread_join(th[k], NULL);
        double us = host_us() - t0;
        printf("  cpu-t%-4u %7.1f GB/s each way  (%.1f us a batch)\n", nt, bytes / (us * 1e3),
               us / reps);
    }
    /* check: the gathered rows are the lane's */
    memset(map + 32, 7, row);
    ld16x4<<<rows, 256, 0, st>>>(dev, in_ptr, row);
    CK(cudaMemcpy(pin, dev, row, cudaMemcpyDeviceToHost));
    printf("  check: %s\n", pin[0] == 7 && pin[row - 1] == 7 ? "ok" : "WRONG");
    /* and the strided runs: the last row of the first run lands where it belongs */
    uint32_t last = (run < rows ? run : rows) - 1;
    if (nregs == 1) {
        memset(in0 + (size_t)last * slot, 9, row);
        b3d(bops, in0, dev, rows, row, slot, run, 1, st);
        CK(cudaStreamSynchronize(st));
        CK(cudaMemcpy(pin, dev + (size_t)last * row, row, cudaMemcpyDeviceToHost));
        printf("  check b3d: %s\n", pin[0] == 9 && pin[row - 1] == 9 ? "ok" : "WRONG");
    }
    memset(pin0 + (size_t)last * row, 5, row);
    b1d(bd, bs, bz, pin0, dev, rows, row, run, 1, st);
    CK(cudaStreamSynchronize(st));
    CK(cudaMemcpy(pin, dev + (size_t)last * row, row, cudaMemcpyDeviceToHost));
    printf("  check b1d: %s\n", pin[0] == 5 && pin[row - 1] == 5 ? "ok" : "WRONG");
    return 0;
}
