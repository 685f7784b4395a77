/*
 * inst.h - engine instances as the scheduler sees them: every instance is asynchronous.
 *
 * An asynchronous backend (CUDA) is used as it is. A synchronous backend runs either inline
 * (identity: zero compute, a thread hand-off would only add latency) or on a worker thread of
 * its own (cpu), so that the event loop keeps taking tasks, expiring deadlines and answering
 * control requests while a batch computes.
 */
#ifndef OAG_SCHED_INST_H
#define OAG_SCHED_INST_H

#include <pthread.h>
#include <stdint.h>

#include "engine/engine.h"

struct oag_model;

struct inst {
    const struct oag_engine_ops *ops;
    struct oag_engine *e;
    struct oag_model *model;    /* not owned (engines.c counts references); may be NULL */
    uint32_t model_version;
    int device;
    uint32_t max_inflight;
    uint32_t inflight;          /* batches submitted, not yet reaped */
    int retired;                /* replaced by a reload: destroy once inflight == 0 */
    int failed;                 /* taken out of rotation after repeated failures */
    uint32_t consec_errors;     /* whole-batch failures in a row */
    uint64_t retry_ns;          /* failed: when to try re-creating it */
    uint64_t created_ns;        /* when it entered the rotation */
    uint64_t backoff_ns;        /* a re-created instance that fails again soon waits longer */
    struct oag_engine_params params; /* what it was created with (re-creation) */
    int threaded_req;
    int delay_us;               /* test builds: extra time per batch (OAG_FAULT_ENGINE_DELAY_US) */
    int ordinal;                /* position among its backend's instances (0 = first device) */
    uint32_t shard;             /* the shard (data-plane thread) that feeds it: only that thread
                                   submits to and reaps it */
    uint64_t batches, rows, busy_ns, errors;
    uint64_t busy_since;        /* async: when inflight last went from 0 to 1 */
    /* worker thread for synchronous backends */
    int threaded;
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct oag_batch *queued[8];
    uint32_t queued_head, queued_n;
    struct oag_batch *done[8];
    uint32_t done_head, done_n;
    int stop;
    int efd;                    /* readable when a batch finished (threaded or async) */
    /* inline synchronous backends */
    struct oag_batch *inline_done[8];
    uint32_t inline_n;
};

/* Creates an instance of backend ops on model (which must outlive the instance).
 * threaded: run a synchronous backend on a worker thread. Returns 0 or a negative errno. */
int inst_create(struct inst **out, const struct oag_engine_ops *ops,
                const struct oag_engine_params *p, struct oag_model *model, int threaded);
void inst_destroy(struct inst *in);

/* Starts b (in->inflight < in->max_inflight). Returns 0 or a negative errno (nothing started). */
int inst_submit(struct inst *in, struct oag_batch *b);
/* The oldest finished batch, or NULL. */
struct oag_batch *inst_reap(struct inst *in);
/* Test builds (-Dfault_injection=true): set once the engines are warmed up; from then on
 * $OAG_FAULT_ENGINE_BATCHES=N fails the next N batches with -EIO. */
extern int inst_fault_armed;
/* Arms it (reads the variables once; before the data threads start). */
void inst_fault_arm(void);

/* fd readable when a batch finished, or -1 (inline: reap right after submit). */
int inst_event_fd(struct inst *in);

#endif
