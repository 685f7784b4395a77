/*
 * shard.h - the data plane over several threads (--data-threads K).
 *
 * The supervisor's lanes are split into K shards at attach. A shard is everything the busy path
 * touches: a batcher (queues, pend pool, batch formation, completions), the lanes it serves, its
 * engine instances (one per GPU, or --instances, for each shard: a batch slot never crosses
 * threads), its chunks of the shared result area, its wake-up threads, its sleep word and
 * doorbell in the region (ABI 4: each lane's header names its shard). Shard 0 runs on the main
 * loop thread, shards 1..K-1 on threads of their own; with K = 1 the supervisor is one thread as
 * before.
 *
 * The control plane (connections, hello and cut, the fleet, oag-ctl, reload, re-creation,
 * metrics snapshots, systemd) stays on the main thread, and changes a shard's state only with
 * the world stopped:
 *
 *   main                                      shard thread (each loop iteration, a safe point)
 *   ----                                      ------------
 *   store park_req = 1 (seq_cst)              if load park_req (seq_cst):
 *   wait until load parked == 1 (seq_cst)         store parked = 1 (seq_cst)
 *   ... change lanes, instances, counters ...     wait (futex) while park_req
 *   store park_req = 0 (release), futex wake      store parked = 0 (seq_cst); check again
 *
 * A shard asleep counts as parked: it stores parked = 1 before it waits and parked = 0 after,
 * then checks park_req before touching anything (Dekker: either main sees parked == 0 and waits
 * for it, or the shard sees park_req and parks), so stopping the world wakes no sleeping
 * shard. Stops come with control events (an agent attaching or leaving, a status request, the
 * 100 ms metrics snapshot, the 50 ms timer) and cost a busy shard one loop iteration.
 *
 * What a shard thread finds that needs the control plane (a lane to cut for a bad index, a
 * retired instance now idle) it records and asks for through kick_fd; main handles it with the
 * world stopped.
 */
#ifndef OAG_SCHED_SHARD_H
#define OAG_SCHED_SHARD_H

#include <pthread.h>
#include <stdint.h>

#include "shm/atomic.h"
#include "shm/layout.h"
#include "shard_auto.h"
#include "waker.h"

struct sup;
struct metrics_live;

struct shard {
    struct sup *s;
    uint32_t id;
    struct batcher bat;
    uint32_t *active;          /* ids of its lanes, dense (cap: max_lanes) */
    uint32_t nactive;
    int doorbell_fd;           /* its agents ring it when it sleeps */
    struct oag_shard_ctl *ctl; /* its line of the region */
    uint32_t sleep_epoch;
    uint64_t spin_ns;          /* adaptive, 0..cfg.spin_us */
    int spun;
    uint64_t tasks_done;
    uint32_t res_next;         /* shared result area: its chunks are those with i % nsh == id */
    uint64_t res_batches, res_fallbacks;
    struct metrics_live *ml;   /* --metrics: its live observations (metrics.c), or NULL */
    struct wakers wakers;      /* write its agents' wake-ups for big bursts */
    struct {                   /* where its thread's time goes (OAG_PROFILE_FILE) */
        uint64_t cqe_ns, collect_ns, dispatch_ns, sleep_ns, iters, start_ns;
        uint64_t poll_ns;      /* passes that found nothing to reap, take or start */
    } prof;
    /* shard threads (id > 0) */
    pthread_t th;
    int started;
    int ctl_efd;               /* main wakes the thread (stop, quit) */
    oag_atomic_u32 park_req, parked, quit;
    oag_atomic_u32 want_main;  /* a lane to cut or an instance to reap: main looks */
};

/* Sets cfg.data_threads and data_auto by data_threads_decide from the engine the supervisor
 * will use, its model and the CPUs it may run on. Before the region is made. */
void shards_auto(struct sup *s);
/* Creates the shards (their batchers, doorbells, wake-up threads); threads start later. */
int shards_init(struct sup *s);
/* Starts shards 1..K-1's threads (after the engines). 0 or a negative errno. */
int shards_start(struct sup *s);
/* Stops and joins the threads (their batches in flight are finished by the main loop). */
void shards_stop(struct sup *s);
void shards_fini(struct sup *s);

/* Main thread: every shard thread parked (nests; no-op with one shard). */
void world_stop(struct sup *s);
void world_start(struct sup *s);

/* The shard to serve a new lane: the one with the fewest lanes. */
struct shard *shard_pick(struct sup *s);
/* A lane found broken by its shard: cut now on the main thread, else asked of main. */
void shard_cut(struct shard *sh, struct lane *l, const char *why);
/* Shard thread: asks the main thread to look at its requests (a lane's cut_why, an idle
 * retired instance); main serves them with the world stopped. */
void shard_ask_main(struct shard *sh);
/* Main thread, world stopped: what shard threads asked for (cuts, instances to reap). */
void shards_serve_requests(struct sup *s);

/* A shard's loop, the parts the main loop (shard 0) shares with the shard threads:
 *   shard_pass   deadlines, intake, batches, after completions reaped since t0 (`reaped`:
 *                whether any were); returns whether anything was reaped, taken or started
 *                (*got: tasks taken; *wake_at: when a batch delay runs out)
 *   shard_busy   after a pass that did something (a spin that found work grows the budget)
 *   shard_spin   idle: 1 while the adaptive spin budget lasts (spun once more), 0: sleep
 *   shard_slept  after a sleep of `slept` ns out of `wait`: woken that soon, spin longer
 *   shard_wake_at  when to wake at the latest: timer, a batch delay, a queued deadline */
int shard_pass(struct shard *sh, uint64_t t0, uint64_t now, int reaped, uint64_t *wake_at,
               int *got);
void shard_busy(struct shard *sh, int got);
int shard_spin(struct shard *sh, uint64_t now, uint64_t *idle_since);
void shard_slept(struct shard *sh, uint64_t slept, uint64_t wait);
uint64_t shard_wake_at(const struct shard *sh, uint64_t timer, uint64_t wake_at);
/* Time its thread spent working (completions, intake, batches), not spinning idle, asleep or in
 * passes that found nothing to do: against the wall time, whether another data thread would
 * help (oag-ctl status). Read with the world stopped. */
uint64_t shard_busy_ns(const struct shard *sh);

/* Sums over shards (world stopped, or one shard). */
struct shard_totals {
    uint64_t tasks_done, batches, tasks_total, dropped, timed_out, ok, failed, engine_errors;
    uint64_t busy_events, queue_ns, compute_ns, retried, wakes, wakes_handed;
    uint64_t res_batches, res_fallbacks, settle_waits;
    uint32_t npend;
    int wakers;
};
void shards_totals(struct sup *s, struct shard_totals *t);
int shards_busy(struct sup *s);

#endif
