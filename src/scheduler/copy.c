/* copy.c - a few threads that copy rows in parallel for the batcher (see copy.h). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "copy.h"
#include "shm/atomic.h"

static void copy_part(const struct copy_job *jobs, uint32_t n, int part, int parts)
{
    uint32_t lo = (uint32_t)((uint64_t)n * (uint64_t)part / (uint64_t)parts);
    uint32_t hi = (uint32_t)((uint64_t)n * (uint64_t)(part + 1) / (uint64_t)parts);
    for (uint32_t i = lo; i < hi; i++)
        memcpy(jobs[i].dst, jobs[i].src, jobs[i].len);
}

struct worker_arg {
    struct copypool *p;
    int part;
};

static void *worker(void *arg)
{
    struct worker_arg *wa = arg;
    prctl(PR_SET_NAME, "oag-copy");
    struct copypool *p = wa->p;
    int part = wa->part;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        const struct copy_job *jobs = p->jobs;
        uint32_t n = p->njobs;
        int parts = p->parts;
        pthread_mutex_unlock(&p->mu);
        if (part < parts)
            copy_part(jobs, n, part, parts);
        /* Pairs with the acquire spin in copypool_run(): our copies happen before. */
        atomic_fetch_sub_explicit(&p->remaining, 1, memory_order_release);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int copypool_init(struct copypool *p, int nthreads, size_t threshold)
{
    memset(p, 0, sizeof *p);
    p->threshold = threshold;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (nthreads <= 0)
        return 0;
    p->th = calloc((size_t)nthreads, sizeof *p->th);
    if (!p->th)
        return -ENOMEM;
    for (int i = 0; i < nthreads; i++) {
        struct worker_arg *wa = malloc(sizeof *wa);
        if (!wa)
            return -ENOMEM;
        wa->p = p;
        wa->part = i + 1; /* part 0 is the caller's */
        if (pthread_create(&p->th[i], NULL, worker, wa) != 0) {
            free(wa);
            return -EAGAIN;
        }
        p->nthreads++;
    }
    return 0;
}

void copypool_fini(struct copypool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++)
        pthread_join(p->th[i], NULL);
    free(p->th);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

void copypool_run(struct copypool *p, const struct copy_job *jobs, uint32_t n, size_t total)
{
    if (p->nthreads == 0 || total < p->threshold || n < 2) {
        copy_part(jobs, n, 0, 1);
        return;
    }
    int parts = p->nthreads + 1;
    if ((uint32_t)parts > n)
        parts = (int)n;
    pthread_mutex_lock(&p->mu);
    p->jobs = jobs;
    p->njobs = n;
    p->parts = parts;
    atomic_store_explicit(&p->remaining, p->nthreads, memory_order_relaxed);
    p->gen++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    copy_part(jobs, n, 0, parts);
    /* Every worker counts down, those with no part too (fewer jobs than threads). */
    while (atomic_load_explicit(&p->remaining, memory_order_acquire) > 0)
        oag_cpu_relax();
}
