/*
 * waker.h - agents' wake-ups written by a thread of their own.
 *
 * Publishing a batch's results may owe a wake-up (an eventfd write, a few microseconds of
 * kernel time each) to every sleeping agent in it: hundreds per batch with a big fleet. The
 * loop queues them here instead and goes on batching; one thread writes them, woken once per
 * burst.
 *
 * Single producer (the loop thread), single consumer (the waker thread). Without a thread
 * (waker_start failed or not called), waker_wake acts at once.
 *
 * A big fleet owes more wake-ups than one thread writes (each costs the writer ~3 us when it
 * wakes a process): struct wakers spreads a burst over several wakers, one more per
 * WAKERS_CHUNK wake-ups (a small burst stays on one: ringing a sleeping waker costs the loop a
 * write too). Closing an fd waits until every waker has written what was queued before, then
 * closes it at once, so a write never reaches a reused fd number.
 */
#ifndef OAG_SCHED_WAKER_H
#define OAG_SCHED_WAKER_H

#include <pthread.h>
#include <stdint.h>

#include "shm/atomic.h"

#define WAKER_QCAP 65536u

struct waker {
    int on;
    pthread_t th;
    int efd;                   /* wakes the thread */
    oag_atomic_u32 head;       /* loop writes (release), thread reads (acquire) */
    oag_atomic_u32 tail;       /* thread writes (release), loop reads (acquire) */
    oag_atomic_u32 sleeping;   /* thread sets before sleeping; loop clears and rings */
    oag_atomic_u32 stop;
    uint32_t head_local;       /* loop only: entries queued, not yet published */
    int32_t q[WAKER_QCAP];     /* eventfds to write 1 to */
    uint64_t writes;           /* thread only */
};

/* Starts the thread. Returns 0 or a negative errno (then everything happens inline). */
int waker_start(struct waker *w);
/* Stops the thread after it has done everything queued. */
void waker_stop(struct waker *w);
/* Queues a wake-up for eventfd fd (loop thread). */
void waker_wake(struct waker *w, int fd);
/* Hands what was queued since the last flush to the thread (loop thread; once per burst). */
void waker_flush(struct waker *w);

#define WAKERS_MAX 8
#define WAKERS_CHUNK 16

struct wakers {
    int n;                     /* wakers with a thread; 0: everything inline */
    unsigned rr;               /* the waker the next burst starts at */
    struct waker *w[WAKERS_MAX];
};

/* Starts up to n (1..WAKERS_MAX) waker threads; fewer if some fail (a warning each). Returns
 * how many started. */
int wakers_start(struct wakers *ws, int n);
void wakers_stop(struct wakers *ws);
/* Writes a burst of n wake-ups through the wakers and hands them over (loop thread). */
void wakers_burst(struct wakers *ws, const int *fds, uint32_t n);
/* Closes fd after every wake-up queued before (loop thread; rare: waits for the wakers). */
void wakers_close(struct wakers *ws, int fd);

#endif
