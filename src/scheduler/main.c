/*
 * main.c - oag-supervisor: options, set-up and tear-down around the event loop.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "shm/endpoint.h"
#include "sup.h"

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(f,
"usage: oag-supervisor [OPTIONS] [-- CMD [ARGS...]]\n"
"Runs the inference engine and a fleet of agents that submit tasks over shared memory.\n\n"
"  -n, --name NAME            instance name (default \"default\"); shm /oag-UID-NAME\n"
"  -s, --socket PATH          control socket (default $XDG_RUNTIME_DIR/oag/NAME.sock,\n"
"                             else /tmp/oag-UID/NAME.sock); agents get it as OAG_ENDPOINT\n"
"  -a, --agents N             agents to launch running CMD (default 1 with CMD, else 0)\n"
"  -b, --backend NAME         engine: auto (default: cuda when a GPU is present and a model\n"
"                             is given, else cpu; identity without a model) or one of: %s\n"
"  -m, --model DIR            model folder (config.json + model.safetensors)\n"
"      --gpus all|I,J,...     GPUs for the cuda engine, one engine instance each (default all)\n"
"      --threads N            BLAS threads for the cpu engine (default: a quarter of the\n"
"                             cores, 1 below 8 cores; agents share the machine)\n"
"      --max-batch N          largest batch (default 256)\n"
"      --max-delay-us N       how long the oldest task may wait for a batch to fill\n"
"                             (default 0: leave as soon as the queues are drained)\n"
"      --preferred-batch L    preferred batch sizes, comma-separated (e.g. 32,64,128)\n"
"      --max-queue N          tasks queued in the supervisor, all agents together (default\n"
"                             4096); when full, submits fail at once with -EBUSY\n"
"      --in-order             complete each agent's tasks in submission order\n"
"      --copy-threads N       threads that help copy rows of large batches (default: a\n"
"                             quarter of the cores, at most 8, none below 8 cores)\n"
"      --max-payload BYTES    largest task input/output (default 4096)\n"
"      --ring-slots N         tasks one agent may have outstanding, power of two (default 256)\n"
"      --max-lanes N          agents attached at once (default 1024)\n"
"      --spin-us N            spin on empty lanes before sleeping (default 50)\n"
"      --restart-delay-ms N   first restart delay after an abnormal exit (default 100)\n"
"      --restart-max-ms N     cap of the doubling restart delay (default 5000)\n"
"      --restart-burst N      give up on an agent after N abnormal exits ...\n"
"      --restart-window-s S   ... within S seconds (default 5 in 10)\n"
"      --stop-timeout-ms N    SIGTERM, then SIGKILL after N ms (default 5000)\n"
"      --allow-uid UID        also accept connections from this uid (repeatable)\n"
"      --allow-gid GID        also accept connections from this gid (repeatable)\n"
"      --socket-mode OCTAL    socket file mode (default 0600, 0666 with allow lists)\n"
"      --log-dir DIR          agents' output to DIR/agent-ID.log (default: prefixed on\n"
"                             the supervisor's stdout/stderr)\n"
"      --exit-with-fleet      exit once every agent has exited and none will restart\n"
"                             (status 0 if all exited 0, else 1)\n"
"  -q, --quiet                errors and warnings only\n"
"  -v, --verbose              debug logging\n"
"  -h, --help                 this text\n", engine_names());
}

static int parse_u32(const char *opt, const char *arg, uint32_t min, uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(arg, &end, 10);
    if (errno || *end || end == arg || arg[0] == '-' || v < min || v > max) {
        fprintf(stderr, "oag-supervisor: --%s: expected an integer from %u to %u, got '%s'\n",
                opt, min, max, arg);
        return -EINVAL;
    }
    *out = (uint32_t)v;
    return 0;
}

enum {
    O_MAX_BATCH = 256, O_MAX_DELAY, O_MAX_PAYLOAD, O_RING_SLOTS, O_MAX_LANES, O_SPIN,
    O_RDELAY, O_RMAX, O_RBURST, O_RWINDOW, O_STOP, O_ALLOW_UID, O_ALLOW_GID, O_SOCK_MODE,
    O_LOG_DIR, O_EXIT_FLEET, O_GPUS, O_THREADS, O_PREFERRED, O_MAX_QUEUE, O_IN_ORDER,
    O_COPY_THREADS,
};

/* Parses "a,b,c" into ascending unique u32 values in [min, max]. Returns the count or -1. */
static int parse_list(const char *opt, const char *arg, uint32_t min, uint32_t max, uint32_t *out,
                      int cap)
{
    int n = 0;
    const char *p = arg;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (errno || end == p || *p == '-' || v < min || v > max || n >= cap ||
            (*end && *end != ',') || (n > 0 && v <= out[n - 1])) {
            fprintf(stderr, "oag-supervisor: --%s: expected ascending integers from %u to %u "
                            "separated by commas (at most %d), got '%s'\n", opt, min, max, cap, arg);
            return -1;
        }
        out[n++] = (uint32_t)v;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        fprintf(stderr, "oag-supervisor: --%s: empty list\n", opt);
        return -1;
    }
    return n;
}

static int parse_args(struct sup_config *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "name", required_argument, 0, 'n' },       { "socket", required_argument, 0, 's' },
        { "agents", required_argument, 0, 'a' },     { "backend", required_argument, 0, 'b' },
        { "max-batch", required_argument, 0, O_MAX_BATCH },
        { "max-delay-us", required_argument, 0, O_MAX_DELAY },
        { "max-payload", required_argument, 0, O_MAX_PAYLOAD },
        { "ring-slots", required_argument, 0, O_RING_SLOTS },
        { "max-lanes", required_argument, 0, O_MAX_LANES },
        { "spin-us", required_argument, 0, O_SPIN },
        { "restart-delay-ms", required_argument, 0, O_RDELAY },
        { "restart-max-ms", required_argument, 0, O_RMAX },
        { "restart-burst", required_argument, 0, O_RBURST },
        { "restart-window-s", required_argument, 0, O_RWINDOW },
        { "stop-timeout-ms", required_argument, 0, O_STOP },
        { "allow-uid", required_argument, 0, O_ALLOW_UID },
        { "allow-gid", required_argument, 0, O_ALLOW_GID },
        { "socket-mode", required_argument, 0, O_SOCK_MODE },
        { "log-dir", required_argument, 0, O_LOG_DIR },
        { "exit-with-fleet", no_argument, 0, O_EXIT_FLEET },
        { "model", required_argument, 0, 'm' },
        { "gpus", required_argument, 0, O_GPUS },
        { "threads", required_argument, 0, O_THREADS },
        { "preferred-batch", required_argument, 0, O_PREFERRED },
        { "max-queue", required_argument, 0, O_MAX_QUEUE },
        { "in-order", no_argument, 0, O_IN_ORDER },
        { "copy-threads", required_argument, 0, O_COPY_THREADS },
        { "quiet", no_argument, 0, 'q' },            { "verbose", no_argument, 0, 'v' },
        { "help", no_argument, 0, 'h' },             { 0, 0, 0, 0 },
    };
    uint32_t v;
    int agents = -1, o;
    const char *sock = NULL;
    while ((o = getopt_long(argc, argv, "+n:s:a:b:m:qvh", opts, NULL)) != -1) {
        const char *name = NULL;
        for (const struct option *p = opts; p->name; p++)
            if (p->val == o)
                name = p->name;
        switch (o) {
        case 'n': c->name = optarg; break;
        case 's': sock = optarg; break;
        case 'a':
            if (parse_u32(name, optarg, 0, 1u << 20, &v))
                return -EINVAL;
            agents = (int)v;
            break;
        case 'b': c->backend = optarg; break;
        case O_MAX_BATCH: if (parse_u32(name, optarg, 1, 1u << 16, &c->max_batch)) return -EINVAL; break;
        case O_MAX_DELAY: if (parse_u32(name, optarg, 0, 10000000, &c->max_delay_us)) return -EINVAL; break;
        case O_MAX_PAYLOAD: if (parse_u32(name, optarg, 1, OAG_MAX_PAYLOAD_LIMIT, &c->max_payload)) return -EINVAL; break;
        case O_RING_SLOTS:
            if (parse_u32(name, optarg, 2, OAG_MAX_SLOTS, &c->ring_slots))
                return -EINVAL;
            if (c->ring_slots & (c->ring_slots - 1)) {
                fprintf(stderr, "oag-supervisor: --ring-slots must be a power of two, got %u\n",
                        c->ring_slots);
                return -EINVAL;
            }
            break;
        case O_MAX_LANES: if (parse_u32(name, optarg, 1, 65536, &c->max_lanes)) return -EINVAL; break;
        case O_SPIN: if (parse_u32(name, optarg, 0, 1000000, &c->spin_us)) return -EINVAL; break;
        case O_RDELAY: if (parse_u32(name, optarg, 0, 3600000, &c->restart_delay_ms)) return -EINVAL; break;
        case O_RMAX: if (parse_u32(name, optarg, 0, 3600000, &c->restart_max_ms)) return -EINVAL; break;
        case O_RBURST: if (parse_u32(name, optarg, 1, UINT32_MAX - 1, &c->restart_burst)) return -EINVAL; break;
        case O_RWINDOW: if (parse_u32(name, optarg, 1, 86400, &c->restart_window_s)) return -EINVAL; break;
        case O_STOP: if (parse_u32(name, optarg, 0, 3600000, &c->stop_timeout_ms)) return -EINVAL; break;
        case O_ALLOW_UID:
        case O_ALLOW_GID:
            if (parse_u32(name, optarg, 0, UINT32_MAX - 1, &v))
                return -EINVAL;
            if ((o == O_ALLOW_UID ? c->nallow_uid : c->nallow_gid) >= SUP_MAX_ALLOW) {
                fprintf(stderr, "oag-supervisor: at most %d --%s\n", SUP_MAX_ALLOW, name);
                return -EINVAL;
            }
            if (o == O_ALLOW_UID)
                c->allow_uid[c->nallow_uid++] = (uid_t)v;
            else
                c->allow_gid[c->nallow_gid++] = (gid_t)v;
            break;
        case O_SOCK_MODE: {
            char *end;
            long m = strtol(optarg, &end, 8);
            if (*end || end == optarg || m < 0 || m > 0777) {
                fprintf(stderr, "oag-supervisor: --socket-mode: expected an octal mode, got '%s'\n", optarg);
                return -EINVAL;
            }
            c->socket_mode = (int)m;
            break;
        }
        case O_LOG_DIR: c->log_dir = optarg; break;
        case O_EXIT_FLEET: c->exit_with_fleet = 1; break;
        case 'm': c->model = optarg; break;
        case O_GPUS:
            if (!strcmp(optarg, "all")) {
                c->ngpus = 0;
            } else {
                uint32_t g[SUP_MAX_GPUS];
                int n = parse_list(name, optarg, 0, 255, g, SUP_MAX_GPUS);
                if (n < 0)
                    return -EINVAL;
                for (int i = 0; i < n; i++)
                    c->gpus[i] = (int)g[i];
                c->ngpus = n;
            }
            break;
        case O_THREADS:
            if (parse_u32(name, optarg, 1, 1024, &v))
                return -EINVAL;
            c->threads = (int)v;
            break;
        case O_PREFERRED: {
            int n = parse_list(name, optarg, 1, 1u << 16, c->preferred, SUP_MAX_PREFERRED);
            if (n < 0)
                return -EINVAL;
            c->npreferred = (uint32_t)n;
            break;
        }
        case O_MAX_QUEUE: if (parse_u32(name, optarg, 1, 1u << 24, &c->max_queue)) return -EINVAL; break;
        case O_IN_ORDER: c->in_order = 1; break;
        case O_COPY_THREADS:
            if (parse_u32(name, optarg, 0, 64, &v))
                return -EINVAL;
            c->copy_threads = (int)v;
            break;
        case 'q': log_level = LOG_WARN; break;
        case 'v': log_level = LOG_DEBUG; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -EINVAL;
        }
    }
    if (optind < argc)
        c->cmd = argv + optind;
    if (!oag_name_valid(c->name)) {
        fprintf(stderr, "oag-supervisor: --name: '%s' is not a valid instance name "
                        "(letters, digits, '_', '-', '.'; at most %d)\n", c->name, OAG_NAME_MAX);
        return -EINVAL;
    }
    if (sock) {
        if (strlen(sock) >= sizeof c->socket_path) {
            fprintf(stderr, "oag-supervisor: --socket: path too long (max %zu)\n",
                    sizeof c->socket_path - 1);
            return -EINVAL;
        }
        strcpy(c->socket_path, sock);
    } else if (oag_default_socket(c->socket_path, sizeof c->socket_path, c->name)) {
        fprintf(stderr, "oag-supervisor: default socket path too long\n");
        return -EINVAL;
    }
    c->agents = agents >= 0 ? agents : (c->cmd ? 1 : 0);
    if (c->agents > 0 && !c->cmd) {
        fprintf(stderr, "oag-supervisor: --agents %d given but no command after --\n", c->agents);
        return -EINVAL;
    }
    if ((uint32_t)c->agents > c->max_lanes) {
        fprintf(stderr, "oag-supervisor: --agents %d exceeds --max-lanes %u\n", c->agents,
                c->max_lanes);
        return -EINVAL;
    }
    if (strcmp(c->backend, "auto") && !engine_lookup(c->backend)) {
        fprintf(stderr, "oag-supervisor: --backend: no engine '%s' in this build (have: auto, %s)\n",
                c->backend, engine_names());
        return -EINVAL;
    }
    if (c->model && !strcmp(c->backend, "identity")) {
        fprintf(stderr, "oag-supervisor: --model needs a model engine (cpu, cuda or auto), not identity\n");
        return -EINVAL;
    }
    if (!c->model && strcmp(c->backend, "identity") && strcmp(c->backend, "auto")) {
        fprintf(stderr, "oag-supervisor: --backend %s needs --model DIR\n", c->backend);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < c->npreferred; i++)
        if (c->preferred[i] > c->max_batch) {
            fprintf(stderr, "oag-supervisor: --preferred-batch %u exceeds --max-batch %u\n",
                    c->preferred[i], c->max_batch);
            return -EINVAL;
        }
    if (c->max_queue < c->max_batch)
        fprintf(stderr, "oag-supervisor: warning: --max-queue %u is smaller than --max-batch %u: "
                        "batches will hold at most %u tasks\n", c->max_queue, c->max_batch,
                c->max_queue);
    struct oag_lane_geom g;
    if (oag_lane_geom(&g, c->max_payload, c->ring_slots)) {
        fprintf(stderr, "oag-supervisor: invalid lane geometry\n");
        return -EINVAL;
    }
    return 0;
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
    c->name = OAG_DEFAULT_NAME;
    c->backend = "auto";
    c->max_queue = 4096;
    c->copy_threads = -1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = ncpu >= 8 ? (int)(ncpu / 4) : 1; /* BLAS threads for the cpu engine */
    c->max_batch = 256;
    c->max_delay_us = 0;
    c->max_payload = 4096;
    c->ring_slots = 256;
    c->max_lanes = 1024;
    c->spin_us = 50;
    c->restart_delay_ms = 100;
    c->restart_max_ms = 5000;
    c->restart_burst = 5;
    c->restart_window_s = 10;
    c->stop_timeout_ms = 5000;
    c->socket_mode = -1;
    s.listen_fd = s.sig_fd = s.doorbell_fd = s.lock_fd = s.region_fd = s.region_ro_fd = -1;
    if (parse_args(c, argc, argv))
        return 2;
    s.start_ns = now_ns();
    s.spin_ns = (uint64_t)c->spin_us * 1000u;

    /* Each lane holds two descriptors (connection, completion eventfd) and each launched agent
     * three more while it runs (pidfd, two pipes): take what the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        uint64_t need = (uint64_t)c->max_lanes * 2 + (uint64_t)c->agents * 3 + 64;
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
        return 1;
    }
    int err = io_uring_queue_init(1024, &s.ring, 0);
    if (err < 0) {
        log_err("io_uring_queue_init: %s", strerror(-err));
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
    if (conns_init(&s) || batcher_init(&s) || fleet_init(&s)) {
        log_err("out of memory");
        goto out_engine;
    }
    err = instance_open(&s);
    if (err)
        goto out_instance;
    /* The engine is loaded and warmed up before the loop serves anyone (agents that connect
     * meanwhile wait in the socket's backlog): a supervisor that cannot serve its model
     * refuses to start instead of serving half a model. */
    err = engines_start(&s);
    if (err)
        goto out_instance;
    rc = loop_run(&s);
    log_info("stopped: %llu tasks in %llu batches", (unsigned long long)s.tasks_done,
             (unsigned long long)s.bat.batches);
out_instance:
    fleet_fini(&s);
    instance_close(&s);
out_engine:
    engines_stop(&s);
    batcher_fini(&s);
out_ring:
    io_uring_queue_exit(&s.ring);
    free(s.lanes);
    free(s.active);
    free(s.conns);
    close(s.sig_fd);
    return rc;
}
