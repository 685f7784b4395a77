/*
 * shard_auto.h - --data-threads auto: the decision (shard.c's shards_auto applies it).
 */
#ifndef OAG_SCHED_SHARD_AUTO_H
#define OAG_SCHED_SHARD_AUTO_H

#include <stdint.h>

/* --data-threads auto. One thread serves the lanes unless the engine is a GPU's reading rows
 * across the bus, the model's rows are small (DATA_AUTO_ROW_MAX), batches are large
 * (DATA_AUTO_MIN_BATCH), there are 8 CPUs or more (2 or more for the supervisor's own threads
 * under --cpus) and the queue holds two batches: then two, lanes spread evenly.
 *
 * Only large batches of small rows reach task rates one thread cannot take in (~7 M a second
 * on the H100 host; the 768 model's offline rate at batch 32 is 2.3 M), and a second thread
 * spinning beside the agents costs them CPU: 64 synchronous agents with --max-batch 32 ran
 * 372 k tasks/s with two threads against 652 k with one. Small rows go by the gather and
 * scatter kernels, one launch a batch, and the loop thread's work per task bounds them;
 * larger rows go in runs by the copy engines, whose transfers cost host time in a driver that
 * serializes them across threads, so a second thread there only contends. On the H100 host
 * (16 CPUs; docs/BENCHMARKS.md session 9): the 768-wide model (3 KB rows) with 64 agents
 * +17 % (8.12 / 7.94 against 6.75 / 7.06 M tasks/s), with 512 agents -1 to -8 %; the
 * 4096-wide one (16 KB rows) with 64 agents even on one machine and -26 % on another. Keeping
 * the lanes beyond 4 a CPU on the first thread (so that that many agents keep the CPUs) lost
 * 25 % with 512 agents: the second instance's batches, from a few lanes, came small.
 *
 * bus: the engine reads rows across a bus (ops->bus_reads); row: the model's widest row in
 * bytes (0: unknown); cpus: the host's CPUs the process may use; sup_cpus: those its own
 * threads run on (--cpus; else cpus). Returns K and *why, for the log and status. */
#define DATA_AUTO_ROW_MAX 4096u
#define DATA_AUTO_MIN_BATCH 256u
#define DATA_AUTO_MIN_CPUS 8

static inline int data_threads_decide(int bus, uint64_t row, long cpus, long sup_cpus,
                                      uint64_t max_queue, uint32_t max_batch, const char **why)
{
    if (!bus)
        *why = "the engine reads no rows across a bus";
    else if (!row)
        *why = "no model to size rows by";
    else if (row > DATA_AUTO_ROW_MAX)
        *why = "rows over 4 KB go by copy-engine transfers, one thread's work";
    else if (max_batch < DATA_AUTO_MIN_BATCH)
        *why = "batches under 256 tasks: one thread takes in their rate";
    else if (cpus < DATA_AUTO_MIN_CPUS)
        *why = "fewer than 8 CPUs";
    else if (sup_cpus < 2)
        *why = "--cpus gives the supervisor one CPU";
    else if (max_queue < 2ull * max_batch)
        *why = "--max-queue holds fewer than two batches";
    else {
        *why = "a GPU engine, rows of 4 KB or less, batches of 256 or more, 8 CPUs or more";
        return 2;
    }
    return 1;
}

#endif
