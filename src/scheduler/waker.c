/*
 * waker.c - see waker.h.
 *
 * The thread's sleep (pairs with waker_flush):
 *
 *   waker thread                              loop thread
 *   ------------                              -----------
 *   store sleeping = 1 (seq_cst)              store head (release)
 *   fence seq_cst                             fence seq_cst
 *   load head: entries? -> sleeping = 0, go   load sleeping: 1? -> xchg 0, write(efd)
 *   read(efd) (blocks)
 *
 * Either the thread sees the new head or the loop sees sleeping = 1 and rings: no entry waits
 * for a later burst.
 */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "waker.h"

#define SPIN_NS 20000u /* after a burst, look for the next one this long before sleeping */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void act(int32_t fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_debug("wake-up write: %s", strerror(errno));
}

static void *waker_main(void *arg)
{
    struct waker *w = arg;
    prctl(PR_SET_NAME, "oag-waker");
    uint32_t tail = oag_load_relaxed_u32(&w->tail); /* relaxed: this thread is its writer */
    for (;;) {
        /* Pairs with the release in waker_flush(): entries up to head are written. */
        uint32_t head = oag_load_acquire_u32(&w->head);
        if (head != tail) {
            while (tail != head) {
                act(w->q[tail % WAKER_QCAP]);
                tail++;
                w->writes++;
            }
            /* Pairs with the acquire in push(): these entries may be reused. */
            oag_store_release_u32(&w->tail, tail);
            continue;
        }
        if (oag_load_relaxed_u32(&w->stop)) /* relaxed: stop is set before the ring */
            break;
        uint64_t until = mono_ns() + SPIN_NS;
        int found = 0;
        while (mono_ns() < until) {
            if (oag_load_acquire_u32(&w->head) != tail) {
                found = 1;
                break;
            }
            oag_cpu_relax();
        }
        if (found)
            continue;
        oag_store_seqcst_u32(&w->sleeping, 1);
        oag_fence_seqcst();
        if (oag_load_acquire_u32(&w->head) != tail || oag_load_relaxed_u32(&w->stop)) {
            oag_store_relaxed_u32(&w->sleeping, 0); /* relaxed: a stale 1 costs one ring */
            continue;
        }
        uint64_t v;
        if (read(w->efd, &v, sizeof v) < 0 && errno != EINTR)
            log_debug("waker: read: %s", strerror(errno));
    }
    return NULL;
}

int waker_start(struct waker *w)
{
    memset(w, 0, sizeof *w);
    w->efd = eventfd(0, EFD_CLOEXEC);
    if (w->efd < 0)
        return -errno;
    int rc = pthread_create(&w->th, NULL, waker_main, w);
    if (rc) {
        close(w->efd);
        w->efd = -1;
        return -rc;
    }
    w->on = 1;
    return 0;
}

void waker_stop(struct waker *w)
{
    if (!w->on)
        return;
    waker_flush(w);
    oag_store_seqcst_u32(&w->stop, 1);
    uint64_t one = 1;
    if (write(w->efd, &one, sizeof one) < 0)
        log_debug("waker: ring: %s", strerror(errno));
    pthread_join(w->th, NULL);
    close(w->efd);
    w->efd = -1;
    w->on = 0;
}

/* Queues v; returns 0, or -EAGAIN when the queue is full. */
static int push(struct waker *w, int32_t v)
{
    /* Pairs with the release in waker_main(): slots below tail are free again. */
    uint32_t tail = oag_load_acquire_u32(&w->tail);
    if (w->head_local - tail >= WAKER_QCAP)
        return -EAGAIN;
    w->q[w->head_local % WAKER_QCAP] = v;
    w->head_local++;
    return 0;
}

void waker_wake(struct waker *w, int fd)
{
    if (!w->on || push(w, fd) < 0)
        act(fd); /* order among wake-ups does not matter */
}

void waker_flush(struct waker *w)
{
    if (!w->on)
        return;
    /* Pairs with the acquire in waker_main(). */
    if (oag_load_relaxed_u32(&w->head) == w->head_local) /* relaxed: we are its writer */
        return;
    oag_store_release_u32(&w->head, w->head_local);
    oag_fence_seqcst();
    if (oag_load_relaxed_u32(&w->sleeping) && oag_xchg_u32(&w->sleeping, 0)) {
        uint64_t one = 1;
        if (write(w->efd, &one, sizeof one) < 0)
            log_debug("waker: ring: %s", strerror(errno));
    }
}

/* ---- a set of wakers ---------------------------------------------------------------------- */

int wakers_start(struct wakers *ws, int n)
{
    memset(ws, 0, sizeof *ws);
    if (n > WAKERS_MAX)
        n = WAKERS_MAX;
    for (int i = 0; i < n; i++) {
        struct waker *w = malloc(sizeof *w);
        int rc = w ? waker_start(w) : -ENOMEM;
        if (rc) {
            free(w);
            log_warn("waker thread %d of %d: %s", i + 1, n, strerror(-rc));
            break;
        }
        ws->w[ws->n++] = w;
    }
    return ws->n;
}

void wakers_stop(struct wakers *ws)
{
    for (int i = 0; i < ws->n; i++) {
        waker_stop(ws->w[i]);
        free(ws->w[i]);
        ws->w[i] = NULL;
    }
    ws->n = 0;
}

void wakers_burst(struct wakers *ws, const int *fds, uint32_t n)
{
    if (ws->n == 0) {
        for (uint32_t k = 0; k < n; k++)
            act(fds[k]);
        return;
    }
    uint32_t use = (n + WAKERS_CHUNK - 1) / WAKERS_CHUNK;
    if (use > (uint32_t)ws->n)
        use = (uint32_t)ws->n;
    if (use == 0)
        return;
    /* Contiguous shares, the first ones one longer: w[rr], w[rr + 1], ... */
    uint32_t k = 0;
    for (uint32_t j = 0; j < use; j++) {
        struct waker *w = ws->w[(ws->rr + j) % (unsigned)ws->n];
        uint32_t share = n / use + (j < n % use);
        for (uint32_t e = k + share; k < e; k++)
            waker_wake(w, fds[k]);
        waker_flush(w);
    }
    ws->rr = (ws->rr + use) % (unsigned)ws->n;
}

void wakers_close(struct wakers *ws, int fd)
{
    for (int i = 0; i < ws->n; i++) {
        struct waker *w = ws->w[i];
        waker_flush(w);
        /* Pairs with the release in waker_main(): every write queued before is done. */
        while (oag_load_acquire_u32(&w->tail) != w->head_local)
            sched_yield();
    }
    close(fd);
}
