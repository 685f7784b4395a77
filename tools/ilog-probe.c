/*
 * ilog-probe.c - a design probe (not part of oag's data path): can agent processes write their
 * task rows straight into one shared, batch-ordered input log fast enough to feed a GPU?
 *
 * The engine moves contiguous pinned rows at ~48 GB/s each way by its copy engines (the offline
 * ceiling: 11.8 M rows of 3 KB a second for the 768 model on the H100), but rows scattered over
 * 64..512 agents' lanes only at ~22-30 GB/s (docs/BENCHMARKS.md, sessions 4-7). A log that
 * agents claim rows of (Aeron's publication: one atomic add on a shared tail, the row written in
 * place, then a commit word) would make every batch one contiguous range. The open question
 * is the CPU side: one cache line that every producer adds to.
 *
 *   oag-ilog-probe [PRODUCERS [ROW_BYTES [CLAIM [SECONDS]]]]   (defaults 64 3072 1 2)
 *
 * PRODUCERS processes claim CLAIM rows at a time (fetch-add on the shared tail), wait while the
 * log is full, write each row (ROW_BYTES), and publish it with a release store of its lap tag;
 * one consumer (this process) takes batches of 512 rows in log order once all are committed,
 * reads one word per row and hands the batch back. Printed next to the baseline from the same
 * run: the same producers each writing their own single-producer ring (oag's lanes today: no
 * shared line), drained by the same consumer. Both counts are rows a second.
 */
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 512u
#define LAPS 8u                      /* batches the log holds */
#define CAP (BATCH * LAPS)
#define RING 256u                    /* per-producer ring (the baseline) */

struct shared {
    _Alignas(64) _Atomic uint64_t tail;  /* next row to claim (producers add) */
    _Alignas(64) _Atomic uint64_t head;  /* first row not yet handed back (consumer) */
    _Alignas(64) _Atomic uint32_t stop;
    _Alignas(64) _Atomic uint64_t commit[CAP]; /* lap + 1 of the row published there */
};

struct ring {                        /* baseline: one per producer */
    _Alignas(64) _Atomic uint64_t prod;
    _Alignas(64) _Atomic uint64_t cons;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *map_shared(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    return p;
}

static void produce_log(struct shared *sh, uint8_t *rows, uint32_t row, uint32_t claim, int id)
{
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        uint64_t pos = atomic_fetch_add_explicit(&sh->tail, claim, memory_order_relaxed);
        for (uint32_t k = 0; k < claim; k++) {
            uint64_t p = pos + k;
            /* Full: wait until the consumer has handed this row's last lap back. */
            while (p - atomic_load_explicit(&sh->head, memory_order_acquire) >= CAP)
                if (atomic_load_explicit(&sh->stop, memory_order_relaxed))
                    return;
                else
                    sched_yield();
            memset(rows + (p % CAP) * row, id + (int)p, row);
            atomic_store_explicit(&sh->commit[p % CAP], p / CAP + 1, memory_order_release);
        }
    }
}

static void produce_ring(struct shared *sh, struct ring *r, uint8_t *rows, uint32_t row, int id)
{
    uint64_t prod = 0;
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
        while (prod - atomic_load_explicit(&r->cons, memory_order_acquire) >= RING)
            if (atomic_load_explicit(&sh->stop, memory_order_relaxed))
                return;
            else
                sched_yield();
        memset(rows + (prod % RING) * row, id + (int)prod, row);
        atomic_store_explicit(&r->prod, ++prod, memory_order_release);
    }
}

/* Runs one mode for secs; returns rows a second taken by the consumer. */
static double run(int mode, int np, uint32_t row, uint32_t claim, double secs)
{
    struct shared *sh = map_shared(sizeof *sh);
    size_t bytes = mode ? (size_t)np * RING * row : (size_t)CAP * row;
    uint8_t *rows = map_shared(bytes);
    struct ring *rings = map_shared((size_t)np * sizeof *rings);
    pid_t *pids = calloc((size_t)np, sizeof *pids);
    for (int i = 0; i < np; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            if (mode)
                produce_ring(sh, &rings[i], rows + (size_t)i * RING * row, row, i);
            else
                produce_log(sh, rows, row, claim, i);
            _exit(0);
        }
    }
    uint64_t taken = 0, sum = 0, t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9);
    if (mode) {
        uint64_t *cons = calloc((size_t)np, sizeof *cons);
        int i = 0;
        while (now_ns() < end) {
            /* Sweep the producers' rings as the supervisor's intake does. */
            for (int n = 0; n < 64; n++, i = (i + 1) % np) {
                struct ring *r = &rings[i];
                uint64_t p = atomic_load_explicit(&r->prod, memory_order_acquire);
                for (; cons[i] < p; cons[i]++, taken++)
                    sum += rows[(size_t)i * RING * row + (cons[i] % RING) * row];
                atomic_store_explicit(&r->cons, cons[i], memory_order_release);
            }
        }
        free(cons);
    } else {
        uint64_t c = 0;
        while (now_ns() < end) {
            for (uint32_t k = 0; k < BATCH && now_ns() < end; k++) {
                uint64_t p = c + k;
                while (atomic_load_explicit(&sh->commit[p % CAP], memory_order_acquire) !=
                       p / CAP + 1)
                    if (now_ns() >= end)
                        break;
                sum += rows[(p % CAP) * row];
            }
            c += BATCH;
            taken += BATCH;
            atomic_store_explicit(&sh->head, c, memory_order_release);
        }
    }
    double dt = (double)(now_ns() - t0) / 1e9;
    atomic_store(&sh->stop, 1);
    for (int i = 0; i < np; i++)
        waitpid(pids[i], NULL, 0);
    free(pids);
    munmap(sh, sizeof *sh);
    munmap(rows, bytes);
    munmap(rings, (size_t)np * sizeof *rings);
    if (sum == 42)
        fprintf(stderr, " ");
    return (double)taken / dt;
}

int main(int argc, char **argv)
{
    int np = argc > 1 ? atoi(argv[1]) : 64;
    uint32_t row = argc > 2 ? (uint32_t)atoi(argv[2]) : 3072;
    uint32_t claim = argc > 3 ? (uint32_t)atoi(argv[3]) : 1;
    double secs = argc > 4 ? atof(argv[4]) : 2.0;
    if (np < 1 || np > 4096 || row < 8 || claim < 1 || claim > BATCH || secs <= 0) {
        fprintf(stderr, "usage: oag-ilog-probe [PRODUCERS [ROW_BYTES [CLAIM [SECONDS]]]]\n");
        return 2;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    double base = run(1, np, row, claim, secs);
    double log = run(0, np, row, claim, secs);
    printf("%d producers, %u-byte rows, %ld CPUs: per-producer rings (baseline) %.2f M rows/s, "
           "shared log claiming %u at a time %.2f M rows/s (%.2fx)\n", np, row, cpus, base / 1e6,
           claim, log / 1e6, log / base);
    return 0;
}
