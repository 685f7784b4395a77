/*
 * results.h - the shared result area (--shared-results N): N chunks of the region, each holding
 * the results of one batch, rows at a fixed stride. The engine writes a batch's results into a
 * chunk (on a GPU: one copy-engine transfer, where results by pointer into the lanes take the
 * SMs' slower stores across the bus), and each completion slot points into it (OAG_CMP_SHARED).
 *
 * A chunk is lent to one batch at a time and comes back to the pool only when every agent with
 * a result in it has handed that completion slot back (its ring's consumer index passed it), or
 * has gone: until then the agent may still be reading it. A batch that finds no free chunk
 * (agents slow to read) writes its results into the lanes as without the area.
 */
#ifndef OAG_SCHED_RESULTS_H
#define OAG_SCHED_RESULTS_H

#include <stdint.h>

struct sup;
struct sup_config;
struct shard;

/* Bytes a result row may take in the area (the max payload, 64-byte multiple), and one chunk:
 * a batch of such rows, page rounded. config.c checks the total against its limit. */
static inline uint64_t results_row_cap(uint32_t max_payload)
{
    return (max_payload + 63ull) & ~63ull;
}

static inline uint64_t results_chunk_bytes(uint32_t max_batch, uint32_t max_payload)
{
    return ((uint64_t)max_batch * results_row_cap(max_payload) + 4095u) & ~4095ull;
}

struct rchunk_rec {
    uint32_t lane, gen, cidx;      /* results in the chunk up to completion slot cidx of a lane
                                      (a lane's consecutive rows share one record) */
};

struct rchunk {
    uint64_t off;                  /* from the start of the area */
    uint32_t stride;               /* bytes from one row to the next, for the batch it holds */
    uint32_t nrec, scan;           /* results recorded; those before scan are handed back */
    struct rchunk_rec *rec;        /* max_batch entries */
    int busy;                      /* lent to a batch in flight */
};

struct results {
    uint8_t *base;                 /* the area in the supervisor's mapping, or NULL */
    uint64_t off, size, chunk_bytes;
    uint32_t n;                    /* chunks (0: no area) */
    uint32_t row_cap;              /* bytes a row may take (max payload, 64-byte multiple) */
    struct rchunk *chunk;
    int registered;                /* with the engine (host_register) */
};

/* Bytes the area needs for this configuration (0: none); instance.c sizes the region. */
uint64_t results_area_bytes(const struct sup_config *c);
/* After the engines are up: the chunks, and the area registered with the engine for rows by
 * pointer. Without an engine that can write there (or with --copy-rows) the area stays unused,
 * said once. 0 or -ENOMEM. */
int results_open(struct sup *s);
void results_close(struct sup *s);
/* A free chunk of shard sh's (chunk i is shard i % K's) for a batch whose output rows are
 * out_row bytes (0: up to the max payload), or NULL: no area, rows too large, or every chunk of
 * the shard still read. */
struct rchunk *results_take(struct shard *sh, uint32_t out_row);

/* Where row i of the batch a chunk holds lies, from the start of the area. */
static inline uint64_t rchunk_row(const struct rchunk *ch, uint32_t i)
{
    return ch->off + (uint64_t)i * ch->stride;
}

/* Records that the chunk holds a result of lane (generation gen) in completion slot cidx. */
static inline void results_note(struct rchunk *ch, uint32_t lane, uint32_t gen, uint32_t cidx)
{
    struct rchunk_rec *last = ch->nrec ? &ch->rec[ch->nrec - 1] : 0;
    if (last && last->lane == lane && last->gen == gen) {
        if ((int32_t)(cidx - last->cidx) > 0)
            last->cidx = cidx; /* the lane's later slot: handed back after the earlier ones */
        return;
    }
    ch->rec[ch->nrec++] = (struct rchunk_rec){ lane, gen, cidx };
}

#endif
