/*
 * shard_auto.h - --data-threads auto: the decision (shard.c's shards_auto applies it).
 */
#ifndef OAG_SCHED_SHARD_AUTO_H
#define OAG_SCHED_SHARD_AUTO_H

#include <stdint.h>

/* --data-threads auto. One thread serves the lanes unless the engine is a GPU's reading rows
 * across the bus, batches are large (DATA_AUTO_MIN_BATCH), there are 8 CPUs or more (2 or
 * more for the supervisor's own threads under --cpus) and the queue holds two batches: then
 * two, and three where the rows are small (DATA_AUTO_ROW_MAX), there are 12 CPUs or more (3
 * for the supervisor's own under --cpus) and the queue holds three batches. Lanes spread
 * evenly.
 *
 * Only large batches reach task rates one thread cannot take in (~5 M a second of the 768
 * model's 3 KB rows on the GPU host; its offline rate at batch 32 is 2.3 M), and a thread
 * spinning beside the agents costs them CPU: 64 synchronous agents with --max-batch 32 ran
 * 372 k tasks/s with two threads against 652 k with one. Each thread has its own engine
 * instance (4 batches in flight), and each batch costs its thread the enqueueing (the runs'
 * copy-engine transfers, ~1-2 us each in the driver, the graph launch) besides the intake
 * and the results. On the H200 host (16 CPUs; docs/BENCHMARKS.md session 11, 16 batches of
 * tasks in flight): the 768-wide model (3 KB rows) with 64 agents 12.7 / 12.4 M tasks/s with
 * three threads against 11.6 / 11.0 M with two, with 512 agents 9.8 / 9.7 against 8.3 / 8.3
 * M, four no better (12.6 / 13.0 and 9.5 / 8.8 M); the 4096-wide one (16 KB rows) with two
 * against one: 64 agents 2.90 / 2.92 against 2.80 / 2.67 M, 512 agents 2.74 / 2.81 against
 * 2.65 / 2.72 M. (Session 9, with 8 batches of tasks in flight, two threads had lost the
 * 4096 model up to 26 % on an H100 host: fewer tasks than two instances' slots.)
 *
 * bus: the engine reads rows across a bus (ops->bus_reads); row: the model's widest row in
 * bytes (0: unknown); cpus: the host's CPUs the process may use; sup_cpus: those its own
 * threads run on (--cpus; else cpus). Returns K and *why, for the log and status. */
#define DATA_AUTO_ROW_MAX 4096u
#define DATA_AUTO_MIN_BATCH 256u
#define DATA_AUTO_MIN_CPUS 8
#define DATA_AUTO_CPUS_3 12

static inline int data_threads_decide(int bus, uint64_t row, long cpus, long sup_cpus,
                                      uint64_t max_queue, uint32_t max_batch, const char **why)
{
    if (!bus)
        *why = "the engine reads no rows across a bus";
    else if (!row)
        *why = "no model to size rows by";
    else if (max_batch < DATA_AUTO_MIN_BATCH)
        *why = "batches under 256 tasks: one thread takes in their rate";
    else if (cpus < DATA_AUTO_MIN_CPUS)
        *why = "fewer than 8 CPUs";
    else if (sup_cpus < 2)
        *why = "--cpus gives the supervisor one CPU";
    else if (max_queue < 2ull * max_batch)
        *why = "--max-queue holds fewer than two batches";
    else if (row > DATA_AUTO_ROW_MAX) {
        *why = "a GPU engine, batches of 256 or more, 8 CPUs or more; rows over 4 KB: two";
        return 2;
    } else if (cpus < DATA_AUTO_CPUS_3 || sup_cpus < 3 || max_queue < 3ull * max_batch) {
        *why = "a GPU engine, rows of 4 KB or less, batches of 256 or more, 8 CPUs or more "
               "(three from 12 CPUs and a queue of three batches)";
        return 2;
    } else {
        *why = "a GPU engine, rows of 4 KB or less, batches of 256 or more, 12 CPUs or more";
        return 3;
    }
    return 1;
}

#endif
