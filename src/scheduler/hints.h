/*
 * hints.h - advice the supervisor publishes to its agents (the region header's `hints`).
 *
 * OAG_HINT_STREAM_ROWS (--stream-rows auto|on|off, default auto): agents write payloads of
 * 1 KB or more with streaming stores. A GPU reads rows by pointer across the bus; a line that
 * an agent has just written sits modified in that core's cache, and the device gets it from
 * there at a third to a half of the speed of a line in memory (tests/cuda/gather_bench
 * "fresh": 3 KB rows 19-23 against 41-46 GB/s by the copy engines). Streaming stores send the
 * rows to memory; they cost the agents a little more than a plain copy. So they pay when the
 * rows in flight would still be in the writers' caches when the device reads them, and only
 * then (docs/BENCHMARKS.md, sessions 7 and 8):
 *   - an engine whose device reads rows over the bus (ops->bus_reads), the lanes' rows read in
 *     place (registered, no --copy-rows);
 *   - the bytes in flight per writing core (the agents' tasks submitted and not yet taken
 *     back x row bytes / min(agents, CPUs)) under half of a core's L2 (on), and it goes off
 *     again above the whole L2: a 768-wide fp32 row with 64 tasks in flight for each of 64
 *     agents on 16 cores is 0.75 MB a core (stays in a 2 MB L2: +13 % end to end), a 4096-wide
 *     one 4 MB (gone to the L3 by the time the device reads it, which it does at full speed:
 *     streaming stores cost 3-9 %);
 *   - at most 8 agents per CPU: beyond, the agents' own CPU time bounds the fleet and the
 *     stores' cost shows (512 agents on 16 cores: 2-4 % less).
 * Measured every 100 ms on the main thread (world stopped), averaged; the advice changes after
 * three measurements in a row call for it.
 */
#ifndef OAG_SCHED_HINTS_H
#define OAG_SCHED_HINTS_H

#include <stdint.h>

struct sup;

#define HINTS_PERIOD_NS 100000000ull
#define HINTS_AGREE 3 /* measurements in a row that call for a change before it is made */
#define STREAM_MAX_AGENTS_PER_CPU 8u

enum stream_why {
    STREAM_FORCED_ON,   /* --stream-rows on */
    STREAM_FORCED_OFF,  /* --stream-rows off */
    STREAM_CPU_READS,   /* the engine reads rows with the CPU (no bus in between) */
    STREAM_COPIED,      /* rows are copied into the batch buffers (--copy-rows, unregistered) */
    STREAM_NO_AGENTS,
    STREAM_CROWDED,     /* more than STREAM_MAX_AGENTS_PER_CPU agents per CPU */
    STREAM_IN_CACHE,    /* on: the rows in flight fit in the writers' L2 */
    STREAM_OUT_OF_CACHE /* off: they do not */
};

struct hints {
    int on;                    /* OAG_HINT_STREAM_ROWS published */
    enum stream_why why;
    uint64_t next_ns;          /* next measurement */
    uint64_t avg_rows;         /* agents' tasks in flight, averaged (x 16, fixed point) */
    uint64_t samples;
    uint32_t agree;            /* measurements in a row that called for the other advice */
    uint64_t per_cpu;          /* bytes in flight per writing core, from avg_rows */
    uint64_t l2;               /* bytes of one core's L2 */
    uint32_t cpus;
};

/* The decision, from what was measured: 1 to advise streaming stores. on: the advice now (the
 * hysteresis: on below half the L2, off above all of it). */
static inline int stream_rows_decide(int on, uint64_t per_cpu, uint64_t l2, uint32_t agents,
                                     uint32_t cpus, enum stream_why *why)
{
    if (agents == 0 || cpus == 0) {
        *why = STREAM_NO_AGENTS;
        return 0;
    }
    if (agents > STREAM_MAX_AGENTS_PER_CPU * cpus) {
        *why = STREAM_CROWDED;
        return 0;
    }
    int yes = on ? per_cpu <= l2 : per_cpu <= l2 / 2;
    *why = yes ? STREAM_IN_CACHE : STREAM_OUT_OF_CACHE;
    return yes;
}

/* Main thread, world stopped (or before the shards start). Sets up, then measures and
 * republishes at most every HINTS_PERIOD_NS. */
void hints_init(struct sup *s);
void hints_tick(struct sup *s, uint64_t now);
/* Words for status: "the rows in flight fit in the agents' L2" and so on. */
const char *hints_why(enum stream_why why);

#endif
