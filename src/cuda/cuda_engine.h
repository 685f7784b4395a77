/*
 * cuda_engine.h - the CUDA engine's table, and the hooks its tests and benchmark use.
 *
 * The engine itself is reached only through engine_cuda_ops (engine.h); nothing here is for
 * the scheduler.
 */
#ifndef OAG_CUDA_ENGINE_H
#define OAG_CUDA_ENGINE_H

#include "engine/engine.h"

extern const struct oag_engine_ops engine_cuda_ops;

/* Fault injection: the next submit() on e fails in the chosen way.
 *   OAG_CUDA_FAULT_ALLOC   a device allocation of 1 PiB on the batch path: whole_rc -ENOMEM
 *   OAG_CUDA_FAULT_LAUNCH  a kernel launch the runtime refuses (not sticky): whole_rc -EIO,
 *                          the slot's stream and graphs are rebuilt
 *   OAG_CUDA_FAULT_TRAP    a kernel that traps on the device (sticky: the context is lost):
 *                          whole_rc -EIO, the next submit() resets the device and rebuilds,
 *                          or, where the driver keeps the device from the faulted process,
 *                          fails fast with -EIO and after 10 s with -ENODEV
 * Call from the thread that calls submit(). */
enum oag_cuda_fault {
    OAG_CUDA_FAULT_NONE = 0, OAG_CUDA_FAULT_ALLOC, OAG_CUDA_FAULT_LAUNCH, OAG_CUDA_FAULT_TRAP,
};
void oag__cuda_fault_next(struct oag_engine *e, enum oag_cuda_fault kind);

/* Counters for tests: batches failed, slot rebuilds, full device resets. */
struct oag_cuda_stats {
    uint64_t batches, failed, slot_rebuilds, resets;
    uint64_t dma_rows, kern_rows; /* rows by pointer moved (each way counts) by the copy
                                     engines (runs, OAG_CUDA_DMA_MIN) and by the kernels */
    uint32_t nbuckets;
    uint32_t buckets[32];
};
void oag__cuda_stats(struct oag_engine *e, struct oag_cuda_stats *out);

/* How many CUDA devices this process sees (0 when there is no driver or no GPU): what the
 * tests check before they exit 77. Never aborts. */
int oag__cuda_device_count(void);

#endif
