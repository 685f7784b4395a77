/*
 * fwd_engine.c - the "remote" engine: batches forwarded to other supervisors through liboag's
 * remote client (tcp://... or etcd://HOST:PORT/PREFIX, spread by its policy), so that a host
 * without a GPU runs its agents on shared memory while the work runs on GPU hosts
 * (oag-supervisor --backend remote --forward URL [--model DIR, for the row sizes]).
 *
 * An asynchronous engine (engine.h): submit() queues the batch and returns; a worker thread,
 * the only user of the oag_client, submits its rows, polls results into the batch's output
 * rows, and when every row of the oldest batch is in, makes event_fd() readable; reap() hands
 * batches back in submission order. Rows the remote side refuses carry its status (-EBUSY,
 * -EMSGSIZE, ...); the remote client resubmits after a lost connection or a failover itself.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/engine.h"
#include "model/model.h"
#include "net/gateway.h"
#include "net/hmap.h"
#include "oag/oag.h"
#include "scheduler/log.h"

#define FWD_QCAP 8

static const char *fwd_endpoint; /* set once by main() before the engines are created */

void gateway_set_forward(const char *endpoint) { fwd_endpoint = endpoint; }

struct fwd_batch {
    struct oag_batch *b;
    uint32_t next;            /* rows submitted */
    uint32_t done;            /* rows finished */
    int signalled;            /* the eventfd was written for it */
};

struct oag_engine {
    oag_client *c;
    pthread_t th;
    int th_started;
    pthread_mutex_t mu;       /* guards q, head, n and the rows' progress */
    struct fwd_batch q[FWD_QCAP];
    uint32_t head, n;
    int efd;                  /* to the scheduler: a batch finished */
    int wake;                 /* to the worker: a batch arrived, or stop */
    atomic_int stop;
    struct hmap rows;         /* ticket -> queue slot << 20 | row */
    uint32_t out_row;
};

static void efd_signal(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) {
        /* EAGAIN: saturated counter, still readable */
    }
}

/* Submits what the lane takes of the queued batches' rows, in order (under mu). */
static void submit_rows(struct oag_engine *e)
{
    for (uint32_t k = 0; k < e->n; k++) {
        uint32_t slot = (e->head + k) % FWD_QCAP;
        struct fwd_batch *f = &e->q[slot];
        struct oag_batch *b = f->b;
        while (f->next < b->n) {
            uint32_t i = f->next;
            uint64_t t;
            int rc = oag_submit(e->c, b->in + (size_t)i * b->in_stride, b->in_len[i], &t);
            if (rc == -EAGAIN || rc == -EBUSY)
                return; /* full: the rest after some results */
            f->next++;
            if (rc == 0 && hmap_put(&e->rows, t, 0, slot << 20 | i) == 0)
                continue;
            b->status[i] = rc ? rc : -ENOMEM;
            b->out_len[i] = 0;
            f->done++;
        }
    }
}

static void *fwd_main(void *arg)
{
    struct oag_engine *e = arg;
    int cfd = oag_event_fd(e->c);
    oag_completion d[256];
    while (!atomic_load(&e->stop)) {
        pthread_mutex_lock(&e->mu);
        submit_rows(e);
        pthread_mutex_unlock(&e->mu);
        struct pollfd pf[2] = { { .fd = cfd, .events = POLLIN }, { .fd = e->wake, .events = POLLIN } };
        poll(pf, 2, 100);
        if (pf[1].revents & POLLIN) {
            uint64_t v;
            if (read(e->wake, &v, sizeof v) < 0) {
                /* EAGAIN */
            }
        }
        int n;
        while ((n = oag_poll(e->c, d, 256, 0)) > 0) {
            pthread_mutex_lock(&e->mu);
            int finished = 0;
            for (int k = 0; k < n; k++) {
                uint32_t v = hmap_del(&e->rows, d[k].ticket, 0);
                if (v == HMAP_EMPTY)
                    continue;
                struct fwd_batch *f = &e->q[v >> 20];
                struct oag_batch *b = f->b;
                uint32_t i = v & 0xfffff;
                if (d[k].status == 0 && d[k].len <= b->out_stride) {
                    memcpy(b->out + (size_t)i * b->out_stride, d[k].data, d[k].len);
                    b->out_len[i] = d[k].len;
                    b->status[i] = 0;
                } else {
                    b->out_len[i] = 0;
                    b->status[i] = d[k].status ? d[k].status : -EMSGSIZE;
                }
                if (++f->done == b->n) {
                    f->signalled = 1;
                    finished = 1;
                }
            }
            submit_rows(e);
            pthread_mutex_unlock(&e->mu);
            if (finished)
                efd_signal(e->efd);
            if (n < 256)
                break;
        }
        /* A batch whose rows all failed at submit finishes without any result. */
        pthread_mutex_lock(&e->mu);
        int fin = 0;
        for (uint32_t k = 0; k < e->n; k++) {
            struct fwd_batch *f = &e->q[(e->head + k) % FWD_QCAP];
            if (f->done == f->b->n && !f->signalled) {
                f->signalled = 1;
                fin = 1;
            }
        }
        pthread_mutex_unlock(&e->mu);
        if (fin)
            efd_signal(e->efd);
    }
    return NULL;
}

static void fwd_destroy(struct oag_engine *e)
{
    if (!e)
        return;
    atomic_store(&e->stop, 1);
    if (e->wake >= 0)
        efd_signal(e->wake);
    if (e->th_started)
        pthread_join(e->th, NULL);
    oag_close(e->c);
    if (e->efd >= 0)
        close(e->efd);
    if (e->wake >= 0)
        close(e->wake);
    hmap_fini(&e->rows);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static int fwd_create(struct oag_engine **out, const struct oag_engine_params *p)
{
    if (!fwd_endpoint) {
        log_err("engine remote: no --forward URL");
        return -EINVAL;
    }
    struct oag_engine *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->efd = e->wake = -1;
    pthread_mutex_init(&e->mu, NULL);
    int rc = hmap_init(&e->rows, FWD_QCAP * p->max_batch);
    if (rc)
        goto fail;
    rc = oag_connect(&e->c, fwd_endpoint);
    if (rc) {
        log_err("engine remote: --forward %s: %s (%s)", fwd_endpoint, oag_strerror(rc),
                oag_last_error());
        goto fail;
    }
    oag_info info;
    if (oag_get_info(e->c, &info) == 0)
        log_info("engine remote: forwarding to %s (%u supervisor(s) reachable, engine %s)",
                 fwd_endpoint, info.agents, info.engine);
    e->out_row = p->model ? p->model->output_dim * 4u : 0;
    e->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = -EMFILE;
    if (e->efd < 0 || e->wake < 0)
        goto fail;
    rc = -EAGAIN;
    if (pthread_create(&e->th, NULL, fwd_main, e))
        goto fail;
    e->th_started = 1;
    *out = e;
    return 0;
fail:
    fwd_destroy(e);
    return rc;
}

static int fwd_submit(struct oag_engine *e, struct oag_batch *b)
{
    pthread_mutex_lock(&e->mu);
    if (e->n == FWD_QCAP) {
        pthread_mutex_unlock(&e->mu);
        return -EBUSY; /* the scheduler keeps at most max_inflight (< FWD_QCAP) in flight */
    }
    b->whole_rc = 0;
    e->q[(e->head + e->n) % FWD_QCAP] = (struct fwd_batch){ .b = b };
    e->n++;
    pthread_mutex_unlock(&e->mu);
    efd_signal(e->wake);
    return 0;
}

/* The oldest batch if it has finished (under mu), else NULL. */
static struct oag_batch *pop_done(struct oag_engine *e)
{
    struct oag_batch *b = NULL;
    pthread_mutex_lock(&e->mu);
    if (e->n > 0 && e->q[e->head].done == e->q[e->head].b->n) {
        b = e->q[e->head].b;
        e->head = (e->head + 1) % FWD_QCAP;
        e->n--;
    }
    pthread_mutex_unlock(&e->mu);
    return b;
}

static struct oag_batch *fwd_reap(struct oag_engine *e)
{
    struct oag_batch *b = pop_done(e);
    if (b)
        return b;
    /* Drain the eventfd, then look again: a batch finishing after the read writes the fd
     * again, so no wake-up is lost (a spurious one costs one empty reap). */
    uint64_t v;
    if (read(e->efd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing pending */
    }
    return pop_done(e);
}

static int fwd_event_fd(struct oag_engine *e) { return e->efd; }
static uint32_t fwd_out_row(struct oag_engine *e) { return e->out_row; }

const struct oag_engine_ops engine_remote_ops = {
    .name = "remote", .create = fwd_create, .destroy = fwd_destroy, .submit = fwd_submit,
    .reap = fwd_reap, .event_fd = fwd_event_fd, .out_row_bytes = fwd_out_row,
    .max_inflight = 4,
};
