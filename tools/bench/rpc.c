/*
 * rpc.c - the RPC baseline of tables 5-7: a request/response server doing the same work as the
 * supervisor, over ZeroMQ instead of shared memory.
 *
 * Server (a child process): the model engine created through its ops table exactly as the
 * supervisor creates it, a ROUTER socket on ipc://TMP/rpcN.ipc. It waits for one request, takes
 * every other request already queued (up to max_batch: batching without delay, so that only the
 * transport differs from oag's), runs them as one batch, and answers each. Engine time and rows
 * go to shared counters (busy %, mean batch).
 * Agent: a DEALER socket keeping up to `window` requests outstanding (1: a synchronous RPC
 * client); a request is one frame [8-byte sequence][input row], the answer [sequence][output].
 * Agents report through the same struct mrun_agent as the oag agents (mrun.c).
 */
#include "bench.h"

#include "engine/engine.h"

#define RPC_MAX_ID 256 /* bytes of a ROUTER peer identity (ZeroMQ's are 5) */

static void rpc_count(oag_atomic_u64 *c, uint64_t v)
{
    /* one writer (the server); the parent reads live: relaxed is enough for counters */
    oag_store_relaxed_u64(c, oag_load_relaxed_u64(c) + v);
}

/* The server's main loop; never returns. Writes one byte to ready_fd when bound ('R') or on
 * failure ('E', with the reason on stderr). */
static void rpc_server_main(const struct opts *o, const char *dir, const char *backend,
                            unsigned max_batch, uint32_t payload, const char *ep,
                            struct rpc_stats *st, int ready_fd)
{
    char err[512] = "", ch = 'E';
    struct oag_model *m = NULL;
    struct oag_engine *e = NULL;
    const struct oag_engine_ops *ops = engine_lookup(backend);
    void *ctx = NULL, *sock = NULL;
    if (!ops || oag_model_load(&m, dir, err, sizeof err)) {
        warn("rpc server: %s", ops ? err : "backend not built in");
        goto fail;
    }
    struct oag_engine_params p = {
        .max_batch = max_batch, .max_payload = payload, .model = m,
        .device = !strcmp(backend, "cuda") ? (int)o->device : -1, .threads = (int)o->threads,
    };
    int rc = ops->create(&e, &p);
    if (rc) {
        warn("rpc server: %s engine create: %s", backend, strerror(-rc));
        goto fail;
    }
    uint32_t in_bytes = m->input_dim * 4u;
    uint32_t out_bytes = ops->out_row_bytes ? ops->out_row_bytes(e) : m->output_dim * 4u;
    if (!out_bytes)
        out_bytes = m->output_dim * 4u;
    uint32_t in_stride = round64(payload), out_stride = round64(out_bytes);
    struct oag_batch b = { .in_stride = in_stride, .out_stride = out_stride };
    size_t ib = (size_t)max_batch * in_stride, ob = (size_t)max_batch * out_stride;
    b.in = ops->host_alloc ? ops->host_alloc(e, ib) : aligned_alloc(64, ib);
    b.out = ops->host_alloc ? ops->host_alloc(e, ob) : aligned_alloc(64, ob);
    b.in_len = calloc(max_batch, sizeof(uint32_t));
    b.out_len = calloc(max_batch, sizeof(uint32_t));
    b.status = calloc(max_batch, sizeof(int32_t));
    uint8_t(*ids)[RPC_MAX_ID] = calloc(max_batch, RPC_MAX_ID);
    size_t *idlen = calloc(max_batch, sizeof *idlen);
    uint64_t *seq = calloc(max_batch, sizeof *seq);
    uint8_t *reply = malloc(8 + (size_t)out_bytes);
    int efd = ops->reap && ops->event_fd ? ops->event_fd(e) : -1;
    if (!b.in || !b.out || !b.in_len || !b.out_len || !b.status || !ids || !idlen || !seq ||
        !reply) {
        warn("rpc server: out of memory");
        goto fail;
    }
    ctx = zmq_ctx_new();
    sock = ctx ? zmq_socket(ctx, ZMQ_ROUTER) : NULL;
    if (!sock) {
        warn("rpc server: zmq_socket failed");
        goto fail;
    }
    zmq_setint(sock, ZMQ_LINGER, 0);
    zmq_setint(sock, ZMQ_SNDHWM, 0); /* answers are never dropped: the clients bound them */
    zmq_setint(sock, ZMQ_RCVHWM, 0);
    if (zmq_bind(sock, ep)) {
        warn("rpc server: bind %s: %s", ep, zmq_strerror(zmq_errno()));
        goto fail;
    }
    ch = 'R';
    if (write(ready_fd, &ch, 1) != 1)
        _exit(1);
    close(ready_fd);
    for (;;) {
        uint32_t n = 0;
        while (n < max_batch) {
            int more = 0;
            size_t ml = sizeof more;
            int k = zmq_recv(sock, ids[n], RPC_MAX_ID, n ? ZMQ_DONTWAIT : 0);
            if (k < 0) {
                if (zmq_errno() == EAGAIN)
                    break;
                if (zmq_errno() == EINTR)
                    continue;
                _exit(1);
            }
            idlen[n] = (size_t)k < RPC_MAX_ID ? (size_t)k : RPC_MAX_ID;
            zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &ml);
            if (!more)
                continue; /* an identity alone: not a request */
            zmq_msg_t msg;
            zmq_msg_init(&msg);
            if (zmq_msg_recv(&msg, sock, 0) < 0)
                _exit(1);
            size_t len = zmq_msg_size(&msg);
            zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &ml);
            while (more) { /* extra frames: drop */
                zmq_msg_t x;
                zmq_msg_init(&x);
                zmq_msg_recv(&x, sock, 0);
                zmq_msg_close(&x);
                zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &ml);
            }
            if (len != 8 + (size_t)in_bytes) {
                zmq_msg_close(&msg);
                continue; /* malformed: the client times out */
            }
            memcpy(&seq[n], zmq_msg_data(&msg), 8);
            memcpy(b.in + (size_t)n * in_stride, (char *)zmq_msg_data(&msg) + 8, in_bytes);
            b.in_len[n] = in_bytes;
            zmq_msg_close(&msg);
            n++;
        }
        if (!n)
            continue;
        b.n = n;
        b.whole_rc = 0;
        uint64_t t0 = now_ns();
        rc = ops->submit(e, &b);
        if (rc >= 0 && ops->reap) {
            struct oag_batch *d;
            while ((d = ops->reap(e)) == NULL) {
                struct pollfd pf = { .fd = efd, .events = POLLIN };
                if (efd >= 0)
                    poll(&pf, 1, 100);
            }
        }
        uint64_t t1 = now_ns();
        rpc_count(&st->busy_ns, t1 - t0);
        rpc_count(&st->rows, n);
        rpc_count(&st->batches, 1);
        for (uint32_t i = 0; i < n; i++) {
            uint32_t ol = rc < 0 || b.whole_rc || b.status[i] ? 0 : b.out_len[i];
            memcpy(reply, &seq[i], 8);
            memcpy(reply + 8, b.out + (size_t)i * out_stride, ol);
            if (zmq_send(sock, ids[i], idlen[i], ZMQ_SNDMORE) < 0 ||
                zmq_send(sock, reply, 8 + ol, 0) < 0) {
                if (zmq_errno() != EHOSTUNREACH)
                    _exit(1);
            }
        }
    }
fail:
    if (write(ready_fd, &ch, 1) != 1) {
        /* the parent sees the exit */
    }
    _exit(1);
}

/* Starts the server for model mr on backend (the resolved name: cpu or cuda) with batches of
 * at most max_batch. Returns 0 when it is bound and its engine created, else a negative errno
 * (the reason logged). s is stopped by rpc_stop(). */
int rpc_start(const struct opts *o, const struct model_res *mr, const char *backend,
              unsigned max_batch, struct rpc_srv *s)
{
    static int seq;
    int rp[2];
    memset(s, 0, sizeof *s);
    s->st = shared_alloc(sizeof *s->st);
    if (!s->st)
        return -ENOMEM;
    snprintf(s->ep, sizeof s->ep, "ipc://%s/rpc%d.ipc", g_tmpdir, ++seq);
    if (pipe2(rp, O_CLOEXEC)) {
        int rc = -errno;
        munmap(s->st, sizeof *s->st);
        s->st = NULL;
        return rc;
    }
    fprintf(stderr, "oag-bench:   RPC server (ZeroMQ ROUTER, %s engine, batches up to %u) ...\n",
            backend, max_batch);
    pid_t pid = spawn();
    if (pid < 0) {
        int rc = -errno;
        close(rp[0]);
        close(rp[1]);
        return rc;
    }
    if (pid == 0) {
        close(rp[0]);
        rpc_server_main(o, mr->dir, backend, max_batch, mr->payload, s->ep, s->st, rp[1]);
    }
    close(rp[1]);
    s->pid = pid;
    char ch = 0;
    struct pollfd pf = { .fd = rp[0], .events = POLLIN };
    int rc = 0;
    if (poll(&pf, 1, (int)o->sup_ready_s * 1000) != 1 || read(rp[0], &ch, 1) != 1 || ch != 'R') {
        warn("RPC server did not start");
        rc = -ECHILD;
    }
    close(rp[0]);
    if (rc)
        rpc_stop(s);
    return rc;
}

/* Kills and reaps the server; frees its counters. A stopped or zeroed s is a no-op. */
void rpc_stop(struct rpc_srv *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        reap(s->pid, -1, NULL);
    }
    s->pid = 0;
    if (s->st)
        munmap(s->st, sizeof *s->st);
    s->st = NULL;
}

void rpc_read_stats(const struct rpc_srv *s, struct eng_stats *st)
{
    memset(st, 0, sizeof *st);
    st->stream_rows = -1; /* not an oag supervisor */
    st->busy_s = (double)oag_load_relaxed_u64(&s->st->busy_ns) / 1e9;
    st->compute_s = st->busy_s;
    st->rows = oag_load_relaxed_u64(&s->st->rows);
    st->batches = oag_load_relaxed_u64(&s->st->batches);
    st->ok = 1;
}

struct rpc_ent {
    uint64_t seq, t0;
    uint32_t row;
};

/* One RPC agent (a forked child; never returns): the counterpart of magent_main() in mrun.c,
 * with a DEALER socket keeping up to cfg->window requests outstanding. */
void rpc_agent_main(const struct mrun_cfg *cfg, struct mrun_shared *sh, uint32_t *samp,
                    unsigned idx, int start_fd, int ready_fd)
{
    struct mrun_agent *r = &sh->a[idx];
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)idx << 32 | 1);
    const uint32_t in_bytes = cfg->in_dim * 4u, out_bytes = cfg->out_dim * 4u;
    unsigned W = cfg->window ? cfg->window : 1, T = next_pow2(4 * W);
    struct rpc_ent *tab = calloc(T, sizeof *tab);
    uint8_t *req = malloc(8 + (size_t)in_bytes), *rep = malloc(8 + (size_t)out_bytes + 64);
    void *ctx = zmq_ctx_new();
    void *sock = ctx ? zmq_socket(ctx, ZMQ_DEALER) : NULL;
    char ch = 'E';
    int rc = 0;
    if (!tab || !req || !rep || !sock) {
        snprintf(r->msg, sizeof r->msg, "out of memory or no ZeroMQ socket");
        rc = -ENOMEM;
        goto fail;
    }
    zmq_setint(sock, ZMQ_LINGER, 0);
    zmq_setint(sock, ZMQ_SNDHWM, 0);
    zmq_setint(sock, ZMQ_RCVHWM, 0);
    if (zmq_connect(sock, cfg->rpc->ep)) {
        snprintf(r->msg, sizeof r->msg, "zmq_connect %.120s: %.60s", cfg->rpc->ep,
                 zmq_strerror(zmq_errno()));
        rc = -ECONNREFUSED;
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
        _exit(1);

    const uint64_t t_start = oag_load_relaxed_u64(&sh->t_start);
    const int win_mode = cfg->win_s > 0;
    uint64_t t_end = oag_load_relaxed_u64(&sh->t_end), next = 1, drain_deadline = 0, nrecv = 0;
    unsigned outstanding = 0;
    uint32_t k = idx % MM_CHECK_ROWS;
    for (;;) {
        uint64_t t = now_ns();
        if (win_mode)
            t_end = oag_load_relaxed_u64(&sh->t_end);
        int draining, end = run_end(t, t_end, outstanding, &drain_deadline, &draining, r->msg,
                                    sizeof r->msg, "answers");
        if (end) {
            rc = end < 0 ? end : rc;
            break;
        }
        while (!draining && outstanding < W) {
            uint64_t sq = next++;
            memcpy(req, &sq, 8);
            memcpy(req + 8, cfg->rows + (size_t)k * cfg->in_dim, in_bytes);
            uint64_t t0 = now_ns();
            if (zmq_send(sock, req, 8 + (size_t)in_bytes, 0) < 0) {
                snprintf(r->msg, sizeof r->msg, "zmq_send: %s", zmq_strerror(zmq_errno()));
                rc = -EIO;
                break;
            }
            struct rpc_ent *e = &tab[sq & (T - 1)];
            if (e->seq == 0)
                *e = (struct rpc_ent){ .seq = sq, .t0 = t0, .row = k };
            else
                r->untracked++;
            outstanding++;
            k = (k + 1) % MM_CHECK_ROWS;
        }
        if (rc)
            break;
        zmq_pollitem_t pi = { .socket = sock, .events = ZMQ_POLLIN };
        if (zmq_poll(&pi, 1, 100) < 0 && zmq_errno() != EINTR) {
            rc = -EIO;
            break;
        }
        for (;;) {
            int got = zmq_recv(sock, rep, 8 + (size_t)out_bytes + 64, ZMQ_DONTWAIT);
            if (got < 0)
                break;
            uint64_t t1 = now_ns(), sq = 0;
            if (got >= 8)
                memcpy(&sq, rep, 8);
            struct rpc_ent *e = &tab[sq & (T - 1)];
            int tracked = got >= 8 && e->seq == sq;
            int in_window = t1 >= t_start && t1 < t_end;
            if (outstanding)
                outstanding--;
            nrecv++;
            if (tracked && cfg->timeout_us && t1 - e->t0 > cfg->timeout_us * 1000ull) {
                if (in_window)
                    r->tmo++;
            } else if (got != 8 + (int)out_bytes) {
                if (in_window || !draining)
                    r->err++;
                if (!r->msg[0])
                    snprintf(r->msg, sizeof r->msg, "answer of %d bytes", got);
            } else {
                if (in_window) {
                    r->ok++;
                    if (tracked) {
                        r->lat_sum_ns += t1 - e->t0;
                        r->lat_n++;
                        if (win_mode)
                            win_add(cfg, r, samp, &rng, t_start, t1, t1 - e->t0);
                        else
                            samp_add(samp, r, cfg->samples_cap, &rng, t1 - e->t0);
                    }
                }
                if (cfg->expect && tracked && (nrecv % 16) == 0) {
                    float *outv = (float *)malloc(out_bytes);
                    if (outv) {
                        memcpy(outv, rep + 8, out_bytes);
                        r->checked++;
                        if (!out_matches(outv, cfg->expect + (size_t)e->row * cfg->out_dim,
                                         cfg->out_dim))
                            r->mismatch++;
                        free(outv);
                    }
                }
            }
            if (tracked)
                e->seq = 0;
        }
    }
    zmq_close(sock);
    zmq_ctx_term(ctx);
    r->rc = rc;
    _exit(rc ? 1 : 0);

fail:
    r->rc = rc ? rc : -EIO;
    if (write(ready_fd, &ch, 1) != 1) {
        /* the parent notices the exit */
    }
    _exit(1);
}
