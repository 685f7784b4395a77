/*
 * oag-bench.c - the shared-memory path of oag against its baselines, measured in one run.
 *
 * Not a test: it prints figures, ratios and the issue's targets (PASS/MISS, informative) and
 * exits 0 unless something broke (a child failed, the supervisor did not start, ...).
 *
 *   latency (round trip, 64-byte message, one in flight, CLOCK_MONOTONIC around each trip):
 *     ring     bare SPSC rings (src/shm/ring.h) in MAP_SHARED|MAP_ANONYMOUS memory between two
 *              forked processes, both sides busy-polling: the floor
 *     eventfd  the same rings, each side blocking in read() on an eventfd the peer writes
 *     zmq      ZeroMQ PAIR over ipc:// in a temp dir
 *     awake    oag_infer() of one agent process against oag-supervisor (identity backend),
 *              default spin settings on both sides
 *     sleeping the same with `--spin-us 0` for the supervisor and OAG_SPIN_US=0 for the agent
 *   throughput (tasks/s, round trips: submitted and their results polled back):
 *     oag      N agent processes (default 1, 8, 64, 512), each keeping up to W tasks outstanding
 *              with oag_submit()/oag_poll(), against one supervisor, for a fixed duration
 *     zmq      8 agent processes PUSH tasks to a server's PULL; the server PUSHes each back on
 *              the agent's own PULL; same window and duration
 *
 * Every child is a fork of this process; all of them, the supervisors included, are killed and
 * reaped on any exit path, and the temp dir is removed. Nothing is pinned, so figures that
 * involve sleeping depend on where the scheduler puts the two sides: compare ratios within one
 * run, never figures across runs. Progress goes to stderr, the report to stdout.
 *
 *   oag-bench [--quick] [--iters N] [--duration S] [--window W] [--agents 1,8,64,512] ...
 *   (--help lists them all)
 *
 * Model mode (separate from the above; see "model mode" below): a model engine (cpu, cuda)
 * offline through its ops table, then through a real supervisor with agent processes:
 *
 *   oag-bench --model DIR [--model DIR2] | --gen-models   [--backend auto|cpu|cuda] [--quick] ...
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "engine/engine.h"
#include "model/model.h"
#include "oag/oag.h"
#include "shm/atomic.h"
#include "shm/endpoint.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shm/ring.h"

#ifndef OAG_SUPERVISOR_PATH
#define OAG_SUPERVISOR_PATH "oag-supervisor"
#endif
#ifndef OAG_GEN_MODEL_PATH
#define OAG_GEN_MODEL_PATH "oag-gen-model"
#endif

#define MSG 64                  /* bytes per message / task, everywhere */
#define PP_SLOTS 64             /* ring slots of the bare ping-pong rings (one in flight) */
#define MAX_KIDS 4096
#define MAX_ROWS 16
#define SPIN_GIVE_UP_NS (10ull * 1000000000ull) /* a busy-poll wait this long means a dead peer */
#define SUP_READY_MS 10000
/* model mode */
#define MM_MAX_MODELS 8
#define MM_MAX_BATCHES 24
#define MM_CHECK_ROWS 16        /* distinct input rows; results are checked against the engine's */

/* ---- options, results -------------------------------------------------------------------- */

struct opts {
    unsigned iters;           /* measured round trips per latency path */
    unsigned warmup;          /* unmeasured round trips before them */
    double duration_s;        /* measured seconds per throughput row */
    unsigned window;          /* tasks outstanding per agent */
    unsigned agents[MAX_ROWS];
    int nrows;
    unsigned zmq_agents;
    unsigned ring_slots;
    const char *supervisor;
    const char *tput_spin_us; /* OAG_SPIN_US of throughput agents; NULL: library default */
    int no_oag, no_latency, no_throughput;

    /* model mode (--model / --gen-models): see the model section */
    const char *models[MM_MAX_MODELS];
    int nmodels;
    int gen_models;
    const char *models_dir;   /* --gen-models writes (and keeps) its models here; NULL: temp */
    const char *backend;      /* auto | cpu | cuda */
    const char *ctl;          /* oag-ctl binary for status --json; NULL: speak the protocol */
    const char *gen_model;    /* oag-gen-model binary */
    unsigned max_batch;       /* cap of every batch size in the run */
    unsigned batches[MM_MAX_BATCHES];
    int nbatches;
    unsigned off_iters;       /* offline: timed batches per point */
    double off_max_s;         /* offline: time budget per batch size */
    unsigned e2e_batch;       /* --max-batch of the end-to-end supervisors */
    unsigned e2e_agents[MAX_ROWS];
    int ne2e;
    unsigned e2e_delay_us;
    unsigned m_window;        /* async window per agent; 0: from the batch and agent count */
    double m_duration_s, m_warm_s;
    unsigned m_lat_iters;
    unsigned m_lat_warmup;    /* 0: iters / 10, at least 100 */
    unsigned off_warmup;      /* untimed batches per offline point */
    unsigned cmp_agents;      /* agents of the sync/pipelined and batching comparisons */
    unsigned dyn_batch, dyn_delay_us;
    unsigned m_max_queue;     /* 0: from the agents' windows */
    unsigned m_samples;       /* latency samples kept per row, all agents together */
    unsigned threads;         /* --threads for the cpu engine; 0: OpenBLAS's default */
    unsigned device;
    unsigned sup_ready_s;
    int skip_offline, skip_e2e, skip_mlat, skip_sync, skip_batching;
    int supervisor_set;
};

struct lat_res {
    const char *name;
    int ok;
    double p50, p99, p999, max; /* microseconds */
};

struct tput_res {
    char name[64];
    int ok;
    unsigned agents;
    double rate;              /* round trips per second */
    uint64_t errors;          /* completions with a non-zero status */
};

/* ---- process bookkeeping --------------------------------------------------------------- */

static volatile sig_atomic_t g_stop;
static pid_t g_kids[MAX_KIDS];
static int g_nkids;
static char g_tmpdir[128]; /* short: Unix socket paths live in it */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* Installed only while a blocking ping-pong runs: a dying echo child interrupts our read(). */
static void on_sigchld(int sig)
{
    (void)sig;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("oag-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void kid_forget(pid_t pid)
{
    for (int i = 0; i < g_nkids; i++) {
        if (g_kids[i] == pid) {
            g_kids[i] = g_kids[--g_nkids];
            return;
        }
    }
}

/* fork() that registers the child for cleanup. In the child: dies with the parent, default
 * signal dispositions, empty registry. Returns what fork() returns (or -1 if the registry is
 * full). */
static pid_t spawn(void)
{
    if (g_nkids >= MAX_KIDS) {
        errno = EAGAIN;
        return -1;
    }
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        g_nkids = 0;
    } else if (pid > 0) {
        g_kids[g_nkids++] = pid;
    }
    return pid;
}

/* Reaps pid, waiting up to timeout_ms (< 0: forever). Returns 0 and *status, or -ETIMEDOUT. */
static int reap(pid_t pid, int timeout_ms, int *status)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, timeout_ms < 0 ? 0 : WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            kid_forget(pid);
            return -errno;
        }
        if (now_ns() >= deadline)
            return -ETIMEDOUT;
        if (r == 0)
            sleep_ms(1);
    }
    kid_forget(pid);
    if (status)
        *status = st;
    return 0;
}

/* Reaps pid and checks that it exited 0; otherwise says why with what. Returns 0 or -ECHILD. */
static int reap_ok(pid_t pid, int timeout_ms, const char *what)
{
    int st;
    int rc = reap(pid, timeout_ms, &st);
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        reap(pid, -1, &st);
        warn("%s (pid %d) did not exit in time: killed", what, (int)pid);
        return -ETIMEDOUT;
    }
    if (rc)
        return rc;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st))
        warn("%s (pid %d) exited with status %d", what, (int)pid, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        warn("%s (pid %d) killed by signal %d", what, (int)pid, WTERMSIG(st));
    return -ECHILD;
}

static void kill_all_kids(void)
{
    for (int i = 0; i < g_nkids; i++)
        kill(g_kids[i], SIGKILL);
    while (g_nkids > 0)
        reap(g_kids[0], -1, NULL);
}

static void rm_tmpdir(void)
{
    if (!g_tmpdir[0])
        return;
    DIR *d = opendir(g_tmpdir);
    if (d) {
        struct dirent *e;
        char p[PATH_MAX + 256];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", g_tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_tmpdir);
    g_tmpdir[0] = '\0';
}

static void *shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* ---- statistics -------------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Index of the nearest-rank q-percentile among n sorted samples (n >= 1). */
static size_t rank_index(size_t n, double q)
{
    double x = q * (double)n;
    size_t k = (size_t)x;
    if ((double)k < x)
        k++;
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return k - 1;
}

/* Nearest-rank percentile of sorted samples (ns), in microseconds. */
static double pct_us(const uint32_t *s, size_t n, double q)
{
    return s[rank_index(n, q)] / 1000.0;
}

static void summarize(struct lat_res *r, uint32_t *s, size_t n)
{
    qsort(s, n, sizeof *s, cmp_u32);
    r->p50 = pct_us(s, n, 0.50);
    r->p99 = pct_us(s, n, 0.99);
    r->p999 = pct_us(s, n, 0.999);
    r->max = s[n - 1] / 1000.0;
    r->ok = 1;
}

static uint32_t clamp_ns(uint64_t ns)
{
    return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

/* ---- baseline: bare rings, busy-poll or eventfd ------------------------------------------ */

struct pp_shm {
    struct oag_ring_ctl ctl[2];               /* 0: parent -> child, 1: child -> parent */
    uint8_t slots[2][PP_SLOTS * MSG];
};
_Static_assert(sizeof(struct oag_ring_ctl) % OAG_CACHELINE == 0, "slots start on a cache line");

static int pp_send(struct ring_side *tx, const void *msg, int efd)
{
    if (ring_prod_space(tx, 1) <= 0) /* one message in flight: never full */
        return -EPROTO;
    memcpy(ring_slot(tx, tx->mine), msg, MSG);
    ring_prod_publish(tx, 1);
    if (efd >= 0) {
        uint64_t one = 1;
        if (write(efd, &one, sizeof one) != (ssize_t)sizeof one)
            return -errno;
    }
    return 0;
}

/* 1 if the child peer has exited (not reaped yet), else 0. */
static int peer_gone(pid_t peer)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return peer > 0 && waitid(P_PID, (id_t)peer, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
           si.si_pid == peer;
}

/* Waits for one message: blocking read() on efd, or busy-polling the ring when efd < 0 (giving
 * up after SPIN_GIVE_UP_NS, which only a dead peer explains). The parent passes its child as
 * peer: a SIGCHLD that interrupts the read() is checked against it. */
static int pp_recv(struct ring_side *rx, void *msg, int efd, pid_t peer)
{
    int n;
    if (efd >= 0) {
        uint64_t v;
        for (;;) {
            ssize_t r = read(efd, &v, sizeof v);
            if (r == (ssize_t)sizeof v)
                break;
            if (r < 0 && errno == EINTR && !g_stop) {
                struct pollfd pf = { .fd = efd, .events = POLLIN };
                if (peer_gone(peer) && poll(&pf, 1, 0) != 1)
                    return -ECHILD;
                continue;
            }
            return r < 0 ? -errno : -EIO;
        }
        n = ring_cons_avail(rx);
        if (n == 0)
            return -EPROTO; /* woken with nothing published: a protocol bug */
    } else {
        uint64_t deadline = 0;
        for (unsigned i = 1; (n = ring_cons_avail(rx)) == 0; i++) {
            oag_cpu_relax();
            if ((i & 0xffff) == 0) {
                uint64_t t = now_ns();
                if (!deadline)
                    deadline = t + SPIN_GIVE_UP_NS;
                else if (t > deadline)
                    return -ETIMEDOUT;
                if (g_stop)
                    return -EINTR;
            }
        }
    }
    if (n < 0)
        return n;
    memcpy(msg, ring_slot(rx, rx->mine), MSG);
    ring_cons_release(rx, 1);
    return 0;
}

/* Ring ping-pong; use_efd selects the blocking eventfd variant. Fills samples[0..iters). */
static int bench_pingpong(const struct opts *o, int use_efd, uint32_t *samples)
{
    struct pp_shm *sh = shared_alloc(sizeof *sh);
    if (!sh)
        return -errno;
    int efd[2] = { -1, -1 }, rc = 0;
    if (use_efd) {
        efd[0] = eventfd(0, EFD_CLOEXEC);
        efd[1] = eventfd(0, EFD_CLOEXEC);
        if (efd[0] < 0 || efd[1] < 0) {
            rc = -errno;
            if (efd[0] >= 0)
                close(efd[0]);
            munmap(sh, sizeof *sh);
            return rc;
        }
    }
    unsigned total = o->warmup + o->iters;
    struct sigaction sa = { .sa_handler = on_sigchld }, old; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, &old);
    pid_t pid = spawn();
    if (pid < 0) {
        rc = -errno;
        goto out;
    }
    if (pid == 0) {
        struct ring_side rx, tx;
        uint8_t m[MSG];
        ring_side_init(&rx, &sh->ctl[0], sh->slots[0], PP_SLOTS, MSG);
        ring_side_init(&tx, &sh->ctl[1], sh->slots[1], PP_SLOTS, MSG);
        for (unsigned i = 0; i < total; i++) {
            if (pp_recv(&rx, m, efd[0], 0) || pp_send(&tx, m, efd[1]))
                _exit(1);
        }
        _exit(0);
    }
    struct ring_side tx, rx;
    uint8_t m[MSG], back[MSG];
    memset(m, 0xa5, sizeof m);
    ring_side_init(&tx, &sh->ctl[0], sh->slots[0], PP_SLOTS, MSG);
    ring_side_init(&rx, &sh->ctl[1], sh->slots[1], PP_SLOTS, MSG);
    for (unsigned i = 0; i < total; i++) {
        uint64_t seq = i;
        memcpy(m, &seq, sizeof seq);
        uint64_t t0 = now_ns();
        rc = pp_send(&tx, m, efd[0]);
        if (!rc)
            rc = pp_recv(&rx, back, efd[1], pid);
        uint64_t t1 = now_ns();
        if (rc)
            break;
        if (memcmp(m, back, MSG)) {
            rc = -EPROTO;
            break;
        }
        if (i >= o->warmup)
            samples[i - o->warmup] = clamp_ns(t1 - t0);
    }
    if (rc) {
        kill(pid, SIGKILL);
        reap(pid, -1, NULL);
    } else {
        rc = reap_ok(pid, 10000, use_efd ? "eventfd echo child" : "ring echo child");
    }
out:
    sigaction(SIGCHLD, &old, NULL);
    if (efd[0] >= 0)
        close(efd[0]);
    if (efd[1] >= 0)
        close(efd[1]);
    munmap(sh, sizeof *sh);
    return rc;
}

/* ---- baseline: ZeroMQ PAIR ping-pong ---------------------------------------------------- */

static void zmq_setint(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

static int bench_zmq_pair(const struct opts *o, uint32_t *samples)
{
    char ep[PATH_MAX + 16];
    snprintf(ep, sizeof ep, "ipc://%s/pair.ipc", g_tmpdir);
    unsigned total = o->warmup + o->iters;
    pid_t pid = spawn();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        void *ctx = zmq_ctx_new();
        void *s = ctx ? zmq_socket(ctx, ZMQ_PAIR) : NULL;
        uint8_t m[MSG];
        int bad = !s;
        if (s) {
            zmq_setint(s, ZMQ_LINGER, 2000); /* the last reply must still go out */
            zmq_setint(s, ZMQ_RCVTIMEO, 10000);
            bad = zmq_connect(s, ep) != 0;
        }
        for (unsigned i = 0; !bad && i < total; i++)
            bad = zmq_recv(s, m, sizeof m, 0) != MSG || zmq_send(s, m, MSG, 0) != MSG;
        if (s)
            zmq_close(s);
        if (ctx)
            zmq_ctx_term(ctx);
        _exit(bad);
    }
    int rc = 0;
    void *ctx = zmq_ctx_new();
    void *s = ctx ? zmq_socket(ctx, ZMQ_PAIR) : NULL;
    if (!s) {
        rc = -ENOMEM;
        goto out;
    }
    zmq_setint(s, ZMQ_LINGER, 0);
    zmq_setint(s, ZMQ_RCVTIMEO, 10000);
    zmq_setint(s, ZMQ_SNDTIMEO, 10000);
    if (zmq_bind(s, ep) != 0) {
        rc = -zmq_errno();
        warn("zmq_bind %s: %s", ep, zmq_strerror(zmq_errno()));
        goto out;
    }
    uint8_t m[MSG], back[MSG];
    memset(m, 0x5a, sizeof m);
    for (unsigned i = 0; i < total && !g_stop; i++) {
        uint64_t seq = i;
        memcpy(m, &seq, sizeof seq);
        uint64_t t0 = now_ns();
        if (zmq_send(s, m, MSG, 0) != MSG || zmq_recv(s, back, sizeof back, 0) != MSG) {
            rc = -zmq_errno();
            break;
        }
        uint64_t t1 = now_ns();
        if (memcmp(m, back, MSG)) {
            rc = -EPROTO;
            break;
        }
        if (i >= o->warmup)
            samples[i - o->warmup] = clamp_ns(t1 - t0);
    }
    if (g_stop)
        rc = -EINTR;
out:
    if (s)
        zmq_close(s);
    if (ctx)
        zmq_ctx_term(ctx);
    if (rc) {
        kill(pid, SIGKILL);
        reap(pid, -1, NULL);
        return rc;
    }
    return reap_ok(pid, 10000, "ZeroMQ echo child");
}

/* ---- the supervisor ---------------------------------------------------------------------- */

struct sup {
    pid_t pid;
    char name[OAG_NAME_MAX + 1];
    char sock[PATH_MAX];
    char log[PATH_MAX];
};

static struct sup *g_sup; /* the running supervisor, stopped politely on every exit path */

static void sup_dump_log(const struct sup *s)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return;
    char line[512];
    fprintf(stderr, "---- %s ----\n", s->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fprintf(stderr, "---- end ----\n");
    fclose(f);
}

/* Stops a supervisor: SIGTERM, wait up to 10 s (it finishes tasks, unlinks its shm and exits 0),
 * else SIGKILL and unlink its region ourselves. Returns 0 if it exited 0. */
static int sup_stop(struct sup *s)
{
    if (g_sup == s)
        g_sup = NULL;
    if (s->pid <= 0)
        return 0;
    int st = 0, rc;
    kill(s->pid, SIGTERM);
    rc = reap(s->pid, 10000, &st);
    if (rc == -ETIMEDOUT) {
        warn("supervisor %s did not exit 10 s after SIGTERM: killed", s->name);
        kill(s->pid, SIGKILL);
        reap(s->pid, -1, &st);
        char shm[128];
        if (!oag_region_name(shm, sizeof shm, s->name))
            shm_unlink(shm);
        rc = -ETIMEDOUT;
    } else if (!rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        if (WIFEXITED(st))
            warn("supervisor %s exited with status %d after SIGTERM", s->name, WEXITSTATUS(st));
        else
            warn("supervisor %s killed by signal %d after SIGTERM", s->name,
                 WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        sup_dump_log(s);
        rc = -ECHILD;
    }
    s->pid = 0;
    return rc;
}

/* Starts `supervisor --name bench-PID-K --socket DIR/supK.sock BASE... EXTRA...` with its
 * output in DIR/supK.log, and waits (up to ready_ms) until an agent can connect and the engine
 * says it is ready. Returns 0 or a negative errno. */
static int sup_start_argv(const char *exe, struct sup *s, const char *const base[],
                          const char *const extra[], unsigned ready_ms)
{
    static int seq;
    const char *argv[64];
    int n = 0;
    memset(s, 0, sizeof *s);
    seq++;
    snprintf(s->name, sizeof s->name, "bench-%d-%d", (int)getpid(), seq);
    snprintf(s->sock, sizeof s->sock, "%s/sup%d.sock", g_tmpdir, seq);
    snprintf(s->log, sizeof s->log, "%s/sup%d.log", g_tmpdir, seq);
    argv[n++] = exe;
    argv[n++] = "--name";
    argv[n++] = s->name;
    argv[n++] = "--socket";
    argv[n++] = s->sock;
    for (int i = 0; base && base[i] && n < 63; i++)
        argv[n++] = base[i];
    for (int i = 0; extra && extra[i] && n < 63; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;

    int logfd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -errno;
    pid_t pid = spawn();
    if (pid < 0) {
        close(logfd);
        return -errno;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* lets it unlink its shm if we die */
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "oag-bench: cannot exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    s->pid = pid;
    g_sup = s;

    uint64_t deadline = now_ns() + ready_ms * 1000000ull;
    int last = -ENOENT;
    while (!g_stop) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            kid_forget(pid);
            s->pid = 0;
            warn("supervisor exited during start-up (%s %d)",
                 WIFEXITED(st) ? "status" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            sup_dump_log(s);
            return -ECHILD;
        }
        oag_client *c;
        last = oag_connect(&c, s->sock);
        if (last == 0) {
            oag_info info;
            last = oag_get_info(c, &info);
            oag_close(c);
            if (last == 0 && info.ready)
                return 0;
            if (last == 0)
                last = -EAGAIN;
        }
        if (now_ns() > deadline)
            break;
        sleep_ms(20);
    }
    warn("supervisor at %s not ready after %u ms: %s (%s)", s->sock, ready_ms,
         oag_strerror(last), oag_last_error());
    sup_dump_log(s);
    sup_stop(s);
    return g_stop ? -EINTR : -ETIMEDOUT;
}

/* The identity supervisor of the core sections: --backend identity --max-payload 64 EXTRA... */
static int sup_start(const struct opts *o, struct sup *s, const char *const extra[])
{
    static const char *const base[] = { "--backend", "identity", "--max-payload", "64", NULL };
    return sup_start_argv(o->supervisor, s, base, extra, SUP_READY_MS);
}

/* ---- oag latency: one agent process calling oag_infer() ---------------------------------- */

struct lat_shared {
    int32_t rc;
    char msg[256];
    uint32_t samples[];
};

/* An agent's environment: OAG_SPIN_US=spin_us, or unset (library default) when NULL. */
static void agent_env(const char *spin_us)
{
    if (spin_us)
        setenv("OAG_SPIN_US", spin_us, 1);
    else
        unsetenv("OAG_SPIN_US");
    unsetenv("OAG_AGENT_ID");
}

static int lat_agent(struct lat_shared *sh, const char *sock, unsigned warmup, unsigned iters)
{
    oag_client *c;
    int rc = oag_connect(&c, sock);
    if (rc) {
        snprintf(sh->msg, sizeof sh->msg, "oag_connect: %s (%s)", oag_strerror(rc),
                 oag_last_error());
        return rc;
    }
    uint8_t in[MSG], out[MSG];
    memset(in, 0x3c, sizeof in);
    for (unsigned i = 0; i < warmup + iters; i++) {
        uint64_t seq = i;
        size_t len = 0;
        memcpy(in, &seq, sizeof seq);
        uint64_t t0 = now_ns();
        rc = oag_infer(c, in, MSG, out, sizeof out, &len, 5000);
        uint64_t t1 = now_ns();
        if (rc) {
            snprintf(sh->msg, sizeof sh->msg, "oag_infer #%u: %s (%s)", i, oag_strerror(rc),
                     oag_last_error());
            break;
        }
        if (len != MSG || memcmp(in, out, MSG)) {
            snprintf(sh->msg, sizeof sh->msg,
                     "oag_infer #%u: identity backend returned %zu bytes that differ from the "
                     "input", i, len);
            rc = -EPROTO;
            break;
        }
        if (i >= warmup)
            sh->samples[i - warmup] = clamp_ns(t1 - t0);
    }
    oag_close(c);
    return rc;
}

/* oag_infer() latency against a fresh supervisor; sleeping selects --spin-us 0/OAG_SPIN_US=0. */
static int bench_oag_latency(const struct opts *o, int sleeping, uint32_t *samples)
{
    struct sup s;
    const char *extra_sleep[] = { "--spin-us", "0", NULL };
    int rc = sup_start(o, &s, sleeping ? extra_sleep : NULL);
    if (rc)
        return rc;
    size_t size = sizeof(struct lat_shared) + (size_t)o->iters * sizeof(uint32_t);
    struct lat_shared *sh = shared_alloc(size);
    if (!sh) {
        rc = -errno;
        goto out;
    }
    pid_t pid = spawn();
    if (pid < 0) {
        rc = -errno;
        goto out;
    }
    if (pid == 0) {
        agent_env(sleeping ? "0" : NULL);
        sh->rc = lat_agent(sh, s.sock, o->warmup, o->iters);
        _exit(sh->rc ? 1 : 0);
    }
    /* Worst case 5 s per trip is an error; bound the wait generously. */
    int st = 0;
    while ((rc = reap(pid, 1000, &st)) == -ETIMEDOUT && !g_stop)
        ;
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        reap(pid, -1, &st);
        rc = -EINTR;
    } else if (!rc && sh->rc) {
        warn("oag latency agent: %s", sh->msg);
        rc = sh->rc;
    } else if (!rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        warn("oag latency agent died (status 0x%x)", st);
        rc = -ECHILD;
    }
    if (!rc)
        memcpy(samples, sh->samples, (size_t)o->iters * sizeof(uint32_t));
out:
    if (sh)
        munmap(sh, size);
    int src = sup_stop(&s);
    return rc ? rc : src;
}

/* ---- throughput: N agent processes with a window of W --------------------------------------
 *
 * Start-up: each agent connects, then writes a READY record to the report pipe and blocks
 * reading the start pipe. When all are ready the parent writes the window's start and end into
 * shared memory and closes the start pipe: every agent sees EOF at once. Agents run from then,
 * count the completions they receive inside [t_start, t_end), stop submitting at t_end, drain
 * what is outstanding, and write a DONE record. Records are smaller than PIPE_BUF: atomic.
 */

enum { REC_READY = 1, REC_DONE = 2 };

struct tput_rec {
    uint32_t type;
    uint32_t idx;
    int32_t rc;
    uint32_t pad;
    uint64_t done;     /* ok completions inside the window */
    uint64_t errors;   /* completions with a non-zero status */
};
_Static_assert(sizeof(struct tput_rec) <= PIPE_BUF, "pipe records must be atomic");

struct tput_window {
    uint64_t t_start, t_end;
};

struct tput_agent {
    int (*setup)(struct tput_agent *a);
    int (*fill)(struct tput_agent *a, unsigned *outstanding);      /* submit up to the window */
    int (*reap)(struct tput_agent *a, unsigned *outstanding, uint64_t *ok, uint64_t *err,
                int timeout_ms);                                    /* returns count or -errno */
    void (*teardown)(struct tput_agent *a);
    unsigned idx, window;
    const char *endpoint;  /* oag socket / zmq dir */
    oag_client *c;
    oag_completion *cmp;
    void *ctx, *push, *pull;
    uint8_t payload[MSG];
};

static int write_rec(int fd, const struct tput_rec *r)
{
    ssize_t n;
    do
        n = write(fd, r, sizeof *r);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof *r ? 0 : -EIO;
}

/* The body of every throughput agent process. Never returns. */
static void tput_agent_main(struct tput_agent *a, int start_fd, int report_fd,
                            const struct tput_window *w)
{
    struct tput_rec r = { .type = REC_READY, .idx = a->idx };
    memset(a->payload, 0x42, sizeof a->payload);
    memcpy(a->payload, &a->idx, sizeof a->idx); /* the ZeroMQ server routes on it */
    r.rc = a->setup(a);
    if (write_rec(report_fd, &r) || r.rc)
        _exit(1);
    char ch;
    ssize_t n;
    do
        n = read(start_fd, &ch, 1);
    while (n < 0 && errno == EINTR);
    if (n != 0)
        _exit(1); /* the parent died or aborted */
    uint64_t t_start = w->t_start, t_end = w->t_end;
    uint64_t ok = 0, err = 0, ok_before = 0;
    unsigned outstanding = 0;
    int rc = 0;
    for (;;) {
        uint64_t t = now_ns();
        if (t >= t_end)
            break;
        if (t < t_start)
            ok_before = ok;
        rc = a->fill(a, &outstanding);
        if (rc)
            break;
        rc = a->reap(a, &outstanding, &ok, &err, 100);
        if (rc < 0)
            break;
        rc = 0;
    }
    /* Completions counted before t_start (warm-up) are dropped; the ones reaped in the call
     * that crossed t_end count (they completed before we looked at the clock again). */
    uint64_t in_window = ok - ok_before;
    /* Drain: whatever is still outstanding comes back before we report. */
    uint64_t drain_deadline = now_ns() + 5000000000ull;
    while (!rc && outstanding > 0 && now_ns() < drain_deadline) {
        int k = a->reap(a, &outstanding, &ok, &err, 100);
        if (k < 0)
            rc = k;
    }
    if (!rc && outstanding > 0)
        rc = -ETIMEDOUT;
    a->teardown(a);
    r.type = REC_DONE;
    r.rc = rc;
    r.done = in_window;
    r.errors = err;
    write_rec(report_fd, &r);
    _exit(rc ? 1 : 0);
}

/* oag agents */
static int ag_oag_setup(struct tput_agent *a)
{
    int rc = oag_connect(&a->c, a->endpoint);
    if (rc) {
        warn("agent %u: oag_connect: %s (%s)", a->idx, oag_strerror(rc), oag_last_error());
        return rc;
    }
    a->cmp = calloc(a->window, sizeof *a->cmp);
    return a->cmp ? 0 : -ENOMEM;
}

static int ag_oag_fill(struct tput_agent *a, unsigned *outstanding)
{
    while (*outstanding < a->window) {
        uint64_t ticket;
        int rc = oag_submit(a->c, a->payload, MSG, &ticket);
        if (rc == -EAGAIN)
            break;
        if (rc) {
            warn("agent %u: oag_submit: %s (%s)", a->idx, oag_strerror(rc), oag_last_error());
            return rc;
        }
        (*outstanding)++;
    }
    return 0;
}

static int ag_oag_reap(struct tput_agent *a, unsigned *outstanding, uint64_t *ok, uint64_t *err,
                    int timeout_ms)
{
    int n = oag_poll(a->c, a->cmp, (int)a->window, timeout_ms);
    if (n < 0) {
        warn("agent %u: oag_poll: %s (%s)", a->idx, oag_strerror(n), oag_last_error());
        return n;
    }
    for (int i = 0; i < n; i++) {
        if (a->cmp[i].status == 0 && a->cmp[i].len == MSG &&
            !memcmp(a->cmp[i].data, a->payload, MSG))
            (*ok)++;
        else
            (*err)++;
    }
    *outstanding -= (unsigned)n <= *outstanding ? (unsigned)n : *outstanding;
    return n;
}

static void ag_oag_teardown(struct tput_agent *a)
{
    oag_close(a->c);
    free(a->cmp);
}

/* ZeroMQ agents: PUSH to DIR/zin.ipc, PULL from DIR/zout-IDX.ipc */
static int ag_zmq_setup(struct tput_agent *a)
{
    char ep[PATH_MAX + 32];
    a->ctx = zmq_ctx_new();
    if (!a->ctx)
        return -ENOMEM;
    a->push = zmq_socket(a->ctx, ZMQ_PUSH);
    a->pull = zmq_socket(a->ctx, ZMQ_PULL);
    if (!a->push || !a->pull)
        return -ENOMEM;
    zmq_setint(a->push, ZMQ_LINGER, 0);
    zmq_setint(a->pull, ZMQ_LINGER, 0);
    snprintf(ep, sizeof ep, "ipc://%s/zin.ipc", a->endpoint);
    if (zmq_connect(a->push, ep))
        return -zmq_errno();
    snprintf(ep, sizeof ep, "ipc://%s/zout-%u.ipc", a->endpoint, a->idx);
    if (zmq_connect(a->pull, ep))
        return -zmq_errno();
    return 0;
}

static int ag_zmq_fill(struct tput_agent *a, unsigned *outstanding)
{
    while (*outstanding < a->window) {
        if (zmq_send(a->push, a->payload, MSG, ZMQ_DONTWAIT) != MSG) {
            if (zmq_errno() == EAGAIN)
                break;
            return -zmq_errno();
        }
        (*outstanding)++;
    }
    return 0;
}

static int ag_zmq_reap(struct tput_agent *a, unsigned *outstanding, uint64_t *ok,
                          uint64_t *err, int timeout_ms)
{
    uint8_t m[MSG];
    int n = 0;
    zmq_pollitem_t pi = { .socket = a->pull, .events = ZMQ_POLLIN };
    int r = zmq_poll(&pi, 1, timeout_ms);
    if (r < 0)
        return zmq_errno() == EINTR ? 0 : -zmq_errno();
    for (;;) {
        int k = zmq_recv(a->pull, m, sizeof m, ZMQ_DONTWAIT);
        if (k < 0) {
            if (zmq_errno() == EAGAIN)
                break;
            return -zmq_errno();
        }
        if (k == MSG && !memcmp(m, a->payload, MSG))
            (*ok)++;
        else
            (*err)++;
        if (*outstanding)
            (*outstanding)--;
        n++;
    }
    return n;
}

static void ag_zmq_teardown(struct tput_agent *a)
{
    if (a->push)
        zmq_close(a->push);
    if (a->pull)
        zmq_close(a->pull);
    if (a->ctx)
        zmq_ctx_term(a->ctx);
}

/* The ZeroMQ pipeline's server: PULL every task, PUSH it back to the agent named in its first
 * 4 bytes. Runs until killed. Signals readiness (all sockets bound) by writing one byte. */
static void zmq_server_main(const char *dir, unsigned nagents, int ready_fd)
{
    char ep[PATH_MAX + 32];
    void *ctx = zmq_ctx_new();
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    void **push = calloc(nagents, sizeof *push);
    if (!pull || !push)
        _exit(1);
    snprintf(ep, sizeof ep, "ipc://%s/zin.ipc", dir);
    if (zmq_bind(pull, ep))
        _exit(1);
    for (unsigned i = 0; i < nagents; i++) {
        push[i] = zmq_socket(ctx, ZMQ_PUSH);
        snprintf(ep, sizeof ep, "ipc://%s/zout-%u.ipc", dir, i);
        if (!push[i] || zmq_bind(push[i], ep))
            _exit(1);
    }
    char one = 1;
    if (write(ready_fd, &one, 1) != 1)
        _exit(1);
    close(ready_fd);
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, pull, 0) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            _exit(1);
        }
        uint32_t idx = UINT32_MAX;
        if (zmq_msg_size(&m) >= sizeof idx)
            memcpy(&idx, zmq_msg_data(&m), sizeof idx);
        if (idx >= nagents || zmq_msg_send(&m, push[idx], 0) < 0)
            zmq_msg_close(&m);
    }
}

/* Runs one throughput row: nagents processes built from proto (oag or ZeroMQ). */
static int bench_throughput(const struct opts *o, const struct tput_agent *proto,
                            unsigned nagents, struct tput_res *res)
{
    int start_pipe[2] = { -1, -1 }, rep_pipe[2] = { -1, -1 }, rc = 0;
    pid_t *pids = calloc(nagents, sizeof *pids);
    struct tput_window *w = shared_alloc(sizeof *w);
    unsigned forked = 0, ready = 0, done = 0;
    if (!pids || !w) {
        rc = -ENOMEM;
        goto out;
    }
    if (pipe2(start_pipe, O_CLOEXEC) || pipe2(rep_pipe, O_CLOEXEC)) {
        rc = -errno;
        goto out;
    }
    for (; forked < nagents; forked++) {
        pid_t pid = spawn();
        if (pid < 0) {
            rc = -errno;
            warn("fork agent %u: %s", forked, strerror(errno));
            goto out;
        }
        if (pid == 0) {
            struct tput_agent a = *proto;
            a.idx = forked;
            close(start_pipe[1]);
            close(rep_pipe[0]);
            agent_env(o->tput_spin_us);
            tput_agent_main(&a, start_pipe[0], rep_pipe[1], w);
        }
        pids[forked] = pid;
    }
    close(start_pipe[0]);
    start_pipe[0] = -1;
    close(rep_pipe[1]);
    rep_pipe[1] = -1;

    /* Collect READY (connects may take a while with hundreds of agents on 2 CPUs), then DONE. */
    uint64_t deadline = now_ns() + 60000000000ull;
    double warm_s = o->duration_s / 10 < 0.2 ? 0.2 : o->duration_s / 10;
    res->errors = 0;
    uint64_t total = 0;
    while (done < nagents) {
        if (g_stop) {
            rc = -EINTR;
            goto out;
        }
        struct pollfd pf = { .fd = rep_pipe[0], .events = POLLIN };
        int r = poll(&pf, 1, 200);
        if (r < 0 && errno != EINTR) {
            rc = -errno;
            goto out;
        }
        if (now_ns() > deadline) {
            warn("%s: agents did not report in time (%u/%u ready, %u/%u done)", res->name,
                 ready, nagents, done, nagents);
            rc = -ETIMEDOUT;
            goto out;
        }
        if (r == 0) {
            /* Quiet for 200 ms: look for agents that died without a word. */
            for (unsigned i = 0; i < forked && !rc; i++) {
                int st;
                if (pids[i] > 0 && waitpid(pids[i], &st, WNOHANG) == pids[i]) {
                    kid_forget(pids[i]);
                    pids[i] = 0;
                    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                        warn("%s: agent %u died (status 0x%x)", res->name, i, st);
                        rc = -ECHILD;
                    }
                }
            }
            if (rc)
                goto out;
        }
        if (r <= 0)
            continue;
        struct tput_rec rec;
        ssize_t n = read(rep_pipe[0], &rec, sizeof rec);
        if (n == 0) {
            warn("%s: agents exited without reporting (%u/%u ready, %u/%u done)", res->name,
                 ready, nagents, done, nagents);
            rc = -ECHILD;
            goto out;
        }
        if (n != (ssize_t)sizeof rec) {
            rc = n < 0 ? -errno : -EIO;
            goto out;
        }
        if (rec.rc) {
            warn("%s: agent %u failed: %s", res->name, rec.idx, oag_strerror(rec.rc));
            rc = rec.rc;
            goto out;
        }
        if (rec.type == REC_READY && ++ready == nagents) {
            uint64_t t = now_ns();
            w->t_start = t + (uint64_t)(warm_s * 1e9);
            w->t_end = w->t_start + (uint64_t)(o->duration_s * 1e9);
            close(start_pipe[1]); /* go */
            start_pipe[1] = -1;
            deadline = w->t_end + 30000000000ull;
        } else if (rec.type == REC_DONE) {
            done++;
            total += rec.done;
            res->errors += rec.errors;
        }
    }
    res->agents = nagents;
    res->rate = (double)total / o->duration_s;
    res->ok = 1;
    if (res->errors)
        warn("%s: %" PRIu64 " completions had an error status", res->name, res->errors);

out:
    for (int i = 0; i < 2; i++) {
        if (start_pipe[i] >= 0)
            close(start_pipe[i]);
        if (rep_pipe[i] >= 0)
            close(rep_pipe[i]);
    }
    for (unsigned i = 0; i < forked; i++) {
        if (pids[i] <= 0)
            continue;
        if (rc) {
            kill(pids[i], SIGKILL); /* already failing: no need to hear how each one died */
            reap(pids[i], -1, NULL);
        } else {
            rc = reap_ok(pids[i], 10000, "throughput agent");
        }
    }
    if (rc)
        res->ok = 0;
    free(pids);
    if (w)
        munmap(w, sizeof *w);
    return rc;
}

static int bench_zmq_pipeline(const struct opts *o, struct tput_res *res)
{
    int rp[2];
    if (pipe2(rp, O_CLOEXEC))
        return -errno;
    pid_t srv = spawn();
    if (srv < 0) {
        close(rp[0]);
        close(rp[1]);
        return -errno;
    }
    if (srv == 0) {
        close(rp[0]);
        zmq_server_main(g_tmpdir, o->zmq_agents, rp[1]);
        _exit(1);
    }
    close(rp[1]);
    char ch;
    struct pollfd pf = { .fd = rp[0], .events = POLLIN };
    int rc = 0;
    if (poll(&pf, 1, 10000) != 1 || read(rp[0], &ch, 1) != 1) {
        warn("ZeroMQ server did not start");
        rc = -ECHILD;
    }
    close(rp[0]);
    if (!rc) {
        struct tput_agent proto = {
            .setup = ag_zmq_setup, .fill = ag_zmq_fill, .reap = ag_zmq_reap,
            .teardown = ag_zmq_teardown, .window = o->window, .endpoint = g_tmpdir,
        };
        rc = bench_throughput(o, &proto, o->zmq_agents, res);
    }
    kill(srv, SIGKILL);
    reap(srv, -1, NULL);
    return rc;
}

/* ---- the report ---------------------------------------------------------------------------- */

static const char *fmt_rate(char *buf, size_t cap, double r)
{
    if (r >= 1e6)
        snprintf(buf, cap, "%.2f M", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, cap, "%.1f k", r / 1e3);
    else
        snprintf(buf, cap, "%.1f  ", r);
    return buf;
}

static void print_lat(const struct lat_res *r, const struct lat_res *base, const char *base_name,
                      double target)
{
    if (!r->ok) {
        printf("  %-48s %9s %9s %9s   %s\n", r->name, "n/a", "n/a", "n/a", "(failed or skipped)");
        return;
    }
    /* Three decimals below 10 us: the floor is a few hundred nanoseconds. */
    printf("  %-48s %9.*f %9.*f %9.*f", r->name, r->p50 < 10 ? 3 : 2, r->p50,
           r->p99 < 10 ? 3 : 2, r->p99, r->p999 < 10 ? 3 : 2, r->p999);
    if (base && base->ok) {
        double ratio = r->p50 / base->p50;
        printf("   %5.2fx %-8s target <= %.1fx: %s", ratio, base_name, target,
               ratio <= target ? "PASS" : "MISS");
    }
    printf("\n");
}

static void print_report(const struct opts *o, const struct lat_res lat[5],
                         const struct tput_res *tp, int ntp, const struct tput_res *zp)
{
    struct utsname u;
    char b1[32], b2[32];
    uname(&u);
    printf("\noag-bench (liboag %s): %d-byte messages, %ld online CPUs, %s %s %s\n",
           oag_version(), MSG, sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, u.machine);
    printf("\nRound-trip latency, microseconds (%u round trips per path after %u warm-up; "
           "p50 ratio vs baseline)\n", o->iters, o->warmup);
    printf("  %-48s %9s %9s %9s\n", "path", "p50", "p99", "p99.9");
    print_lat(&lat[0], NULL, NULL, 0);
    print_lat(&lat[1], NULL, NULL, 0);
    print_lat(&lat[2], NULL, NULL, 0);
    print_lat(&lat[3], &lat[0], "ring", 2.0);
    print_lat(&lat[4], &lat[1], "eventfd", 1.2);

    printf("\nThroughput, round trips/s (64-byte tasks, window %u per agent, %.1f s per row%s%s)\n",
           o->window, o->duration_s, o->tput_spin_us ? ", agents with OAG_SPIN_US=" : "",
           o->tput_spin_us ? o->tput_spin_us : "");
    printf("  %-48s %12s\n", "path", "tasks/s");
    const struct tput_res *oag8 = NULL;
    for (int i = 0; i < ntp; i++) {
        const struct tput_res *t = &tp[i];
        if (!t->ok) {
            printf("  %-48s %12s   (failed or skipped)\n", t->name, "n/a");
            continue;
        }
        printf("  %-48s %12s", t->name, fmt_rate(b1, sizeof b1, t->rate));
        if (t->agents == o->zmq_agents && zp->ok)
            printf("   %5.2fx ZeroMQ pipeline", t->rate / zp->rate);
        if (t->agents == 8)
            oag8 = t;
        printf("\n");
    }
    if (zp->ok)
        printf("  %-48s %12s\n", zp->name, fmt_rate(b1, sizeof b1, zp->rate));
    else
        printf("  %-48s %12s   (failed or skipped)\n", zp->name, "n/a");

    printf("\nTargets (issue 2; informative)\n");
    if (lat[3].ok && lat[0].ok)
        printf("  %-58s %7.2fx  %s\n", "oag_infer p50 awake   <= 2x bare busy-poll ring",
               lat[3].p50 / lat[0].p50, lat[3].p50 <= 2.0 * lat[0].p50 ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag_infer p50 awake   <= 2x bare busy-poll ring", "n/a",
               "-");
    if (lat[4].ok && lat[1].ok)
        printf("  %-58s %7.2fx  %s\n", "oag_infer p50 asleep  <= 1.2x bare eventfd",
               lat[4].p50 / lat[1].p50, lat[4].p50 <= 1.2 * lat[1].p50 ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag_infer p50 asleep  <= 1.2x bare eventfd", "n/a", "-");
    if (oag8 && oag8->agents == 8)
        printf("  %-58s %8s  %s\n", "oag 8 agents          >= 5 M tasks/s",
               fmt_rate(b2, sizeof b2, oag8->rate), oag8->rate >= 5e6 ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag 8 agents          >= 5 M tasks/s", "n/a", "-");
    if (oag8 && oag8->agents == 8 && zp->ok && o->zmq_agents == 8)
        printf("  %-58s %7.2fx  %s\n", "oag 8 agents          >= 3x ZeroMQ pipeline (8 agents)",
               oag8->rate / zp->rate, oag8->rate >= 3.0 * zp->rate ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag 8 agents          >= 3x ZeroMQ pipeline (8 agents)",
               "n/a", "-");
    fflush(stdout);
}

/* ==== model mode ===========================================================================
 *
 * oag-bench --model DIR [--model DIR2 ...] | --gen-models   [--backend auto|cpu|cuda] ...
 *
 * Per model, in one run:
 *  1. offline   the engine created directly through its ops table (engine_lookup()->create with
 *               max_batch = --max-batch, max_payload = the model's widest row rounded up to 64
 *               bytes, device --device), batch buffers from host_alloc (pinned for cuda), strides
 *               as the supervisor's batch slots have them. Per batch size: the forward of one
 *               batch alone (submit, poll on event_fd, reap; median and p99), then the engine
 *               kept full (max_inflight batches in flight for async engines, back to back for
 *               synchronous ones): median time per batch over groups of completions, rows/s.
 *               This runs in a child process, so that this process never touches the GPU and
 *               its hundreds of agent forks stay cheap; the child also computes the results of
 *               MM_CHECK_ROWS input rows, which every agent later checks its results against.
 *  2. e2e       a real supervisor (--model DIR --backend B --max-batch --e2e-batch
 *               --max-delay-us --e2e-delay-us, ring slots and lanes sized for the agents), N
 *               agent processes each keeping a window of tasks outstanding (oag_submit /
 *               oag_poll): tasks/s over --model-duration, and its ratio to the offline rows/s
 *               at the same batch size (target >= 0.8).
 *  3. latency   one agent, oag_infer() one task at a time (max delay 0): p50/p99 against the
 *               offline forward of batch 1 (target: p50 within +15 us).
 *  4. sync vs pipelined   --cmp-agents agents against one supervisor (the e2e settings): each
 *               calling oag_infer() in a loop, then each keeping a window outstanding: tasks/s,
 *               mean/p50/p99 latency (submit to result), engine busy % (the supervisor's
 *               status --json engines[].busy_s over the measured window) and the mean batch.
 *  5. batching  --cmp-agents synchronous agents against --max-batch 1 (no batching) and against
 *               --max-batch --dyn-batch --max-delay-us --dyn-delay-us (dynamic batching).
 * Latencies are sampled per agent (reservoir sampling, --model-samples in all per row).
 */

struct off_row {
    unsigned batch;
    int ok;
    unsigned lat_runs, pipe_runs;
    double lat_p50_us, lat_p99_us;   /* one batch alone: submit .. reaped */
    double pipe_us;                  /* engine kept full: time per batch (median of groups) */
    double rows_s;                   /* batch / pipe_us */
};

struct off_shared {
    int32_t rc;
    char msg[512];
    char backend[16];
    uint32_t max_inflight;
    uint32_t out_bytes;
    double create_ms;
    int nrows;
    int have_expect;
    struct off_row rows[MM_MAX_BATCHES];
    /* then MM_CHECK_ROWS input rows (in_dim floats each), then their results (out_dim each) */
};

struct eng_stats {
    int ok;
    double busy_s, compute_s, queue_s;
    uint64_t rows, batches;
};

struct mrun_res {
    char name[64];
    int ok;
    unsigned agents, window, max_batch, delay_us;
    int sync;
    double tasks_s;
    double mean_us, p50_us, p99_us, p999_us;
    double busy_frac;        /* engine busy time / wall time over the window; < 0: unknown */
    double avg_batch;        /* rows / batches over the window; 0: unknown */
    uint64_t errors, mismatches, busy_retries, checked;
};

struct model_res {
    char dir[PATH_MAX];
    char label[64];
    char name[64];
    char dtype[16];
    uint32_t in_dim, out_dim, nlinear, payload;
    uint64_t param_bytes;
    int loaded;
    struct off_shared off;       /* a copy of the child's header */
    int off_ok;
    struct mrun_res e2e[MAX_ROWS];
    int ne2e;
    struct mrun_res lat;
    struct mrun_res sync, pipe;
    struct mrun_res nobatch, dyn;
    int ran_lat, ran_cmp, ran_batching; /* attempted (not skipped) */
};

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint32_t round64(uint32_t v)
{
    return (v + 63u) & ~63u;
}

static unsigned next_pow2(unsigned v)
{
    unsigned p = 1;
    while (p < v && p < (1u << 30))
        p <<= 1;
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted doubles. */
static double pct_d(const double *s, size_t n, double q)
{
    return s[rank_index(n, q)];
}

static void sleep_until(uint64_t t_ns)
{
    struct timespec ts = { .tv_sec = (time_t)(t_ns / 1000000000ull),
                           .tv_nsec = (long)(t_ns % 1000000000ull) };
    while (!g_stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void sleep_us(unsigned us)
{
    struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000L };
    nanosleep(&ts, NULL);
}

/* The directory of this executable, "" if unknown. */
static const char *self_dir(void)
{
    static char dir[PATH_MAX];
    static int done;
    if (!done) {
        done = 1;
        ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
        if (n <= 0) {
            dir[0] = '\0';
        } else {
            dir[n] = '\0';
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            else
                dir[0] = '\0';
        }
    }
    return dir;
}

/* path if it is an executable file (copied into buf), else NULL. */
static const char *exe_if(char *buf, size_t cap, const char *path)
{
    if (!path || !*path || access(path, X_OK) != 0)
        return NULL;
    snprintf(buf, cap, "%s", path);
    return buf;
}

/* The tools next to this binary (a build folder may be carried to another machine, where the
 * compiled-in absolute paths do not exist), then the compiled-in paths. */
static void resolve_tools(struct opts *o)
{
    static char sup[PATH_MAX], gen[PATH_MAX];
    char p[PATH_MAX + 64];
    const char *d = self_dir();
    if (!o->supervisor_set) {
        snprintf(p, sizeof p, "%s/../src/scheduler/oag-supervisor", d);
        if (*d && exe_if(sup, sizeof sup, p))
            o->supervisor = sup;
    }
    if (!o->gen_model) {
        snprintf(p, sizeof p, "%s/oag-gen-model", d);
        if (*d && exe_if(gen, sizeof gen, p)) {
            o->gen_model = gen;
        } else {
            /* next to the supervisor's build: BUILD/src/scheduler/../../tools/oag-gen-model */
            char sd[PATH_MAX];
            snprintf(sd, sizeof sd, "%s", o->supervisor);
            char *slash = strrchr(sd, '/');
            if (slash) {
                *slash = '\0';
                snprintf(p, sizeof p, "%s/../../tools/oag-gen-model", sd);
            }
            if (slash && exe_if(gen, sizeof gen, p))
                o->gen_model = gen;
            else
                o->gen_model = OAG_GEN_MODEL_PATH;
        }
    }
}

/* Runs argv (argv[0] a path) with stdout to out_fd (or inherited if < 0), waits. Returns 0 if
 * it exited 0. */
static int run_cmd(const char *const argv[], int out_fd, const char *what)
{
    pid_t pid = spawn();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        if (out_fd >= 0)
            dup2(out_fd, 1);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "oag-bench: cannot exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return reap_ok(pid, 600000, what);
}

static void rm_model_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[PATH_MAX + 256];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* ---- the supervisor's status (status --json) ------------------------------------------- */

/* Speaks the control protocol (src/shm/proto.h): HELLO(CTL, cmd), text chunks, CTL_END. */
static int ctl_query_proto(const char *sock, const char *cmd, char *buf, size_t cap)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(sock) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    struct oag_hello h = { .magic = OAG_PROTO_MAGIC, .abi = OAG_ABI_VERSION,
                           .kind = OAG_HELLO_CTL, .agent_id = -1, .pid = (uint32_t)getpid() };
    snprintf(h.cmd, sizeof h.cmd, "%s", cmd);
    if (send(fd, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    static union {
        struct oag_ctl_msg m;
        struct oag_welcome w;
    } u;
    size_t len = 0;
    int rc = -EIO;
    for (;;) {
        ssize_t n = recv(fd, &u, sizeof u, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (size_t)n < offsetof(struct oag_ctl_msg, text) ||
            u.m.magic != OAG_PROTO_MAGIC)
            break;
        if (u.m.type == OAG_MSG_WELCOME) { /* refused */
            rc = u.w.err ? u.w.err : -EACCES;
            break;
        }
        if (u.m.type == OAG_MSG_CTL_END) {
            rc = u.m.status;
            break;
        }
        if (u.m.type == OAG_MSG_CTL_TEXT && u.m.len <= OAG_CTL_CHUNK &&
            (size_t)n >= offsetof(struct oag_ctl_msg, text) + u.m.len) {
            size_t k = u.m.len < cap - 1 - len ? u.m.len : cap - 1 - len;
            memcpy(buf + len, u.m.text, k);
            len += k;
        }
    }
    buf[len] = '\0';
    close(fd);
    return rc;
}

/* Runs `CTL -s SOCK status --json` and reads its output. */
static int ctl_query_exe(const char *ctl, const char *sock, char *buf, size_t cap)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        return -errno;
    pid_t pid = spawn();
    if (pid < 0) {
        int rc = -errno;
        close(p[0]);
        close(p[1]);
        return rc;
    }
    if (pid == 0) {
        dup2(p[1], 1);
        execl(ctl, ctl, "-s", sock, "status", "--json", (char *)NULL);
        dprintf(2, "oag-bench: cannot exec %s: %s\n", ctl, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(p[0], buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    buf[len] = '\0';
    close(p[0]);
    return reap_ok(pid, 10000, "oag-ctl");
}

/* Sums "key":number over the engines array of a status --json reply. */
static double json_sum(const char *from, const char *to, const char *key)
{
    char pat[48];
    double sum = 0;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    for (const char *p = from; (p = strstr(p, pat)) != NULL && p < to;) {
        p += strlen(pat);
        sum += strtod(p, NULL);
    }
    return sum;
}

static int parse_status(const char *json, struct eng_stats *st)
{
    memset(st, 0, sizeof *st);
    const char *e = strstr(json, "\"engines\":[");
    if (!e)
        return -EPROTO;
    e += strlen("\"engines\":[");
    const char *end = strchr(e, ']');
    if (!end)
        return -EPROTO;
    st->busy_s = json_sum(e, end, "busy_s");
    st->rows = (uint64_t)json_sum(e, end, "rows");
    st->batches = (uint64_t)json_sum(e, end, "batches");
    const char *q = strstr(end, "\"queue_s\":");
    if (q)
        st->queue_s = strtod(q + strlen("\"queue_s\":"), NULL);
    q = strstr(end, "\"compute_s\":");
    if (q)
        st->compute_s = strtod(q + strlen("\"compute_s\":"), NULL);
    st->ok = 1;
    return 0;
}

static int sup_stats(const struct opts *o, const struct sup *s, struct eng_stats *st)
{
    static char buf[1 << 20]; /* 512 agents' entries and more */
    int rc = o->ctl ? ctl_query_exe(o->ctl, s->sock, buf, sizeof buf)
                    : ctl_query_proto(s->sock, "status --json", buf, sizeof buf);
    if (rc == 0)
        rc = parse_status(buf, st);
    if (rc) {
        memset(st, 0, sizeof *st);
        warn("status --json from %s: %s", s->sock, strerror(-rc));
    }
    return rc;
}

/* ---- 1. offline: the engine through its ops table, in a child ------------------------------ */

struct off_slot {
    struct oag_batch b;
};

static int off_alloc(const struct oag_engine_ops *ops, struct oag_engine *e, struct off_slot *s,
                     uint32_t mb, uint32_t in_stride, uint32_t out_stride)
{
    memset(s, 0, sizeof *s);
    size_t ib = (size_t)mb * in_stride, ob = (size_t)mb * out_stride;
    s->b.in_stride = in_stride;
    s->b.out_stride = out_stride;
    s->b.in = ops->host_alloc ? ops->host_alloc(e, ib) : aligned_alloc(64, (ib + 63) & ~(size_t)63);
    s->b.out = ops->host_alloc ? ops->host_alloc(e, ob) : aligned_alloc(64, (ob + 63) & ~(size_t)63);
    s->b.in_len = calloc(mb, sizeof(uint32_t));
    s->b.out_len = calloc(mb, sizeof(uint32_t));
    s->b.status = calloc(mb, sizeof(int32_t));
    if (!s->b.in || !s->b.out || !s->b.in_len || !s->b.out_len || !s->b.status)
        return -ENOMEM;
    return 0;
}

static void off_free(const struct oag_engine_ops *ops, struct oag_engine *e, struct off_slot *s)
{
    if (ops->host_alloc && ops->host_free) {
        if (s->b.in)
            ops->host_free(e, s->b.in);
        if (s->b.out)
            ops->host_free(e, s->b.out);
    } else if (!ops->host_alloc) {
        free(s->b.in);
        free(s->b.out);
    }
    free(s->b.in_len);
    free(s->b.out_len);
    free(s->b.status);
}

/* Waits for the oldest batch of an async engine (poll on event_fd, then reap). */
static struct oag_batch *off_wait(const struct oag_engine_ops *ops, struct oag_engine *e, int efd)
{
    uint64_t deadline = now_ns() + 60000000000ull;
    for (;;) {
        struct oag_batch *b = ops->reap(e);
        if (b)
            return b;
        if (now_ns() > deadline)
            return NULL;
        if (efd >= 0) {
            struct pollfd pf = { .fd = efd, .events = POLLIN };
            poll(&pf, 1, 100);
        }
    }
}

/* Checks a finished batch: every row ok. Returns 0 or the first error. */
static int off_check(const struct oag_batch *b, uint32_t out_bytes)
{
    if (b->whole_rc)
        return b->whole_rc;
    for (uint32_t i = 0; i < b->n; i++) {
        if (b->status[i])
            return b->status[i];
        if (b->out_len[i] != out_bytes)
            return -EPROTO;
    }
    return 0;
}

/* One batch alone: submit, wait, reap. */
static int off_one(const struct oag_engine_ops *ops, struct oag_engine *e, int efd,
                   struct oag_batch *b)
{
    int rc = ops->submit(e, b);
    if (rc < 0)
        return rc;
    if (ops->reap) {
        struct oag_batch *d = off_wait(ops, e, efd);
        if (!d)
            return -ETIMEDOUT;
        if (d != b)
            return -EPROTO;
    }
    return 0;
}

static void off_set_n(struct oag_batch *b, uint32_t n, uint32_t in_bytes)
{
    b->n = n;
    for (uint32_t i = 0; i < n; i++)
        b->in_len[i] = in_bytes;
}

static int off_child(const struct opts *o, const char *dir, struct off_shared *sh,
                     float *rows, float *expect, uint32_t payload)
{
    char err[512] = "";
    struct oag_model *m = NULL;
    int rc = oag_model_load(&m, dir, err, sizeof err);
    if (rc) {
        snprintf(sh->msg, sizeof sh->msg, "load %s: %s", dir, err);
        return rc;
    }
    const char *cands[2] = { o->backend, NULL };
    if (!strcmp(o->backend, "auto")) {
        cands[0] = "cuda";
        cands[1] = "cpu";
    }
    const struct oag_engine_ops *ops = NULL;
    struct oag_engine *e = NULL;
    rc = -ENODEV;
    for (int k = 0; k < 2 && cands[k]; k++) {
        const struct oag_engine_ops *t = engine_lookup(cands[k]);
        if (!t) {
            snprintf(sh->msg, sizeof sh->msg, "backend %s is not built into oag-bench (have %s)",
                     cands[k], engine_names());
            rc = -ENODEV;
            continue;
        }
        struct oag_engine_params p = {
            .max_batch = o->max_batch, .max_payload = payload, .model = m,
            .device = !strcmp(cands[k], "cuda") ? (int)o->device : -1,
            .threads = (int)o->threads,
        };
        uint64_t t0 = now_ns();
        rc = t->create(&e, &p);
        sh->create_ms = (double)(now_ns() - t0) / 1e6;
        if (rc == 0) {
            ops = t;
            break;
        }
        snprintf(sh->msg, sizeof sh->msg, "%s engine create: %s", cands[k], strerror(-rc));
    }
    if (!ops) {
        oag_model_free(m);
        return rc;
    }
    snprintf(sh->backend, sizeof sh->backend, "%s", ops->name);
    sh->msg[0] = '\0';
    uint32_t in_bytes = m->input_dim * 4u;
    uint32_t out_bytes = ops->out_row_bytes ? ops->out_row_bytes(e) : m->output_dim * 4u;
    if (!out_bytes)
        out_bytes = m->output_dim * 4u;
    sh->out_bytes = out_bytes;
    /* strides as the supervisor's batch slots (src/scheduler/batcher.c) */
    uint32_t in_stride = round64(payload), out_stride = round64(out_bytes);
    uint32_t nslot = 1;
    if (ops->reap)
        nslot = ops->max_inflight ? ops->max_inflight : 2;
    if (nslot > 8)
        nslot = 8;
    sh->max_inflight = ops->reap ? nslot : 1;
    int efd = ops->reap && ops->event_fd ? ops->event_fd(e) : -1;
    struct off_slot slot[8];
    memset(slot, 0, sizeof slot);
    uint32_t nalloc = 0;
    for (; nalloc < nslot; nalloc++) {
        rc = off_alloc(ops, e, &slot[nalloc], o->max_batch, in_stride, out_stride);
        if (rc) {
            nalloc++;
            snprintf(sh->msg, sizeof sh->msg, "host buffers for %u rows: out of memory",
                     o->max_batch);
            goto out;
        }
        for (uint32_t r = 0; r < o->max_batch; r++)
            memcpy(slot[nalloc].b.in + (size_t)r * in_stride,
                   rows + (size_t)(r % MM_CHECK_ROWS) * m->input_dim, in_bytes);
    }

    /* The reference results of the check rows. */
    {
        uint32_t n = MM_CHECK_ROWS < o->max_batch ? MM_CHECK_ROWS : o->max_batch;
        struct oag_batch *b = &slot[0].b;
        off_set_n(b, n, in_bytes);
        rc = off_one(ops, e, efd, b);
        if (!rc)
            rc = off_check(b, out_bytes);
        if (rc) {
            snprintf(sh->msg, sizeof sh->msg, "first batch (%u rows): %s", n, strerror(-rc));
            goto out;
        }
        for (uint32_t r = 0; r < n; r++)
            memcpy(expect + (size_t)r * m->output_dim, b->out + (size_t)r * out_stride,
                   (size_t)m->output_dim * 4);
        sh->have_expect = n == MM_CHECK_ROWS;
    }

    size_t cap = o->off_iters + 16;
    double *lat = malloc(cap * sizeof *lat);
    double *grp = malloc(cap * sizeof *grp);
    uint64_t *done_t = malloc((cap + 1) * sizeof *done_t);
    if (!lat || !grp || !done_t) {
        free(lat);
        free(grp);
        free(done_t);
        rc = -ENOMEM;
        goto out;
    }
    for (int k = 0; k < o->nbatches && !g_stop; k++) {
        unsigned B = o->batches[k];
        struct off_row *r = &sh->rows[sh->nrows++];
        r->batch = B;
        fprintf(stderr, "oag-bench:   offline batch %u ...\n", B);
        for (uint32_t i = 0; i < nslot; i++)
            off_set_n(&slot[i].b, B, in_bytes);
        /* warm-up, and every row checked once */
        for (unsigned w = 0; w < (o->off_warmup ? o->off_warmup : 1) && !rc; w++) {
            rc = off_one(ops, e, efd, &slot[0].b);
            if (!rc)
                rc = off_check(&slot[0].b, out_bytes);
        }
        if (rc) {
            snprintf(sh->msg, sizeof sh->msg, "batch %u: %s", B, strerror(-rc));
            break;
        }
        /* one batch alone */
        uint64_t budget = (uint64_t)(o->off_max_s / 2 * 1e9), t_begin = now_ns();
        unsigned n = 0;
        while (n < o->off_iters && !g_stop && (n < 5 || now_ns() - t_begin < budget)) {
            uint64_t t0 = now_ns();
            rc = off_one(ops, e, efd, &slot[0].b);
            uint64_t t1 = now_ns();
            if (rc)
                break;
            lat[n++] = (double)(t1 - t0) / 1e3;
        }
        if (rc) {
            snprintf(sh->msg, sizeof sh->msg, "batch %u: %s", B, strerror(-rc));
            break;
        }
        qsort(lat, n, sizeof *lat, cmp_double);
        r->lat_runs = n;
        r->lat_p50_us = pct_d(lat, n, 0.5);
        r->lat_p99_us = pct_d(lat, n, 0.99);
        if (!ops->reap) {
            /* synchronous: the engine kept full is one batch after the other */
            r->pipe_runs = n;
            r->pipe_us = r->lat_p50_us;
        } else {
            /* max_inflight batches in flight; completion times, in submission order */
            unsigned N = o->off_iters, G = 2 * nslot < 4 ? 4 : 2 * nslot;
            unsigned sub = 0, got = 0;
            t_begin = now_ns();
            done_t[0] = t_begin;
            while (got < N && !g_stop) {
                while (sub < N && sub - got < nslot) {
                    rc = ops->submit(e, &slot[sub % nslot].b);
                    if (rc < 0)
                        break;
                    sub++;
                }
                if (rc < 0)
                    break;
                struct oag_batch *d = off_wait(ops, e, efd);
                if (!d) {
                    rc = -ETIMEDOUT;
                    break;
                }
                if (d != &slot[got % nslot].b) {
                    rc = -EPROTO;
                    break;
                }
                done_t[++got] = now_ns();
                /* time's up: stop submitting, drain what is in flight */
                if (got >= 2 * G + 1 && now_ns() - t_begin >= budget && N > sub)
                    N = sub;
            }
            if (rc < 0) {
                snprintf(sh->msg, sizeof sh->msg, "batch %u pipelined: %s", B, strerror(-rc));
                break;
            }
            r->pipe_runs = got;
            /* per-batch time over groups of G completions (completions come in bursts) */
            unsigned ng = 0;
            for (unsigned i = 1; i + G <= got; i += G)
                grp[ng++] = (double)(done_t[i + G] - done_t[i]) / G / 1e3;
            if (ng >= 2) {
                qsort(grp, ng, sizeof *grp, cmp_double);
                r->pipe_us = pct_d(grp, ng, 0.5);
            } else {
                r->pipe_us = (double)(done_t[got] - done_t[0]) / (got ? got : 1) / 1e3;
            }
        }
        r->rows_s = r->pipe_us > 0 ? B * 1e6 / r->pipe_us : 0;
        r->ok = 1;
    }
    free(lat);
    free(grp);
    free(done_t);
out:
    for (uint32_t i = 0; i < nalloc; i++)
        off_free(ops, e, &slot[i]);
    ops->destroy(e);
    oag_model_free(m);
    return rc;
}

/* Runs the offline part in a child; on return sh holds its results (or its error). */
static int bench_offline(const struct opts *o, const char *dir, struct off_shared *sh,
                         float *rows, float *expect, uint32_t payload)
{
    pid_t pid = spawn();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        sh->rc = off_child(o, dir, sh, rows, expect, payload);
        _exit(sh->rc ? 1 : 0);
    }
    int st = 0, rc;
    while ((rc = reap(pid, 1000, &st)) == -ETIMEDOUT && !g_stop)
        ;
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        reap(pid, -1, &st);
        return -EINTR;
    }
    if (rc)
        return rc;
    if (sh->rc) {
        warn("offline: %s", sh->msg[0] ? sh->msg : strerror(-sh->rc));
        return sh->rc;
    }
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        warn("offline child died (status 0x%x)", st);
        return -ECHILD;
    }
    return 0;
}

/* ---- agents against a model supervisor ------------------------------------------------------ */

struct mrun_cfg {
    const char *sock;
    int sync;                 /* oag_infer loop; else a window of oag_submit/oag_poll */
    unsigned nagents, window;
    unsigned iters, warmup;   /* count mode (iters > 0, one agent): warmup + iters calls */
    double duration_s, warm_s;
    uint32_t in_dim, out_dim;
    const float *rows;        /* MM_CHECK_ROWS rows of in_dim */
    const float *expect;      /* their results (out_dim each), or NULL */
    unsigned samples_cap;     /* per agent */
    const char *spin_us;      /* OAG_SPIN_US of the agents; NULL: library default */
};

struct mrun_agent {
    int32_t rc;
    uint32_t nsamp;
    uint64_t ok, err, mismatch, busy, checked, untracked, lat_sum_ns, lat_n, seen;
    char msg[200];
};

struct mrun_shared {
    uint64_t t_start, t_end;
    struct mrun_agent a[];
};

#define MM_CHECK_EVERY 16     /* one result in this many is compared with the reference */

static int out_matches(const float *got, const float *want, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        float d = got[i] - want[i], w = want[i] < 0 ? -want[i] : want[i];
        if (d < 0)
            d = -d;
        if (!(d <= 2e-2f + 2e-2f * w)) /* NaN fails too */
            return 0;
    }
    return 1;
}

static void samp_add(uint32_t *s, struct mrun_agent *r, uint32_t cap, uint64_t *rng, uint64_t ns)
{
    uint32_t v = clamp_ns(ns);
    r->seen++;
    if (r->nsamp < cap) {
        s[r->nsamp++] = v;
    } else if (cap) {
        uint64_t j = xorshift64(rng) % r->seen;
        if (j < cap)
            s[j] = v;
    }
}

static int fatal_rc(int rc)
{
    return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN || rc == -EPROTO ||
           rc == -EBADF || rc == -ENOMEM || rc == -EINVAL || rc == -EMSGSIZE;
}

struct tk_ent {
    uint64_t ticket, t0;
    uint32_t row;
};

static void magent_main(const struct mrun_cfg *cfg, struct mrun_shared *sh, uint32_t *samp,
                        unsigned idx, int start_fd, int ready_fd)
{
    struct mrun_agent *r = &sh->a[idx];
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)idx << 32 | 1);
    oag_client *c = NULL;
    char ch = 'E';
    const uint32_t in_bytes = cfg->in_dim * 4u, out_bytes = cfg->out_dim * 4u;
    int rc = oag_connect(&c, cfg->sock);
    if (rc) {
        snprintf(r->msg, sizeof r->msg, "oag_connect: %s (%s)", oag_strerror(rc),
                 oag_last_error());
        goto fail;
    }
    oag_info info;
    rc = oag_get_info(c, &info);
    if (!rc && (info.input_dim != cfg->in_dim || info.output_dim != cfg->out_dim)) {
        snprintf(r->msg, sizeof r->msg, "the supervisor serves %u -> %u, expected %u -> %u",
                 info.input_dim, info.output_dim, cfg->in_dim, cfg->out_dim);
        rc = -EPROTO;
    }
    if (rc)
        goto fail;
    float *out = malloc(out_bytes);
    unsigned T = next_pow2(4 * (cfg->window > info.ring_slots ? cfg->window : info.ring_slots));
    struct tk_ent *tab = cfg->sync ? NULL : calloc(T, sizeof *tab);
    oag_completion *cmp = cfg->sync ? NULL : calloc(cfg->window, sizeof *cmp);
    if (!out || (!cfg->sync && (!tab || !cmp))) {
        snprintf(r->msg, sizeof r->msg, "out of memory");
        rc = -ENOMEM;
        goto fail;
    }
    ch = 'R';
    if (write(ready_fd, &ch, 1) != 1)
        _exit(1);
    ssize_t n;
    do
        n = read(start_fd, &ch, 1);
    while (n < 0 && errno == EINTR);
    if (n != 0)
        _exit(1); /* the parent died or aborted */

    const int count_mode = cfg->iters > 0;
    const uint64_t t_start = sh->t_start, t_end = count_mode ? UINT64_MAX : sh->t_end;
    uint32_t k = idx % MM_CHECK_ROWS;
    rc = 0;
    if (cfg->sync) {
        for (uint64_t i = 0;; i++) {
            if (count_mode && i >= (uint64_t)cfg->warmup + cfg->iters)
                break;
            uint64_t t0 = now_ns();
            if (t0 >= t_end)
                break;
            size_t len = 0;
            rc = oag_infer(c, cfg->rows + (size_t)k * cfg->in_dim, in_bytes, out, out_bytes,
                           &len, 30000);
            uint64_t t1 = now_ns();
            if (rc == -EBUSY) {
                r->busy++;
                sleep_us(20);
                rc = 0;
                continue;
            }
            int in_window = count_mode ? i >= cfg->warmup : (t1 >= t_start && t1 < t_end);
            if (rc) {
                if (in_window || fatal_rc(rc))
                    r->err++;
                if (!r->msg[0])
                    snprintf(r->msg, sizeof r->msg, "oag_infer: %s (%s)", oag_strerror(rc),
                             oag_last_error());
                if (fatal_rc(rc))
                    break;
                rc = 0;
                continue;
            }
            if (len != out_bytes) {
                r->err++;
            } else if (in_window) {
                r->ok++;
                r->lat_sum_ns += t1 - t0;
                r->lat_n++;
                samp_add(samp, r, cfg->samples_cap, &rng, t1 - t0);
            }
            if (cfg->expect && len == out_bytes && (i % MM_CHECK_EVERY) == 0) {
                r->checked++;
                if (!out_matches(out, cfg->expect + (size_t)k * cfg->out_dim, cfg->out_dim))
                    r->mismatch++;
            }
            k = (k + 1) % MM_CHECK_ROWS;
        }
    } else {
        unsigned outstanding = 0;
        uint64_t nrecv = 0, drain_deadline = 0;
        for (;;) {
            uint64_t t = now_ns();
            int draining = t >= t_end;
            if (draining) {
                if (!drain_deadline)
                    drain_deadline = t + 30000000000ull;
                if (outstanding == 0)
                    break;
                if (t > drain_deadline) {
                    snprintf(r->msg, sizeof r->msg, "%u results missing 30 s after the end",
                             outstanding);
                    rc = -ETIMEDOUT;
                    break;
                }
            }
            int busy = 0;
            while (!draining && outstanding < cfg->window) {
                uint64_t ticket, t0 = now_ns();
                rc = oag_submit(c, cfg->rows + (size_t)k * cfg->in_dim, in_bytes, &ticket);
                if (rc == -EAGAIN) {
                    rc = 0;
                    break;
                }
                if (rc == -EBUSY) {
                    r->busy++;
                    busy = 1;
                    rc = 0;
                    break;
                }
                if (rc) {
                    snprintf(r->msg, sizeof r->msg, "oag_submit: %s (%s)", oag_strerror(rc),
                             oag_last_error());
                    break;
                }
                struct tk_ent *e = &tab[ticket & (T - 1)];
                if (e->ticket == 0)
                    *e = (struct tk_ent){ .ticket = ticket, .t0 = t0, .row = k };
                else
                    r->untracked++;
                outstanding++;
                k = (k + 1) % MM_CHECK_ROWS;
            }
            if (rc)
                break;
            if (outstanding == 0) {
                if (busy)
                    sleep_us(20);
                continue;
            }
            int got = oag_poll(c, cmp, (int)cfg->window, 100);
            if (got < 0) {
                rc = got;
                snprintf(r->msg, sizeof r->msg, "oag_poll: %s (%s)", oag_strerror(rc),
                         oag_last_error());
                break;
            }
            uint64_t t1 = now_ns();
            int in_window = t1 >= t_start && t1 < t_end;
            for (int i = 0; i < got; i++) {
                const oag_completion *d = &cmp[i];
                struct tk_ent *e = &tab[d->ticket & (T - 1)];
                int tracked = e->ticket == d->ticket;
                if (outstanding)
                    outstanding--;
                nrecv++;
                if (d->status || d->len != out_bytes) {
                    if (in_window || !draining)
                        r->err++;
                    if (!r->msg[0])
                        snprintf(r->msg, sizeof r->msg, "completion: status %s, %u bytes",
                                 oag_strerror(d->status), d->len);
                } else {
                    if (in_window) {
                        r->ok++;
                        if (tracked) {
                            r->lat_sum_ns += t1 - e->t0;
                            r->lat_n++;
                            samp_add(samp, r, cfg->samples_cap, &rng, t1 - e->t0);
                        }
                    }
                    if (cfg->expect && tracked && (nrecv % MM_CHECK_EVERY) == 0) {
                        r->checked++;
                        if (!out_matches(d->data, cfg->expect + (size_t)e->row * cfg->out_dim,
                                         cfg->out_dim))
                            r->mismatch++;
                    }
                }
                if (tracked)
                    e->ticket = 0;
            }
        }
    }
    oag_close(c);
    free(out);
    free(tab);
    free(cmp);
    r->rc = rc;
    _exit(rc ? 1 : 0);

fail:
    r->rc = rc ? rc : -EIO;
    if (write(ready_fd, &ch, 1) != 1) {
        /* the parent notices the exit */
    }
    oag_close(c);
    _exit(1);
}

/* Runs one row: cfg->nagents agent processes against the supervisor s. */
static int mrun(const struct opts *o, const struct sup *s, const struct mrun_cfg *cfg,
                struct mrun_res *res)
{
    unsigned na = cfg->nagents, cap = cfg->samples_cap;
    size_t hdr = sizeof(struct mrun_shared) + (size_t)na * sizeof(struct mrun_agent);
    hdr = (hdr + 63) & ~(size_t)63;
    size_t size = hdr + (size_t)na * cap * sizeof(uint32_t);
    struct mrun_shared *sh = shared_alloc(size);
    pid_t *pids = calloc(na, sizeof *pids);
    int start_pipe[2] = { -1, -1 }, rdy[2] = { -1, -1 }, rc = 0;
    unsigned forked = 0, ready = 0;
    uint32_t *samples = NULL;
    res->agents = na;
    res->window = cfg->window;
    res->sync = cfg->sync;
    res->busy_frac = -1;
    if (!sh || !pids) {
        rc = -ENOMEM;
        goto out;
    }
    if (pipe2(start_pipe, O_CLOEXEC) || pipe2(rdy, O_CLOEXEC)) {
        rc = -errno;
        goto out;
    }
    uint32_t *samp_base = (uint32_t *)((char *)sh + hdr);
    for (; forked < na; forked++) {
        pid_t pid = spawn();
        if (pid < 0) {
            rc = -errno;
            warn("fork agent %u: %s", forked, strerror(errno));
            goto out;
        }
        if (pid == 0) {
            close(start_pipe[1]);
            close(rdy[0]);
            agent_env(cfg->spin_us);
            magent_main(cfg, sh, samp_base + (size_t)forked * cap, forked, start_pipe[0], rdy[1]);
        }
        pids[forked] = pid;
    }
    close(start_pipe[0]);
    start_pipe[0] = -1;
    close(rdy[1]);
    rdy[1] = -1;

    uint64_t deadline = now_ns() + 120000000000ull;
    while (ready < na) {
        if (g_stop) {
            rc = -EINTR;
            goto out;
        }
        struct pollfd pf = { .fd = rdy[0], .events = POLLIN };
        int r = poll(&pf, 1, 200);
        if (r < 0 && errno != EINTR) {
            rc = -errno;
            goto out;
        }
        if (now_ns() > deadline) {
            warn("%s: %u/%u agents connected in 120 s", res->name, ready, na);
            rc = -ETIMEDOUT;
            goto out;
        }
        if (r <= 0)
            continue;
        char buf[256];
        ssize_t n = read(rdy[0], buf, sizeof buf);
        if (n <= 0) {
            warn("%s: agents exited before they were ready", res->name);
            rc = -ECHILD;
            goto out;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != 'R') {
                for (unsigned a = 0; a < na; a++)
                    if (sh->a[a].rc) {
                        warn("%s: agent %u: %s", res->name, a, sh->a[a].msg);
                        break;
                    }
                rc = -ECHILD;
                goto out;
            }
            ready++;
        }
    }
    /* go */
    uint64_t t = now_ns();
    sh->t_start = t + (uint64_t)(cfg->warm_s * 1e9);
    sh->t_end = sh->t_start + (uint64_t)(cfg->duration_s * 1e9);
    struct eng_stats st0 = { 0 }, st1 = { 0 };
    uint64_t q0 = 0, q1 = 0;
    close(start_pipe[1]);
    start_pipe[1] = -1;
    if (!cfg->iters) {
        sleep_until(sh->t_start);
        q0 = now_ns();
        sup_stats(o, s, &st0);
        q0 = (q0 + now_ns()) / 2;
        sleep_until(sh->t_end);
        q1 = now_ns();
        sup_stats(o, s, &st1);
        q1 = (q1 + now_ns()) / 2;
    }
    /* the agents drain and exit */
    for (unsigned i = 0; i < forked; i++) {
        int st;
        int r;
        while ((r = reap(pids[i], 1000, &st)) == -ETIMEDOUT && !g_stop &&
               now_ns() < (cfg->iters ? UINT64_MAX : sh->t_end + 60000000000ull))
            ;
        if (r == -ETIMEDOUT) {
            warn("%s: agent %u did not finish: killed", res->name, i);
            kill(pids[i], SIGKILL);
            reap(pids[i], -1, &st);
            rc = g_stop ? -EINTR : -ETIMEDOUT;
        } else if (r == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !rc) {
            warn("%s: agent %u failed: %s", res->name, i,
                 sh->a[i].msg[0] ? sh->a[i].msg
                                 : (WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exit status"));
            rc = sh->a[i].rc ? sh->a[i].rc : -ECHILD;
        }
        pids[i] = 0;
    }
    forked = 0;
    if (rc)
        goto out;

    /* aggregate */
    uint64_t ok = 0, lat_sum = 0, lat_n = 0, nsamp = 0;
    for (unsigned i = 0; i < na; i++) {
        struct mrun_agent *a = &sh->a[i];
        ok += a->ok;
        lat_sum += a->lat_sum_ns;
        lat_n += a->lat_n;
        nsamp += a->nsamp;
        res->errors += a->err;
        res->mismatches += a->mismatch;
        res->busy_retries += a->busy;
        res->checked += a->checked;
        if (a->err && a->msg[0] && res->errors == a->err)
            warn("%s: agent %u: %" PRIu64 " errors, first: %s", res->name, i, a->err, a->msg);
    }
    double win_s = cfg->iters ? 0 : (double)(sh->t_end - sh->t_start) / 1e9;
    res->tasks_s = win_s > 0 ? (double)ok / win_s : 0;
    res->mean_us = lat_n ? (double)lat_sum / (double)lat_n / 1e3 : 0;
    if (nsamp) {
        samples = malloc(nsamp * sizeof *samples);
        if (!samples) {
            rc = -ENOMEM;
            goto out;
        }
        size_t m = 0;
        for (unsigned i = 0; i < na; i++) {
            memcpy(samples + m, samp_base + (size_t)i * cap, sh->a[i].nsamp * sizeof *samples);
            m += sh->a[i].nsamp;
        }
        qsort(samples, m, sizeof *samples, cmp_u32);
        res->p50_us = pct_us(samples, m, 0.50);
        res->p99_us = pct_us(samples, m, 0.99);
        res->p999_us = pct_us(samples, m, 0.999);
    }
    if (st0.ok && st1.ok && q1 > q0) {
        res->busy_frac = (st1.busy_s - st0.busy_s) / ((double)(q1 - q0) / 1e9);
        if (st1.batches > st0.batches)
            res->avg_batch = (double)(st1.rows - st0.rows) / (double)(st1.batches - st0.batches);
    }
    if (res->busy_retries)
        warn("%s: %" PRIu64 " submits refused with -EBUSY (the supervisor's queue was full; "
             "--max-queue)", res->name, res->busy_retries);
    if (res->mismatches)
        warn("%s: %" PRIu64 " of %" PRIu64 " checked results differ from the offline engine's "
             "beyond 2e-2 + 2e-2*|ref|", res->name, res->mismatches, res->checked);
    if (!ok) {
        warn("%s: no task completed inside the measured window", res->name);
        rc = -EIO;
        goto out;
    }
    res->ok = 1;

out:
    if (start_pipe[0] >= 0)
        close(start_pipe[0]);
    if (start_pipe[1] >= 0)
        close(start_pipe[1]);
    if (rdy[0] >= 0)
        close(rdy[0]);
    if (rdy[1] >= 0)
        close(rdy[1]);
    for (unsigned i = 0; i < forked; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            reap(pids[i], -1, NULL);
        }
    }
    free(samples);
    free(pids);
    if (sh)
        munmap(sh, size);
    return rc;
}

/* ---- a model supervisor ---------------------------------------------------------------------- */

struct msup_cfg {
    unsigned max_batch, delay_us, ring_slots, lanes, max_queue;
};

static int msup_start(const struct opts *o, const struct model_res *mr, const char *backend,
                      const struct msup_cfg *c, struct sup *s)
{
    char mb[16], dl[16], pl[16], rs[16], ln[16], mq[16], dev[16], th[16];
    snprintf(mb, sizeof mb, "%u", c->max_batch);
    snprintf(dl, sizeof dl, "%u", c->delay_us);
    snprintf(pl, sizeof pl, "%u", mr->payload);
    snprintf(rs, sizeof rs, "%u", c->ring_slots);
    snprintf(ln, sizeof ln, "%u", c->lanes);
    snprintf(mq, sizeof mq, "%u", c->max_queue);
    snprintf(dev, sizeof dev, "%u", o->device);
    snprintf(th, sizeof th, "%u", o->threads);
    const char *args[32];
    int n = 0;
    args[n++] = "--backend";
    args[n++] = backend;
    args[n++] = "--model";
    args[n++] = mr->dir;
    args[n++] = "--max-batch";
    args[n++] = mb;
    args[n++] = "--max-delay-us";
    args[n++] = dl;
    args[n++] = "--max-payload";
    args[n++] = pl;
    args[n++] = "--ring-slots";
    args[n++] = rs;
    args[n++] = "--max-lanes";
    args[n++] = ln;
    args[n++] = "--max-queue";
    args[n++] = mq;
    if (!strcmp(backend, "cuda")) {
        args[n++] = "--gpus";
        args[n++] = dev;
    }
    if (o->threads) {
        args[n++] = "--threads";
        args[n++] = th;
    }
    args[n] = NULL;
    fprintf(stderr, "oag-bench:   supervisor --max-batch %u --max-delay-us %u --ring-slots %u "
            "--max-lanes %u --max-queue %u ...\n", c->max_batch, c->delay_us, c->ring_slots,
            c->lanes, c->max_queue);
    return sup_start_argv(o->supervisor, s, args, NULL, o->sup_ready_s * 1000u);
}

static unsigned auto_window(const struct opts *o, unsigned max_batch, unsigned agents)
{
    if (o->m_window)
        return o->m_window;
    /* enough outstanding overall for a batch forming while the engine holds its in-flight ones */
    unsigned w = next_pow2((4 * max_batch + agents - 1) / agents);
    if (w < 8)
        w = 8;
    if (w > 1024)
        w = 1024;
    return w;
}

static struct msup_cfg msup_for(const struct opts *o, unsigned max_batch, unsigned delay_us,
                                unsigned agents, unsigned window)
{
    struct msup_cfg c = { .max_batch = max_batch, .delay_us = delay_us };
    c.ring_slots = next_pow2(window < 2 ? 2 : window);
    c.lanes = agents + 16;
    uint64_t q = (uint64_t)agents * window;
    if (q < 4ull * max_batch)
        q = 4ull * max_batch;
    if (q < 4096)
        q = 4096;
    if (q > (1u << 24))
        q = 1u << 24;
    c.max_queue = o->m_max_queue ? o->m_max_queue : (unsigned)q;
    return c;
}

/* Starts a supervisor for cfgs, runs each row on it, stops it. */
static int mrow_group(const struct opts *o, const struct model_res *mr, const char *backend,
                      const struct msup_cfg *sc, struct mrun_cfg *const cfgs[],
                      struct mrun_res *const res[], int n)
{
    struct sup s;
    int rc = msup_start(o, mr, backend, sc, &s);
    if (rc) {
        warn("%s: supervisor: %s", res[0]->name, oag_strerror(rc));
        return rc;
    }
    int failed = 0;
    for (int i = 0; i < n && !g_stop; i++) {
        cfgs[i]->sock = s.sock;
        res[i]->max_batch = sc->max_batch;
        res[i]->delay_us = sc->delay_us;
        fprintf(stderr, "oag-bench:   %s ...\n", res[i]->name);
        rc = mrun(o, &s, cfgs[i], res[i]);
        if (rc) {
            warn("%s: %s", res[i]->name, oag_strerror(rc));
            failed++;
        }
    }
    if (sup_stop(&s))
        failed++;
    return failed ? -EIO : 0;
}

/* ---- one model --------------------------------------------------------------------------- */

static const struct off_row *off_at(const struct model_res *mr, unsigned batch)
{
    if (!mr->off_ok)
        return NULL;
    for (int i = 0; i < mr->off.nrows; i++)
        if (mr->off.rows[i].batch == batch && mr->off.rows[i].ok)
            return &mr->off.rows[i];
    return NULL;
}

static int bench_model(const struct opts *o, struct model_res *mr)
{
    char err[512] = "";
    struct oag_model *m = NULL;
    int failures = 0, rc = oag_model_load(&m, mr->dir, err, sizeof err);
    if (rc) {
        warn("model %s: %s", mr->dir, err);
        return 1;
    }
    snprintf(mr->name, sizeof mr->name, "%s", m->name);
    snprintf(mr->dtype, sizeof mr->dtype, "%s", oag_dtype_name(m->dtype));
    mr->in_dim = m->input_dim;
    mr->out_dim = m->output_dim;
    mr->param_bytes = m->param_bytes;
    for (uint32_t i = 0; i < m->nlayers; i++)
        mr->nlinear += m->layers[i].kind == OAG_L_LINEAR;
    oag_model_free(m);
    mr->loaded = 1;
    uint32_t widest = mr->in_dim > mr->out_dim ? mr->in_dim : mr->out_dim;
    mr->payload = round64(widest * 4u);

    /* the check rows (inputs) and their results, shared with the children */
    size_t hdr = (sizeof(struct off_shared) + 63) & ~(size_t)63;
    size_t size = hdr + (size_t)MM_CHECK_ROWS * (mr->in_dim + mr->out_dim) * sizeof(float);
    struct off_shared *sh = shared_alloc(size);
    if (!sh)
        return 1;
    float *rows = (float *)((char *)sh + hdr);
    float *expect = rows + (size_t)MM_CHECK_ROWS * mr->in_dim;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < (size_t)MM_CHECK_ROWS * mr->in_dim; i++)
        rows[i] = (float)((double)(xorshift64(&rng) >> 11) / (double)(1ull << 53) * 2.0 - 1.0);

    /* 1. offline */
    const char *backend = o->backend;
    if (!o->skip_offline || !strcmp(o->backend, "auto")) {
        fprintf(stderr, "oag-bench: %s: offline engine (%s) ...\n", mr->label, o->backend);
        rc = bench_offline(o, mr->dir, sh, rows, expect, mr->payload);
        memcpy(&mr->off, sh, sizeof mr->off);
        if (rc) {
            warn("%s: offline part failed", mr->label);
            failures++;
            if (!mr->off.backend[0]) {
                warn("%s: no engine could be created: the supervisor parts are skipped",
                     mr->label);
                goto out;
            }
        } else {
            mr->off_ok = 1;
            backend = mr->off.backend;
        }
    } else {
        snprintf(mr->off.backend, sizeof mr->off.backend, "%s", o->backend);
    }
    const float *exp_rows = mr->off_ok && sh->have_expect ? expect : NULL;
    unsigned cap = o->m_samples;

    /* 2. end to end, async agents */
    if (!o->skip_e2e) {
        for (int i = 0; i < o->ne2e && !g_stop; i++) {
            unsigned na = o->e2e_agents[i], w = auto_window(o, o->e2e_batch, na);
            struct mrun_res *r = &mr->e2e[mr->ne2e++];
            snprintf(r->name, sizeof r->name, "%s e2e, %u agents", mr->label, na);
            r->agents = na;
            r->window = w;
            struct mrun_cfg c = {
                .nagents = na, .window = w, .duration_s = o->m_duration_s, .warm_s = o->m_warm_s,
                .in_dim = mr->in_dim, .out_dim = mr->out_dim, .rows = rows, .expect = exp_rows,
                .samples_cap = cap / na ? cap / na : 1, .spin_us = o->tput_spin_us,
            };
            struct msup_cfg sc = msup_for(o, o->e2e_batch, o->e2e_delay_us, na, w);
            struct mrun_cfg *cs[] = { &c };
            struct mrun_res *rs[] = { r };
            if (mrow_group(o, mr, backend, &sc, cs, rs, 1))
                failures++;
        }
    }

    /* 3. single-agent latency, batch 1 */
    if (!o->skip_mlat && !g_stop) {
        struct mrun_res *r = &mr->lat;
        snprintf(r->name, sizeof r->name, "%s latency, 1 agent", mr->label);
        mr->ran_lat = 1;
        struct mrun_cfg c = {
            .sync = 1, .nagents = 1, .window = 1, .iters = o->m_lat_iters,
            .warmup = o->m_lat_warmup ? o->m_lat_warmup
                                      : o->m_lat_iters / 10 < 100 ? 100 : o->m_lat_iters / 10,
            .in_dim = mr->in_dim, .out_dim = mr->out_dim, .rows = rows, .expect = exp_rows,
            .samples_cap = o->m_lat_iters, .spin_us = NULL,
        };
        struct msup_cfg sc = msup_for(o, o->e2e_batch, 0, 1, 1);
        struct mrun_cfg *cs[] = { &c };
        struct mrun_res *rs[] = { r };
        if (mrow_group(o, mr, backend, &sc, cs, rs, 1))
            failures++;
    }

    /* 4. one task at a time vs pipelined, one supervisor */
    if (!o->skip_sync && !g_stop) {
        unsigned na = o->cmp_agents, w = auto_window(o, o->e2e_batch, na);
        snprintf(mr->sync.name, sizeof mr->sync.name, "%s sync, %u agents", mr->label, na);
        snprintf(mr->pipe.name, sizeof mr->pipe.name, "%s pipelined, %u agents", mr->label, na);
        mr->ran_cmp = 1;
        mr->pipe.window = w;
        struct mrun_cfg cs_ = {
            .sync = 1, .nagents = na, .window = 1, .duration_s = o->m_duration_s,
            .warm_s = o->m_warm_s, .in_dim = mr->in_dim, .out_dim = mr->out_dim, .rows = rows,
            .expect = exp_rows, .samples_cap = cap / na ? cap / na : 1, .spin_us = o->tput_spin_us,
        };
        struct mrun_cfg cp = cs_;
        cp.sync = 0;
        cp.window = w;
        struct msup_cfg sc = msup_for(o, o->e2e_batch, o->e2e_delay_us, na, w);
        struct mrun_cfg *cs[] = { &cs_, &cp };
        struct mrun_res *rs[] = { &mr->sync, &mr->pipe };
        if (mrow_group(o, mr, backend, &sc, cs, rs, 2))
            failures++;
    }

    /* 5. no batching vs dynamic batching, sync agents */
    if (!o->skip_batching && !g_stop) {
        unsigned na = o->cmp_agents;
        struct mrun_res *rr[2] = { &mr->nobatch, &mr->dyn };
        unsigned mb[2] = { 1, o->dyn_batch }, dl[2] = { 0, o->dyn_delay_us };
        mr->ran_batching = 1;
        for (int k = 0; k < 2 && !g_stop; k++) {
            snprintf(rr[k]->name, sizeof rr[k]->name, "%s %s, %u sync agents", mr->label,
                     k ? "dynamic batching" : "no batching", na);
            struct mrun_cfg c = {
                .sync = 1, .nagents = na, .window = 1, .duration_s = o->m_duration_s,
                .warm_s = o->m_warm_s, .in_dim = mr->in_dim, .out_dim = mr->out_dim,
                .rows = rows, .expect = exp_rows, .samples_cap = cap / na ? cap / na : 1,
                .spin_us = o->tput_spin_us,
            };
            struct msup_cfg sc = msup_for(o, mb[k], dl[k], na, 1);
            struct mrun_cfg *cs[] = { &c };
            struct mrun_res *rs[] = { rr[k] };
            if (mrow_group(o, mr, backend, &sc, cs, rs, 1))
                failures++;
        }
    }
out:
    munmap(sh, size);
    return failures;
}

/* ---- generated models -------------------------------------------------------------------- */

struct gen_spec {
    const char *label;
    const char *args[16];
};

static const struct gen_spec g_gen[] = {
    { "mlp768x2-fp16", { "--input", "768", "--hidden", "768", "--output", "768", "--layers", "2",
                         "--dtype", "float16", "--act", "relu", NULL } },
    { "mlp4096x4-fp16", { "--input", "4096", "--hidden", "4096", "--output", "4096", "--layers",
                          "4", "--dtype", "float16", "--act", "relu", NULL } },
};

static int gen_model(const struct opts *o, const struct gen_spec *g, char *dir, size_t cap)
{
    const char *base = o->models_dir ? o->models_dir : g_tmpdir;
    snprintf(dir, cap, "%s/%s", base, g->label);
    char cfg[PATH_MAX + 32];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (o->models_dir && access(cfg, R_OK) == 0) {
        fprintf(stderr, "oag-bench: using %s (already generated)\n", dir);
        return 0;
    }
    if (o->models_dir)
        mkdir(o->models_dir, 0755);
    const char *argv[24];
    int n = 0;
    argv[n++] = o->gen_model;
    argv[n++] = "--out";
    argv[n++] = dir;
    argv[n++] = "--name";
    argv[n++] = g->label;
    for (int i = 0; g->args[i]; i++)
        argv[n++] = g->args[i];
    argv[n] = NULL;
    fprintf(stderr, "oag-bench: generating %s with %s ...\n", dir, o->gen_model);
    uint64_t t0 = now_ns();
    int rc = run_cmd(argv, -1, "oag-gen-model");
    if (rc)
        warn("oag-gen-model %s failed (--gen-model PATH to pick the binary)", dir);
    else
        fprintf(stderr, "oag-bench: generated %s in %.1f s\n", dir, (double)(now_ns() - t0) / 1e9);
    return rc;
}

/* ---- the model report ---------------------------------------------------------------------- */

static const char *fmt_us(char *buf, size_t cap, double us)
{
    if (us <= 0)
        snprintf(buf, cap, "-");
    else if (us < 10)
        snprintf(buf, cap, "%.2f", us);
    else if (us < 100000)
        snprintf(buf, cap, "%.1f", us);
    else
        snprintf(buf, cap, "%.0f", us);
    return buf;
}

static const char *fmt_pct(char *buf, size_t cap, double f)
{
    if (f < 0)
        snprintf(buf, cap, "n/a");
    else
        snprintf(buf, cap, "%.0f%%", f * 100);
    return buf;
}

static void print_mrow(const struct mrun_res *r, const char *label, const struct off_row *ceil_row)
{
    char a[32], b[32], c[32], d[32], e[32], f[32];
    if (!r->ok) {
        printf("  %-26s %10s   (failed or skipped)\n", label, "n/a");
        return;
    }
    printf("  %-26s %10s %9s %9s %9s %7s %8.1f", label, fmt_rate(a, sizeof a, r->tasks_s),
           fmt_us(b, sizeof b, r->mean_us), fmt_us(c, sizeof c, r->p50_us),
           fmt_us(d, sizeof d, r->p99_us), fmt_pct(e, sizeof e, r->busy_frac), r->avg_batch);
    if (ceil_row)
        printf("  %6.2fx of %s/s", r->tasks_s / ceil_row->rows_s,
               fmt_rate(f, sizeof f, ceil_row->rows_s));
    printf("\n");
}

static void print_model_report(const struct opts *o, const struct model_res *mres, int nm)
{
    struct utsname u;
    uname(&u);
    char a[32], b[32], c[32], d[32];
    printf("\noag-bench model mode (liboag %s): %ld online CPUs, %s %s %s\n", oag_version(),
           sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release, u.machine);
    printf("targets: e2e tasks/s >= 0.8x the offline engine at the same max batch; oag_infer p50 "
           "at batch 1 <= offline forward + 15 us (informative)\n");
    for (int i = 0; i < nm; i++) {
        const struct model_res *mr = &mres[i];
        printf("\n== %s: %s", mr->label, mr->dir);
        if (!mr->loaded) {
            printf("  (could not be loaded)\n");
            continue;
        }
        char devs[32] = "";
        if (!strcmp(mr->off.backend, "cuda"))
            snprintf(devs, sizeof devs, " (device %u)", o->device);
        printf("\n   %s, %u -> %u, %u linear layers, %.1f MB of weights; backend %s%s; "
               "row payload %u bytes\n", mr->dtype, mr->in_dim, mr->out_dim, mr->nlinear,
               (double)mr->param_bytes / 1e6, mr->off.backend[0] ? mr->off.backend : o->backend,
               devs, mr->payload);

        printf("\n 1. Offline engine (created directly, max_batch %u; %u in flight when kept "
               "full%s)\n", o->max_batch, mr->off.max_inflight,
               mr->off_ok ? "" : "; FAILED");
        if (mr->off_ok) {
            printf("  %7s %14s %14s %16s %12s %7s\n", "batch", "one batch p50", "p99",
                   "kept full /batch", "rows/s", "runs");
            for (int k = 0; k < mr->off.nrows; k++) {
                const struct off_row *r = &mr->off.rows[k];
                if (!r->ok) {
                    printf("  %7u %14s\n", r->batch, "failed");
                    continue;
                }
                printf("  %7u %11s us %11s us %13s us %12s %3u/%-3u\n", r->batch,
                       fmt_us(a, sizeof a, r->lat_p50_us), fmt_us(b, sizeof b, r->lat_p99_us),
                       fmt_us(c, sizeof c, r->pipe_us), fmt_rate(d, sizeof d, r->rows_s),
                       r->lat_runs, r->pipe_runs);
            }
        } else if (mr->off.msg[0]) {
            printf("  %s\n", mr->off.msg);
        }
        const struct off_row *ce = off_at(mr, o->e2e_batch);
        const char *hdr = "  %-26s %10s %9s %9s %9s %7s %8s\n";

        printf("\n 2. End to end, async agents (max batch %u, max delay %u us; ratio to the "
               "offline rows/s at batch %u)\n", o->e2e_batch, o->e2e_delay_us, o->e2e_batch);
        if (mr->ne2e)
            printf(hdr, "agents (window)", "tasks/s", "mean us", "p50 us", "p99 us", "busy",
                   "avg batch");
        else
            printf("  (skipped)\n");
        for (int k = 0; k < mr->ne2e; k++) {
            char lab[64];
            snprintf(lab, sizeof lab, "%u agents (window %u)", mr->e2e[k].agents,
                     mr->e2e[k].window);
            print_mrow(&mr->e2e[k], lab, ce);
        }

        printf("\n 3. Single agent, oag_infer one task at a time (batch 1, max delay 0; %u calls)\n",
               o->m_lat_iters);
        const struct off_row *c1 = off_at(mr, 1);
        if (mr->lat.ok) {
            printf("  oag_infer p50 %s us, p99 %s us, p99.9 %s us", fmt_us(a, sizeof a,
                   mr->lat.p50_us), fmt_us(b, sizeof b, mr->lat.p99_us),
                   fmt_us(c, sizeof c, mr->lat.p999_us));
            if (c1)
                printf("; offline forward of batch 1: p50 %s us -> overhead %+.1f us",
                       fmt_us(d, sizeof d, c1->lat_p50_us), mr->lat.p50_us - c1->lat_p50_us);
            printf("\n");
        } else {
            printf("  %s\n", mr->ran_lat ? "(failed)" : "(skipped)");
        }

        printf("\n 4. One task at a time vs pipelined, %u agents (max batch %u, max delay %u us)\n",
               o->cmp_agents, o->e2e_batch, o->e2e_delay_us);
        if (mr->ran_cmp) {
            printf(hdr, "mode", "tasks/s", "mean us", "p50 us", "p99 us", "busy", "avg batch");
            print_mrow(&mr->sync, "sync (oag_infer loop)", NULL);
            char lab[64];
            snprintf(lab, sizeof lab, "pipelined (window %u)", mr->pipe.window);
            print_mrow(&mr->pipe, lab, ce);
        } else {
            printf("  (skipped)\n");
        }
        if (mr->sync.ok && mr->pipe.ok)
            printf("  pipelined / sync: %.2fx tasks/s\n", mr->pipe.tasks_s / mr->sync.tasks_s);

        printf("\n 5. No batching vs dynamic batching, %u sync agents\n", o->cmp_agents);
        if (mr->ran_batching) {
            printf(hdr, "config", "tasks/s", "mean us", "p50 us", "p99 us", "busy", "avg batch");
            print_mrow(&mr->nobatch, "--max-batch 1", off_at(mr, 1));
            char lab[64];
            snprintf(lab, sizeof lab, "--max-batch %u --delay %u", o->dyn_batch, o->dyn_delay_us);
            print_mrow(&mr->dyn, lab, off_at(mr, o->dyn_batch));
        } else {
            printf("  (skipped)\n");
        }
        if (mr->nobatch.ok && mr->dyn.ok)
            printf("  dynamic / none: %.2fx tasks/s\n", mr->dyn.tasks_s / mr->nobatch.tasks_s);

        printf("\n Targets (%s, informative)\n", mr->label);
        for (int k = 0; k < mr->ne2e; k++) {
            char t[96];
            snprintf(t, sizeof t, "e2e %u agents >= 0.8x offline (batch %u)", mr->e2e[k].agents,
                     o->e2e_batch);
            if (mr->e2e[k].ok && ce)
                printf("  %-58s %7.2fx  %s\n", t, mr->e2e[k].tasks_s / ce->rows_s,
                       mr->e2e[k].tasks_s >= 0.8 * ce->rows_s ? "PASS" : "MISS");
            else
                printf("  %-58s %8s  -\n", t, "n/a");
        }
        if (mr->lat.ok && c1)
            printf("  %-58s %+6.1fus  %s\n", "oag_infer p50 (batch 1) <= offline forward + 15 us",
                   mr->lat.p50_us - c1->lat_p50_us,
                   mr->lat.p50_us <= c1->lat_p50_us + 15.0 ? "PASS" : "MISS");
        else
            printf("  %-58s %8s  -\n", "oag_infer p50 (batch 1) <= offline forward + 15 us",
                   "n/a");
        /* every agent compared a sample of its results with the offline engine's */
        uint64_t chk = 0, bad = 0, errs = 0;
        const struct mrun_res *all[] = { &mr->lat, &mr->sync, &mr->pipe, &mr->nobatch, &mr->dyn };
        for (int k = 0; k < mr->ne2e; k++) {
            chk += mr->e2e[k].checked;
            bad += mr->e2e[k].mismatches;
            errs += mr->e2e[k].errors;
        }
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
            chk += all[k]->checked;
            bad += all[k]->mismatches;
            errs += all[k]->errors;
        }
        char t[96];
        snprintf(t, sizeof t, "results = offline engine's (%" PRIu64 " checked), no errors", chk);
        if (chk)
            printf("  %-58s %8" PRIu64 "  %s\n", t, bad + errs, bad + errs ? "MISS" : "PASS");
        else
            printf("  %-58s %8s  -\n", t, "n/a");
    }
    printf("\n(busy: the engine's busy time over wall time, from status --json; avg batch: "
           "rows/batches in the window; latencies are submit to result, sampled)\n");
    fflush(stdout);
}

static int model_main(struct opts *o)
{
    int nm = 0, failures = 0;
    struct model_res *mres = calloc(MM_MAX_MODELS + 2, sizeof *mres);
    char gen_dirs[2][PATH_MAX];
    int ngen = 0;
    if (!mres)
        return 1;
    /* the batch list: capped, with the batch sizes the other parts compare against */
    {
        unsigned extra[3] = { 1, o->e2e_batch, o->dyn_batch };
        for (int k = 0; k < 3; k++) {
            int have = 0;
            for (int i = 0; i < o->nbatches; i++)
                have |= o->batches[i] == extra[k];
            if (!have && o->nbatches < MM_MAX_BATCHES)
                o->batches[o->nbatches++] = extra[k];
        }
        qsort(o->batches, (size_t)o->nbatches, sizeof o->batches[0], cmp_u32);
        int n = 0;
        for (int i = 0; i < o->nbatches; i++)
            if (o->batches[i] <= o->max_batch && (n == 0 || o->batches[n - 1] != o->batches[i]))
                o->batches[n++] = o->batches[i];
        o->nbatches = n;
        if (o->e2e_batch > o->max_batch || o->dyn_batch > o->max_batch)
            warn("--e2e-batch %u / --dyn-batch %u above --max-batch %u: no offline ceiling for "
                 "them", o->e2e_batch, o->dyn_batch, o->max_batch);
    }
    if (o->gen_models) {
        for (size_t i = 0; i < sizeof g_gen / sizeof g_gen[0] && !g_stop; i++) {
            struct model_res *mr = &mres[nm];
            if (gen_model(o, &g_gen[i], mr->dir, sizeof mr->dir)) {
                failures++;
                continue;
            }
            snprintf(mr->label, sizeof mr->label, "%s", g_gen[i].label);
            if (!o->models_dir)
                snprintf(gen_dirs[ngen++], PATH_MAX, "%s", mr->dir);
            nm++;
        }
    }
    for (int i = 0; i < o->nmodels; i++) {
        struct model_res *mr = &mres[nm++];
        snprintf(mr->dir, sizeof mr->dir, "%s", o->models[i]);
        const char *slash = strrchr(o->models[i], '/');
        const char *base = slash && slash[1] ? slash + 1 : o->models[i];
        snprintf(mr->label, sizeof mr->label, "%s", base);
    }
    fprintf(stderr, "oag-bench: model mode: %d model(s), backend %s, supervisor %s\n", nm,
            o->backend, o->supervisor);
    for (int i = 0; i < nm && !g_stop; i++)
        failures += bench_model(o, &mres[i]);
    if (g_sup)
        sup_stop(g_sup);
    kill_all_kids();
    if (!g_stop)
        print_model_report(o, mres, nm);
    for (int i = 0; i < ngen; i++)
        rm_model_dir(gen_dirs[i]);
    free(mres);
    if (failures)
        warn("%d part%s failed (see above)", failures, failures == 1 ? "" : "s");
    return g_stop ? 130 : failures ? 1 : 0;
}

/* ---- main -------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: oag-bench [OPTIONS]\n"
        "  --quick            20000 round trips per latency path, 1 s per throughput row\n"
        "  --iters N          measured round trips per latency path (default 50000)\n"
        "  --warmup N         unmeasured round trips first (default iters/10)\n"
        "  --duration S       seconds per throughput row (default 2)\n"
        "  --window W         tasks outstanding per agent (default 64)\n"
        "  --agents LIST      oag throughput rows, comma-separated agent counts (default 1,8,64,512)\n"
        "  --zmq-agents N     agents of the ZeroMQ pipeline (default 8)\n"
        "  --ring-slots N     --ring-slots of the throughput supervisor (default 256)\n"
        "  --agent-spin-us N  OAG_SPIN_US of the throughput agents (default: unset)\n"
        "  --supervisor PATH  oag-supervisor to run (default %s)\n"
        "  --no-oag           baselines only\n"
        "  --no-latency, --no-throughput   skip a part\n"
        "\nModel mode (instead of the sections above): a model engine offline and through the\n"
        "supervisor, per model: offline ceiling per batch size, end-to-end tasks/s, batch-1 latency,\n"
        "sync vs pipelined agents, no batching vs dynamic batching.\n"
        "  --model DIR        a model folder (config.json + model.safetensors); repeatable\n"
        "  --gen-models       generate and bench the two standard models: 2-layer 768x768 and\n"
        "                     4-layer 4096x4096 fp16 MLPs (relu), with oag-gen-model\n"
        "  --models-dir DIR   --gen-models writes its models here and keeps them (reused when\n"
        "                     present); default: a temp dir, removed at exit\n"
        "  --gen-model PATH   oag-gen-model (default: next to oag-bench, else next to the\n"
        "                     supervisor's build, else %s)\n"
        "  --backend B        auto (default: cuda if it works, else cpu) | cpu | cuda\n"
        "  --device N         GPU for cuda (offline engine and the supervisor's --gpus; default 0)\n"
        "  --threads N        --threads for the cpu engine (default: OpenBLAS's)\n"
        "  --max-batch N      cap of every batch size (default 8192)\n"
        "  --batches LIST     offline batch sizes (default 1,8,32,128,512,2048,8192; 1, the e2e\n"
        "                     and the dynamic batch are always added)\n"
        "  --offline-iters N  timed batches per offline point and mode (default 200)\n"
        "  --offline-max-s S  time budget per offline batch size (default 2)\n"
        "  --offline-warmup N untimed batches before each offline point (default 3)\n"
        "  --e2e-batch N      --max-batch of the end-to-end and sync/pipelined supervisors (512)\n"
        "  --e2e-agents LIST  agent counts of the end-to-end rows (default 64,512)\n"
        "  --e2e-delay-us N   their --max-delay-us (default 200)\n"
        "  --model-window W   tasks outstanding per async agent (default: 4 x batch / agents,\n"
        "                     a power of two in 8..1024)\n"
        "  --model-duration S measured seconds per agent row (default 3)\n"
        "  --model-warmup S   unmeasured seconds before (default 0.5)\n"
        "  --lat-iters N      oag_infer calls of the single-agent latency row (default 20000)\n"
        "  --lat-warmup N     untimed calls before them (default iters/10, at least 100)\n"
        "  --cmp-agents N     agents of the sync/pipelined and batching rows (default 64)\n"
        "  --dyn-batch N      dynamic batching row: --max-batch (default 32) ...\n"
        "  --dyn-delay-us N   ... and --max-delay-us (default 1000)\n"
        "  --max-queue N      the supervisors' --max-queue (default: agents x window, >= 4096)\n"
        "  --model-samples N  latency samples kept per row, all agents (default 1000000)\n"
        "  --ready-timeout S  wait for a supervisor to load and warm up (default 120)\n"
        "  --skip LIST        parts to skip: offline,e2e,latency,sync,batching\n"
        "  --ctl PATH         read status --json by running this oag-ctl (default: speak the\n"
        "                     control protocol directly)\n"
        "  --quick            also: 50 offline batches and 0.5 s per point, 1 s rows, 5000 calls\n",
        OAG_SUPERVISOR_PATH, OAG_GEN_MODEL_PATH);
}

static int parse_list(const char *v, unsigned *out, int cap, int *n, unsigned min, unsigned max)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == cap)
            return -EINVAL;
        unsigned x;
        char *end;
        errno = 0;
        unsigned long l = strtoul(t, &end, 10);
        if (errno || end == t || *end || l < min || l > max)
            return -EINVAL;
        x = (unsigned)l;
        out[(*n)++] = x;
    }
    return *n ? 0 : -EINVAL;
}

static int parse_secs(const char *v, double *out, double min, double max)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= min && d <= max))
        return -EINVAL;
    *out = d;
    return 0;
}

static int parse_uint(const char *s, unsigned *out, unsigned min, unsigned max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

static int parse_args(struct opts *o, int argc, char **argv)
{
    int warm_set = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, used = 1;
        if (!strcmp(a, "--quick")) {
            o->iters = 20000;
            o->duration_s = 1.0;
            o->off_iters = 50;
            o->off_max_s = 0.5;
            o->m_duration_s = 1.0;
            o->m_warm_s = 0.3;
            o->m_lat_iters = 5000;
            used = 0;
        } else if (!strcmp(a, "--iters") && v) {
            bad = parse_uint(v, &o->iters, 100, 100000000);
        } else if (!strcmp(a, "--warmup") && v) {
            bad = parse_uint(v, &o->warmup, 0, 100000000);
            warm_set = 1;
        } else if (!strcmp(a, "--duration") && v) {
            char *end;
            o->duration_s = strtod(v, &end);
            bad = *end || !(o->duration_s >= 0.1 && o->duration_s <= 600);
        } else if (!strcmp(a, "--window") && v) {
            bad = parse_uint(v, &o->window, 1, OAG_MAX_SLOTS);
        } else if (!strcmp(a, "--zmq-agents") && v) {
            bad = parse_uint(v, &o->zmq_agents, 1, 1024);
        } else if (!strcmp(a, "--ring-slots") && v) {
            bad = parse_uint(v, &o->ring_slots, 2, OAG_MAX_SLOTS) ||
                  (o->ring_slots & (o->ring_slots - 1));
        } else if (!strcmp(a, "--agent-spin-us") && v) {
            unsigned x;
            bad = parse_uint(v, &x, 0, 10000000);
            o->tput_spin_us = v;
        } else if (!strcmp(a, "--supervisor") && v) {
            o->supervisor = v;
            o->supervisor_set = 1;
        } else if (!strcmp(a, "--model") && v) {
            bad = o->nmodels == MM_MAX_MODELS;
            if (!bad)
                o->models[o->nmodels++] = v;
        } else if (!strcmp(a, "--gen-models")) {
            o->gen_models = 1;
            used = 0;
        } else if (!strcmp(a, "--models-dir") && v) {
            o->models_dir = v;
        } else if (!strcmp(a, "--gen-model") && v) {
            o->gen_model = v;
        } else if (!strcmp(a, "--ctl") && v) {
            o->ctl = v;
        } else if (!strcmp(a, "--backend") && v) {
            o->backend = v;
            bad = strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda");
        } else if (!strcmp(a, "--device") && v) {
            bad = parse_uint(v, &o->device, 0, 63);
        } else if (!strcmp(a, "--threads") && v) {
            bad = parse_uint(v, &o->threads, 1, 1024);
        } else if (!strcmp(a, "--max-batch") && v) {
            bad = parse_uint(v, &o->max_batch, 1, 1u << 20);
        } else if (!strcmp(a, "--batches") && v) {
            bad = parse_list(v, o->batches, MM_MAX_BATCHES - 3, &o->nbatches, 1, 1u << 20);
        } else if (!strcmp(a, "--offline-iters") && v) {
            bad = parse_uint(v, &o->off_iters, 5, 10000000);
        } else if (!strcmp(a, "--offline-max-s") && v) {
            bad = parse_secs(v, &o->off_max_s, 0.01, 3600);
        } else if (!strcmp(a, "--e2e-batch") && v) {
            bad = parse_uint(v, &o->e2e_batch, 1, 1u << 20);
        } else if (!strcmp(a, "--e2e-agents") && v) {
            bad = parse_list(v, o->e2e_agents, MAX_ROWS, &o->ne2e, 1, MAX_KIDS - 64);
        } else if (!strcmp(a, "--e2e-delay-us") && v) {
            bad = parse_uint(v, &o->e2e_delay_us, 0, 100000000);
        } else if (!strcmp(a, "--model-window") && v) {
            bad = parse_uint(v, &o->m_window, 1, OAG_MAX_SLOTS);
        } else if (!strcmp(a, "--model-duration") && v) {
            bad = parse_secs(v, &o->m_duration_s, 0.05, 3600);
        } else if (!strcmp(a, "--model-warmup") && v) {
            bad = parse_secs(v, &o->m_warm_s, 0, 600);
        } else if (!strcmp(a, "--lat-iters") && v) {
            bad = parse_uint(v, &o->m_lat_iters, 10, 100000000);
        } else if (!strcmp(a, "--lat-warmup") && v) {
            bad = parse_uint(v, &o->m_lat_warmup, 1, 100000000);
        } else if (!strcmp(a, "--offline-warmup") && v) {
            bad = parse_uint(v, &o->off_warmup, 1, 1000000);
        } else if (!strcmp(a, "--cmp-agents") && v) {
            bad = parse_uint(v, &o->cmp_agents, 1, MAX_KIDS - 64);
        } else if (!strcmp(a, "--dyn-batch") && v) {
            bad = parse_uint(v, &o->dyn_batch, 1, 1u << 20);
        } else if (!strcmp(a, "--dyn-delay-us") && v) {
            bad = parse_uint(v, &o->dyn_delay_us, 0, 100000000);
        } else if (!strcmp(a, "--max-queue") && v) {
            bad = parse_uint(v, &o->m_max_queue, 1, 1u << 24);
        } else if (!strcmp(a, "--model-samples") && v) {
            bad = parse_uint(v, &o->m_samples, 1000, 100000000);
        } else if (!strcmp(a, "--ready-timeout") && v) {
            bad = parse_uint(v, &o->sup_ready_s, 1, 3600);
        } else if (!strcmp(a, "--skip") && v) {
            char buf[128], *save = NULL;
            snprintf(buf, sizeof buf, "%s", v);
            for (char *t = strtok_r(buf, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "offline"))
                    o->skip_offline = 1;
                else if (!strcmp(t, "e2e"))
                    o->skip_e2e = 1;
                else if (!strcmp(t, "latency"))
                    o->skip_mlat = 1;
                else if (!strcmp(t, "sync"))
                    o->skip_sync = 1;
                else if (!strcmp(t, "batching"))
                    o->skip_batching = 1;
                else
                    bad = 1;
            }
        } else if (!strcmp(a, "--agents") && v) {
            char buf[256], *save = NULL;
            snprintf(buf, sizeof buf, "%s", v);
            o->nrows = 0;
            for (char *t = strtok_r(buf, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save)) {
                if (o->nrows == MAX_ROWS)
                    bad = 1;
                else
                    bad = parse_uint(t, &o->agents[o->nrows++], 1, MAX_KIDS - 16);
            }
        } else if (!strcmp(a, "--no-oag")) {
            o->no_oag = 1;
            used = 0;
        } else if (!strcmp(a, "--no-latency")) {
            o->no_latency = 1;
            used = 0;
        } else if (!strcmp(a, "--no-throughput")) {
            o->no_throughput = 1;
            used = 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "oag-bench: bad argument: %s%s%s\n", a, v && used ? " " : "",
                    v && used ? v : "");
            usage(stderr);
            return -EINVAL;
        }
        i += used;
    }
    if (!warm_set)
        o->warmup = o->iters / 10 < 100 ? 100 : o->iters / 10;
    return 0;
}

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

    if (o.nmodels || o.gen_models) {
        int mrc = model_main(&o);
        rm_tmpdir();
        if (g_stop)
            warn("interrupted");
        return mrc;
    }

    int failures = 0, rc;
    uint32_t *samples = malloc((size_t)o.iters * sizeof *samples);
    struct lat_res lat[5] = {
        { .name = "bare shm ring, both sides busy-poll (floor)" },
        { .name = "shm ring + eventfd, blocking read()" },
        { .name = "ZeroMQ PAIR ipc://" },
        { .name = "oag_infer, awake (default spin)" },
        { .name = "oag_infer, asleep (--spin-us 0, OAG_SPIN_US=0)" },
    };
    struct tput_res tp[MAX_ROWS];
    struct tput_res zp = { .name = "" };
    memset(tp, 0, sizeof tp);
    snprintf(zp.name, sizeof zp.name, "ZeroMQ PUSH/PULL pipeline, %u agents", o.zmq_agents);
    if (!samples) {
        warn("out of memory");
        failures++;
        goto done;
    }

    if (!o.no_latency) {
        for (int k = 0; k < 5 && !g_stop; k++) {
            if (k >= 3 && o.no_oag)
                break;
            fprintf(stderr, "oag-bench: latency: %s ...\n", lat[k].name);
            switch (k) {
            case 0: rc = bench_pingpong(&o, 0, samples); break;
            case 1: rc = bench_pingpong(&o, 1, samples); break;
            case 2: rc = bench_zmq_pair(&o, samples); break;
            default: rc = bench_oag_latency(&o, k == 4, samples); break;
            }
            if (rc) {
                warn("latency: %s: %s", lat[k].name, oag_strerror(rc));
                failures++;
            } else {
                summarize(&lat[k], samples, o.iters);
            }
        }
    }

    if (!o.no_throughput && !g_stop) {
        fprintf(stderr, "oag-bench: throughput: %s ...\n", zp.name);
        rc = bench_zmq_pipeline(&o, &zp);
        if (rc) {
            warn("throughput: %s: %s", zp.name, oag_strerror(rc));
            failures++;
        }
        for (int i = 0; i < o.nrows; i++)
            snprintf(tp[i].name, sizeof tp[i].name, "oag, %u agent%s", o.agents[i],
                     o.agents[i] == 1 ? "" : "s");
        if (!o.no_oag && !g_stop) {
            unsigned maxa = 8;
            for (int i = 0; i < o.nrows; i++)
                if (o.agents[i] > maxa)
                    maxa = o.agents[i];
            char slots[16], lanes[16];
            snprintf(slots, sizeof slots, "%u", o.ring_slots);
            snprintf(lanes, sizeof lanes, "%u", maxa + 16);
            const char *extra[] = { "--ring-slots", slots, "--max-lanes", lanes, NULL };
            struct sup s;
            rc = sup_start(&o, &s, extra);
            if (rc) {
                warn("throughput: supervisor: %s", oag_strerror(rc));
                failures++;
            } else {
                for (int i = 0; i < o.nrows && !g_stop; i++) {
                    fprintf(stderr, "oag-bench: throughput: %s ...\n", tp[i].name);
                    struct tput_agent proto = {
                        .setup = ag_oag_setup, .fill = ag_oag_fill, .reap = ag_oag_reap,
                        .teardown = ag_oag_teardown, .window = o.window, .endpoint = s.sock,
                    };
                    rc = bench_throughput(&o, &proto, o.agents[i], &tp[i]);
                    if (rc) {
                        warn("throughput: %s: %s", tp[i].name, oag_strerror(rc));
                        failures++;
                    }
                }
                if (sup_stop(&s))
                    failures++;
            }
        }
    }

done:
    if (g_sup)
        sup_stop(g_sup);
    kill_all_kids();
    rm_tmpdir();
    if (g_stop) {
        warn("interrupted");
        free(samples);
        return 130;
    }
    print_report(&o, lat, tp, o.no_throughput ? 0 : o.nrows, &zp);
    free(samples);
    if (failures)
        warn("%d part%s failed (see above)", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
