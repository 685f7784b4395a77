/*
 * cuda_engine.c - the "cuda" engine: an MLP forward per batch on one GPU, asynchronous.
 *
 * Per batch (submit): copy the rows in (H2D), launch the CUDA graph captured for the smallest
 * bucket >= n, copy the rows out (D2H), record an event; all on the stream of one of the
 * engine's slots (OAG_CUDA_INFLIGHT, default 4), so that many batches are in flight and one
 * batch's copies overlap another's compute. Rows n..bucket-1 of a padded bucket hold stale
 * data; rows are independent in every op, so they are computed and ignored.
 *
 * Rows by pointer (the scheduler's lanes, registered with host_register): each row is read from
 * and written to its own host address. Rows adjacent in host memory (a lane's consecutive
 * payloads) form runs; a run of OAG_CUDA_DMA_MIN bytes or more goes by the copy engines, all of
 * a batch's runs one way in one cudaMemcpyBatchAsync, beside the other batches' GEMMs; the other
 * rows go by gather/scatter kernels captured with the plan (a graph per bucket), which skip
 * the rows the runs carry. A batch left with no kernel row runs the plain plan's graph.
 *
 * Compute: cublasGemmEx for every linear (weights in their own dtype; fp16/bf16 on tensor cores
 * with fp32 accumulation and an fp32 result; fp32 weights use plain FP32 SGEMM by default,
 * TF32 tensor cores only with OAG_CUDA_TF32=1, since a model saved in fp32 asks for fp32
 * accuracy), then one fused kernel for bias + the following activation which also rounds to
 * the next GEMM's input type; layernorm and softmax have their own kernels (kernels.cu). The
 * op sequence comes from plan.c.
 *
 * Completion: a thread of the engine waits for each slot's event in submission order,
 * publishes it with a release store of done_seq and writes the eventfd. It sleeps through most
 * of a batch's predicted time (an average per bucket), spins on cudaEventQuery over the
 * predicted end (at most OAG_CUDA_SPIN_US, default 1000; 0: never spin), then polls the event
 * between short sleeps (20 us doubling to 200 us). The events are not cudaEventBlockingSync:
 * such an event makes the GPU interrupt the host once per batch, whether a thread waits on it
 * or not, and the driver's thread that takes the interrupt runs on the CPU the interrupt goes
 * to; an agent that lands on that CPU was preempted per task (on the H100 machine, batch 1:
 * oag_infer p50 59-60 us with the agent on the interrupts' CPU against 32-33 us elsewhere, the
 * "slow runs" of sessions 5-9). OAG_CUDA_EVENT_IRQ=1 keeps blocking-sync events and falls back
 * to cudaEventSynchronize (the old way). A blocking wait alone costs an interrupt-driven
 * wake-up per batch: on the H100, 2-layer 768 fp16, batch 16-64, 82-86 us instead of 50-54 us
 * (plain cuBLAS with a spinning sync: 37-42 us). Not cudaLaunchHostFunc:
 * after a device error the runtime skips host functions, so a failed batch would never be
 * announced and the scheduler would wait forever; the thread instead sees the error from the
 * event and fails the batch. Not a thread that polls all the time: it would burn a core the
 * agents need; this one spins only around a batch's predicted end.
 *
 * Failures: an error while enqueueing (refused launch, out of memory) fails that batch; its
 * stream is synchronized and the slot's stream, cuBLAS handle and graphs are rebuilt. An error
 * seen at an event (a fault while kernels ran) is sticky: the context is lost, every batch in
 * flight fails, and the next submit() waits until none is in flight, resets the device
 * (cudaDeviceReset), and rebuilds everything: weights re-uploaded from the model's mapping,
 * slots, graphs, and the pinned host buffers re-registered. CUDA documents such errors as
 * needing a new process, and on the H100 machine here the driver indeed refuses a new context
 * to the faulted process (cudaErrorDevicesUnavailable, tests/cuda/cuda_reset_probe.c): then
 * submit() fails fast with -EIO, retrying every 100 ms, and after 10 s with -ENODEV (the GPU is
 * lost to this process; restart it). Nothing blocks or hangs on the way.
 *
 * Host buffers: host_alloc() maps anonymous memory and pins it with cudaHostRegister rather
 * than cudaHostAlloc, because memory from cudaHostAlloc belongs to the context and would
 * vanish under the scheduler in a device reset; ours stays mapped and is registered again.
 *
 * Threads: the ops are called from one thread (the scheduler's); the completion thread touches
 * only the slot it is finishing, done_seq and the eventfd; the launch thread (opt-in,
 * OAG_CUDA_LAUNCHER=1) only the slots handed to it, in order, and sub_seq under mu. One engine
 * per GPU per process: a reset of the device also ends the resources of any other engine on it
 * (cu_ctx_gen lets that engine notice, rebuild, and never free stale pointers into the new
 * context).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cuda_engine.h"
#include "green.h"
#include "kernels.h"
#include "model/model.h"
#include "plan.h"

/* Batches in flight per engine: OAG_CUDA_INFLIGHT, 2..CU_MAX_SLOTS (default CU_SLOTS). A batch
 * by copy engine passes three stages (rows in, plan, rows out) and then the scheduler's reap and
 * resubmit; with only 3 in flight that turnaround left the copy engines idle between batches. */
#ifndef CU_SLOTS
#define CU_SLOTS 4u
#endif
#define CU_MAX_SLOTS 8u
#define CU_MAX_BUCKETS 32u
#define CU_MAX_DEV 64
#define CU_STAGE_BYTES ((size_t)8 << 20)
#define CU_WS_BYTES ((size_t)32 << 20)
#define CU_SLEEP_MIN_NS 200000L   /* shorter predicted batches are not slept through */
#define CU_SPIN_LEAD_NS 100000L   /* wake this long before the predicted end */
#define CU_SPIN_MIN_NS 20000L
#define CU_POLL_MIN_NS 20000L     /* a batch later than its spin: polled after sleeps this long */
#define CU_POLL_MAX_NS 200000L    /* ... doubling up to this */
/* Blocks of the gather/scatter kernels at most (OAG_CUDA_ROW_BLOCKS; 0: one per row). With the
 * copy kernels at high priority (row_prio), 32 blocks keep the bus busy and leave the
 * multiprocessors to the batches computing on the other streams: on the H100 machine 4096-model
 * batches ran 7% faster end to end than with one block per row, the 768 model within the spread
 * (docs/BENCHMARKS.md, session 3). */
#define CU_ROW_BLOCKS 32u
/* SMs of the copy kernels' own partition (OAG_CUDA_GREEN_SMS; 0: none, they share every SM). */
#ifndef CU_GREEN_SMS
#define CU_GREEN_SMS 0u
#endif
/* A run of adjacent rows this long goes by the copy engines (OAG_CUDA_DMA_MIN). Each transfer
 * costs the enqueueing thread ~1-2 us in cudaMemcpyBatchAsync, the kernels cost the GPU bus
 * reads by its multiprocessors: on the H200 machine (session 11) the 768 model with 64 agents,
 * runs of up to 64 rows of 3 KB, ran 10.3-10.7 M tasks/s from 64 KB against 8.8-9.2 M from
 * 128 KB; with 512 agents (runs of up to 16 rows) and the 4096 model even. */
#ifndef CU_DMA_MIN
#define CU_DMA_MIN (64u << 10)
#endif
#define CU_RETRY_NS 100000000L    /* after a reset, retry bringing the device back this often */
#define CU_LOST_NS 10000000000L   /* until this long has passed: then -ENODEV, retries each 1 s */
#define CU_LOST_RETRY_NS 1000000000L

/* Context generation per device: bumped by the engine that resets the device, so every engine
 * on that device (a reload creates the next one on a helper thread while the old one serves)
 * knows its handles and pointers died with the old context. Sequentially consistent: the
 * engines of one device may live on different threads. */
static _Atomic uint32_t cu_ctx_gen[CU_MAX_DEV];

struct cu_hostbuf {
    struct cu_hostbuf *next;
    void *p;
    size_t len;
};

struct cu_layer_dev {
    void *w;        /* linear weight [out, in], model dtype */
    float *bias;    /* linear bias, or layernorm bias, float32 */
    float *lnw;     /* layernorm weight, float32 */
};

/* Runs of rows by pointer that the copy engines move: one 1-D transfer each, all of a batch's
 * runs one way in one cudaMemcpyBatchAsync. Up to max_batch entries. */
struct cu_runs {
    void **dst;
    const void **src;
    size_t *size;
    uint32_t n;
};

struct cu_slot {
    cudaStream_t st;
    cudaEvent_t done;
    cudaEvent_t t0, t1;            /* OAG_CUDA_TIMING=1: device time of each batch */
    cudaStream_t hi;               /* rows by pointer, row_prio: gather and scatter run here */
    cudaEvent_t fork[2], join[2];  /* ... forked from st and joined back (captured as edges) */
    cublasHandle_t blas;
    void *ws;
    void *buf[CU_NBUF];
    cudaGraphExec_t graph[CU_MAX_BUCKETS];
    /* Rows by pointer: gather + plan + scatter per bucket, reading the slot's row table. */
    cudaGraphExec_t graph_ptr[CU_MAX_BUCKETS];
    struct cu_rowtab *tab;         /* pinned host memory (mapped in cuda_create, registered in
                                      device_build); device address tab_dev */
    struct cu_rowtab *tab_dev;
    size_t tab_len;
    struct cu_runs run_in, run_out; /* this batch's runs by copy engine (submitting thread) */
    uint32_t kern_rows;             /* rows the gather or scatter kernel still moves */
    enum oag_cuda_fault fault;      /* injected into this batch (tests) */
    /* The batch in this slot. Written by the submitting thread before the hand-off (under mu),
     * then by the completion thread until its release store of done_seq. */
    struct oag_batch *b;
    int rc;         /* failed while enqueueing (the event is not waited for), or 0 */
    uint32_t bucket;
    long t_submit;  /* CLOCK_MONOTONIC ns at submit */
};

struct oag_engine {
    int dev;
    const struct oag_model *m;
    uint32_t max_batch, nbuckets, buckets[CU_MAX_BUCKETS];
    uint32_t in_bytes, out_bytes;
    struct cu_plan plan;
    size_t buf_bytes[CU_NBUF];
    int tf32;
    long spin_cap_ns;
    long pred_ns[CU_MAX_BUCKETS];  /* completion thread only: predicted batch time per bucket */

    /* Device state: built by device_build, dropped by device_teardown. */
    int built;
    uint32_t gen;                  /* cu_ctx_gen[dev] it was built under */
    struct cu_layer_dev *L;
    uint32_t nslots;               /* batches in flight (OAG_CUDA_INFLIGHT) */
    struct cu_slot slot[CU_MAX_SLOTS];

    struct cu_hostbuf *hostbufs;   /* host_alloc'ed, pinned; submitting thread only */
    int rows_by_ptr;               /* the device can use registered host pointers directly */
    int timing;                    /* OAG_CUDA_TIMING=1: time batches with events */
    int event_irq;                 /* OAG_CUDA_EVENT_IRQ=1: blocking-sync completion events */
    unsigned row_blocks;           /* blocks of the gather/scatter kernels (0: one per row) */
    int row_prio;                  /* OAG_CUDA_ROW_PRIO (default 1): gather and scatter at the
                                      device's greatest stream priority, GEMMs at the least, so
                                      rows cross the bus while other batches compute */
    int prio_hi;                   /* that priority (device_build), 0: none to give */
    uint32_t dma_min;              /* OAG_CUDA_DMA_MIN: bytes from which a run of rows adjacent
                                      in host memory (consecutive slots of a lane) goes by the
                                      copy engines instead of the kernels; 0: never */
    uint64_t dma_rows, kern_rows;  /* rows by pointer moved each way (in + out), by which */
    uint64_t dma_ops;              /* transfers (runs) the copy engines were given */
    unsigned dma_dirs;             /* OAG_CUDA_DMA_DIRS: 1 inputs, 2 results, 3 both (default) */
    unsigned green_sms;            /* OAG_CUDA_GREEN_SMS: SMs of the copy kernels' own
                                      partition (green.h), 0: they share every SM */
    struct cu_green *green;        /* that partition while the device is built, or NULL */
    int green_warned;
    _Atomic uint64_t gpu_ns;       /* completion thread adds; stats() reads */
    int efd;

    /* Submission ring. acc_seq, reap_seq: submitting thread only (batches accepted, reaped).
     * sub_seq: batches enqueued on the device, in order; written under mu by the submitting
     * thread or, for batches handed over (launch_req), by the launch thread; read by the
     * completion thread under mu. done_seq: the completion thread stores with release after
     * finishing a batch; reap() and drain() load with acquire. */
    uint64_t acc_seq;
    uint64_t reap_seq;
    uint64_t sub_seq;
    uint64_t launch_req;           /* under mu: batches below it are the launch thread's to
                                      enqueue (those from sub_seq on); == sub_seq: idle */
    _Atomic uint64_t done_seq;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_idle, cv_launch;
    int stop;
    pthread_t th, lth;
    int th_started, lth_started;
    int launcher;                  /* OAG_CUDA_LAUNCHER=1 (default 0): a batch with runs is
                                      enqueued by a thread of its own (each copy-engine transfer
                                      costs ~1-2 us of host time), so the scheduler's thread goes
                                      back to its lanes at once; measured slower end to end on
                                      the H100 (the hand-over delays each batch), kept for hosts
                                      whose scheduler thread is the limit */

    atomic_int broken;             /* set on a sticky error; cleared by a successful reset */
    long broken_since, retry_at;   /* submitting thread: when the device went, next attempt */
    uint32_t retries;
    int lost_logged;
    enum oag_cuda_fault fault;
    uint64_t batches, resets;
    _Atomic uint64_t slot_rebuilds; /* the submitting or the launch thread adds */
    _Atomic uint64_t failed;
};

#define cu_log(e, ...)                                                                      \
    do {                                                                                   \
        fprintf(stderr, "oag cuda[%d]: ", (e)->dev);                                       \
        fprintf(stderr, __VA_ARGS__);                                                      \
        fputc('\n', stderr);                                                               \
    } while (0)

static int cu_rc(cudaError_t err)
{
    switch (err) {
    case cudaErrorMemoryAllocation: return -ENOMEM;
    case cudaErrorNoDevice:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorInsufficientDriver: return -ENODEV;
    default: return -EIO;
    }
}

/* Logs a failed CUDA call and returns its negative errno; clears the runtime's last error when
 * it is not sticky. */
static int cu_fail(struct oag_engine *e, cudaError_t err, const char *what)
{
    cu_log(e, "%s: %s (%s)", what, cudaGetErrorName(err), cudaGetErrorString(err));
    (void)cudaGetLastError();
    return cu_rc(err);
}

#define CU_TRY(e, call, what)                                                               \
    do {                                                                                   \
        cudaError_t err_ = (call);                                                         \
        if (err_ != cudaSuccess)                                                           \
            return cu_fail((e), err_, (what));                                             \
    } while (0)

static int blas_fail(struct oag_engine *e, cublasStatus_t st, const char *what)
{
    cu_log(e, "%s: cuBLAS status %d", what, (int)st);
    (void)cudaGetLastError();
    return st == CUBLAS_STATUS_ALLOC_FAILED ? -ENOMEM : -EIO;
}

static uint32_t gen_now(int dev)
{
    return atomic_load(&cu_ctx_gen[dev]);
}

/* Our pointers are valid only in the context they were made in. */
static int ctx_ours(const struct oag_engine *e) { return e->built && e->gen == gen_now(e->dev); }

static size_t dt_size(enum oag_dtype dt) { return dt == OAG_DT_F32 ? 4 : 2; }

static cudaDataType_t cuda_type(enum oag_dtype dt)
{
    return dt == OAG_DT_F32 ? CUDA_R_32F : dt == OAG_DT_F16 ? CUDA_R_16F : CUDA_R_16BF;
}

/* ---- weights: from the read-only mapping through a pinned staging pair ---- */

struct cu_stage {
    cudaStream_t st;
    void *h[2];
    cudaEvent_t ev[2];
    unsigned k;
};

static void stage_fini(struct cu_stage *s)
{
    if (s->st)
        (void)cudaStreamSynchronize(s->st);
    for (int i = 0; i < 2; i++) {
        if (s->h[i])
            (void)cudaFreeHost(s->h[i]);
        if (s->ev[i])
            (void)cudaEventDestroy(s->ev[i]);
    }
    if (s->st)
        (void)cudaStreamDestroy(s->st);
    memset(s, 0, sizeof *s);
}

static int stage_init(struct oag_engine *e, struct cu_stage *s)
{
    memset(s, 0, sizeof *s);
    CU_TRY(e, cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking), "staging stream");
    for (int i = 0; i < 2; i++) {
        CU_TRY(e, cudaHostAlloc(&s->h[i], CU_STAGE_BYTES, cudaHostAllocDefault), "staging buffer");
        CU_TRY(e, cudaEventCreateWithFlags(&s->ev[i], cudaEventDisableTiming), "staging event");
    }
    return 0;
}

/* Copies n bytes from src (the model's mapping) to device memory dst, CU_STAGE_BYTES at a time:
 * while one staging buffer is in flight to the device the other is filled. */
static int stage_copy(struct oag_engine *e, struct cu_stage *s, void *dst, const void *src,
                      size_t n)
{
    for (size_t off = 0; off < n; off += CU_STAGE_BYTES) {
        size_t len = n - off < CU_STAGE_BYTES ? n - off : CU_STAGE_BYTES;
        unsigned k = s->k++ & 1;
        CU_TRY(e, cudaEventSynchronize(s->ev[k]), "staging wait");
        memcpy(s->h[k], (const char *)src + off, len);
        CU_TRY(e, cudaMemcpyAsync((char *)dst + off, s->h[k], len, cudaMemcpyHostToDevice, s->st),
               "weight upload");
        CU_TRY(e, cudaEventRecord(s->ev[k], s->st), "staging record");
    }
    return 0;
}

/* A 1-D tensor of the model's dtype, widened to float32 on the device. tmp: device scratch of
 * at least t->nbytes. */
static int upload_f32(struct oag_engine *e, struct cu_stage *s, float **out,
                      const struct oag_tensor *t, void *tmp)
{
    if (!t->data)
        return 0;
    size_t n = t->nbytes / dt_size(t->dtype);
    CU_TRY(e, cudaMalloc((void **)out, n * sizeof(float)), "parameter allocation");
    int rc = stage_copy(e, s, tmp, t->data, t->nbytes);
    if (rc)
        return rc;
    CU_TRY(e, cu_launch_widen(s->st, *out, tmp, t->dtype, n), "widen kernel");
    /* tmp is reused by the next tensor: stream order covers it (same stream). */
    return 0;
}

static int weights_upload(struct oag_engine *e)
{
    const struct oag_model *m = e->m;
    e->L = calloc(m->nlayers ? m->nlayers : 1, sizeof *e->L);
    if (!e->L)
        return -ENOMEM;
    struct cu_stage s;
    int rc = stage_init(e, &s);
    void *tmp = NULL;
    if (!rc && cudaMalloc(&tmp, (size_t)e->plan.width * sizeof(float)) != cudaSuccess)
        rc = cu_fail(e, cudaErrorMemoryAllocation, "parameter scratch");
    for (uint32_t i = 0; !rc && i < m->nlayers; i++) {
        const struct oag_layer *L = &m->layers[i];
        struct cu_layer_dev *d = &e->L[i];
        if (L->kind == OAG_L_LINEAR) {
            cudaError_t err = cudaMalloc(&d->w, L->weight.nbytes);
            rc = err ? cu_fail(e, err, "weight allocation")
                     : stage_copy(e, &s, d->w, L->weight.data, L->weight.nbytes);
            if (!rc)
                rc = upload_f32(e, &s, &d->bias, &L->bias, tmp);
        } else if (L->kind == OAG_L_LAYERNORM) {
            rc = upload_f32(e, &s, &d->lnw, &L->weight, tmp);
            if (!rc)
                rc = upload_f32(e, &s, &d->bias, &L->bias, tmp);
        }
    }
    if (!rc && s.st) {
        cudaError_t err = cudaStreamSynchronize(s.st);
        if (err)
            rc = cu_fail(e, err, "weight upload");
    }
    stage_fini(&s);
    if (tmp)
        (void)cudaFree(tmp);
    return rc;
}

static void weights_free(struct oag_engine *e, int live)
{
    if (!e->L)
        return;
    for (uint32_t i = 0; live && i < e->m->nlayers; i++) {
        (void)cudaFree(e->L[i].w);
        (void)cudaFree(e->L[i].bias);
        (void)cudaFree(e->L[i].lnw);
    }
    free(e->L);
    e->L = NULL;
}

/* ---- one slot: stream, event, cuBLAS, buffers, graphs ---- */

/* Enqueues the plan for `rows` rows on the slot's stream (captured or not). */
static int run_plan(struct oag_engine *e, struct cu_slot *s, uint32_t rows)
{
    static const float one = 1.f, zero = 0.f;
    const cublasComputeType_t fp32_compute =
        e->tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    for (uint32_t i = 0; i < e->plan.nops; i++) {
        const struct cu_op *o = &e->plan.ops[i];
        const struct cu_layer_dev *d = &e->L[o->layer];
        const void *src = s->buf[o->src];
        void *dst = s->buf[o->dst];
        cudaError_t err = cudaSuccess;
        switch (o->kind) {
        case CU_OP_ACT:
            err = cu_launch_act(s->st, dst, o->dst_dt, src, (size_t)rows * o->in_cols, o->act);
            break;
        case CU_OP_GEMM: {
            /* Row-major Y[rows, out] = X[rows, in] W[out, in]^T. cuBLAS is column-major:
             * there Y is Y^T [out, rows] (ld out), X is X^T [in, rows] (ld in) and W is
             * W^T [in, out] (ld in), so Y^T = op(W^T) X^T with op = transpose. */
            cudaDataType_t t = cuda_type(e->m->dtype);
            cublasStatus_t bs = cublasGemmEx(
                s->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)o->out_cols, (int)rows, (int)o->in_cols,
                &one, d->w, t, (int)o->in_cols, src, t, (int)o->in_cols, &zero, dst, CUDA_R_32F,
                (int)o->out_cols, e->m->dtype == OAG_DT_F32 ? fp32_compute : CUBLAS_COMPUTE_32F,
                CUBLAS_GEMM_DEFAULT);
            if (bs != CUBLAS_STATUS_SUCCESS)
                return blas_fail(e, bs, "cublasGemmEx");
            break;
        }
        case CU_OP_BIAS_ACT:
            err = cu_launch_bias_act(s->st, dst, o->dst_dt, src, d->bias, rows, o->out_cols,
                                     o->act);
            break;
        case CU_OP_LAYERNORM:
            err = cu_launch_layernorm(s->st, dst, o->dst_dt, src, d->lnw, d->bias, rows,
                                      o->in_cols, o->eps);
            break;
        case CU_OP_SOFTMAX:
            err = cu_launch_softmax(s->st, dst, o->dst_dt, src, rows, o->in_cols);
            break;
        }
        if (err != cudaSuccess)
            return cu_fail(e, err, cu_op_name(o->kind));
    }
    return 0;
}

/* With a high-priority stream: the copy kernel k (0 gather, 1 scatter) runs there, forked from
 * and joined back to the slot's stream (in a capture these are the graph's edges, and the
 * kernel node keeps the stream's priority). Sets *st to the stream to launch it on. */
static cudaError_t row_fork(struct cu_slot *s, int k, cudaStream_t *st)
{
    *st = s->st;
    if (!s->hi)
        return cudaSuccess;
    cudaError_t err = cudaEventRecord(s->fork[k], s->st);
    if (err == cudaSuccess)
        err = cudaStreamWaitEvent(s->hi, s->fork[k], 0);
    *st = s->hi;
    return err;
}

static cudaError_t row_join(struct cu_slot *s, int k)
{
    if (!s->hi)
        return cudaSuccess;
    cudaError_t err = cudaEventRecord(s->join[k], s->hi);
    return err != cudaSuccess ? err : cudaStreamWaitEvent(s->st, s->join[k], 0);
}

static uint32_t bucket_of(const struct oag_engine *e, uint32_t n);

/* Enqueues a batch of `rows` rows by pointer: gather from the row table, the plan (its graph
 * for the bucket when plan_graph is set), scatter. */
static int run_ptr_plan(struct oag_engine *e, struct cu_slot *s, uint32_t rows, int plan_graph)
{
    cudaStream_t st;
    cudaError_t err = row_fork(s, 0, &st);
    if (err == cudaSuccess)
        err = cu_launch_gather(st, s->buf[CU_XIN], s->tab_dev, rows, e->in_bytes,
                               e->row_blocks);
    if (err == cudaSuccess)
        err = row_join(s, 0);
    if (err != cudaSuccess)
        return cu_fail(e, err, "gather");
    if (plan_graph) {
        CU_TRY(e, cudaGraphLaunch(s->graph[bucket_of(e, rows)], s->st), "graph launch");
    } else {
        int rc = run_plan(e, s, rows);
        if (rc)
            return rc;
    }
    err = row_fork(s, 1, &st);
    if (err == cudaSuccess)
        err = cu_launch_scatter(st, s->tab_dev, e->max_batch, s->buf[CU_YOUT], rows,
                                e->out_bytes, e->row_blocks);
    if (err == cudaSuccess)
        err = row_join(s, 1);
    return err == cudaSuccess ? 0 : cu_fail(e, err, "scatter");
}

static int run_ptr(struct oag_engine *e, struct cu_slot *s, uint32_t rows)
{
    return run_ptr_plan(e, s, rows, 0);
}

static int capture_one(struct oag_engine *e, struct cu_slot *s, uint32_t rows, int by_ptr,
                       cudaGraphExec_t *out)
{
    cudaGraph_t g = NULL;
    CU_TRY(e, cudaStreamBeginCapture(s->st, cudaStreamCaptureModeThreadLocal), "begin capture");
    int rc = by_ptr ? run_ptr(e, s, rows) : run_plan(e, s, rows);
    cudaError_t err = cudaStreamEndCapture(s->st, &g);
    if (!rc && err != cudaSuccess)
        rc = cu_fail(e, err, "end capture");
    if (!rc) {
        err = cudaGraphInstantiateWithFlags(out, g, by_ptr && s->hi ?
                                                cudaGraphInstantiateFlagUseNodePriority : 0);
        if (err != cudaSuccess) {
            *out = NULL;
            rc = cu_fail(e, err, "graph instantiate");
        }
    }
    if (g)
        (void)cudaGraphDestroy(g);
    return rc;
}

static int capture(struct oag_engine *e, struct cu_slot *s, uint32_t k)
{
    int rc = capture_one(e, s, e->buckets[k], 0, &s->graph[k]);
    /* With a partition, the copy kernels are launched beside the plan's graph (a captured
     * graph keeps to one partition). */
    if (!rc && e->rows_by_ptr && !e->green)
        rc = capture_one(e, s, e->buckets[k], 1, &s->graph_ptr[k]);
    return rc;
}

static void slot_teardown(struct oag_engine *e, struct cu_slot *s, int live)
{
    if (live) {
        if (s->st)
            (void)cudaStreamSynchronize(s->st);
        for (uint32_t k = 0; k < CU_MAX_BUCKETS; k++) {
            if (s->graph[k])
                (void)cudaGraphExecDestroy(s->graph[k]);
            if (s->graph_ptr[k])
                (void)cudaGraphExecDestroy(s->graph_ptr[k]);
        }
        if (s->tab_dev)
            (void)cudaHostUnregister(s->tab);
        if (s->blas)
            (void)cublasDestroy(s->blas);
        for (int b = 0; b < CU_NBUF; b++)
            if (s->buf[b])
                (void)cudaFree(s->buf[b]);
        if (s->ws)
            (void)cudaFree(s->ws);
        if (s->done)
            (void)cudaEventDestroy(s->done);
        if (s->t0)
            (void)cudaEventDestroy(s->t0);
        if (s->t1)
            (void)cudaEventDestroy(s->t1);
        for (int k = 0; k < 2; k++) {
            if (s->fork[k])
                (void)cudaEventDestroy(s->fork[k]);
            if (s->join[k])
                (void)cudaEventDestroy(s->join[k]);
        }
        if (s->hi)
            (void)cudaStreamDestroy(s->hi);
        if (s->st)
            (void)cudaStreamDestroy(s->st);
        (void)cudaGetLastError();
    }
    /* A dead context's handles are dropped, not freed (the host side of a cuBLAS handle leaks:
     * rare, and freeing it would touch the new context). */
    struct oag_batch *b = s->b;
    int rc = s->rc;
    struct cu_rowtab *tab = s->tab;
    size_t tab_len = s->tab_len;
    struct cu_runs run_in = s->run_in, run_out = s->run_out;
    memset(s, 0, sizeof *s);
    s->b = b;
    s->rc = rc;
    s->tab = tab; /* the mapping is the engine's for its life; only its registration goes */
    s->tab_len = tab_len;
    s->run_in = run_in; /* host arrays, the engine's for its life */
    s->run_out = run_out;
    s->run_in.n = s->run_out.n = 0;
    (void)e;
}

static int slot_build(struct oag_engine *e, struct cu_slot *s, int graphs)
{
    /* The least priority (0) for the slot's stream: the GEMMs. With a partition for the copy
     * kernels, the GEMMs' stream is in the other one. */
    if (e->green) {
        if (cu_green_stream(e->green, 0, 0, &s->st) || cu_green_stream(e->green, 1, e->prio_hi,
                                                                        &s->hi))
            return cu_fail(e, cudaErrorUnknown, "partition stream");
    } else {
        CU_TRY(e, cudaStreamCreateWithFlags(&s->st, cudaStreamNonBlocking), "stream");
    }
    if (e->rows_by_ptr && (e->prio_hi || e->green)) {
        if (!s->hi)
            CU_TRY(e, cudaStreamCreateWithPriority(&s->hi, cudaStreamNonBlocking, e->prio_hi),
                   "row stream");
        for (int k = 0; k < 2; k++) {
            CU_TRY(e, cudaEventCreateWithFlags(&s->fork[k], cudaEventDisableTiming), "event");
            CU_TRY(e, cudaEventCreateWithFlags(&s->join[k], cudaEventDisableTiming), "event");
        }
    }
    CU_TRY(e, cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming |
                                                     (e->event_irq ? cudaEventBlockingSync : 0)),
           "event");
    if (e->timing) {
        CU_TRY(e, cudaEventCreate(&s->t0), "timing event");
        CU_TRY(e, cudaEventCreate(&s->t1), "timing event");
    }
    for (int b = 0; b < CU_NBUF; b++)
        if (e->buf_bytes[b]) {
            CU_TRY(e, cudaMalloc(&s->buf[b], e->buf_bytes[b]), "activation buffer");
            /* padded rows must hold finite values: zero everything once */
            CU_TRY(e, cudaMemsetAsync(s->buf[b], 0, e->buf_bytes[b], s->st), "buffer clear");
        }
    CU_TRY(e, cudaMalloc(&s->ws, CU_WS_BYTES), "cuBLAS workspace");
    if (e->rows_by_ptr) {
        CU_TRY(e, cudaHostRegister(s->tab, s->tab_len, cudaHostRegisterPortable |
                                   cudaHostRegisterMapped), "row table");
        void *d = NULL;
        cudaError_t err = cudaHostGetDevicePointer(&d, s->tab, 0);
        if (err != cudaSuccess) {
            (void)cudaHostUnregister(s->tab);
            return cu_fail(e, err, "row table address");
        }
        s->tab_dev = d;
        s->tab->n = 0;
    }
    cublasStatus_t bs = cublasCreate(&s->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        s->blas = NULL;
        return blas_fail(e, bs, "cublasCreate");
    }
    if ((bs = cublasSetStream(s->blas, s->st)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetWorkspace(s->blas, s->ws, CU_WS_BYTES)) != CUBLAS_STATUS_SUCCESS)
        return blas_fail(e, bs, "cuBLAS setup");
    if (e->tf32 && (bs = cublasSetMathMode(s->blas, CUBLAS_TF32_TENSOR_OP_MATH)) !=
                       CUBLAS_STATUS_SUCCESS)
        return blas_fail(e, bs, "cuBLAS TF32 mode");
    CU_TRY(e, cudaStreamSynchronize(s->st), "slot setup");
    for (uint32_t k = 0; graphs && k < e->nbuckets; k++) {
        int rc = capture(e, s, k);
        if (rc)
            return rc;
    }
    return 0;
}

static int slot_rebuild(struct oag_engine *e, struct cu_slot *s)
{
    slot_teardown(e, s, 1);
    e->slot_rebuilds++;
    int rc = slot_build(e, s, 1);
    if (rc)
        cu_log(e, "slot rebuild failed: %s", strerror(-rc));
    return rc;
}

/* ---- the whole device state ---- */

static void device_teardown(struct oag_engine *e)
{
    int live = ctx_ours(e);
    if (live)
        (void)cudaSetDevice(e->dev);
    for (uint32_t i = 0; i < e->nslots; i++)
        slot_teardown(e, &e->slot[i], live);
    weights_free(e, live);
    if (live)
        cu_green_destroy(e->green);
    e->green = NULL; /* a lost context's partitions went with it */
    e->built = 0;
}

/* Host memory registered for rows by pointer (agents' lanes), process-wide: one registration
 * serves every engine of every device (portable), counted by host_register/host_unregister. A
 * device reset drops registrations; hostbufs_register() makes them again. */
struct cu_reg {
    struct cu_reg *next;
    void *p;
    size_t len;
    int dev;
    uint32_t refs;
};
static pthread_mutex_t cu_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct cu_reg *cu_regs;

static int hostbufs_register(struct oag_engine *e)
{
    pthread_mutex_lock(&cu_reg_mu);
    for (struct cu_reg *r = cu_regs; r; r = r->next) {
        cudaError_t err = cudaHostRegister(r->p, r->len, cudaHostRegisterPortable |
                                           cudaHostRegisterMapped);
        if (err == cudaErrorHostMemoryAlreadyRegistered)
            (void)cudaGetLastError();
        else if (err != cudaSuccess) {
            pthread_mutex_unlock(&cu_reg_mu);
            return cu_fail(e, err, "lane re-register");
        }
    }
    pthread_mutex_unlock(&cu_reg_mu);
    for (struct cu_hostbuf *h = e->hostbufs; h; h = h->next) {
        cudaError_t err = cudaHostRegister(h->p, h->len, cudaHostRegisterPortable |
                                           cudaHostRegisterMapped);
        if (err == cudaErrorHostMemoryAlreadyRegistered) /* rebuilt without a reset */
            (void)cudaGetLastError();
        else if (err != cudaSuccess)
            return cu_fail(e, err, "host re-register");
    }
    return 0;
}

/* Builds everything on the device. With reregister, pins the host buffers again (after a
 * reset). On failure the partial state is torn down. */
static int device_build(struct oag_engine *e, int reregister)
{
    e->gen = gen_now(e->dev);
    e->built = 1;
    int rc = -EIO;
    cudaError_t err = cudaSetDevice(e->dev);
    if (err != cudaSuccess) {
        rc = cu_fail(e, err, "cudaSetDevice");
        goto fail;
    }
    if ((rc = weights_upload(e)))
        goto fail;
    if (e->rows_by_ptr && e->green_sms && !e->green) {
        char why[160];
        int grc = cu_green_create(&e->green, e->dev, e->green_sms, why, sizeof why);
        if (grc && !e->green_warned) {
            cu_log(e, "no partition for the copy kernels (%s): they share every SM", why);
            e->green_warned = 1;
        } else if (!grc && !e->green_warned) {
            cu_log(e, "copy kernels on %u SMs of their own, the plan on %u",
                   cu_green_sms(e->green, 1), cu_green_sms(e->green, 0));
            e->green_warned = 1;
        }
    }
    e->prio_hi = 0;
    int least = 0, greatest = 0;
    if (e->row_prio && cudaDeviceGetStreamPriorityRange(&least, &greatest) == cudaSuccess &&
        greatest < least)
        e->prio_hi = greatest;
    (void)cudaGetLastError();
    for (uint32_t i = 0; i < e->nslots; i++)
        if ((rc = slot_build(e, &e->slot[i], 0)))
            goto fail;
    /* Run every bucket once outside a graph: loads the kernels (lazy module loading) and
     * lets cuBLAS pick its kernels before anything is captured. */
    for (uint32_t k = 0; k < e->nbuckets; k++)
        if ((rc = run_plan(e, &e->slot[0], e->buckets[k])) ||
            (e->rows_by_ptr && (rc = run_ptr(e, &e->slot[0], e->buckets[k]))))
            goto fail;
    err = cudaStreamSynchronize(e->slot[0].st);
    if (err != cudaSuccess) {
        rc = cu_fail(e, err, "warm-up");
        goto fail;
    }
    for (uint32_t i = 0; i < e->nslots; i++)
        for (uint32_t k = 0; k < e->nbuckets; k++)
            if ((rc = capture(e, &e->slot[i], k)))
                goto fail;
    if (reregister && (rc = hostbufs_register(e)))
        goto fail;
    return 0;
fail:
    device_teardown(e);
    return rc;
}

/* ---- completion ---- */

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void sleep_until(long t)
{
    struct timespec ts = { .tv_sec = t / 1000000000L, .tv_nsec = t % 1000000000L };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Waits for slot s's batch. Sleep-then-spin around the predicted end, then block (see the
 * header comment); the prediction is an average of detected batch times per bucket, cut by a
 * quarter whenever the batch was already done on waking (an overestimate would otherwise only
 * ever confirm itself). */
static cudaError_t wait_event(struct oag_engine *e, struct cu_slot *s)
{
    long *pred = &e->pred_ns[s->bucket];
    cudaError_t err = cudaEventQuery(s->done);
    if (err == cudaErrorNotReady && e->spin_cap_ns > 0) {
        if (*pred > CU_SLEEP_MIN_NS && now_ns() < s->t_submit + *pred - CU_SPIN_LEAD_NS) {
            sleep_until(s->t_submit + *pred - CU_SPIN_LEAD_NS);
            if ((err = cudaEventQuery(s->done)) == cudaSuccess) {
                *pred -= *pred / 4;
                return err;
            }
        }
        long now = now_ns(), until = s->t_submit + 2 * *pred + CU_SPIN_LEAD_NS;
        if (until > now + e->spin_cap_ns)
            until = now + e->spin_cap_ns;
        if (until < now + CU_SPIN_MIN_NS)
            until = now + CU_SPIN_MIN_NS;
        while (err == cudaErrorNotReady && now_ns() < until) {
            cpu_relax();
            err = cudaEventQuery(s->done);
        }
    }
    if (err == cudaErrorNotReady && e->event_irq)
        err = cudaEventSynchronize(s->done);
    /* Later than predicted: poll between sleeps, 20 us doubling to 200 us (no interrupt). */
    long nap = CU_POLL_MIN_NS;
    while (err == cudaErrorNotReady) {
        sleep_until(now_ns() + nap);
        err = cudaEventQuery(s->done);
        nap = nap * 2 < CU_POLL_MAX_NS ? nap * 2 : CU_POLL_MAX_NS;
    }
    if (err == cudaSuccess) {
        long d = now_ns() - s->t_submit;
        *pred = *pred ? (3 * *pred + d) / 4 : d;
    }
    return err;
}

static void fail_rows(struct oag_batch *b, int rc)
{
    b->whole_rc = rc;
    for (uint32_t i = 0; i < b->n; i++) {
        b->status[i] = rc;
        b->out_len[i] = 0;
    }
}

static void *completer(void *arg)
{
    struct oag_engine *e = arg;
    (void)cudaSetDevice(e->dev);
    prctl(PR_SET_NAME, "oag-cu-done");
    prctl(PR_SET_TIMERSLACK, 1000UL); /* sleeps end within ~1 us of the predicted end */
    pthread_mutex_lock(&e->mu);
    for (;;) {
        /* relaxed: this thread is done_seq's only writer */
        uint64_t seq = atomic_load_explicit(&e->done_seq, memory_order_relaxed);
        if (seq == e->sub_seq) {
            if (e->stop)
                break;
            pthread_cond_wait(&e->cv_work, &e->mu);
            continue;
        }
        pthread_mutex_unlock(&e->mu);

        struct cu_slot *s = &e->slot[seq % e->nslots];
        int rc = s->rc;
        if (!rc) {
            cudaError_t err = wait_event(e, s);
            if (err != cudaSuccess) {
                /* an error at an event is a fault while the batch ran: sticky */
                rc = cu_fail(e, err, "batch");
                atomic_store(&e->broken, 1);
            } else if (s->t0) {
                float ms = 0;
                if (cudaEventElapsedTime(&ms, s->t0, s->t1) == cudaSuccess)
                    atomic_fetch_add(&e->gpu_ns, (uint64_t)(ms * 1e6));
            }
        }
        if (rc) {
            fail_rows(s->b, rc);
            atomic_fetch_add(&e->failed, 1);
        }
        pthread_mutex_lock(&e->mu);
        /* pairs with the acquire loads in cuda_reap() and drain() */
        atomic_store_explicit(&e->done_seq, seq + 1, memory_order_release);
        pthread_cond_broadcast(&e->cv_idle);
        uint64_t one = 1;
        if (write(e->efd, &one, sizeof one) < 0) {
            /* EAGAIN only if the counter would overflow: it is readable anyway */
        }
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* Waits until every submitted batch has finished (the completion thread is then idle). */
static void drain(struct oag_engine *e)
{
    pthread_mutex_lock(&e->mu);
    /* acc_seq: the caller is the submitting thread; every accepted batch gets launched */
    while (atomic_load_explicit(&e->done_seq, memory_order_acquire) != e->acc_seq)
        pthread_cond_wait(&e->cv_idle, &e->mu);
    pthread_mutex_unlock(&e->mu);
}

/* After a sticky error, a failed rebuild, or another engine's reset of our device: reset the
 * device if the error was ours and nobody has reset it since, see whether a new context can be
 * made (a driver may refuse for as long as the faulted process lives: cudaErrorDevicesUnavailable
 * on the H100 machine here), then rebuild. Returns 0; -EIO while the device is not back (the
 * batch fails at once, no CUDA call until the next attempt, CU_RETRY_NS later); -ENODEV once it
 * has stayed away for CU_LOST_NS (the device is lost to this process: restart it); -ENOMEM. */
static int recover(struct oag_engine *e)
{
    long now = now_ns();
    if (!e->broken_since)
        e->broken_since = now;
    int lost = now - e->broken_since > CU_LOST_NS;
    if (now < e->retry_at)
        return lost ? -ENODEV : -EIO;
    e->retry_at = now + (lost ? CU_LOST_RETRY_NS : CU_RETRY_NS);
    drain(e);
    device_teardown(e);
    if (atomic_load(&e->broken) && e->gen == gen_now(e->dev)) {
        cu_log(e, "recovering: resetting the device");
        cudaError_t err = cudaSetDevice(e->dev);
        if (err == cudaSuccess)
            err = cudaDeviceReset();
        if (err != cudaSuccess) {
            cu_log(e, "cudaDeviceReset: %s", cudaGetErrorName(err));
            return lost ? -ENODEV : -EIO;
        }
        atomic_fetch_add(&cu_ctx_gen[e->dev], 1);
        e->resets++;
    }
    /* make the new context now, to tell "not back yet" from a failed rebuild */
    cudaError_t err = cudaSetDevice(e->dev);
    if (err == cudaSuccess)
        err = cudaFree(0);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        if (!e->lost_logged && (lost || !e->retries))
            cu_log(e, "device not back after %.0f ms: %s%s", (now - e->broken_since) / 1e6,
                   cudaGetErrorName(err),
                   lost ? "; it is lost to this process (-ENODEV): restart the process" : "");
        e->lost_logged = lost;
        e->retries++;
        return lost ? -ENODEV : -EIO;
    }
    int rc = device_build(e, 1);
    if (rc) {
        cu_log(e, "rebuild failed: %s", strerror(-rc));
        return rc == -ENOMEM ? -ENOMEM : -EIO;
    }
    cu_log(e, "recovered after %.1f ms", (now_ns() - e->broken_since) / 1e6);
    atomic_store(&e->broken, 0);
    e->broken_since = e->retry_at = 0;
    e->retries = 0;
    e->lost_logged = 0;
    return 0;
}

/* ---- ops ---- */

int oag__cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

static void set_buckets(struct oag_engine *e, const struct oag_engine_params *p)
{
    uint32_t n = 0;
    if (p->buckets && p->nbuckets) {
        for (uint32_t i = 0; i < p->nbuckets && n < CU_MAX_BUCKETS - 1; i++) {
            uint32_t b = p->buckets[i];
            if (b == 0 || b >= e->max_batch || (n && b <= e->buckets[n - 1]))
                continue; /* zero, too big (max_batch is added below) or not ascending */
            e->buckets[n++] = b;
        }
    } else {
        for (uint32_t b = 1; b < e->max_batch && n < CU_MAX_BUCKETS - 1; b *= 2)
            e->buckets[n++] = b;
    }
    e->buckets[n++] = e->max_batch;
    e->nbuckets = n;
}

static uint32_t bucket_of(const struct oag_engine *e, uint32_t n)
{
    uint32_t k = 0;
    while (k + 1 < e->nbuckets && e->buckets[k] < n)
        k++;
    return k;
}

static void cuda_destroy(struct oag_engine *e);
static void *launch_thread(void *arg);

static int cuda_create(struct oag_engine **out, const struct oag_engine_params *p)
{
    int ndev = 0;
    cudaError_t err = cudaGetDeviceCount(&ndev);
    if (err != cudaSuccess || ndev <= 0) {
        (void)cudaGetLastError();
        fprintf(stderr, "oag cuda: no CUDA device (%s)\n",
                err != cudaSuccess ? cudaGetErrorName(err) : "none");
        return -ENODEV;
    }
    if (p->device < 0 || p->device >= ndev || p->device >= CU_MAX_DEV) {
        fprintf(stderr, "oag cuda: device %d: this machine has %d\n", p->device, ndev);
        return -ENODEV;
    }
    if (!p->model || p->max_batch == 0) {
        fprintf(stderr, "oag cuda: needs a model and max_batch > 0\n");
        return -EINVAL;
    }
    struct oag_engine *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->dev = p->device;
    e->m = p->model;
    e->efd = -1;
    e->max_batch = p->max_batch;
    e->in_bytes = p->model->input_dim * 4;
    e->out_bytes = p->model->output_dim * 4;
    const char *v = getenv("OAG_CUDA_TF32");
    e->tf32 = v && *v == '1';
    v = getenv("OAG_CUDA_TIMING");
    e->timing = v && *v == '1';
    v = getenv("OAG_CUDA_EVENT_IRQ");
    e->event_irq = v && *v == '1';
    v = getenv("OAG_CUDA_GREEN_SMS");
    e->green_sms = v ? (unsigned)atoi(v) : CU_GREEN_SMS;
    v = getenv("OAG_CUDA_ROW_PRIO");
    e->row_prio = !v || *v != '0';
    v = getenv("OAG_CUDA_ROW_BLOCKS");
    e->row_blocks = v ? (unsigned)atoi(v) : CU_ROW_BLOCKS;
    v = getenv("OAG_CUDA_INFLIGHT");
    e->nslots = v ? (uint32_t)atoi(v) : CU_SLOTS;
    if (e->nslots < 2 || e->nslots > CU_MAX_SLOTS)
        e->nslots = e->nslots < 2 ? 2 : CU_MAX_SLOTS;
    v = getenv("OAG_CUDA_DMA_DIRS");
    e->dma_dirs = v ? (unsigned)atoi(v) & 3u : 3u;
    v = getenv("OAG_CUDA_DMA_MIN");
    e->dma_min = v ? (uint32_t)strtoul(v, NULL, 10) : CU_DMA_MIN;
    v = getenv("OAG_CUDA_SPIN_US");
    e->spin_cap_ns = (v ? atol(v) : 1000) * 1000L;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv_work, NULL);
    pthread_cond_init(&e->cv_idle, NULL);
    pthread_cond_init(&e->cv_launch, NULL);
    set_buckets(e, p);

    char msg[160];
    int rc = cu_plan_build(&e->plan, e->m, msg, sizeof msg);
    if (rc) {
        cu_log(e, "%s", rc == -EINVAL ? msg : "out of memory");
        goto fail;
    }
    if (e->in_bytes > p->max_payload || e->out_bytes > p->max_payload) {
        cu_log(e, "rows of %u -> %u bytes do not fit max_payload %u", e->in_bytes, e->out_bytes,
               p->max_payload);
        rc = -EINVAL;
        goto fail;
    }
    const size_t mb = e->max_batch;
    int used[CU_NBUF] = { 0 };
    for (uint32_t i = 0; i < e->plan.nops; i++)
        used[e->plan.ops[i].src] = used[e->plan.ops[i].dst] = 1;
    e->buf_bytes[CU_XIN] = mb * e->in_bytes;
    e->buf_bytes[CU_YOUT] = mb * e->out_bytes;
    e->buf_bytes[CU_A] = used[CU_A] ? mb * e->plan.width * 4 : 0;
    e->buf_bytes[CU_G] = used[CU_G] ? mb * e->plan.width * 4 : 0;
    e->buf_bytes[CU_H] = used[CU_H] ? mb * e->plan.width * dt_size(e->m->dtype) : 0;

    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (e->efd < 0) {
        rc = -errno;
        cu_log(e, "eventfd: %s", strerror(errno));
        goto fail;
    }
    /* Rows by pointer need the device to use registered host memory at its host address
     * (agents' rows are found by pointer arithmetic in the lanes), and OAG_CUDA_ROWS_BY_PTR
     * unset or 1. */
    int attr = 0;
    v = getenv("OAG_CUDA_ROWS_BY_PTR");
    if ((!v || *v != '0') &&
        cudaDeviceGetAttribute(&attr, cudaDevAttrCanUseHostPointerForRegisteredMem,
                               e->dev) == cudaSuccess && attr)
        e->rows_by_ptr = 1;
    (void)cudaGetLastError();
    for (uint32_t i = 0; e->rows_by_ptr && i < e->nslots; i++) {
        struct cu_slot *sl = &e->slot[i];
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        sl->tab_len = (sizeof(struct cu_rowtab) + 2 * mb * sizeof(void *) + page - 1) / page *
                      page;
        void *t = mmap(NULL, sl->tab_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (t == MAP_FAILED) {
            sl->tab_len = 0;
            rc = -ENOMEM;
            goto fail;
        }
        sl->tab = t;
        struct cu_runs *rr[2] = { &sl->run_in, &sl->run_out };
        for (int k = 0; k < 2; k++) {
            rr[k]->dst = calloc(mb, sizeof(void *));
            rr[k]->src = calloc(mb, sizeof(void *));
            rr[k]->size = calloc(mb, sizeof(size_t));
            if (!rr[k]->dst || !rr[k]->src || !rr[k]->size) {
                rc = -ENOMEM;
                goto fail;
            }
        }
    }
    if ((rc = device_build(e, 0)))
        goto fail;
    if ((rc = -pthread_create(&e->th, NULL, completer, e))) {
        cu_log(e, "completion thread: %s", strerror(-rc));
        goto fail;
    }
    e->th_started = 1;
    v = getenv("OAG_CUDA_LAUNCHER");
    if (e->rows_by_ptr && e->dma_min && v && *v == '1') {
        if ((rc = -pthread_create(&e->lth, NULL, launch_thread, e))) {
            cu_log(e, "launch thread: %s", strerror(-rc));
            goto fail;
        }
        e->lth_started = 1;
        e->launcher = 1;
    }
    *out = e;
    return 0;
fail:
    cuda_destroy(e);
    return rc;
}

static void cuda_destroy(struct oag_engine *e)
{
    if (!e)
        return;
    if (e->th_started) {
        drain(e);
        pthread_mutex_lock(&e->mu);
        e->stop = 1;
        pthread_cond_signal(&e->cv_work);
        pthread_cond_signal(&e->cv_launch);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->th, NULL);
        if (e->lth_started)
            pthread_join(e->lth, NULL);
    }
    int live = ctx_ours(e);
    device_teardown(e);
    while (e->hostbufs) {
        /* host_free() belongs before destroy(); unpin what is left, keep it mapped for the
         * scheduler that still holds it */
        struct cu_hostbuf *h = e->hostbufs;
        cu_log(e, "destroy: host buffer %p still allocated", h->p);
        if (live)
            (void)cudaHostUnregister(h->p);
        e->hostbufs = h->next;
        free(h);
    }
    for (uint32_t i = 0; i < e->nslots; i++) {
        struct cu_slot *sl = &e->slot[i];
        if (sl->tab)
            munmap(sl->tab, sl->tab_len);
        struct cu_runs *rr[2] = { &sl->run_in, &sl->run_out };
        for (int k = 0; k < 2; k++) {
            free(rr[k]->dst);
            free((void *)rr[k]->src);
            free(rr[k]->size);
        }
    }
    if (e->efd >= 0)
        close(e->efd);
    cu_plan_fini(&e->plan);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv_work);
    pthread_cond_destroy(&e->cv_idle);
    pthread_cond_destroy(&e->cv_launch);
    free(e);
}

static void *cuda_host_alloc(struct oag_engine *e, size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = (bytes + page - 1) / page * page;
    if (len == 0)
        len = page;
    struct cu_hostbuf *h = malloc(sizeof *h);
    if (!h)
        return NULL;
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(h);
        return NULL;
    }
    cudaError_t err = cudaSetDevice(e->dev);
    if (err == cudaSuccess)
        err = cudaHostRegister(p, len, cudaHostRegisterPortable | cudaHostRegisterMapped);
    if (err != cudaSuccess) {
        cu_fail(e, err, "cudaHostRegister");
        munmap(p, len);
        free(h);
        return NULL;
    }
    *h = (struct cu_hostbuf){ .next = e->hostbufs, .p = p, .len = len };
    e->hostbufs = h;
    return p;
}

static void cuda_host_free(struct oag_engine *e, void *p)
{
    if (!p)
        return;
    for (struct cu_hostbuf **pp = &e->hostbufs; *pp; pp = &(*pp)->next) {
        struct cu_hostbuf *h = *pp;
        if (h->p != p)
            continue;
        *pp = h->next;
        if (ctx_ours(e) && cudaSetDevice(e->dev) == cudaSuccess)
            (void)cudaHostUnregister(p);
        (void)cudaGetLastError();
        munmap(p, h->len);
        free(h);
        return;
    }
    cu_log(e, "host_free: %p was not allocated here", p);
}

/* Rows adjacent in host memory (consecutive slots of one lane: their payloads are contiguous)
 * form a run; a run of at least dma_min bytes goes by the copy engines as one transfer, its rows
 * leave the gather (scatter) table. Fills the slot's run lists one way: rows by pointer ptr[],
 * their table tab[] (NULLed for the rows moved), dev the batch buffer, row bytes per row.
 * Returns the rows moved. */
static uint32_t runs_one_way(struct cu_runs *rl, const void **tab, const uint8_t *const *ptr,
                             uint8_t *dev, uint32_t n, uint32_t row, uint32_t dma_min, int h2d)
{
    uint32_t moved = 0;
    rl->n = 0;
    for (uint32_t i = 0; i < n;) {
        if (!tab[i]) {
            i++;
            continue;
        }
        uint32_t j = i + 1;
        while (j < n && tab[j] && ptr[j] == ptr[j - 1] + row)
            j++;
        if ((size_t)(j - i) * row >= dma_min) {
            uint8_t *d = dev + (size_t)i * row;
            rl->dst[rl->n] = h2d ? (void *)d : (void *)ptr[i];
            rl->src[rl->n] = h2d ? (const void *)ptr[i] : (const void *)d;
            rl->size[rl->n] = (size_t)(j - i) * row;
            rl->n++;
            for (uint32_t k = i; k < j; k++)
                tab[k] = NULL;
            moved += j - i;
        }
        i = j;
    }
    return moved;
}

static void plan_runs(struct oag_engine *e, struct cu_slot *s, const struct oag_batch *b)
{
    const void **tin = s->tab->ptr, **tout = s->tab->ptr + e->max_batch;
    uint32_t ok = 0;
    for (uint32_t i = 0; i < b->n; i++)
        ok += tin[i] != NULL;
    s->run_in.n = s->run_out.n = 0;
    uint32_t in_dma = 0, out_dma = 0;
    if (e->dma_min && (e->dma_dirs & 1))
        in_dma = runs_one_way(&s->run_in, tin, b->in_ptr, s->buf[CU_XIN], b->n, e->in_bytes,
                              e->dma_min, 1);
    if (e->dma_min && (e->dma_dirs & 2))
        out_dma = runs_one_way(&s->run_out, tout, (const uint8_t *const *)b->out_ptr,
                               s->buf[CU_YOUT], b->n, e->out_bytes, e->dma_min, 0);
    s->kern_rows = 2 * ok - in_dma - out_dma;
    e->dma_rows += in_dma + out_dma;
    e->dma_ops += s->run_in.n + s->run_out.n;
    e->kern_rows += s->kern_rows;
}

/* One way's runs, on the slot's stream. */
static cudaError_t runs_copy(struct cu_slot *s, const struct cu_runs *rl)
{
    if (!rl->n)
        return cudaSuccess;
    struct cudaMemcpyAttributes at;
    memset(&at, 0, sizeof at);
    at.srcAccessOrder = cudaMemcpySrcAccessOrderStream;
    at.flags = cudaMemcpyFlagPreferOverlapWithCompute;
    size_t idx = 0;
    return cudaMemcpyBatchAsync(rl->dst, rl->src, rl->size, rl->n, &at, &idx, 1, s->st);
}

/* Enqueues batch b on slot s. Returns 0 or a negative errno (logged). */
static int enqueue(struct oag_engine *e, struct cu_slot *s, struct oag_batch *b)
{
    enum oag_cuda_fault fault = s->fault;
    if (fault == OAG_CUDA_FAULT_ALLOC) {
        void *p = NULL;
        cudaError_t err = cudaMalloc(&p, (size_t)1 << 50);
        if (err != cudaSuccess)
            return cu_fail(e, err, "injected allocation");
        (void)cudaFree(p);
    }
    if (s->t0)
        CU_TRY(e, cudaEventRecord(s->t0, s->st), "event record");
    if (b->n && b->in_ptr) {
        if (fault == OAG_CUDA_FAULT_LAUNCH)
            CU_TRY(e, cu_launch_fault_badconfig(s->st), "injected launch");
        CU_TRY(e, runs_copy(s, &s->run_in), "input runs");
        if (!s->kern_rows) {
            /* every row by the copy engines: the plan alone, on every SM */
            CU_TRY(e, cudaGraphLaunch(s->graph[bucket_of(e, b->n)], s->st), "graph launch");
        } else if (e->green) {
            int rc = run_ptr_plan(e, s, b->n, 1);
            if (rc)
                return rc;
        } else {
            CU_TRY(e, cudaGraphLaunch(s->graph_ptr[bucket_of(e, b->n)], s->st), "graph launch");
        }
        if (fault == OAG_CUDA_FAULT_TRAP)
            CU_TRY(e, cu_launch_fault_trap(s->st), "injected trap");
        CU_TRY(e, runs_copy(s, &s->run_out), "output runs");
    } else if (b->n) {
        if (b->in_stride == e->in_bytes)
            CU_TRY(e, cudaMemcpyAsync(s->buf[CU_XIN], b->in, (size_t)b->n * e->in_bytes,
                                      cudaMemcpyHostToDevice, s->st), "input copy");
        else
            CU_TRY(e, cudaMemcpy2DAsync(s->buf[CU_XIN], e->in_bytes, b->in, b->in_stride,
                                        e->in_bytes, b->n, cudaMemcpyHostToDevice, s->st),
                   "input copy");
        if (fault == OAG_CUDA_FAULT_LAUNCH)
            CU_TRY(e, cu_launch_fault_badconfig(s->st), "injected launch");
        CU_TRY(e, cudaGraphLaunch(s->graph[bucket_of(e, b->n)], s->st), "graph launch");
        if (fault == OAG_CUDA_FAULT_TRAP)
            CU_TRY(e, cu_launch_fault_trap(s->st), "injected trap");
        if (b->out_stride == e->out_bytes)
            CU_TRY(e, cudaMemcpyAsync(b->out, s->buf[CU_YOUT], (size_t)b->n * e->out_bytes,
                                      cudaMemcpyDeviceToHost, s->st), "output copy");
        else
            CU_TRY(e, cudaMemcpy2DAsync(b->out, b->out_stride, s->buf[CU_YOUT], e->out_bytes,
                                        e->out_bytes, b->n, cudaMemcpyDeviceToHost, s->st),
                   "output copy");
    }
    if (s->t1)
        CU_TRY(e, cudaEventRecord(s->t1, s->st), "event record");
    CU_TRY(e, cudaEventRecord(s->done, s->st), "event record");
    return 0;
}

/* Rows by pointer on a device that cannot read host memory by pointer: the scheduler registered
 * no lane (host_register said -ENOTSUP), so every row must sit in the batch's own buffers at its
 * place; such a batch runs as a plain one. 1 if it does. */
static int ptr_rows_in_place(const struct oag_batch *b)
{
    for (uint32_t i = 0; i < b->n; i++)
        if (b->in_ptr[i] != b->in + (size_t)i * b->in_stride ||
            b->out_ptr[i] != b->out + (size_t)i * b->out_stride)
            return 0;
    return 1;
}

/* Enqueues the slot's batch (by the submitting thread, or the launch thread for batches handed
 * to it); on failure the slot is made safe to reap. */
static void launch(struct oag_engine *e, struct cu_slot *s)
{
    s->rc = enqueue(e, s, s->b);
    if (s->rc) {
        /* Nothing of this batch may still run once it is reaped: wait for what was enqueued,
         * then give the slot a fresh stream, handle and graphs. A failing wait means the
         * context itself is gone. */
        (void)cudaGetLastError();
        cudaError_t err = cudaStreamSynchronize(s->st);
        (void)cudaGetLastError();
        if (err != cudaSuccess || slot_rebuild(e, s) != 0)
            atomic_store(&e->broken, 1);
    }
}

/* The launch thread: enqueues the batches handed to it (sub_seq .. launch_req - 1), in order,
 * and passes each on to the completion thread. Idle (waiting on cv_launch) whenever
 * launch_req == sub_seq; the submitting thread then enqueues by itself. */
static void *launch_thread(void *arg)
{
    struct oag_engine *e = arg;
    (void)cudaSetDevice(e->dev);
    prctl(PR_SET_NAME, "oag-cu-launch");
    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (e->sub_seq >= e->launch_req) {
            if (e->stop)
                break;
            pthread_cond_wait(&e->cv_launch, &e->mu);
            continue;
        }
        uint64_t seq = e->sub_seq;
        pthread_mutex_unlock(&e->mu);
        launch(e, &e->slot[seq % e->nslots]);
        pthread_mutex_lock(&e->mu);
        e->sub_seq = seq + 1;
        pthread_cond_signal(&e->cv_work);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

static int cuda_submit(struct oag_engine *e, struct oag_batch *b)
{
    if (b->in_ptr && b->out_ptr && !e->rows_by_ptr && b->n <= e->max_batch &&
        ptr_rows_in_place(b)) {
        const uint8_t **ip = b->in_ptr;
        uint8_t **op = b->out_ptr;
        b->in_ptr = NULL;
        b->out_ptr = NULL;
        int rc = cuda_submit(e, b);
        b->in_ptr = ip;
        b->out_ptr = op;
        return rc;
    }
    if (b->n > e->max_batch ||
        (b->n && (!b->in || !b->out || !b->in_len || !b->out_len || !b->status ||
                  b->in_stride < e->in_bytes || b->out_stride < e->out_bytes)) ||
        (b->in_ptr && (!e->rows_by_ptr || !b->out_ptr)))
        return -EINVAL;
    if (e->acc_seq - e->reap_seq >= e->nslots)
        return -EBUSY;
    /* recover() first: after a sticky fault even cudaSetDevice fails, and recover() is what
     * turns that into -EIO, then -ENODEV once the device has stayed away */
    if (atomic_load(&e->broken) || !ctx_ours(e)) {
        int rc = recover(e);
        if (rc)
            return rc;
    }
    cudaError_t err = cudaSetDevice(e->dev);
    if (err != cudaSuccess) {
        cu_fail(e, err, "cudaSetDevice");
        atomic_store(&e->broken, 1); /* the context is unusable: recover from the next submit */
        return -EIO;
    }
    struct cu_slot *s = &e->slot[e->acc_seq % e->nslots];
    for (uint32_t i = 0; i < b->n; i++) {
        int ok = b->in_len[i] == e->in_bytes;
        b->status[i] = ok ? 0 : -EINVAL;
        b->out_len[i] = ok ? e->out_bytes : 0;
    }
    if (b->n && b->in_ptr) {
        /* The slot's row table is free: its last batch was reaped (acc_seq - reap_seq <
         * nslots). Stores here precede the graph launch, which the device sees after them. */
        const void **tin = s->tab->ptr, **tout = s->tab->ptr + e->max_batch;
        for (uint32_t i = 0; i < b->n; i++) {
            int ok = b->status[i] == 0;
            tin[i] = ok ? b->in_ptr[i] : NULL;
            tout[i] = ok ? b->out_ptr[i] : NULL;
        }
        s->tab->n = b->n;
        plan_runs(e, s, b);
    } else {
        s->run_in.n = s->run_out.n = 0;
    }
    b->whole_rc = 0;
    s->b = b;
    s->bucket = b->n ? bucket_of(e, b->n) : 0;
    s->t_submit = now_ns();
    s->fault = e->fault;
    e->fault = OAG_CUDA_FAULT_NONE;
    uint64_t seq = e->acc_seq++;
    e->batches++;
    pthread_mutex_lock(&e->mu);
    /* Batches go to the device in order: through the launch thread while it has any. */
    if (e->launcher && (s->run_in.n || s->run_out.n || e->launch_req != e->sub_seq)) {
        e->launch_req = seq + 1;
        pthread_cond_signal(&e->cv_launch);
        pthread_mutex_unlock(&e->mu);
        return 0;
    }
    pthread_mutex_unlock(&e->mu);
    launch(e, s);
    pthread_mutex_lock(&e->mu);
    e->sub_seq = e->launch_req = seq + 1; /* the launch thread stays idle */
    pthread_cond_signal(&e->cv_work);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

static struct oag_batch *cuda_reap(struct oag_engine *e)
{
    /* pairs with the release store in completer() */
    uint64_t done = atomic_load_explicit(&e->done_seq, memory_order_acquire);
    if (e->reap_seq == done) {
        /* Drain the eventfd, then look again: a batch finishing after the read writes the fd
         * again, so no wake-up is lost (a spurious one costs one empty reap). */
        uint64_t v;
        if (read(e->efd, &v, sizeof v) < 0) {
            /* EAGAIN: nothing pending */
        }
        done = atomic_load_explicit(&e->done_seq, memory_order_acquire);
        if (e->reap_seq == done)
            return NULL;
    }
    struct oag_batch *b = e->slot[e->reap_seq % e->nslots].b;
    e->reap_seq++;
    return b;
}

static int cuda_event_fd(struct oag_engine *e) { return e->efd; }

static int cuda_host_register(struct oag_engine *e, void *p, size_t len)
{
    if (!e->rows_by_ptr || !p || !len)
        return -ENOTSUP;
    pthread_mutex_lock(&cu_reg_mu);
    for (struct cu_reg *r = cu_regs; r; r = r->next)
        if (r->p == p) {
            r->refs++;
            pthread_mutex_unlock(&cu_reg_mu);
            return 0;
        }
    int rc = -ENOMEM;
    struct cu_reg *r = malloc(sizeof *r);
    if (r) {
        cudaError_t err = cudaSetDevice(e->dev);
        if (err == cudaSuccess)
            err = cudaHostRegister(p, len, cudaHostRegisterPortable | cudaHostRegisterMapped);
        if (err == cudaSuccess) {
            *r = (struct cu_reg){ .next = cu_regs, .p = p, .len = len, .dev = e->dev,
                                  .refs = 1 };
            cu_regs = r;
            rc = 0;
        } else {
            rc = cu_fail(e, err, "cudaHostRegister (lane)");
            free(r);
        }
    }
    pthread_mutex_unlock(&cu_reg_mu);
    return rc;
}

static void cuda_host_unregister(void *p)
{
    pthread_mutex_lock(&cu_reg_mu);
    for (struct cu_reg **pp = &cu_regs; *pp; pp = &(*pp)->next) {
        struct cu_reg *r = *pp;
        if (r->p != p)
            continue;
        if (--r->refs == 0) {
            *pp = r->next;
            if (cudaSetDevice(r->dev) == cudaSuccess)
                (void)cudaHostUnregister(p);
            (void)cudaGetLastError();
            free(r);
        }
        break;
    }
    pthread_mutex_unlock(&cu_reg_mu);
}

static uint32_t cuda_out_row_bytes(struct oag_engine *e) { return e->out_bytes; }

static uint32_t cuda_inflight(struct oag_engine *e) { return e->nslots; }

void oag__cuda_fault_next(struct oag_engine *e, enum oag_cuda_fault kind) { e->fault = kind; }

void oag__cuda_stats(struct oag_engine *e, struct oag_cuda_stats *out)
{
    memset(out, 0, sizeof *out);
    out->batches = e->batches;
    out->failed = atomic_load(&e->failed);
    out->slot_rebuilds = e->slot_rebuilds;
    out->resets = e->resets;
    out->dma_rows = e->dma_rows;
    out->kern_rows = e->kern_rows;
    out->nbuckets = e->nbuckets;
    memcpy(out->buckets, e->buckets, e->nbuckets * sizeof e->buckets[0]);
}

/* Device memory in use (by every process on the device) and in all, for metrics. */
static int cuda_stats(struct oag_engine *e, struct oag_engine_stats *st)
{
    size_t free_b = 0, total_b = 0;
    if (cudaSetDevice(e->dev) != cudaSuccess || cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
        return -EIO;
    st->mem_used = (uint64_t)(total_b - free_b);
    st->mem_total = (uint64_t)total_b;
    st->device_ns = atomic_load(&e->gpu_ns);
    st->rows_dma = e->dma_rows; /* submitting thread's counters: the caller's own thread */
    st->rows_kern = e->kern_rows;
    st->dma_ops = e->dma_ops;
    return 0;
}

const struct oag_engine_ops engine_cuda_ops = {
    .name = "cuda",
    .create = cuda_create,
    .destroy = cuda_destroy,
    .host_alloc = cuda_host_alloc,
    .host_free = cuda_host_free,
    .submit = cuda_submit,
    .reap = cuda_reap,
    .event_fd = cuda_event_fd,
    .out_row_bytes = cuda_out_row_bytes,
    .max_inflight = CU_SLOTS,
    .inflight = cuda_inflight,
    .stats = cuda_stats,
    .host_register = cuda_host_register,
    .bus_reads = 1,
    .devices = oag__cuda_device_count,
    .host_unregister = cuda_host_unregister,
};
