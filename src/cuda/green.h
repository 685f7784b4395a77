/*
 * green.h - SM partitions (green contexts) for the rows-by-pointer copy kernels.
 *
 * Gather and scatter kernels wait on the bus; sharing multiprocessors with the GEMMs of other
 * batches, they serialize with them (tests/cuda/gather_bench "busy": 498 us together against
 * 275 and 279 us alone). In a partition of their own (a few SMs: 16 move rows as fast as 132)
 * they run beside the GEMMs, which keep the rest. The driver entry points are looked up through
 * the runtime (cudaGetDriverEntryPointByVersion), so nothing links libcuda.
 */
#ifndef OAG_CUDA_GREEN_H
#define OAG_CUDA_GREEN_H

#include <stddef.h>

#include <cuda_runtime_api.h>

struct cu_green;

/* Splits device dev's SMs: at least copy_sms for the copies, the rest for compute. Returns 0
 * and *out, or a negative errno with the reason in why (not supported: -ENOTSUP). */
int cu_green_create(struct cu_green **out, int dev, unsigned copy_sms, char *why, size_t whylen);
void cu_green_destroy(struct cu_green *g);
/* A non-blocking stream in the copy (copy = 1) or the compute partition; 0 or -EIO. */
int cu_green_stream(struct cu_green *g, int copy, int priority, cudaStream_t *st);
/* SMs of the copy or the compute partition. */
unsigned cu_green_sms(const struct cu_green *g, int copy);

#endif
