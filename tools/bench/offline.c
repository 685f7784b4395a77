#include "bench.h"

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

int off_child(const struct opts *o, const char *dir, struct off_shared *sh,
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
        nslot = ops->inflight ? ops->inflight(e) : ops->max_inflight ? ops->max_inflight : 2;
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
int bench_offline(const struct opts *o, const char *dir, struct off_shared *sh,
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
