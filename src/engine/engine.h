/*
 * engine.h - the inference engine behind an ops table. The scheduler calls only these; a backend
 * (identity, cpu, cuda) registers one table and is chosen once at start by name.
 *
 * Lifecycle: create -> (host_alloc for batch buffers) -> submit/reap ... -> destroy.
 * Synchronous engines (reap == NULL) finish a batch inside submit(). Asynchronous engines (CUDA)
 * return from submit() at once, keep up to max_inflight batches in flight, make event_fd()
 * readable when one finishes, and hand finished batches back through reap() in submission order.
 * A batch and its buffers belong to the engine from submit() until reap() returns it.
 */
#ifndef OAG_SCHED_ENGINE_H
#define OAG_SCHED_ENGINE_H

#include <stddef.h>
#include <stdint.h>

struct oag_engine;
struct oag_model;

struct oag_engine_params {
    uint32_t max_batch;
    uint32_t max_payload;          /* bytes of one task's input and output slot */
    const struct oag_model *model; /* NULL for identity */
    int device;                    /* GPU ordinal for cuda; -1 otherwise */
    const uint32_t *buckets;       /* preferred batch sizes, ascending (graphs are captured per
                                      bucket); may be NULL */
    uint32_t nbuckets;
    int threads;                   /* CPU threads for BLAS; 0: library default */
};

/* One batch of n rows. Input row i is in_len[i] bytes at in + i * in_stride; the engine writes
 * output row i (out_len[i] bytes, at most out_stride) at out + i * out_stride and status[i]
 * (0 or a negative errno: -EINVAL for an input of the wrong size). For model engines rows are
 * float32: in_len must be input_dim * 4, and the output is output_dim * 4 bytes.
 *
 * Rows by pointer (engines with host_register only): when in_ptr is set, input row i is at
 * in_ptr[i] and output row i goes to out_ptr[i] (room for out_stride bytes) instead; each
 * pointer lies either in memory given to host_register or in this batch's own in/out buffers.
 * This is how rows travel between agents' lanes and the device with no copy by the scheduler. */
struct oag_batch {
    uint32_t n;
    uint32_t in_stride, out_stride;
    uint8_t *in;
    uint8_t *out;
    const uint8_t **in_ptr;        /* NULL: rows are in `in` / `out` */
    uint8_t **out_ptr;
    uint32_t *in_len;
    uint32_t *out_len;
    int32_t *status;
    int whole_rc;                  /* set by the engine: 0, or the error that failed every row */
    void *user;                    /* the scheduler's */
};

/* Resource figures an engine may report (metrics). */
struct oag_engine_stats {
    uint64_t mem_used;             /* bytes in use on the engine's device (all users) */
    uint64_t mem_total;            /* bytes the device has */
    uint64_t device_ns;            /* device time of batches so far, if measured (else 0) */
    uint64_t rows_dma, rows_kern;  /* rows by pointer moved (each way counted) by the copy
                                      engines and by copy kernels (engines that move them) */
    uint64_t dma_ops;              /* copy-engine transfers those rows took (runs) */
};

struct oag_engine_ops {
    const char *name;
    /* Returns 0 and *out, or a negative errno with a message logged. */
    int (*create)(struct oag_engine **out, const struct oag_engine_params *p);
    void (*destroy)(struct oag_engine *e);
    /* Host memory for batch buffers (pinned for CUDA). NULL: the scheduler uses malloc. */
    void *(*host_alloc)(struct oag_engine *e, size_t bytes);
    void (*host_free)(struct oag_engine *e, void *p);
    /* Starts a batch. Returns 0, or a negative errno when it could not even start (the
     * scheduler fails every row). A synchronous engine has finished it on return. */
    int (*submit)(struct oag_engine *e, struct oag_batch *b);
    /* Async only: the oldest finished batch, or NULL if none has finished yet. */
    struct oag_batch *(*reap)(struct oag_engine *e);
    /* Async only: an fd that is readable when a batch has finished (eventfd semantics). */
    int (*event_fd)(struct oag_engine *e);
    /* Bytes of one output row for this model (0: same as the input, identity). */
    uint32_t (*out_row_bytes)(struct oag_engine *e);
    /* Async only: batches that may be in flight at once (>= 2 to overlap copies and compute). */
    uint32_t max_inflight;
    /* Optional: this instance's own count when it differs from max_inflight (set at create,
     * for example from the environment). */
    uint32_t (*inflight)(struct oag_engine *e);
    /* Optional (NULL: nothing to report): fills *st; 0 or a negative errno. Called from the
     * scheduler's thread, a few times a second at most. */
    int (*stats)(struct oag_engine *e, struct oag_engine_stats *st);
    /* Optional (NULL: rows are always copied into the batch buffers). Makes host memory
     * [p, p + len) usable for rows by pointer (pins it for a GPU) for every engine of this
     * backend in the process; e names the device to do it on. Returns 0, or a negative errno
     * (the memory is then not used by pointer). Registrations are counted: each successful
     * call is paired with one host_unregister(p), which may come after e is destroyed.
     * Called from the scheduler's thread. */
    int (*host_register)(struct oag_engine *e, void *p, size_t len);
    void (*host_unregister)(void *p);
    /* 1: rows by pointer are read by a device across the bus, which takes a line still
     * modified in a core's cache at a fraction of the speed of one in memory (the scheduler
     * then may advise agents to write rows with streaming stores: scheduler/hints.h). */
    int bus_reads;
    /* Optional (NULL: the backend needs no device): devices this backend could use now, 0 if
     * none; cheap, creates no engine (the supervisor sizes its data plane before it builds). */
    int (*devices)(void);
};

/* The table for a backend name, or NULL. */
const struct oag_engine_ops *engine_lookup(const char *name);
/* Comma-separated names, for --help. */
const char *engine_names(void);

#endif
