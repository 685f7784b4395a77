/*
 * latch.h - double-buffered state records (seqcount latch) for one writer and any readers in
 * other processes. The writer never waits; a reader gets a consistent copy or, if the writer
 * keeps racing it (or, for a record written by an untrusted agent, never settles), -EAGAIN after
 * a bounded number of tries. Records are arrays of 8-byte words copied with relaxed atomics so
 * that the races are defined behaviour (and visible to sanitizers).
 */
#ifndef OAG_SHM_LATCH_H
#define OAG_SHM_LATCH_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "atomic.h"

/* Writer: publishes rec (nwords 8-byte words) into both copies. Only one writer per latch. */
static inline void latch_write(oag_atomic_u32 *seq, oag_atomic_u64 *copies, size_t nwords,
                               const void *rec)
{
    uint64_t w[64];
    memcpy(w, rec, nwords * 8);
    uint32_t s = oag_load_relaxed_u32(seq); /* relaxed: we are the only writer */
    for (int c = 0; c < 2; c++) {
        /* Odd step: readers move to copy 1 while copy 0 is written; even step: back to copy 0.
         * The fence orders this seq store before the data stores (pairs with the reader's
         * acquire fence: a reader that saw any of the data stores below also sees the new seq). */
        oag_store_relaxed_u32(seq, ++s);
        oag_fence_release();
        oag_atomic_u64 *dst = copies + (size_t)c * nwords;
        for (size_t i = 0; i < nwords; i++)
            oag_store_relaxed_u64(&dst[i], w[i]);
        oag_fence_release(); /* data before the next seq store; pairs with latch_read() */
    }
}

/* Reader: copies a consistent record into out. Returns 0, or -EAGAIN after `tries` failed
 * attempts (a writer racing forever, or garbage in the sequence). */
static inline int latch_read(const oag_atomic_u32 *seq, const oag_atomic_u64 *copies,
                             size_t nwords, void *out, int tries)
{
    uint64_t w[64];
    while (tries-- > 0) {
        /* Pairs with the release fences in latch_write(). */
        uint32_t s = oag_load_acquire_u32(seq);
        const oag_atomic_u64 *src = copies + (size_t)(s & 1) * nwords;
        for (size_t i = 0; i < nwords; i++)
            w[i] = oag_load_relaxed_u64(&src[i]);
        oag_fence_acquire();
        if (oag_load_relaxed_u32(seq) == s) {
            memcpy(out, w, nwords * 8);
            return 0;
        }
    }
    return -EAGAIN;
}

#endif
