/*
 * main.c - oag-supervisor: set-up and tear-down around the event loop (the options and the
 * configuration file: config.c).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "cpus.h"
#include "log.h"
#include "net/gateway.h"
#include "sup.h"

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static pthread_t main_thread;

static void forward_signal(int sig)
{
    pthread_kill(main_thread, sig); /* async-signal-safe; blocked there, read by signalfd */
}

/*
 * OpenBLAS (linked for the cpu engine) starts a pool of one thread per core from a library
 * constructor, before main(), and those threads spin-yield: measured on a 16-core host they took
 * ~50% of a core each and made every round trip 6x slower, even with the identity or cuda
 * engine. Its size can only be set before that constructor runs, so the supervisor restarts
 * itself once with OPENBLAS_NUM_THREADS=1 (unless the operator set it); the cpu engine then
 * sizes the pool it really uses (--threads), and agents get the original environment back.
 */
static void blas_pool_once(char **argv)
{
    if (getenv("OPENBLAS_NUM_THREADS") || getenv("OAG_BLAS_PINNED"))
        return;
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    setenv("OAG_BLAS_PINNED", "1", 1);
    execv("/proc/self/exe", argv);
    /* Could not re-exec (no /proc): run on with the default pool. */
    unsetenv("OPENBLAS_NUM_THREADS");
}

int main(int argc, char **argv)
{
    static struct sup s;
    blas_pool_once(argv);
    if (getenv("OAG_BLAS_PINNED")) {
        /* Agents inherit the environment as it was given to us. */
        unsetenv("OAG_BLAS_PINNED");
        unsetenv("OPENBLAS_NUM_THREADS");
    }
    struct sup_config *c = &s.cfg;
    config_defaults(c);
    s.listen_fd = s.sig_fd = s.kick_fd = s.lock_fd = s.region_fd = s.region_ro_fd = -1;
    int prc = config_parse(c, argc, argv);
    if (prc) {
        config_fini(c);
        return prc > 0 ? 0 : 2;
    }
    s.start_ns = now_ns();
    if (cpus_apply(&s)) { /* --cpus: before any thread of ours or of a library starts */
        config_fini(c);
        return 2;
    }

    /* Each lane holds two descriptors (connection, completion eventfd) and each launched agent
     * three more while it runs (pidfd, two pipes), four with --log-dir (its log file): take
     * what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        uint64_t need = (uint64_t)c->max_lanes * 2 + (uint64_t)c->agents * 4 + 64;
        if (rl.rlim_cur < rl.rlim_max && rl.rlim_cur < need) {
            rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        if (rl.rlim_cur < need)
            log_warn("open-file limit %llu is below the %llu that --max-lanes %u needs: some "
                     "agents may be refused (raise ulimit -n)", (unsigned long long)rl.rlim_cur,
                     (unsigned long long)need, c->max_lanes);
    }

    /* Signals arrive through signalfd in the loop; agents get a clean mask back. Threads that
     * libraries started before main() (OpenBLAS's pool) do not block them: a handler sends
     * what lands there on to this thread, where it waits for the signalfd. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    main_thread = pthread_self();
    struct sigaction sa = { .sa_handler = forward_signal, .sa_flags = SA_RESTART };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    s.sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s.sig_fd < 0) {
        log_err("signalfd: %s", strerror(errno));
        config_fini(c);
        return 1;
    }
    int err = io_uring_queue_init(1024, &s.ring, 0);
    if (err < 0) {
        log_err("io_uring_queue_init: %s", strerror(-err));
        close(s.sig_fd);
        config_fini(c);
        return 1;
    }
    s.lanes = calloc(c->max_lanes, sizeof *s.lanes);
    s.active = calloc(c->max_lanes, sizeof *s.active);
    if (!s.lanes || !s.active) {
        log_err("out of memory for %u lanes", c->max_lanes);
        goto out_ring;
    }
    for (uint32_t i = 0; i < c->max_lanes; i++) {
        s.lanes[i].cmp_efd = -1;
        s.lanes[i].agent_id = -1;
        s.lanes[i].generation = 1;
    }
    if (conns_init(&s) || fleet_init(&s)) {
        log_err("out of memory");
        goto out_engine;
    }
    if (c->data_threads == 0)
        shards_auto(&s); /* before the region: its header says how many shards */
    err = instance_open(&s);
    if (err)
        goto out_instance;
    err = shards_init(&s); /* needs the region: each shard's line is there */
    if (err) {
        log_err("cannot set up %d data thread(s): %s", c->data_threads, strerror(-err));
        goto out_instance;
    }
    gateway_set_forward(c->forward); /* --backend remote: batches go there (src/net) */
    if (c->forward && strcmp(c->backend, "remote"))
        setenv("OAG_FORWARD", c->forward, 1); /* agents: overflow while the queue is full */
    /* The engine is loaded and warmed up before the loop serves anyone (agents that connect
     * meanwhile wait in the socket's backlog): a supervisor that cannot serve its model
     * refuses to start instead of serving half a model. */
    err = engines_start(&s);
    if (err)
        goto out_instance;
    batcher_settle_resolve(&s);
    if (results_open(&s)) {
        log_err("out of memory");
        goto out_instance;
    }
    struct gateway *gw = NULL;
    if (c->listen) {
        /* Remote agents: a thread that is an oag client of this supervisor (src/net). */
        struct gateway_cfg gc = {
            .listen = c->listen, .local = c->socket_path, .name = c->name,
            .lanes = c->net_lanes, .batch_max = c->net_batch_max,
            .delay_us = c->net_batch_delay_us, .frame_max = c->net_frame_max,
            .window = c->net_window, .hwm = c->net_hwm, .curve_secret = c->curve_secret,
            .curve_allowed = c->curve_allowed, .etcd = c->etcd, .etcd_prefix = c->etcd_prefix,
            .etcd_ttl_s = c->etcd_ttl_s, .advertise = c->advertise,
            .engine = s.engine_ops->name,
            .gpus = strcmp(s.engine_ops->name, "cuda") ? 0 : (int)(s.ninst / s.nsh), /* one
                                                                 per GPU and data thread */
        };
        if (gateway_start(&gw, &gc))
            goto out_instance;
    }
    rc = loop_run(&s);
    gateway_stop(gw);
    notify_tick(&s, now_ns()); /* STOPPING=1, if the loop ended before its timer sent it */
    struct shard_totals t;
    shards_totals(&s, &t);
    log_info("stopped: %llu tasks in %llu batches", (unsigned long long)t.tasks_done,
             (unsigned long long)t.batches);
out_instance:
    fleet_fini(&s);
    results_close(&s);
    instance_close(&s);
out_engine:
    engines_stop(&s);
    shards_fini(&s); /* after the engines: their last batches' wake-ups are written */
out_ring:
    io_uring_queue_exit(&s.ring);
    free(s.lanes);
    free(s.active);
    free(s.conns);
    close(s.sig_fd);
    config_fini(c);
    return rc;
}
