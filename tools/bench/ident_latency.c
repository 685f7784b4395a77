#include "bench.h"

/* ---- baseline: bare rings, busy-poll or eventfd ------------------------------------------ */

/* Installed only while a blocking ping-pong runs: a dying echo child interrupts our read(). */
static void on_sigchld(int sig)
{
    (void)sig;
}

struct pp_shm {
    struct oag_ring_ctl ctl[2];               /* 0: parent -> child, 1: child -> parent */
    uint8_t slots[2][PP_SLOTS * MSG];
};
_Static_assert(sizeof(struct oag_ring_ctl) % OAG_CACHELINE == 0, "slots start on a cache line");

static int pp_send(struct ring_side *tx, const void *msg, int efd)
{
    if (ring_prod_space(tx, 1) <= 0) /* one message in flight: never full */
        return -EPROTO;
    memcpy(ring_payload(tx, tx->mine), msg, MSG);
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
    memcpy(msg, ring_payload(rx, rx->mine), MSG);
    ring_cons_release(rx, 1);
    return 0;
}

/* Ring ping-pong; use_efd selects the blocking eventfd variant. Fills samples[0..iters). */
int bench_pingpong(const struct opts *o, int use_efd, uint32_t *samples)
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
        ring_side_init(&rx, &sh->ctl[0], NULL, sh->slots[0], PP_SLOTS, MSG);
        ring_side_init(&tx, &sh->ctl[1], NULL, sh->slots[1], PP_SLOTS, MSG);
        for (unsigned i = 0; i < total; i++) {
            if (pp_recv(&rx, m, efd[0], 0) || pp_send(&tx, m, efd[1]))
                _exit(1);
        }
        _exit(0);
    }
    struct ring_side tx, rx;
    uint8_t m[MSG], back[MSG];
    memset(m, 0xa5, sizeof m);
    ring_side_init(&tx, &sh->ctl[0], NULL, sh->slots[0], PP_SLOTS, MSG);
    ring_side_init(&rx, &sh->ctl[1], NULL, sh->slots[1], PP_SLOTS, MSG);
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

void zmq_setint(void *s, int opt, int v)
{
    zmq_setsockopt(s, opt, &v, sizeof v);
}

int bench_zmq_pair(const struct opts *o, uint32_t *samples)
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
/* ---- oag latency: one agent process calling oag_infer() ---------------------------------- */

struct lat_shared {
    int32_t rc;
    char msg[256];
    uint32_t samples[];
};

/* An agent's environment: OAG_SPIN_US=spin_us, or unset (library default) when NULL. */
void agent_env(const char *spin_us)
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
int bench_oag_latency(const struct opts *o, int sleeping, uint32_t *samples)
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
