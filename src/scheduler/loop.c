/*
 * loop.c - the supervisor's main event loop (control plane, and shard 0's data plane).
 *
 * io_uring carries everything that is not a lane: the control socket, connections, signals
 * (signalfd), child exits (pidfds), agents' output pipes and the doorbell eventfd; timers are the
 * wait's timeout. Lanes are polled directly in shared memory while there is work; peeking the
 * completion queue costs no system call, so the busy path never enters the kernel.
 *
 * Sleeping (pairs with kick_supervisor() in the client library):
 *
 *   supervisor                               agent
 *   ----------                               -----
 *   store sup_sleeping = odd epoch (seq_cst) store prod (release)
 *   fence seq_cst                            fence seq_cst
 *   scan lanes: work? -> epoch even, go on   load sup_sleeping: odd and not yet rung this epoch?
 *   wait on io_uring (doorbell poll armed)       -> write(doorbell)
 *   store sup_sleeping = even epoch
 *
 * Either the scan sees the agent's task or the agent sees the odd epoch and rings. Each agent
 * rings at most once per sleep, so a burst of submissions costs one eventfd write per agent.
 *
 * With --data-threads K > 1 the loop is also the control plane for shards 1..K-1 (shard.h):
 * every control event is handled with the world stopped; shard 0's data plane runs here.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "inst.h"
#include "log.h"
#include "metrics.h"
#include "sup.h"

#define BACKSTOP_NS 50000000ull   /* longest sleep: a lost wake-up costs at most this */
#define PUBLISH_NS 100000000ull   /* republish the global state at least this often when busy */
#define UD_IGNORE 0

static int sqe_pending;

static struct io_uring_sqe *get_sqe(struct sup *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        io_uring_submit(&s->ring);
        sqe = io_uring_get_sqe(&s->ring);
    }
    return sqe;
}

void loop_arm_poll(struct sup *s, int fd, uint64_t ud, unsigned events)
{
    struct io_uring_sqe *sqe = get_sqe(s);
    if (!sqe) {
        log_err("io_uring submission queue full");
        return;
    }
    io_uring_prep_poll_add(sqe, fd, events);
    io_uring_sqe_set_data64(sqe, ud);
    sqe_pending = 1;
}

void loop_cancel(struct sup *s, uint64_t ud)
{
    struct io_uring_sqe *sqe = get_sqe(s);
    if (!sqe)
        return;
    io_uring_prep_poll_remove(sqe, ud);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    sqe_pending = 1;
    /* Submit now: the fd is about to be closed and its number reused. */
    io_uring_submit(&s->ring);
    sqe_pending = 0;
}

static void begin_drain(struct sup *s, const char *why)
{
    if (s->draining)
        return;
    log_info("%s: draining and stopping the fleet", why);
    s->draining = 1;
    s->drain_started_ns = now_ns();
    instance_publish(s, 0); /* ready = 0: the gateway takes no new remote tasks */
    /* Stop accepting: new agents get ECONNREFUSED/ENOENT, not a lane. */
    if (s->listen_fd >= 0) {
        loop_cancel(s, ud_make(UD_LISTEN, 0, 0));
        close(s->listen_fd);
        s->listen_fd = -1;
        unlink(s->cfg.socket_path);
    }
    fleet_stop_all(s);
}

static void handle_signal(struct sup *s)
{
    struct signalfd_siginfo si;
    while (read(s->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
            begin_drain(s, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
    }
    loop_arm_poll(s, s->sig_fd, ud_make(UD_SIGNAL, 0, 0), POLLIN);
}

static int handle_cqe(struct sup *s, const struct io_uring_cqe *cqe)
{
    uint64_t ud = io_uring_cqe_get_data64(cqe);
    int res = cqe->res;
    if (ud == UD_IGNORE)
        return 0;
    uint32_t idx = ud_idx(ud), gen = ud_gen(ud);
    switch (ud_type(ud)) {
    case UD_LISTEN:
        if (s->listen_fd < 0)
            return 0;
        if (res >= 0 && conn_accept_all(s) < 0)
            log_err("accept failed");
        loop_arm_poll(s, s->listen_fd, ud, POLLIN);
        return 1;
    case UD_SIGNAL:
        handle_signal(s);
        return 1;
    case UD_DOORBELL: {
        uint64_t v;
        if (read(s->sh[0].doorbell_fd, &v, sizeof v) < 0 && errno != EAGAIN)
            log_debug("doorbell read: %s", strerror(errno));
        loop_arm_poll(s, s->sh[0].doorbell_fd, ud, POLLIN);
        return 1;
    }
    case UD_KICK: {
        uint64_t v;
        if (read(s->kick_fd, &v, sizeof v) < 0 && errno != EAGAIN)
            log_debug("kick read: %s", strerror(errno));
        loop_arm_poll(s, s->kick_fd, ud, POLLIN);
        shards_serve_requests(s);
        return 1;
    }
    case UD_CONN:
        if (res < 0)
            return 0; /* cancelled */
        conn_event(s, (int)idx, gen, res);
        return 1;
    case UD_ENGINE:
        engines_event(s, idx);
        return 1;
    case UD_RELOAD:
        engines_reload_event(s);
        return 1;
    case UD_PIDFD:
    case UD_OUT:
    case UD_ERR: {
        struct agent *a = fleet_agent(s, (int)idx);
        if (res < 0 || !a || (a->spawn_gen & 0xffffff) != gen)
            return 0;
        if (ud_type(ud) == UD_PIDFD)
            fleet_child_event(s, (int)idx);
        else
            fleet_output_event(s, (int)idx, ud_type(ud) == UD_ERR);
        return 1;
    }
    default:
        return 0;
    }
}

/* Whether an event is the data plane's (shard 0's doorbell and engines, agents' output) or
 * the control plane's, handled with the world stopped. */
static int is_control(uint64_t ud)
{
    unsigned t = ud_type(ud);
    return ud != UD_IGNORE && t != UD_DOORBELL && t != UD_ENGINE && t != UD_OUT && t != UD_ERR;
}

/* Handles every completion already queued. Returns how many did something; *ctl counts the
 * control events among them. */
static int drain_cqes(struct sup *s, int *ctl)
{
    struct io_uring_cqe *cqe;
    int n = 0, stopped = 0;
    while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
        struct io_uring_cqe copy = *cqe;
        io_uring_cqe_seen(&s->ring, cqe);
        if (!stopped && is_control(io_uring_cqe_get_data64(&copy))) {
            world_stop(s);
            stopped = 1;
        }
        n += handle_cqe(s, &copy);
    }
    if (stopped)
        world_start(s);
    *ctl = stopped;
    if (sqe_pending) {
        io_uring_submit(&s->ring);
        sqe_pending = 0;
    }
    return n;
}

/* Sleeps until an event or until deadline_ns; see the protocol at the top. */
static void sleep_until(struct sup *s, uint64_t now, uint64_t deadline_ns)
{
    struct shard *sh = &s->sh[0];
    sh->sleep_epoch += 1; /* odd: asleep */
    oag_store_seqcst_u32(&sh->ctl->sleeping, sh->sleep_epoch);
    oag_fence_seqcst();
    if (!lanes_have_work(sh)) {
        uint64_t wait = deadline_ns > now ? deadline_ns - now : 0;
        if (wait > BACKSTOP_NS)
            wait = BACKSTOP_NS;
        struct __kernel_timespec ts = { .tv_sec = (long long)(wait / 1000000000ull),
                                        .tv_nsec = (long long)(wait % 1000000000ull) };
        struct io_uring_cqe *cqe;
        sqe_pending = 0;
        io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, &ts, NULL);
        shard_slept(sh, now_ns() - now, wait);
    }
    sh->sleep_epoch += 1; /* even: awake */
    oag_store_relaxed_u32(&sh->ctl->sleeping, sh->sleep_epoch); /* relaxed: a hint */
}

/* $OAG_PROFILE_FILE: appends one line of where the loop thread's time went, and each engine
 * instance's batches, rows, busy time and (if measured) device time. For benchmarks. */
static void profile_dump(struct sup *s)
{
    const char *path = getenv("OAG_PROFILE_FILE");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    for (uint32_t k = 0; k < s->nsh; k++) {
        const struct shard *sh = &s->sh[k];
        double wall = (double)(now_ns() - sh->prof.start_ns) / 1e9;
        fprintf(f, "%sloop%s%.0u wall %.3f s: cqe+complete %.3f collect %.3f dispatch %.3f "
                   "sleep %.3f polls that found nothing %.3f (spin/other %.3f) iters %llu; "
                   "tasks %llu batches %llu wakes %llu "
                   "(thread %llu) lane visits %llu (empty %llu, left to settle %llu)",
                k ? "; " : "", k ? " " : "", k,
                wall, sh->prof.cqe_ns / 1e9, sh->prof.collect_ns / 1e9,
                sh->prof.dispatch_ns / 1e9, sh->prof.sleep_ns / 1e9, sh->prof.poll_ns / 1e9,
                wall - (double)(sh->prof.cqe_ns + sh->prof.collect_ns + sh->prof.dispatch_ns +
                                sh->prof.sleep_ns + sh->prof.poll_ns) / 1e9,
                (unsigned long long)sh->prof.iters, (unsigned long long)sh->tasks_done,
                (unsigned long long)sh->bat.batches, (unsigned long long)sh->bat.wakes,
                (unsigned long long)sh->bat.wakes_handed, (unsigned long long)sh->bat.visits,
                (unsigned long long)sh->bat.visits_empty, (unsigned long long)sh->bat.settle_waits);
        if (s->res.n)
            fprintf(f, "; shared results: batches %llu, no free chunk %llu",
                    (unsigned long long)sh->res_batches, (unsigned long long)sh->res_fallbacks);
    }
    for (uint32_t i = 0; i < s->ninst; i++) {
        struct inst *in = s->inst[i];
        struct oag_engine_stats st = { 0 };
        if (in->ops->stats)
            in->ops->stats(in->e, &st);
        fprintf(f, "; inst %u: batches %llu rows %llu busy %.3f s device %.3f s rows by copy "
                   "engine %llu (%llu transfers) by kernel %llu", i,
                (unsigned long long)in->batches, (unsigned long long)in->rows,
                in->busy_ns / 1e9, st.device_ns / 1e9, (unsigned long long)st.rows_dma,
                (unsigned long long)st.dma_ops, (unsigned long long)st.rows_kern);
    }
    fprintf(f, "\n");
    fclose(f);
}

static int drain_finished(struct sup *s, uint64_t now)
{
    if (!fleet_all_down(s)) {
        uint64_t limit = (uint64_t)s->cfg.stop_timeout_ms * 1000000ull + 2000000000ull;
        if (now - s->drain_started_ns < limit)
            return 0;
        log_warn("agents still running after the stop timeout; leaving anyway");
    }
    world_stop(s);
    int busy = shards_busy(s);
    world_start(s);
    return !busy;
}

int loop_run(struct sup *s)
{
    if (metrics_start(s)) /* --metrics: the address is taken, or no memory; logged */
        return 1;
    loop_arm_poll(s, s->listen_fd, ud_make(UD_LISTEN, 0, 0), POLLIN);
    loop_arm_poll(s, s->sig_fd, ud_make(UD_SIGNAL, 0, 0), POLLIN);
    loop_arm_poll(s, s->sh[0].doorbell_fd, ud_make(UD_DOORBELL, 0, 0), POLLIN);
    loop_arm_poll(s, s->kick_fd, ud_make(UD_KICK, 0, 0), POLLIN);
    io_uring_submit(&s->ring);
    sqe_pending = 0;
    fleet_scale(s, s->cfg.agents);
    instance_publish(s, 1);
    fprintf(stderr, "oag-supervisor: ready name=%s socket=%s pid=%d\n", s->cfg.name,
            s->cfg.socket_path, (int)getpid());
    fflush(stderr);
    notify_ready(s); /* systemd: READY=1 (no-op without $NOTIFY_SOCKET) */

    struct shard *sh = &s->sh[0];
    uint64_t idle_since = 0, next_timer = 0;
    sh->prof.start_ns = now_ns();
    if (shards_start(s)) /* shards 1..K-1 (--data-threads) */
        begin_drain(s, "data threads");
    for (;;) {
        uint64_t t0 = now_ns();
        int ctl;
        int events = drain_cqes(s, &ctl);
        uint64_t now = now_ns();
        sh->prof.iters++;
        metrics_tick(s, now); /* --metrics: snapshot every 100 ms or when a scrape asks */
        /* One thread: after any event, as ever. Several: the world stops for the timers, so
         * only after control events (an engine's completions come with every batch). */
        if ((s->nsh == 1 ? events : ctl) || now >= next_timer) {
            next_timer = now + BACKSTOP_NS;
            world_stop(s);
            fleet_tick(s, now, &next_timer);
            engines_recover(s, now);
            hints_tick(s, now); /* advice to agents (hints.h), every 100 ms */
            notify_tick(s, now); /* systemd: watchdog pings, STATUS=, STOPPING=1 */
            world_start(s);
        }
        uint64_t wake_at;
        int got;
        if (shard_pass(sh, t0, now, events, &wake_at, &got)) {
            shard_busy(sh, got);
            idle_since = 0;
            continue;
        }
        if (now - s->last_publish_ns >= PUBLISH_NS) {
            world_stop(s);
            instance_publish(s, 1);
            world_start(s);
        }
        if (s->draining && drain_finished(s, now))
            break;
        if (!s->draining && s->cfg.exit_with_fleet && s->nagents > 0) {
            int ok;
            if (fleet_done(s, &ok)) {
                world_stop(s);
                int busy = shards_busy(s);
                if (!busy) {
                    log_info("every agent has exited (%s)", ok ? "all succeeded" : "some failed");
                    s->exit_code = ok ? 0 : 1;
                    begin_drain(s, "fleet finished");
                }
                world_start(s);
                if (!busy)
                    continue;
            }
        }
        /* Idle: spin a bounded time (about what a wake-up would cost), then sleep. */
        if (shard_spin(sh, now, &idle_since))
            continue;
        uint64_t ts = now_ns();
        sleep_until(s, now, shard_wake_at(sh, next_timer, wake_at));
        sh->prof.sleep_ns += now_ns() - ts;
        idle_since = 0;
    }
    /* The shard threads stop; their batches in flight are finished here, so that their
     * buffers are no longer the engine's. */
    shards_stop(s);
    for (int i = 0; i < 1000 && shards_busy(s); i++) {
        for (uint32_t k = 0; k < s->ninst; k++)
            engines_event(s, k);
        usleep(1000);
    }
    /* Whatever is still attached (agents we did not launch) is told we are gone. */
    while (s->nactive)
        lane_cut(s, &s->lanes[s->active[0]], NULL);
    metrics_stop(s);
    profile_dump(s);
    return s->exit_code;
}
