/*
 * shard.c - the data plane over several threads: shards, their threads, and stopping the world
 * (see shard.h).
 *
 * A shard thread's loop is the main loop's data part: complete what its engine instances
 * finished, expire deadlines, take tasks from its lanes, start batches; spin a while when idle,
 * then sleep on its doorbell, its instances' event fds and its control eventfd, with the same
 * sleep protocol as the main loop (loop.c) on its own line of the region.
 */
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "inst.h"
#include "model/model.h"
#include "log.h"
#include "sup.h"

#define SHARD_BACKSTOP_NS 50000000ull /* longest sleep, as the main loop's */

static void futex_wait(oag_atomic_u32 *w, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(oag_atomic_u32 *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* CPUs this process may run on (its affinity mask: taskset, cpusets; before --cpus narrowed
 * it), else those online. */
static long usable_cpus(const struct sup *s)
{
    if (s->cfg.cpus_set)
        return CPU_COUNT(&s->host_cpus);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? n : 1;
}

void shards_auto(struct sup *s)
{
    const struct oag_engine_ops *ops = engines_backend(s);
    int bus = ops && ops->bus_reads;
    uint64_t row = 0;
    if (bus && s->cfg.model) {
        /* the model's row widths (engines_start loads it again to serve it, and reports
         * whatever is wrong with it) */
        struct oag_model *m = NULL;
        char err[8];
        if (oag_model_load(&m, s->cfg.model, err, sizeof err) == 0) {
            uint32_t w = m->input_dim > m->output_dim ? m->input_dim : m->output_dim;
            row = (uint64_t)w * sizeof(float);
            oag_model_free(m);
        }
    }
    long cpus = usable_cpus(s);
    long mine = s->cfg.cpus_set ? CPU_COUNT(&s->cfg.cpus) : cpus;
    s->cfg.data_threads = data_threads_decide(bus, row, cpus, mine, s->cfg.max_queue,
                                              s->cfg.max_batch, &s->data_auto);
    log_info("data threads: %d (auto: %s)", s->cfg.data_threads, s->data_auto);
}

int shards_init(struct sup *s)
{
    uint32_t k = s->cfg.data_threads > 0 ? (uint32_t)s->cfg.data_threads : 1;
    if (k > OAG_MAX_SHARDS)
        k = OAG_MAX_SHARDS;
    s->sh = calloc(k, sizeof *s->sh);
    if (!s->sh)
        return -ENOMEM;
    s->nsh = k;
    s->kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->kick_fd < 0)
        return -errno;
    /* Wake-up threads: --waker-threads in all, at least one per shard that has any. */
    int nw = s->cfg.waker_threads;
    if (nw < 0) { /* a thread per 4 cores, 1..4: one writes ~300 k wake-ups/s */
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nw = cpus >= 8 ? (int)(cpus / 4 < 4 ? cpus / 4 : 4) : 1;
    }
    for (uint32_t i = 0; i < k; i++) {
        struct shard *sh = &s->sh[i];
        sh->s = s;
        sh->id = i;
        sh->doorbell_fd = sh->ctl_efd = -1;
        sh->ctl = &s->region->shard[i];
        sh->spin_ns = (uint64_t)s->cfg.spin_us * 1000u;
        sh->active = calloc(s->cfg.max_lanes, sizeof *sh->active);
        if (!sh->active)
            return -ENOMEM;
        sh->doorbell_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        sh->ctl_efd = i ? eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC) : -1;
        if (sh->doorbell_fd < 0 || (i && sh->ctl_efd < 0))
            return -errno;
        int rc = batcher_init(sh);
        if (rc)
            return rc;
        int mine = nw > 0 ? (nw + (int)k - 1 - (int)i) / (int)k : 0;
        if (nw > 0 && mine < 1)
            mine = 1;
        if (mine > 0 && wakers_start(&sh->wakers, mine) == 0)
            log_warn("no waker thread could start; the loop writes wake-ups itself");
    }
    return 0;
}

void shards_fini(struct sup *s)
{
    if (!s->sh)
        return;
    for (uint32_t i = 0; i < s->nsh; i++) {
        struct shard *sh = &s->sh[i];
        wakers_stop(&sh->wakers); /* write whatever was queued last */
        batcher_fini(sh);
        free(sh->active);
        if (sh->doorbell_fd >= 0)
            close(sh->doorbell_fd);
        if (sh->ctl_efd >= 0)
            close(sh->ctl_efd);
    }
    if (s->kick_fd >= 0)
        close(s->kick_fd);
    s->kick_fd = -1;
    free(s->sh);
    s->sh = NULL;
    s->nsh = 0;
}

/* ---- stopping the world ---------------------------------------------------------------- */

/* The shard thread at a safe point, asked to park: waits until main lets it go. */
static void park(struct shard *sh)
{
    do {
        oag_store_seqcst_u32(&sh->parked, 1);
        while (oag_load_acquire_u32(&sh->park_req))
            futex_wait(&sh->park_req, 1);
        oag_store_seqcst_u32(&sh->parked, 0);
    } while (oag_load_seqcst_u32(&sh->park_req));
}

void world_stop(struct sup *s)
{
    if (s->stop_depth++)
        return;
    for (uint32_t i = 1; i < s->nsh; i++)
        if (s->sh[i].started)
            oag_store_seqcst_u32(&s->sh[i].park_req, 1);
    for (uint32_t i = 1; i < s->nsh; i++) {
        struct shard *sh = &s->sh[i];
        if (!sh->started)
            continue;
        /* A busy shard reaches its safe point within a loop iteration; one asleep is parked. */
        for (uint32_t spins = 0; !oag_load_seqcst_u32(&sh->parked); spins++) {
            if (spins < 256)
                oag_cpu_relax();
            else
                sched_yield();
        }
    }
}

void world_start(struct sup *s)
{
    if (--s->stop_depth)
        return;
    for (uint32_t i = 1; i < s->nsh; i++) {
        struct shard *sh = &s->sh[i];
        if (!sh->started)
            continue;
        oag_store_seqcst_u32(&sh->park_req, 0);
        futex_wake(&sh->park_req);
    }
}

/* ---- requests to the main thread ------------------------------------------------------- */

void shard_ask_main(struct shard *sh)
{
    oag_store_release_u32(&sh->want_main, 1);
    uint64_t one = 1;
    if (write(sh->s->kick_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_debug("kick: %s", strerror(errno));
}

void shard_cut(struct shard *sh, struct lane *l, const char *why)
{
    if (sh->id == 0) {
        lane_cut(sh->s, l, why);
        return;
    }
    if (!l->cut_why) {
        l->cut_why = why;
        shard_ask_main(sh);
    }
}

void shards_serve_requests(struct sup *s)
{
    for (uint32_t i = 1; i < s->nsh; i++) {
        struct shard *sh = &s->sh[i];
        if (!oag_xchg_u32(&sh->want_main, 0))
            continue;
        for (uint32_t k = 0; k < sh->nactive;) {
            struct lane *l = &s->lanes[sh->active[k]];
            if (l->cut_why)
                lane_cut(s, l, l->cut_why); /* takes it out of sh->active */
            else
                k++;
        }
    }
    engines_reap_retired(s);
}

struct shard *shard_pick(struct sup *s)
{
    struct shard *best = &s->sh[0];
    for (uint32_t i = 1; i < s->nsh; i++)
        if (s->sh[i].nactive < best->nactive)
            best = &s->sh[i];
    return best;
}

/* ---- sums ------------------------------------------------------------------------------ */

void shards_totals(struct sup *s, struct shard_totals *t)
{
    memset(t, 0, sizeof *t);
    for (uint32_t i = 0; i < s->nsh; i++) {
        const struct shard *sh = &s->sh[i];
        const struct batcher *b = &sh->bat;
        t->tasks_done += sh->tasks_done;
        t->batches += b->batches;
        t->tasks_total += b->tasks_total;
        t->dropped += b->dropped;
        t->timed_out += b->timed_out;
        t->ok += b->ok;
        t->failed += b->failed;
        t->engine_errors += b->engine_errors;
        t->busy_events += b->busy_events;
        t->queue_ns += b->queue_ns;
        t->compute_ns += b->compute_ns;
        t->retried += b->retried;
        t->wakes += b->wakes;
        t->wakes_handed += b->wakes_handed;
        t->res_batches += sh->res_batches;
        t->res_fallbacks += sh->res_fallbacks;
        t->settle_waits += b->settle_waits;
        t->npend += b->npend;
        t->wakers += sh->wakers.n;
    }
}

int shards_busy(struct sup *s)
{
    for (uint32_t i = 0; i < s->nsh; i++)
        if (batcher_busy(&s->sh[i]))
            return 1;
    return 0;
}

/* ---- one shard's loop, the parts the main loop shares ------------------------------------ */

int shard_pass(struct shard *sh, uint64_t t0, uint64_t now, int reaped, uint64_t *wake_at,
               int *got)
{
    batcher_expire(sh, now);
    *got = batcher_collect(sh);
    uint64_t t1 = now_ns();
    *wake_at = UINT64_MAX;
    int started = batcher_dispatch(sh, now, wake_at);
    uint64_t t2 = now_ns();
    if (*got || started) {
        sh->prof.collect_ns += t1 - now;
        sh->prof.dispatch_ns += t2 - t1;
    } else {
        sh->prof.poll_ns += t2 - now; /* a sweep that found nothing: idle, not work */
    }
    if (reaped || *got || started)
        sh->prof.cqe_ns += now - t0;
    else
        sh->prof.poll_ns += now - t0;
    return reaped || *got || started;
}

void shard_busy(struct shard *sh, int got)
{
    if (sh->spun && got) { /* a spin found work: spin longer next time */
        uint64_t max = (uint64_t)sh->s->cfg.spin_us * 1000u;
        sh->spin_ns += sh->spin_ns / 4 + 256;
        if (sh->spin_ns > max)
            sh->spin_ns = max;
    }
    sh->spun = 0;
}

int shard_spin(struct shard *sh, uint64_t now, uint64_t *idle_since)
{
    if (!*idle_since)
        *idle_since = now;
    if (now - *idle_since < sh->spin_ns) {
        /* Pure spin first, then yield between checks so that agents sharing our core run. */
        if (now - *idle_since > 2000)
            sched_yield();
        else
            oag_cpu_relax();
        sh->spun = 1;
        return 1;
    }
    /* The spin found nothing: spin less next time (it grows again when a spin pays). */
    if (sh->spun && sh->spin_ns > 1000)
        sh->spin_ns -= sh->spin_ns / 4;
    sh->spun = 0;
    return 0;
}

uint64_t shard_busy_ns(const struct shard *sh)
{
    return sh->prof.cqe_ns + sh->prof.collect_ns + sh->prof.dispatch_ns;
}

uint64_t shard_wake_at(const struct shard *sh, uint64_t timer, uint64_t wake_at)
{
    uint64_t t = timer < wake_at ? timer : wake_at;
    return sh->bat.next_deadline < t ? sh->bat.next_deadline : t;
}

void shard_slept(struct shard *sh, uint64_t slept, uint64_t wait)
{
    /* Woken soon after falling asleep: spinning that long would have saved the wake-up. Grow
     * the budget to cover it (see the same rule in the client library). */
    uint64_t max = (uint64_t)sh->s->cfg.spin_us * 1000u;
    if (slept < max && slept < wait) {
        uint64_t want = slept + slept / 2;
        sh->spin_ns = want > sh->spin_ns * 2 ? want : sh->spin_ns * 2;
        if (sh->spin_ns > max)
            sh->spin_ns = max;
    }
}

/* ---- shard threads --------------------------------------------------------------------- */

/* Sleeps until a doorbell, a finished batch, main's call or the deadline (the protocol of
 * loop.c's sleep_until on the shard's line). Parked meanwhile: a world stop need not wake it. */
static void shard_sleep(struct shard *sh, uint64_t now, uint64_t deadline)
{
    struct sup *s = sh->s;
    struct pollfd pf[2 + SUP_MAX_INST];
    nfds_t n = 0;
    pf[n++] = (struct pollfd){ .fd = sh->doorbell_fd, .events = POLLIN };
    pf[n++] = (struct pollfd){ .fd = sh->ctl_efd, .events = POLLIN };
    for (uint32_t i = 0; i < s->ninst && n < sizeof pf / sizeof pf[0]; i++) {
        struct inst *in = s->inst[i];
        int fd = inst_event_fd(in);
        if (in->shard == sh->id && fd >= 0)
            pf[n++] = (struct pollfd){ .fd = fd, .events = POLLIN };
    }
    sh->sleep_epoch += 1; /* odd: asleep */
    oag_store_seqcst_u32(&sh->ctl->sleeping, sh->sleep_epoch);
    oag_fence_seqcst();
    if (!lanes_have_work(sh) && !oag_load_relaxed_u32(&sh->quit)) {
        uint64_t wait = deadline > now ? deadline - now : 0;
        if (wait > SHARD_BACKSTOP_NS)
            wait = SHARD_BACKSTOP_NS;
        struct timespec ts = { .tv_sec = (time_t)(wait / 1000000000ull),
                               .tv_nsec = (long)(wait % 1000000000ull) };
        oag_store_seqcst_u32(&sh->parked, 1);
        int rc = ppoll(pf, n, &ts, NULL);
        oag_store_seqcst_u32(&sh->parked, 0);
        if (oag_load_seqcst_u32(&sh->park_req))
            park(sh);
        if (rc > 0) {
            uint64_t v;
            if ((pf[0].revents & POLLIN) && read(sh->doorbell_fd, &v, sizeof v) < 0)
                log_debug("doorbell read: %s", strerror(errno));
            if ((pf[1].revents & POLLIN) && read(sh->ctl_efd, &v, sizeof v) < 0)
                log_debug("shard wake read: %s", strerror(errno));
        }
        shard_slept(sh, now_ns() - now, wait);
    }
    sh->sleep_epoch += 1; /* even: awake */
    oag_store_relaxed_u32(&sh->ctl->sleeping, sh->sleep_epoch);
}

static void *shard_main(void *arg)
{
    struct shard *sh = arg;
    uint64_t idle_since = 0;
    char name[16];
    snprintf(name, sizeof name, "oag-shard%u", (unsigned)sh->id);
    prctl(PR_SET_NAME, name);
    sh->prof.start_ns = now_ns();
    for (;;) {
        if (oag_load_seqcst_u32(&sh->park_req))
            park(sh);
        if (oag_load_relaxed_u32(&sh->quit))
            break;
        uint64_t t0 = now_ns();
        int done = engines_reap_shard(sh);
        uint64_t now = now_ns();
        sh->prof.iters++;
        uint64_t wake_at;
        int got;
        if (shard_pass(sh, t0, now, done, &wake_at, &got)) {
            shard_busy(sh, got);
            idle_since = 0;
            continue;
        }
        if (shard_spin(sh, now, &idle_since))
            continue;
        uint64_t ts = now_ns();
        shard_sleep(sh, now, shard_wake_at(sh, now + SHARD_BACKSTOP_NS, wake_at));
        sh->prof.sleep_ns += now_ns() - ts;
        idle_since = 0;
    }
    oag_store_seqcst_u32(&sh->parked, 1); /* gone: stopping the world waits for nothing here */
    return NULL;
}

int shards_start(struct sup *s)
{
    for (uint32_t i = 1; i < s->nsh; i++) {
        struct shard *sh = &s->sh[i];
        int rc = pthread_create(&sh->th, NULL, shard_main, sh);
        if (rc) {
            log_err("cannot start data thread %u: %s", i, strerror(rc));
            return -rc;
        }
        sh->started = 1;
    }
    return 0;
}

void shards_stop(struct sup *s)
{
    for (uint32_t i = 1; i < s->nsh; i++) {
        struct shard *sh = &s->sh[i];
        if (!sh->started)
            continue;
        oag_store_seqcst_u32(&sh->quit, 1);
        uint64_t one = 1;
        if (write(sh->ctl_efd, &one, sizeof one) < 0)
            log_debug("shard wake: %s", strerror(errno));
        pthread_join(sh->th, NULL);
        sh->started = 0;
    }
}
