/*
 * metrics.h - Prometheus metrics and health endpoints over HTTP (--metrics ADDR:PORT).
 *
 *   GET /metrics   the Prometheus text exposition format, version 0.0.4
 *   GET /healthz   200 "ok" while the event loop is alive (its heartbeat in the latest snapshot
 *                  is under METRICS_STALE_NS old), else 503
 *   GET /readyz    200 "ready" while the engine is loaded, warmed up and usable and the
 *                  supervisor is not draining (and the loop is alive), else 503 with the reason
 *
 * Two threads, and the HTTP side never touches the loop's live state:
 *
 *   shard threads (the metrics_task_* and metrics_batch hooks in batcher.c) record
 *     observations into their shard's live histograms and counters, which only they touch;
 *   loop thread (metrics_tick): every
 *     METRICS_PUBLISH_NS, or on the first tick after a scrape asked for a fresh one, it builds a
 *     snapshot of every counter and gauge from struct sup (the world stopped: shard.h) and
 *     copies it into the shared slot
 *     under a mutex it only try-locks: the loop never waits for the HTTP thread (a busy mutex
 *     just moves the copy to the next tick).
 *   HTTP thread (libmicrohttpd, MHD_USE_INTERNAL_POLLING_THREAD)
 *     asks for a fresh snapshot, waits for it at most METRICS_FRESH_WAIT_NS, copies the latest
 *     one out under the mutex and formats from its copy into one bounded buffer per scrape.
 *
 * A snapshot is at most METRICS_PUBLISH_NS older than the scrape while the loop runs (usually
 * fresh: the loop ticks at least every 50 ms even when idle). Values that come from agents
 * (their `rejected` counters, their submit times) are untrusted: an agent can only skew its own
 * contribution.
 */
#ifndef OAG_SCHED_METRICS_H
#define OAG_SCHED_METRICS_H

#include <errno.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sup.h"

#define METRICS_PUBLISH_NS 100000000ull     /* snapshot at least this often */
#define METRICS_STALE_NS 10000000000ull     /* /healthz: a loop silent this long is stuck */
#define METRICS_FRESH_WAIT_NS 250000000ull  /* a scrape waits this long for a fresh snapshot */

struct metrics;

/* Checks an --metrics value: a literal IPv4 address or a bracketed literal IPv6 address, a
 * colon and a port from 1 to 65535 ("127.0.0.1:9464", "[::1]:9464"); host names are refused.
 * Fills *sa and *salen when they are not NULL. Returns 0, or -EINVAL with one line saying why
 * (naming arg, without the option's name) in msg. Thread-safe. */
int metrics_parse_addr(const char *arg, struct sockaddr_storage *sa, socklen_t *salen, char *msg,
                       size_t msglen);

/* Loop thread, once before serving: if s->cfg.metrics is set, listens there, publishes a first
 * snapshot and starts the HTTP thread; s->metrics then owns them. Returns 0 (also when metrics
 * are off), or a negative errno with the reason logged (address in use, out of memory...). */
int metrics_start(struct sup *s);

/* Loop thread, once after the loop: stops the HTTP thread (answers in progress finish), closes
 * the socket and frees s->metrics. A no-op when metrics are off. */
void metrics_stop(struct sup *s);

/* ---- the loop thread's live observations (the inline hooks below write them) ---------- */

#define METRICS_BUCKETS 20  /* finite bucket bounds at most; one more slot counts the rest */

struct metrics_hist {
    uint64_t n[METRICS_BUCKETS + 1]; /* per bucket, not cumulative (cumulated when formatted) */
    uint64_t count;
    uint64_t sum;                    /* nanoseconds, or rows */
};

/* One per shard, written by its thread only; a snapshot (world stopped) sums them. */
struct metrics_live {
    struct metrics_hist queue, latency, batch;
    uint64_t ok, error, timed_out;
};

/* Seconds buckets: 10 us .. 10 s in 1-2.5-5 steps (metrics.c holds the bounds in ns, with a
 * UINT64_MAX sentinel, and their text). Consecutive bounds are at least 2x apart, so a power of
 * two [2^k, 2^k+1) holds at most one: the bucket is the count of bounds below 2^k, plus one if
 * ns is above the next bound. Constant time, whatever the wait. */
#define METRICS_TIME_BUCKETS 19
extern const uint64_t metrics__time_le[METRICS_TIME_BUCKETS + 1];
extern const uint8_t metrics__time_below_pow2[64];
static inline void metrics__time(struct metrics_hist *h, uint64_t ns)
{
    uint32_t i = 0;
    if (ns > metrics__time_le[0]) {
        i = metrics__time_below_pow2[63 - __builtin_clzll(ns)];
        i += ns > metrics__time_le[i];
    }
    h->n[i]++;
    h->count++;
    h->sum += ns;
}

/* Loop thread, every iteration: publishes a snapshot when one is due or was asked for. */
void metrics__tick(struct metrics *m, struct sup *s, uint64_t now);
static inline void metrics_tick(struct sup *s, uint64_t now)
{
    if (s->metrics)
        metrics__tick(s->metrics, s, now);
}

/* Shard thread: a task entered a batch after queue_ns in the supervisor's queue. */
static inline void metrics_task_queued(struct shard *sh, uint64_t queue_ns)
{
    if (sh->ml)
        metrics__time(&sh->ml->queue, queue_ns);
}

/* Shard thread: a task's result (status 0 or a negative errno) is being written at now;
 * origin_ns is when it was submitted (the agent's clock if plausible, else intake). */
static inline void metrics_task_done(struct shard *sh, uint64_t origin_ns, uint64_t now,
                                     int32_t status)
{
    struct metrics_live *l = sh->ml;
    if (!l)
        return;
    metrics__time(&l->latency, now > origin_ns ? now - origin_ns : 0);
    if (status == 0)
        l->ok++;
    else if (status == -ETIMEDOUT)
        l->timed_out++;
    else
        l->error++;
}

/* Loop thread: a batch of rows finished (or failed to start). Bounds: powers of two 1..65536. */
#define METRICS_SIZE_BUCKETS 17
static inline void metrics_batch(struct shard *sh, uint32_t rows)
{
    if (!sh->ml)
        return;
    struct metrics_hist *h = &sh->ml->batch;
    uint32_t i = rows <= 1 ? 0 : 32u - (uint32_t)__builtin_clz(rows - 1); /* ceil(log2) */
    h->n[i < METRICS_SIZE_BUCKETS ? i : METRICS_SIZE_BUCKETS]++;
    h->count++;
    h->sum += rows;
}

#endif
