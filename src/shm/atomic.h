/*
 * atomic.h - the only way oag code touches memory shared between threads or processes.
 *
 * Shared words are wrapped in one-member structs so that a bare read or write does not compile:
 * every access goes through a function that names its memory order. Each acquire names the
 * release it pairs with at the call site. Relaxed accesses say why relaxed is enough.
 */
#ifndef OAG_SHM_ATOMIC_H
#define OAG_SHM_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif

typedef struct { _Atomic uint32_t v; } oag_atomic_u32;
typedef struct { _Atomic uint64_t v; } oag_atomic_u64;

_Static_assert(sizeof(oag_atomic_u32) == 4, "shared atomics must be plain words");
_Static_assert(sizeof(oag_atomic_u64) == 8, "shared atomics must be plain words");

#define OAG_CACHELINE 64

static inline uint32_t oag_load_acquire_u32(const oag_atomic_u32 *a)
{ return atomic_load_explicit(&((oag_atomic_u32 *)a)->v, memory_order_acquire); }
static inline uint32_t oag_load_relaxed_u32(const oag_atomic_u32 *a)
{ return atomic_load_explicit(&((oag_atomic_u32 *)a)->v, memory_order_relaxed); }
static inline uint32_t oag_load_seqcst_u32(const oag_atomic_u32 *a)
{ return atomic_load_explicit(&((oag_atomic_u32 *)a)->v, memory_order_seq_cst); }
static inline void oag_store_release_u32(oag_atomic_u32 *a, uint32_t x)
{ atomic_store_explicit(&a->v, x, memory_order_release); }
static inline void oag_store_relaxed_u32(oag_atomic_u32 *a, uint32_t x)
{ atomic_store_explicit(&a->v, x, memory_order_relaxed); }
static inline void oag_store_seqcst_u32(oag_atomic_u32 *a, uint32_t x)
{ atomic_store_explicit(&a->v, x, memory_order_seq_cst); }
static inline uint32_t oag_xchg_u32(oag_atomic_u32 *a, uint32_t x)
{ return atomic_exchange_explicit(&a->v, x, memory_order_acq_rel); }
static inline uint32_t oag_fetch_add_u32(oag_atomic_u32 *a, uint32_t x)
{ return atomic_fetch_add_explicit(&a->v, x, memory_order_acq_rel); }

static inline uint64_t oag_load_acquire_u64(const oag_atomic_u64 *a)
{ return atomic_load_explicit(&((oag_atomic_u64 *)a)->v, memory_order_acquire); }
static inline uint64_t oag_load_relaxed_u64(const oag_atomic_u64 *a)
{ return atomic_load_explicit(&((oag_atomic_u64 *)a)->v, memory_order_relaxed); }
static inline void oag_store_release_u64(oag_atomic_u64 *a, uint64_t x)
{ atomic_store_explicit(&a->v, x, memory_order_release); }
static inline void oag_store_relaxed_u64(oag_atomic_u64 *a, uint64_t x)
{ atomic_store_explicit(&a->v, x, memory_order_relaxed); }

static inline void oag_fence_seqcst(void) { atomic_thread_fence(memory_order_seq_cst); }
static inline void oag_fence_acquire(void) { atomic_thread_fence(memory_order_acquire); }
static inline void oag_fence_release(void) { atomic_thread_fence(memory_order_release); }

static inline void oag_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Starts fetching the line at p for writing (exclusive): a line another core holds is taken
 * over before the store that needs it. __builtin_prefetch(p, 1) emits a plain read prefetch on
 * x86-64 unless built for PREFETCHW, so the instruction is used where CPUID says the core has
 * it (0x80000001 ECX bit 8: every x86-64 core of the last decade); a read prefetch elsewhere.
 * The answer is kept per translation unit (relaxed: every thread computes the same value). */
static inline void oag_prefetch_w(const void *p)
{
#if defined(__x86_64__)
    static int has = -1;
    int h = __atomic_load_n(&has, __ATOMIC_RELAXED);
    if (h < 0) {
        unsigned a, b, c, d;
        h = __get_cpuid(0x80000001u, &a, &b, &c, &d) && (c & (1u << 8));
        __atomic_store_n(&has, h, __ATOMIC_RELAXED);
    }
    if (h)
        __asm__ __volatile__("prefetchw %0" : : "m"(*(const char *)p));
    else
        __builtin_prefetch(p, 1);
#else
    __builtin_prefetch(p, 1);
#endif
}

#endif
