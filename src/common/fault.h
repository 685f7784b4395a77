/*
 * fault.h - test-build fault injection (SQLite's faultsim idea): fail the Nth call of one kind.
 *
 * Only in builds configured with -Dfault_injection=true (OAG_FAULT_INJECTION). The supervisor is
 * then linked with -Wl,--wrap for the calls of each kind (src/common/meson.build lists them), so
 * every call site in its own code goes through fault.c without being edited; a call made inside
 * a shared library (libc's own, liburing's, cJSON's) is not counted.
 *
 *   OAG_FAULT_INJECT=KIND:N[,KIND:N...]   fail the Nth call (1-based) of KIND, once
 *     KIND  alloc    malloc calloc realloc aligned_alloc posix_memalign strdup  -> ENOMEM
 *           mmap     mmap memfd_create shm_open                                 -> ENOMEM/EMFILE
 *           eventfd  eventfd signalfd                                           -> EMFILE
 *           socket   socket accept4                                             -> EMFILE
 *           cuda     cudaMalloc cudaHostAlloc cudaMallocHost cudaStreamCreate*
 *                    cublasCreate_v2 (CUDA builds)                   -> out-of-memory error
 *   OAG_FAULT_LOG=1   print every counted call ("oag-fault: KIND #N") to stderr: how a test
 *                     learns how many calls of a kind one run makes.
 * When a fault fires, one line "oag-fault: injected KIND #N (FUNCTION)" goes to stderr.
 */
#ifndef OAG_COMMON_FAULT_H
#define OAG_COMMON_FAULT_H

enum oag_fault_kind {
    OAG_FAULT_ALLOC = 0,
    OAG_FAULT_MMAP,
    OAG_FAULT_EVENTFD,
    OAG_FAULT_SOCKET,
    OAG_FAULT_CUDA,
    OAG_FAULT_NKINDS
};

/* Counts one call of kind k made by `fn`; returns 1 when this call must fail (the caller then
 * fails it the way the real function would), 0 otherwise. Thread-safe, async-signal-unsafe
 * only in that it may write one line to stderr. Always 0 in builds without
 * OAG_FAULT_INJECTION. */
#ifdef OAG_FAULT_INJECTION
int oag_fault_hit(enum oag_fault_kind k, const char *fn);
#else
static inline int oag_fault_hit(enum oag_fault_kind k, const char *fn)
{
    (void)k;
    (void)fn;
    return 0;
}
#endif

#endif
