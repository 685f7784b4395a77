/*
 * results.c - the shared result area's chunks (see results.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "inst.h"
#include "log.h"
#include "results.h"
#include "sup.h"

static uint64_t chunk_bytes(const struct sup_config *c)
{
    return results_chunk_bytes(c->max_batch, c->max_payload);
}

uint64_t results_area_bytes(const struct sup_config *c)
{
    return (uint64_t)c->shared_results * chunk_bytes(c);
}

int results_open(struct sup *s)
{
    struct results *r = &s->res;
    const struct sup_config *c = &s->cfg;
    if (!c->shared_results || !s->region->hdr.results_size)
        return 0;
    if (c->copy_rows || !s->engine_ops->host_register) {
        log_warn("--shared-results: unused (%s)", c->copy_rows ? "--copy-rows" :
                 "this engine cannot write results in place");
        return 0;
    }
    r->chunk = calloc(c->shared_results, sizeof *r->chunk);
    if (!r->chunk)
        return -ENOMEM;
    for (uint32_t i = 0; i < c->shared_results; i++) {
        r->chunk[i].rec = calloc(c->max_batch, sizeof *r->chunk[i].rec);
        if (!r->chunk[i].rec) {
            results_close(s);
            return -ENOMEM;
        }
        r->chunk[i].off = (uint64_t)i * chunk_bytes(c);
    }
    r->off = s->region->hdr.results_off;
    r->size = s->region->hdr.results_size;
    r->base = (uint8_t *)s->region + r->off;
    r->chunk_bytes = chunk_bytes(c);
    r->row_cap = (uint32_t)results_row_cap(c->max_payload);
    int rc = engines_host_register(s, r->base, r->size);
    if (rc) {
        log_warn("--shared-results: the area could not be registered with the engine (%s); "
                 "results go into the lanes", strerror(-rc));
        results_close(s);
        return 0;
    }
    r->registered = 1;
    r->n = c->shared_results;
    log_info("shared result area: %u chunks of %llu KB (a batch of %u results each)", r->n,
             (unsigned long long)(r->chunk_bytes >> 10), c->max_batch);
    return 0;
}

void results_close(struct sup *s)
{
    struct results *r = &s->res;
    if (r->registered)
        s->engine_ops->host_unregister(r->base);
    r->registered = 0;
    if (r->chunk)
        for (uint32_t i = 0; i < s->cfg.shared_results; i++)
            free(r->chunk[i].rec);
    free(r->chunk);
    r->chunk = NULL;
    r->n = 0;
    r->base = NULL;
}

/* Whether every result recorded in ch has been handed back (or its lane has gone). The scan
 * only moves forward: each record is looked at until it is found handed back, once. */
static int chunk_free(struct sup *s, struct rchunk *ch)
{
    while (ch->scan < ch->nrec) {
        const struct rchunk_rec *rc = &ch->rec[ch->scan];
        const struct lane *l = &s->lanes[rc->lane];
        if (l->in_use && l->generation == rc->gen) {
            /* The agent's consumer index, untrusted: one that lies only hands its own results
             * over early. Pairs with the release in the agent's ring_cons_release(): what it
             * read of the result was read before. */
            uint32_t cons = oag_load_acquire_u32(l->cmp.cons);
            if ((int32_t)(cons - rc->cidx) <= 0)
                return 0;
        }
        ch->scan++;
    }
    return 1;
}

struct rchunk *results_take(struct shard *sh, uint32_t out_row)
{
    struct sup *s = sh->s;
    struct results *r = &s->res;
    if (r->n <= sh->id)
        return NULL;
    uint32_t stride = out_row ? (out_row % 64 ? (out_row + 63u) & ~63u : out_row) : r->row_cap;
    if (stride > r->row_cap)
        return NULL;
    /* The shard's chunks are id, id + K, id + 2K ...: only its thread lends them, and only its
     * lanes' results are recorded in them. In turn from the one lent longest ago, most likely
     * handed back by now: usually the first one looked at is free, and a record is looked at
     * until found handed back. */
    uint32_t mine = (r->n - sh->id + s->nsh - 1) / s->nsh;
    for (uint32_t k = 0; k < mine; k++) {
        uint32_t j = sh->res_next + k < mine ? sh->res_next + k : sh->res_next + k - mine;
        struct rchunk *ch = &r->chunk[sh->id + j * s->nsh];
        if (!ch->busy && chunk_free(s, ch)) {
            ch->busy = 1;
            ch->nrec = ch->scan = 0;
            ch->stride = stride;
            sh->res_next = j + 1 < mine ? j + 1 : 0;
            return ch;
        }
    }
    sh->res_fallbacks++;
    return NULL;
}
