/*
 * copy.h - parallel row copies for large batches. A batch of big rows (a 4096-wide float model
 * moves 32 KB per task) is more bytes than one core copies at the rate a GPU consumes them, so
 * the batcher hands the rows' copies to a few worker threads and waits for them. Small batches
 * are copied inline: waking workers would cost more than it saves.
 */
#ifndef OAG_SCHED_COPY_H
#define OAG_SCHED_COPY_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct copy_job {
    void *dst;
    const void *src;
    size_t len;
};

struct copypool {
    int nthreads;               /* workers (0: everything inline) */
    size_t threshold;           /* bytes per batch from which workers help */
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;               /* bumps for each batch of jobs */
    int stop;
    const struct copy_job *jobs;
    uint32_t njobs;
    int parts;                  /* workers + the caller */
    _Atomic int remaining;      /* parts not yet done */
};

/* Starts nthreads workers (0 allowed). Returns 0 or a negative errno. */
int copypool_init(struct copypool *p, int nthreads, size_t threshold);
void copypool_fini(struct copypool *p);
/* Copies every job; returns when all are done. total: the bytes, to decide whether to fan out.
 * Only the event loop's thread calls it. */
void copypool_run(struct copypool *p, const struct copy_job *jobs, uint32_t n, size_t total);

#endif
