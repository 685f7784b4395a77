/*
 * main.c - oag-bench's entry point: options, limits, signals, the temp dir, then one mode:
 * `table N` (the tuning guide's tables, t_*.c), model mode (--model/--gen-models, model.c) or
 * identity mode (identity.c, the default).
 */
#include "bench.h"

/* OpenBLAS, linked for the offline cpu engine, starts one spinning thread per core from a
 * constructor; pin it to one thread before that runs (restart once), so that it does not take
 * the cores the measured processes need. The cpu engine sizes its own pool (--threads). */
static void blas_pool_once(char **argv)
{
    if (getenv("OPENBLAS_NUM_THREADS"))
        return;
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("OPENBLAS_NUM_THREADS");
}

int main(int argc, char **argv)
{
    blas_pool_once(argv);
    struct opts o = {
        .iters = 50000, .duration_s = 2.0, .window = 64, .agents = { 1, 8, 64, 512 },
        .nrows = 4, .zmq_agents = 8, .ring_slots = 256, .supervisor = OAG_SUPERVISOR_PATH,
        .backend = "auto", .max_batch = 8192, .batches = { 1, 8, 32, 128, 512, 2048, 8192 },
        .nbatches = 7, .off_iters = 200, .off_max_s = 2.0, .e2e_batch = 512,
        .e2e_agents = { 64, 512 }, .ne2e = 2, .e2e_delay_us = 200, .m_duration_s = 3.0,
        .m_warm_s = 0.5, .m_lat_iters = 20000, .cmp_agents = 64, .dyn_batch = 32,
        .dyn_delay_us = 1000, .m_samples = 1000000, .sup_ready_s = 120, .off_warmup = 3,
        .load_mb = 1100, .load_dtype = "float16", .load_reps = 1, .scale_agents = { 1, 8, 64, 512 }, .nscale = 4,
        .ramp = { 100, 500, 1000 }, .nramp = 3, .ramp_agents = 50, .ramp_timeout_ms = 500,
        .ramp_queue = 512, .sweep = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024 },
        .nsweep = 11, .sweep_agents = 16, .sweep_win_s = 0.5, .sweep_max_win = 10,
    };
    if (parse_args(&o, argc, argv))
        return 2;
    resolve_tools(&o);

    /* The supervisor keeps two fds per lane (connection, completion eventfd) and inherits our
     * limit: 512 agents do not fit the common soft limit of 1024. Raise it to the hard limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: waits see EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *tmp = getenv("TMPDIR");
    snprintf(g_tmpdir, sizeof g_tmpdir, "%s/oag-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (strlen(g_tmpdir) > 80) {
        warn("TMPDIR is too long for Unix socket paths: %s", tmp);
        return 1;
    }
    if (!mkdtemp(g_tmpdir)) {
        warn("mkdtemp %s: %s", g_tmpdir, strerror(errno));
        return 1;
    }

    if (o.table) {
        int trc = tables_main(&o);
        rm_tmpdir();
        if (g_stop)
            warn("interrupted");
        return trc;
    }
    if (o.nmodels || o.gen_models) {
        int mrc = model_main(&o);
        rm_tmpdir();
        if (g_stop)
            warn("interrupted");
        return mrc;
    }

    int rc = identity_main(&o);
    rm_tmpdir();
    if (g_stop)
        warn("interrupted");
    return rc;
}
