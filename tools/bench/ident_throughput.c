#include "bench.h"

/* ---- throughput: N agent processes with a window of W --------------------------------------
 *
 * Start-up: each agent connects, then writes a READY record to the report pipe and blocks
 * reading the start pipe. When all are ready the parent writes the window's start and end into
 * shared memory and closes the start pipe: every agent sees EOF at once. Agents run from then,
 * count the completions they receive inside [t_start, t_end), stop submitting at t_end, drain
 * what is outstanding, and write a DONE record. Records are smaller than PIPE_BUF: atomic.
 */


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
int ag_oag_setup(struct tput_agent *a)
{
    int rc = oag_connect(&a->c, a->endpoint);
    if (rc) {
        warn("agent %u: oag_connect: %s (%s)", a->idx, oag_strerror(rc), oag_last_error());
        return rc;
    }
    a->cmp = calloc(a->window, sizeof *a->cmp);
    return a->cmp ? 0 : -ENOMEM;
}

int ag_oag_fill(struct tput_agent *a, unsigned *outstanding)
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

int ag_oag_reap(struct tput_agent *a, unsigned *outstanding, uint64_t *ok, uint64_t *err,
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

void ag_oag_teardown(struct tput_agent *a)
{
    oag_close(a->c);
    free(a->cmp);
}

/* ZeroMQ agents: PUSH to DIR/zin.ipc, PULL from DIR/zout-IDX.ipc */
int ag_zmq_setup(struct tput_agent *a)
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

int ag_zmq_fill(struct tput_agent *a, unsigned *outstanding)
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

int ag_zmq_reap(struct tput_agent *a, unsigned *outstanding, uint64_t *ok,
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

void ag_zmq_teardown(struct tput_agent *a)
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
int bench_throughput(const struct opts *o, const struct tput_agent *proto,
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
        pid_t pid = spawn_agent();
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

int bench_zmq_pipeline(const struct opts *o, struct tput_res *res)
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
