/* inst.c - engine instances: inline, worker-thread or natively asynchronous. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "inst.h"
#include "log.h"

#define QCAP 8u

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#ifdef OAG_FAULT_INJECTION
/* Test builds: $OAG_FAULT_ENGINE_THREADED=1 runs synchronous engines (identity) on a worker
 * thread like the cpu engine, and $OAG_FAULT_ENGINE_DELAY_US=N makes each batch take N us more:
 * batches are then in flight while agents die (rows by pointer outliving their lane). */
static int env_num(const char *name)
{
    const char *v = getenv(name);
    return v ? atoi(v) : 0;
}
#else
static int env_num(const char *name)
{
    (void)name;
    return 0;
}
#endif

static void run_sync(struct inst *in, struct oag_batch *b)
{
    if (in->delay_us)
        usleep((useconds_t)in->delay_us);
    b->whole_rc = 0;
    int rc = in->ops->submit(in->e, b);
    if (rc < 0)
        b->whole_rc = rc;
}

static void *worker(void *arg)
{
    struct inst *in = arg;
    prctl(PR_SET_NAME, "oag-inst");
    pthread_mutex_lock(&in->mu);
    for (;;) {
        while (!in->stop && in->queued_n == 0)
            pthread_cond_wait(&in->cv, &in->mu);
        if (in->queued_n == 0 && in->stop)
            break;
        struct oag_batch *b = in->queued[in->queued_head];
        in->queued_head = (in->queued_head + 1) % QCAP;
        in->queued_n--;
        pthread_mutex_unlock(&in->mu);
        uint64_t t0 = mono_ns();
        run_sync(in, b);
        uint64_t dt = mono_ns() - t0;
        pthread_mutex_lock(&in->mu);
        in->busy_ns += dt;
        in->done[(in->done_head + in->done_n) % QCAP] = b;
        in->done_n++;
        uint64_t one = 1;
        if (write(in->efd, &one, sizeof one) < 0) {
            /* eventfd cannot overflow here (counts are tiny); nothing to do */
        }
    }
    pthread_mutex_unlock(&in->mu);
    return NULL;
}

int inst_create(struct inst **out, const struct oag_engine_ops *ops,
                const struct oag_engine_params *p, struct oag_model *model, int threaded)
{
    struct inst *in = calloc(1, sizeof *in);
    if (!in)
        return -ENOMEM;
    in->ops = ops;
    in->device = p->device;
    in->params = *p;
    in->threaded_req = threaded;
    in->efd = -1;
    if (env_num("OAG_FAULT_ENGINE_THREADED"))
        threaded = 1;
    in->delay_us = env_num("OAG_FAULT_ENGINE_DELAY_US");
    int rc = ops->create(&in->e, p);
    if (rc)
        goto fail;
    if (ops->reap) {
        in->max_inflight = ops->inflight ? ops->inflight(in->e)
                           : ops->max_inflight ? ops->max_inflight : 2;
        if (in->max_inflight > QCAP)
            in->max_inflight = QCAP;
        in->efd = ops->event_fd ? ops->event_fd(in->e) : -1;
    } else if (threaded) {
        in->threaded = 1;
        in->max_inflight = 2; /* one computing, one queued behind it */
        in->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (in->efd < 0) {
            rc = -errno;
            goto fail_engine;
        }
        pthread_mutex_init(&in->mu, NULL);
        pthread_cond_init(&in->cv, NULL);
        if ((rc = -pthread_create(&in->th, NULL, worker, in)) != 0) {
            close(in->efd);
            goto fail_engine;
        }
    } else {
        in->max_inflight = 1;
    }
    in->model = model;
    *out = in;
    return 0;
fail_engine:
    ops->destroy(in->e);
fail:
    free(in);
    return rc;
}

void inst_destroy(struct inst *in)
{
    if (!in)
        return;
    if (in->threaded) {
        pthread_mutex_lock(&in->mu);
        in->stop = 1;
        pthread_cond_signal(&in->cv);
        pthread_mutex_unlock(&in->mu);
        pthread_join(in->th, NULL);
        close(in->efd);
        pthread_mutex_destroy(&in->mu);
        pthread_cond_destroy(&in->cv);
    }
    in->ops->destroy(in->e);
    free(in);
}

#ifdef OAG_FAULT_INJECTION
/* Test builds: $OAG_FAULT_ENGINE_BATCHES=N makes the next N batches (after warm-up, which runs
 * before the supervisor is ready) fail as an engine failure would: -EIO for every row. Read
 * when armed (before the data threads start); taken by any of them (atomically). */
static long fault_batches;
static int fault_instance = -1;
int inst_fault_armed;

void inst_fault_arm(void)
{
    const char *v = getenv("OAG_FAULT_ENGINE_BATCHES");
    __atomic_store_n(&fault_batches, v ? strtol(v, NULL, 10) : 0, __ATOMIC_RELAXED);
    const char *k = getenv("OAG_FAULT_ENGINE_INSTANCE");
    fault_instance = k && *k ? atoi(k) : -1;
    inst_fault_armed = 1;
}

static int fault_hit(const struct inst *in)
{
    if (!inst_fault_armed)
        return 0; /* warm-up */
    /* $OAG_FAULT_ENGINE_INSTANCE=K: every batch of instance K fails (a broken GPU). */
    if (fault_instance >= 0)
        return fault_instance == in->ordinal;
    long n = __atomic_load_n(&fault_batches, __ATOMIC_RELAXED);
    while (n > 0)
        if (__atomic_compare_exchange_n(&fault_batches, &n, n - 1, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
            return 1;
    return 0;
}
#else
int inst_fault_armed;
void inst_fault_arm(void) { inst_fault_armed = 1; }
static int fault_hit(const struct inst *in)
{
    (void)in;
    return 0;
}
#endif

int inst_submit(struct inst *in, struct oag_batch *b)
{
    if (in->inflight >= in->max_inflight)
        return -EBUSY;
    b->whole_rc = 0;
    if (fault_hit(in)) {
        b->whole_rc = -EIO;
        in->inline_done[in->inline_n++] = b;
        in->inflight++;
        in->batches++;
        uint64_t one = 1; /* make the completion visible the way the backend would */
        if (in->efd >= 0 && write(in->efd, &one, sizeof one) < 0) {
            /* an eventfd this far from overflow does not fail */
        }
        return 0;
    }
    if (in->threaded) {
        pthread_mutex_lock(&in->mu);
        in->queued[(in->queued_head + in->queued_n) % QCAP] = b;
        in->queued_n++;
        pthread_cond_signal(&in->cv);
        pthread_mutex_unlock(&in->mu);
    } else if (in->ops->reap) {
        int rc = in->ops->submit(in->e, b);
        if (rc < 0)
            return rc;
    } else {
        uint64_t t0 = mono_ns();
        run_sync(in, b);
        in->busy_ns += mono_ns() - t0;
        in->inline_done[in->inline_n++] = b;
    }
    if (in->ops->reap && in->inflight == 0)
        in->busy_since = mono_ns(); /* async: busy while any batch is in flight */
    in->inflight++;
    in->batches++;
    in->rows += b->n;
    return 0;
}

struct oag_batch *inst_reap(struct inst *in)
{
    struct oag_batch *b = NULL;
    if (in->inline_n) {
        b = in->inline_done[0];
        memmove(in->inline_done, in->inline_done + 1, --in->inline_n * sizeof b);
    } else if (in->threaded) {
        /* Drain the eventfd before looking: a batch the worker finishes after the look writes
         * it again, so its wake-up cannot be lost. */
        uint64_t v;
        if (read(in->efd, &v, sizeof v) < 0) {
            /* EAGAIN: no signal pending */
        }
        pthread_mutex_lock(&in->mu);
        if (in->done_n) {
            b = in->done[in->done_head];
            in->done_head = (in->done_head + 1) % QCAP;
            in->done_n--;
        }
        pthread_mutex_unlock(&in->mu);
    } else if (in->ops->reap) {
        b = in->ops->reap(in->e);
    }
    if (b) {
        in->inflight--;
        if (in->ops->reap && in->inflight == 0)
            in->busy_ns += mono_ns() - in->busy_since;
        if (b->whole_rc)
            in->errors++;
    }
    return b;
}

int inst_event_fd(struct inst *in) { return in->efd; }
