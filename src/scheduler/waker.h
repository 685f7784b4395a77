/*
 * waker.h - agents' wake-ups written by a thread of their own.
 *
 * Publishing a batch's results may owe a wake-up (an eventfd write, a few microseconds of
 * kernel time each) to every sleeping agent in it: hundreds per batch with a big fleet. The
 * loop queues them here instead and goes on batching; one thread writes them, woken once per
 * burst. Closing a lane's eventfd goes through the same queue, after every write queued before
 * it, so a write never reaches a reused fd number.
 *
 * Single producer (the loop thread), single consumer (the waker thread). Without a thread
 * (waker_start failed or not called), waker_wake and waker_close act at once.
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
    int32_t q[WAKER_QCAP];     /* fd >= 0: write 1 to it; -fd - 1: close it */
    uint64_t writes;           /* thread only */
};

/* Starts the thread. Returns 0 or a negative errno (then everything happens inline). */
int waker_start(struct waker *w);
/* Stops the thread after it has done everything queued. */
void waker_stop(struct waker *w);
/* Queues a wake-up for eventfd fd (loop thread). */
void waker_wake(struct waker *w, int fd);
/* Queues closing fd after the writes queued before (loop thread). */
void waker_close(struct waker *w, int fd);
/* Hands what was queued since the last flush to the thread (loop thread; once per burst). */
void waker_flush(struct waker *w);

#endif
