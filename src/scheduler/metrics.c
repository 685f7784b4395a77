/*
 * metrics.c - Prometheus metrics and health endpoints; the threading contract is in metrics.h.
 *
 * Where each value comes from (all read by the loop thread when it builds a snapshot):
 *   oag_tasks_total{outcome}        ok / error / timed_out: counted by metrics_task_done()
 *                                   as each result is written (the same call records its
 *                                   latency: their sum is oag_task_latency_seconds_count,
 *                                   dropped results of departed agents are in neither);
 *                                   rejected_busy: the
 *                                   sum of the agents' own `rejected` counters from their state
 *                                   records (submits liboag refused at once: -EBUSY, overall
 *                                   queue full, or -EAGAIN, lane full), kept monotonic across
 *                                   detaches (a departed lane's last value is kept)
 *   oag_task_queue_seconds          intake to entering a batch (tasks that entered a batch)
 *   oag_task_latency_seconds        the agent's submit_ns (its CLOCK_MONOTONIC, same host) to
 *                                   the result being written, every result; intake time when
 *                                   the submit time is implausible (zero or after intake)
 *   oag_batch_size                  rows per batch, every batch (= oag_batches_total)
 *   oag_engine_busy_seconds_total   per (backend, device): the instances' own busy time, with
 *                                   instances replaced by a reload or re-creation carried over
 *   oag_lane_occupancy              max over attached lanes of submission-ring slots in use /
 *                                   ring slots (oag_lane_tasks: the sum, in tasks)
 * GPU memory is not reported: the engine ops table has no way to ask for it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "inst.h"
#include "log.h"
#include "metrics.h"
#include "shm/latch.h"

/* ---- histograms (recorded by the inline hooks in metrics.h) ----------------------------- */

const uint64_t metrics__time_le[METRICS_TIME_BUCKETS + 1] = {
    10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000ull,
    5000000000ull, 10000000000ull, UINT64_MAX,
};

/* [k]: how many bounds lie below 2^k (generated from the bounds above; tests/metrics checks
 * the buckets end to end). */
const uint8_t metrics__time_below_pow2[64] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2,
    3, 4, 5, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 16,
    17, 18, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19,
    19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19, 19,
};

/* The text the exposition prints for each of metrics__time()'s bounds. */
static const char *const time_le_txt[] = {
    "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};
_Static_assert(sizeof time_le_txt / sizeof time_le_txt[0] == METRICS_TIME_BUCKETS,
               "one text per bound");
_Static_assert(METRICS_TIME_BUCKETS <= METRICS_BUCKETS, "time buckets fit");
_Static_assert(METRICS_SIZE_BUCKETS <= METRICS_BUCKETS, "size buckets fit");

/* ---- the snapshot ---------------------------------------------------------------------- */

#define MX_ENG SUP_MAX_INST
#define MX_DETACHED (AG_STOPPING + 1)  /* oag_agents index for lanes of agents we did not start */
#define MX_STATES (MX_DETACHED + 1)

struct mx_engine {
    char backend[16];
    int device;                 /* GPU ordinal, -1: host */
    uint64_t busy_ns;
};

struct mx_gpu {
    int device;
    uint64_t used, total;
};

struct mx_snap {
    struct mx_gpu gpu[SUP_MAX_GPUS]; /* devices whose engine reports memory (ops->stats) */
    uint32_t ngpu;
    uint64_t seq;               /* bumps per publish */
    uint64_t heartbeat_ns;      /* loop's CLOCK_MONOTONIC when it built this */
    int loaded, usable, draining, reloading;
    uint64_t ok, error, timed_out, rejected;
    uint64_t busy_events, batches, compute_ns, engine_errors, dropped, cut_offs, refused;
    uint64_t shared_batches, shared_fallbacks; /* --shared-results */
    uint64_t restarts;
    uint32_t pending, max_queue, max_batch, lanes, batches_in_flight;
    uint32_t agents[MX_STATES];
    uint32_t lane_used_max, lane_slots_max; /* fullest lane: slots in use, of how many */
    uint64_t lane_tasks;
    struct mx_engine eng[MX_ENG];
    uint32_t neng;
    char backend[32];
    char model[64];
    uint32_t model_version;
    uint64_t model_load_ns;
    double start_unix;          /* wall-clock start, seconds since the epoch */
    struct metrics_hist queue, latency, batch;
};

/* What the loop remembers about one lane: the agent's last `rejected` value for this lane
 * generation, so that the sum never goes down when an agent detaches. */
struct mx_lane {
    uint32_t gen;
    int tracked;
    uint64_t rejected;
};

/* An engine instance seen in the last snapshot. */
struct mx_seen {
    const struct inst *in;
    uint32_t key;               /* index in eng_keys */
    uint64_t last_ns;
    int hit;
};

struct metrics {
    /* loop thread only */
    struct metrics_live *live;  /* one per shard, each written by its shard's thread */
    struct mx_lane *lanes;      /* cfg.max_lanes */
    uint32_t *tracked;          /* ids of tracked lanes, dense */
    uint32_t ntracked;
    uint64_t rejected_gone;     /* last values of lanes that went away */
    struct mx_engine eng_keys[MX_ENG]; /* busy_ns here: carried over from gone instances */
    uint32_t nkeys;
    struct mx_seen seen[MX_ENG];
    uint32_t nseen;
    uint64_t last_pub_ns;
    int dirty;                  /* built but not yet copied (the mutex was busy) */
    int was_reloading;
    uint64_t reload_start_ns;
    uint32_t seen_version;
    uint64_t model_load_ns;
    double start_unix;
    struct mx_snap build;       /* the loop's working copy */

    /* shared: under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;          /* broadcast after each publish */
    struct mx_snap pub;
    int stopping;
    oag_atomic_u32 want;        /* HTTP thread asks for a fresh snapshot (relaxed: a hint) */

    /* HTTP thread */
    struct MHD_Daemon *d;
    const char *addr;
};


/* ---- address ----------------------------------------------------------------------------- */

static int addr_fail(const char *arg, const char *why, char *msg, size_t msglen)
{
    snprintf(msg, msglen, "'%s': %s; expected a literal IPv4 address or a [bracketed] IPv6 "
                          "address, ':' and a port from 1 to 65535 (e.g. 127.0.0.1:9464 or "
                          "[::1]:9464)", arg, why);
    return -EINVAL;
}

int metrics_parse_addr(const char *arg, struct sockaddr_storage *sa, socklen_t *salen, char *msg,
                       size_t msglen)
{
    char host[64];
    const char *port;
    int v6 = arg[0] == '[';
    if (v6) {
        const char *close = strchr(arg, ']');
        if (!close || close[1] != ':')
            return addr_fail(arg, "no ':PORT' after the bracketed address", msg, msglen);
        size_t n = (size_t)(close - arg - 1);
        if (n == 0 || n >= sizeof host)
            return addr_fail(arg, "no IPv6 address between the brackets", msg, msglen);
        memcpy(host, arg + 1, n);
        host[n] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(arg, ':');
        if (!colon)
            return addr_fail(arg, "no port", msg, msglen);
        size_t n = (size_t)(colon - arg);
        if (n == 0 || n >= sizeof host)
            return addr_fail(arg, n ? "address too long" : "no address", msg, msglen);
        memcpy(host, arg, n);
        host[n] = '\0';
        if (strchr(host, ':'))
            return addr_fail(arg, "an IPv6 address must be bracketed", msg, msglen);
        port = colon + 1;
    }
    unsigned long p = 0;
    size_t digits = 0;
    for (const char *c = port; *c; c++, digits++) {
        if (*c < '0' || *c > '9' || digits >= 5)
            return addr_fail(arg, "bad port", msg, msglen);
        p = p * 10 + (unsigned long)(*c - '0');
    }
    if (digits == 0 || p < 1 || p > 65535)
        return addr_fail(arg, "bad port", msg, msglen);
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t len;
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return addr_fail(arg, "not a literal IPv6 address (host names are not resolved)", msg,
                             msglen);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)p);
        len = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return addr_fail(arg, "not a literal IPv4 address (host names are not resolved)", msg,
                             msglen);
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)p);
        len = sizeof *a;
    }
    if (sa)
        *sa = ss;
    if (salen)
        *salen = len;
    return 0;
}

/* ---- building a snapshot (loop thread) --------------------------------------------------- */

/* Sums the agents' `rejected` counters (monotonic) and measures lane fill. */
static void snap_lanes(struct metrics *m, struct sup *s, struct mx_snap *b)
{
    for (uint32_t k = 0; k < m->ntracked;) {
        uint32_t id = m->tracked[k];
        struct mx_lane *t = &m->lanes[id];
        if (!s->lanes[id].in_use || s->lanes[id].generation != t->gen) {
            m->rejected_gone += t->rejected;
            t->tracked = 0;
            m->tracked[k] = m->tracked[--m->ntracked];
        } else {
            k++;
        }
    }
    uint64_t sum = 0;
    for (uint32_t i = 0; i < s->nactive; i++) {
        struct lane *l = &s->lanes[s->active[i]];
        struct mx_lane *t = &m->lanes[l->id];
        if (!t->tracked) {
            t->tracked = 1;
            t->gen = l->generation;
            t->rejected = 0;
            m->tracked[m->ntracked++] = l->id;
        }
        /* The agent's record: untrusted, read through its latch like ctl.c does; a counter that
         * goes backwards is ignored. */
        struct oag_agent_state st;
        struct oag_latch_agent *la = (struct oag_latch_agent *)(l->map + l->hdr.state_off);
        if (latch_read(&la->seq, la->rec[0], sizeof st / 8, &st, 8) == 0 &&
            st.rejected > t->rejected)
            t->rejected = st.rejected;
        sum += t->rejected;
        /* Pairs with the release in the agent's ring_prod_publish(); an impossible index is
         * skipped here (the batcher cuts that lane off). */
        uint32_t prod = oag_load_acquire_u32(l->sub.prod);
        uint32_t used = prod - l->sub.mine, slots = l->sub.mask + 1;
        if (used > slots)
            continue;
        b->lane_tasks += used;
        if ((uint64_t)used * b->lane_slots_max >= (uint64_t)b->lane_used_max * slots) {
            b->lane_used_max = used;
            b->lane_slots_max = slots;
        }
    }
    b->rejected = m->rejected_gone + sum;
}

static uint32_t eng_key(struct metrics *m, const char *backend, int device)
{
    for (uint32_t k = 0; k < m->nkeys; k++)
        if (m->eng_keys[k].device == device && !strcmp(m->eng_keys[k].backend, backend))
            return k;
    if (m->nkeys == MX_ENG)
        return UINT32_MAX;
    struct mx_engine *e = &m->eng_keys[m->nkeys];
    snprintf(e->backend, sizeof e->backend, "%s", backend);
    e->device = device;
    e->busy_ns = 0;
    return m->nkeys++;
}

/* Busy time per (backend, device), monotonic across instances that come and go. */
static void snap_engines(struct metrics *m, struct sup *s, struct mx_snap *b, uint64_t now)
{
    for (uint32_t k = 0; k < m->nseen; k++)
        m->seen[k].hit = 0;
    uint32_t inflight = 0;
    for (uint32_t i = 0; i < s->ninst; i++) {
        struct inst *in = s->inst[i];
        uint64_t busy;
        if (in->threaded) {
            pthread_mutex_lock(&in->mu); /* the worker adds to busy_ns under it */
            busy = in->busy_ns;
            pthread_mutex_unlock(&in->mu);
        } else {
            busy = in->busy_ns;
            if (in->ops->reap && in->inflight && now > in->busy_since)
                busy += now - in->busy_since; /* async: the busy stretch still running */
        }
        inflight += in->inflight;
        struct oag_engine_stats es;
        if (in->ops->stats && !in->retired && b->ngpu < SUP_MAX_GPUS &&
            in->ops->stats(in->e, &es) == 0) {
            uint32_t g = 0;
            while (g < b->ngpu && b->gpu[g].device != in->device)
                g++;
            if (g == b->ngpu) {
                b->gpu[b->ngpu++] = (struct mx_gpu){ .device = in->device, .used = es.mem_used,
                                                     .total = es.mem_total };
            }
        }
        uint32_t key = eng_key(m, in->ops->name, in->device);
        if (key == UINT32_MAX)
            continue;
        struct mx_seen *sn = NULL;
        for (uint32_t k = 0; k < m->nseen; k++)
            if (m->seen[k].in == in && m->seen[k].key == key)
                sn = &m->seen[k];
        if (sn && busy < sn->last_ns) {
            m->eng_keys[key].busy_ns += sn->last_ns; /* a new instance at a freed address */
        } else if (!sn) {
            if (m->nseen == MX_ENG)
                continue;
            sn = &m->seen[m->nseen++];
            sn->in = in;
            sn->key = key;
        }
        sn->last_ns = busy;
        sn->hit = 1;
    }
    for (uint32_t k = 0; k < m->nseen;) {
        if (m->seen[k].hit) {
            k++;
            continue;
        }
        m->eng_keys[m->seen[k].key].busy_ns += m->seen[k].last_ns; /* gone: keep its time */
        m->seen[k] = m->seen[--m->nseen];
    }
    b->neng = m->nkeys;
    for (uint32_t k = 0; k < m->nkeys; k++)
        b->eng[k] = m->eng_keys[k];
    for (uint32_t k = 0; k < m->nseen; k++)
        b->eng[m->seen[k].key].busy_ns += m->seen[k].last_ns;
    b->batches_in_flight = inflight;
}

static void hist_add(struct metrics_hist *to, const struct metrics_hist *h)
{
    for (int i = 0; i <= METRICS_BUCKETS; i++)
        to->n[i] += h->n[i];
    to->count += h->count;
    to->sum += h->sum;
}

/* World stopped (the caller's): reads every shard's counters. */
static void snap_build(struct metrics *m, struct sup *s, uint64_t now)
{
    struct mx_snap *b = &m->build;
    uint64_t seq = b->seq;
    memset(b, 0, sizeof *b);
    b->seq = seq;
    b->heartbeat_ns = now;
    b->loaded = s->ready;
    b->usable = engines_usable(s);
    b->draining = s->draining;
    b->reloading = s->reloading;
    struct shard_totals t;
    shards_totals(s, &t);
    for (uint32_t k = 0; k < s->nsh; k++) {
        const struct metrics_live *l = &m->live[k];
        b->ok += l->ok;
        b->error += l->error;
        b->timed_out += l->timed_out;
        hist_add(&b->queue, &l->queue);
        hist_add(&b->latency, &l->latency);
        hist_add(&b->batch, &l->batch);
    }
    b->busy_events = t.busy_events;
    b->shared_batches = t.res_batches;
    b->shared_fallbacks = t.res_fallbacks;
    b->batches = t.batches;
    b->compute_ns = t.compute_ns;
    b->engine_errors = t.engine_errors;
    b->dropped = t.dropped;
    b->cut_offs = s->cut_offs;
    b->refused = s->refused;
    b->pending = t.npend;
    b->max_queue = s->cfg.max_queue;
    b->max_batch = s->cfg.max_batch;
    b->lanes = s->nactive;
    for (int i = 0; i < s->nagents; i++) {
        struct agent *a = &s->agents[i];
        b->restarts += a->restarts;
        if (!a->wanted && a->state == AG_EXITED && a->spawn_gen == 0)
            continue; /* a record never started (as oag-ctl status skips it) */
        if ((int)a->state >= 0 && (int)a->state < MX_DETACHED)
            b->agents[a->state]++;
    }
    for (uint32_t k = 0; k < s->nactive; k++) {
        struct lane *l = &s->lanes[s->active[k]];
        if (!(l->agent_id >= 0 && fleet_agent(s, l->agent_id)))
            b->agents[MX_DETACHED]++;
    }
    snap_lanes(m, s, b);
    snap_engines(m, s, b, now);
    snprintf(b->backend, sizeof b->backend, "%s", s->engine_ops ? s->engine_ops->name : "");
    snprintf(b->model, sizeof b->model, "%s", s->model_name);
    b->model_version = s->model_version;
    b->model_load_ns = m->model_load_ns;
    b->start_unix = m->start_unix;
}

/* Copies the built snapshot out if the HTTP thread is not holding the mutex. */
static void snap_publish(struct metrics *m)
{
    if (pthread_mutex_trylock(&m->mu) != 0) {
        m->dirty = 1;
        return;
    }
    m->build.seq++;
    m->pub = m->build;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    m->dirty = 0;
}

void metrics__tick(struct metrics *m, struct sup *s, uint64_t now)
{
    /* Model load time: a reload runs from the request to the swap (version bump). */
    if (s->reloading && !m->was_reloading)
        m->reload_start_ns = now;
    m->was_reloading = s->reloading;
    if (s->model_version != m->seen_version) {
        if (m->reload_start_ns)
            m->model_load_ns = now - m->reload_start_ns;
        m->seen_version = s->model_version;
    }
    if (m->dirty) {
        snap_publish(m); /* the last one found the mutex busy */
        if (m->dirty)
            return;
    }
    /* Relaxed: a hint; clearing it before building means a request that arrives meanwhile is
     * served by this snapshot or the next one, never lost. */
    if (now - m->last_pub_ns < METRICS_PUBLISH_NS && !oag_load_relaxed_u32(&m->want))
        return;
    oag_store_relaxed_u32(&m->want, 0);
    m->last_pub_ns = now;
    world_stop(s);
    snap_build(m, s, now);
    world_start(s);
    snap_publish(m);
}

/* ---- formatting (HTTP thread) ------------------------------------------------------------ */

#define OUT_CAP (64u * 1024u)

struct out {
    char *p;
    size_t len;
    int full;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
    if (o->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, OUT_CAP - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= OUT_CAP - o->len)
        o->full = 1;
    else
        o->len += (size_t)n;
}

/* A label value with \, " and newline escaped, as the text format requires. */
static void put_label(struct out *o, const char *v)
{
    for (; *v && !o->full; v++) {
        if (*v == '\\' || *v == '"')
            put(o, "\\%c", *v);
        else if (*v == '\n')
            put(o, "\\n");
        else
            put(o, "%c", *v);
    }
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(struct out *o, const char *name, const char *help, uint64_t v)
{
    family(o, name, "counter", help);
    put(o, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(struct out *o, const char *name, const char *help, double v)
{
    family(o, name, "gauge", help);
    put(o, "%s %.10g\n", name, v);
}

static void hist_put(struct out *o, const char *name, const char *help, const struct metrics_hist *h,
                     int seconds, uint32_t max_batch)
{
    family(o, name, "histogram", help);
    uint64_t cum = 0;
    if (seconds) {
        for (uint32_t i = 0; i < METRICS_TIME_BUCKETS; i++) {
            cum += h->n[i];
            put(o, "%s_bucket{le=\"%s\"} %llu\n", name, time_le_txt[i], (unsigned long long)cum);
        }
    } else {
        /* Powers of two up to the first that holds --max-batch: larger ones stay empty. */
        for (uint32_t i = 0; i < METRICS_SIZE_BUCKETS; i++) {
            cum += h->n[i];
            put(o, "%s_bucket{le=\"%u\"} %llu\n", name, 1u << i, (unsigned long long)cum);
            if ((1u << i) >= max_batch)
                break;
        }
    }
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    if (seconds)
        put(o, "%s_sum %.9f\n", name, (double)h->sum / 1e9);
    else
        put(o, "%s_sum %llu\n", name, (unsigned long long)h->sum);
    put(o, "%s_count %llu\n", name, (unsigned long long)h->count);
}

static int snap_alive(const struct mx_snap *p, uint64_t now)
{
    return p->seq > 0 && (now < p->heartbeat_ns || now - p->heartbeat_ns < METRICS_STALE_NS);
}

static int snap_ready(const struct mx_snap *p, uint64_t now)
{
    return snap_alive(p, now) && p->loaded && p->usable && !p->draining;
}

static void format_metrics(struct out *o, const struct mx_snap *p, uint64_t now)
{
    int alive = snap_alive(p, now);
    gauge(o, "oag_up", "1 while the supervisor's event loop is alive (its heartbeat is recent).",
          alive);
    gauge(o, "oag_ready",
          "1 while the engine is loaded, warmed up and usable and the supervisor is not draining.",
          snap_ready(p, now));
    gauge(o, "oag_draining", "1 once shutdown began (SIGTERM, oag-ctl stop or the fleet finished).",
          p->draining);
    gauge(o, "oag_loop_heartbeat_age_seconds",
          "Age of the event loop's heartbeat when this page was made.",
          now > p->heartbeat_ns ? (double)(now - p->heartbeat_ns) / 1e9 : 0.0);
    family(o, "oag_start_time_seconds", "gauge",
           "Start time of the supervisor, seconds since the epoch.");
    put(o, "oag_start_time_seconds %.3f\n", p->start_unix);

    family(o, "oag_model_info", "gauge",
           "The model being served (name empty for the identity engine); value is always 1.");
    put(o, "oag_model_info{name=\"");
    put_label(o, p->model);
    put(o, "\",version=\"%u\",backend=\"", p->model_version);
    put_label(o, p->backend);
    put(o, "\"} 1\n");
    gauge(o, "oag_model_load_seconds",
          "Seconds the serving model took to load and warm up (at start: from process start to "
          "serving; after a reload: from the request to the swap).",
          (double)p->model_load_ns / 1e9);
    gauge(o, "oag_model_reloading", "1 while a model reload is loading on the side.",
          p->reloading);

    family(o, "oag_tasks_total", "counter",
           "Tasks by outcome: ok, error (engine or input errors), timed_out (deadline passed), "
           "rejected_busy (submits liboag refused at once with -EBUSY or -EAGAIN, from the "
           "agents' own counters).");
    put(o, "oag_tasks_total{outcome=\"ok\"} %llu\n", (unsigned long long)p->ok);
    put(o, "oag_tasks_total{outcome=\"error\"} %llu\n", (unsigned long long)p->error);
    put(o, "oag_tasks_total{outcome=\"timed_out\"} %llu\n", (unsigned long long)p->timed_out);
    put(o, "oag_tasks_total{outcome=\"rejected_busy\"} %llu\n", (unsigned long long)p->rejected);
    counter(o, "oag_busy_events_total",
            "Times the supervisor's queue filled and agents' submits began failing with -EBUSY.",
            p->busy_events);
    counter(o, "oag_results_dropped_total",
            "Results discarded because their agent had gone.", p->dropped);
    counter(o, "oag_shared_result_batches_total",
            "Batches whose results came back through the shared result area (--shared-results).",
            p->shared_batches);
    counter(o, "oag_shared_result_fallbacks_total",
            "Batches that found every chunk of the shared result area still read by agents and "
            "wrote their results into the lanes.", p->shared_fallbacks);

    hist_put(o, "oag_task_queue_seconds",
             "Time tasks spent in the supervisor's queue before entering a batch.", &p->queue, 1,
             0);
    hist_put(o, "oag_task_latency_seconds",
             "Time from the agent's submit to its result being written, for every result.",
             &p->latency, 1, 0);
    hist_put(o, "oag_batch_size", "Tasks per batch.", &p->batch, 0, p->max_batch);
    counter(o, "oag_batches_total", "Batches run (or failed to start).", p->batches);
    gauge(o, "oag_batches_in_flight", "Batches submitted to engines and not yet finished.",
          p->batches_in_flight);

    family(o, "oag_engine_compute_seconds_total", "counter",
           "Seconds from each batch's start to its completion, summed over batches (batches that "
           "overlap on several instances or in flight each count).");
    put(o, "oag_engine_compute_seconds_total %.9f\n", (double)p->compute_ns / 1e9);
    family(o, "oag_engine_busy_seconds_total", "counter",
           "Seconds each engine instance was busy with at least one batch (device -1: host).");
    for (uint32_t k = 0; k < p->neng; k++) {
        put(o, "oag_engine_busy_seconds_total{backend=\"");
        put_label(o, p->eng[k].backend);
        put(o, "\",device=\"%d\"} %.9f\n", p->eng[k].device, (double)p->eng[k].busy_ns / 1e9);
    }
    counter(o, "oag_engine_errors_total", "Batches an engine failed as a whole.",
            p->engine_errors);
    if (p->ngpu) {
        family(o, "oag_gpu_memory_used_bytes", "gauge",
               "Bytes in use on each GPU an engine runs on (all processes on it).");
        for (uint32_t g = 0; g < p->ngpu; g++)
            put(o, "oag_gpu_memory_used_bytes{device=\"%d\"} %llu\n", p->gpu[g].device,
                (unsigned long long)p->gpu[g].used);
        family(o, "oag_gpu_memory_total_bytes", "gauge", "Bytes each of those GPUs has.");
        for (uint32_t g = 0; g < p->ngpu; g++)
            put(o, "oag_gpu_memory_total_bytes{device=\"%d\"} %llu\n", p->gpu[g].device,
                (unsigned long long)p->gpu[g].total);
    }

    gauge(o, "oag_tasks_pending", "Tasks waiting in the supervisor's queue.", p->pending);
    gauge(o, "oag_queue_capacity", "Tasks the supervisor's queue holds (--max-queue).",
          p->max_queue);
    gauge(o, "oag_lane_occupancy",
          "Fill of the fullest submission ring: slots in use / ring slots, max over attached "
          "lanes (1: that agent's submits fail with -EAGAIN).",
          p->lane_slots_max ? (double)p->lane_used_max / (double)p->lane_slots_max : 0.0);
    gauge(o, "oag_lane_tasks", "Tasks in all submission rings (slots in use, sum over lanes).",
          (double)p->lane_tasks);
    gauge(o, "oag_lanes", "Agents attached (lanes in use).", p->lanes);

    family(o, "oag_agents", "gauge",
           "Agent records by state; detached: attached agents the supervisor did not launch.");
    for (int st = 0; st < MX_STATES; st++)
        put(o, "oag_agents{state=\"%s\"} %u\n",
            st == MX_DETACHED ? "detached" : agent_state_name((enum agent_state)st),
            p->agents[st]);
    counter(o, "oag_agent_restarts_total", "Agent restarts after abnormal exits.", p->restarts);
    counter(o, "oag_lanes_cut_total", "Agents cut off for breaking the lane protocol.",
            p->cut_offs);
    counter(o, "oag_connections_refused_total", "Connections refused (credentials, no lane).",
            p->refused);
}

/* ---- HTTP (HTTP thread) ------------------------------------------------------------------ */

/* Copies the latest snapshot out, after asking the loop for a fresh one and waiting at most
 * METRICS_FRESH_WAIT_NS (a stuck loop leaves the last one: /healthz then says so). */
static void snap_get(struct metrics *m, struct mx_snap *out)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_nsec += (long)METRICS_FRESH_WAIT_NS;
    dl.tv_sec += dl.tv_nsec / 1000000000L;
    dl.tv_nsec %= 1000000000L;
    pthread_mutex_lock(&m->mu);
    uint64_t seq0 = m->pub.seq;
    oag_store_relaxed_u32(&m->want, 1);
    while (m->pub.seq == seq0 && !m->stopping)
        if (pthread_cond_timedwait(&m->cv, &m->mu, &dl) == ETIMEDOUT)
            break;
    *out = m->pub;
    pthread_mutex_unlock(&m->mu);
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code, const char *text)
{
    return reply(c, code, "text/plain; charset=utf-8", (char *)text, strlen(text),
                 MHD_RESPMEM_PERSISTENT);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **con_cls)
{
    static int started;
    struct metrics *m = cls;
    (void)version;
    (void)upload;
    if (*con_cls == NULL) { /* headers only: answer once the request is complete */
        *con_cls = &started;
        return MHD_YES;
    }
    if (*upload_size) { /* a body we do not want */
        *upload_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    int is_metrics = !strcmp(url, "/metrics"), is_health = !strcmp(url, "/healthz"),
        is_ready = !strcmp(url, "/readyz");
    if (!is_metrics && !is_health && !is_ready)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found (try /metrics, /healthz, /readyz)\n");
    struct mx_snap p;
    snap_get(m, &p);
    uint64_t now = now_ns();
    if (is_health)
        return snap_alive(&p, now) ? reply_text(c, MHD_HTTP_OK, "ok\n")
                                   : reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                                                "event loop stalled\n");
    if (is_ready) {
        if (snap_ready(&p, now))
            return reply_text(c, MHD_HTTP_OK, "ready\n");
        return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE,
                          !snap_alive(&p, now) ? "not ready: event loop stalled\n"
                          : p.draining         ? "not ready: draining\n"
                          : !p.loaded          ? "not ready: warming up\n"
                                               : "not ready: no usable engine\n");
    }
    struct out o = { .p = malloc(OUT_CAP) }; /* the one allocation per scrape, bounded */
    if (!o.p)
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    format_metrics(&o, &p, now);
    if (o.full) {
        free(o.p);
        return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "metrics page too large\n");
    }
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", o.p, o.len,
                 MHD_RESPMEM_MUST_FREE);
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct metrics *m = cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    log_warn("metrics %s: %s", m->addr, line);
}

/* ---- start / stop (loop thread) ---------------------------------------------------------- */

static int listen_on(const char *addr)
{
    struct sockaddr_storage sa;
    socklen_t len;
    char msg[256];
    if (metrics_parse_addr(addr, &sa, &len, msg, sizeof msg))
        return -EINVAL; /* checked when the option was parsed */
    int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, len) < 0 || listen(fd, 64) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    return fd;
}

int metrics_start(struct sup *s)
{
    if (!s->cfg.metrics)
        return 0;
    int fd = listen_on(s->cfg.metrics);
    if (fd < 0) {
        log_err("--metrics %s: cannot listen: %s", s->cfg.metrics, strerror(-fd));
        return fd;
    }
    int rc = -ENOMEM;
    struct metrics *m = calloc(1, sizeof *m);
    if (!m)
        goto fail_fd;
    m->addr = s->cfg.metrics;
    m->lanes = calloc(s->cfg.max_lanes, sizeof *m->lanes);
    m->tracked = calloc(s->cfg.max_lanes, sizeof *m->tracked);
    m->live = calloc(s->nsh, sizeof *m->live);
    if (!m->lanes || !m->tracked || !m->live)
        goto fail_mem;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&m->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&m->mu, NULL);

    uint64_t now = now_ns();
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    m->start_unix = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9 -
                    (double)(now - s->start_ns) / 1e9;
    m->model_load_ns = now - s->start_ns; /* the engines were loaded and warmed up before us */
    m->seen_version = s->model_version;
    m->last_pub_ns = now;
    snap_build(m, s, now);
    snap_publish(m); /* nothing else holds the mutex yet */

    /* Threads started here inherit the loop's signal mask (SIGTERM and friends blocked): they
     * stay with the signalfd. The daemon owns fd from here (it closes it when stopped). */
    m->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG,
                            0, NULL, NULL, handle, m,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, m,
                            MHD_OPTION_LISTEN_SOCKET, fd,
                            MHD_OPTION_CONNECTION_LIMIT, 16u,
                            MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_END);
    if (!m->d) {
        rc = -EAGAIN; /* libmicrohttpd says no more (its own log line, if any, came first) */
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        goto fail_mem;
    }
    s->metrics = m;
    for (uint32_t k = 0; k < s->nsh; k++) /* before the shard threads start */
        s->sh[k].ml = &m->live[k];
    log_info("metrics: http://%s/metrics, /healthz, /readyz", s->cfg.metrics);
    return 0;

fail_mem:
    free(m->lanes);
    free(m->tracked);
    free(m->live);
    free(m);
fail_fd:
    close(fd);
    log_err("--metrics %s: cannot start the HTTP server: %s", s->cfg.metrics,
            rc == -ENOMEM ? "out of memory" : "libmicrohttpd refused (threads?)");
    return rc;
}

void metrics_stop(struct sup *s)
{
    struct metrics *m = s->metrics;
    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    m->stopping = 1; /* scrapes waiting for a fresh snapshot answer with the last one */
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    MHD_stop_daemon(m->d);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    for (uint32_t k = 0; k < s->nsh; k++) /* after the shard threads stopped */
        s->sh[k].ml = NULL;
    free(m->lanes);
    free(m->tracked);
    free(m->live);
    free(m);
    s->metrics = NULL;
}
