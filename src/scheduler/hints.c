/*
 * hints.c - see hints.h.
 */
#include <unistd.h>

#include "hints.h"
#include "log.h"
#include "model/model.h"
#include "sup.h"

#define L2_FALLBACK (1ull << 20) /* when the C library cannot tell */

void hints_init(struct sup *s)
{
    struct hints *h = &s->hints;
    long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    h->l2 = l2 > 0 ? (uint64_t)l2 : L2_FALLBACK;
    h->cpus = cpus > 0 ? (uint32_t)cpus : 1;
    h->on = s->cfg.stream_rows == 1;
    h->why = s->cfg.stream_rows == 1 ? STREAM_FORCED_ON
             : s->cfg.stream_rows == 0 ? STREAM_FORCED_OFF : STREAM_NO_AGENTS;
    oag_store_relaxed_u32(&s->region->hdr.hints, h->on ? OAG_HINT_STREAM_ROWS : 0);
}

/* Bytes of one task's input row: the model's, else the largest payload. */
static uint64_t row_bytes(const struct sup *s)
{
    const struct oag_model *m = engines_model(s);
    return m ? (uint64_t)m->input_dim * 4u : s->cfg.max_payload;
}

void hints_tick(struct sup *s, uint64_t now)
{
    struct hints *h = &s->hints;
    if (now < h->next_ns)
        return;
    h->next_ns = now + HINTS_PERIOD_NS;
    /* Each agent's tasks in flight: submitted and not yet taken back (its own indices, read
     * without trust: only a hint depends on them, each clamped to the ring). The rows it wrote
     * last, for the device to read: what it had in its core's cache. */
    uint64_t rows = 0;
    int by_pointer = 0;
    for (uint32_t i = 0; i < s->nactive; i++) {
        const struct lane *l = &s->lanes[s->active[i]];
        uint32_t out = oag_load_relaxed_u32(l->sub.prod) - oag_load_relaxed_u32(l->cmp.cons);
        rows += out <= l->sub.mask + 1 ? out : l->sub.mask + 1;
        by_pointer |= l->mem && l->mem->registered;
    }
    /* A moving average over the last few samples (x 16 fixed point), from the first one with
     * agents. */
    if (s->nactive == 0)
        h->samples = 0;
    h->avg_rows = h->samples++ ? h->avg_rows - h->avg_rows / 4 + rows * 4 : rows * 16;
    uint32_t writers = s->nactive < h->cpus ? s->nactive : h->cpus;
    h->per_cpu = writers ? h->avg_rows / 16 * row_bytes(s) / writers : 0;
    if (s->cfg.stream_rows >= 0)
        return; /* --stream-rows on|off: measured for status only */
    enum stream_why why;
    int on;
    if (!s->engine_ops || !s->engine_ops->bus_reads) {
        on = 0;
        why = STREAM_CPU_READS;
    } else if (s->cfg.copy_rows || (s->nactive && !by_pointer)) {
        on = 0;
        why = STREAM_COPIED;
    } else {
        on = stream_rows_decide(h->on, h->per_cpu, h->l2, s->nactive, h->cpus, &why);
    }
    if (on == h->on)
        h->why = why; /* the advice stands, for this reason now */
    /* Changes after HINTS_AGREE measurements in a row say so: one burst neither turns the
     * advice on nor off. */
    h->agree = on == h->on ? 0 : h->agree + 1;
    if (h->agree < HINTS_AGREE)
        return;
    h->agree = 0;
    h->on = on;
    h->why = why;
    oag_store_relaxed_u32(&s->region->hdr.hints, on ? OAG_HINT_STREAM_ROWS : 0);
    log_info("agents %s streaming stores for rows: %s (%llu KB in flight per core, L2 %llu KB, "
             "%u agents, %u CPUs)", on ? "now use" : "no longer use", hints_why(why),
             (unsigned long long)(h->per_cpu >> 10), (unsigned long long)(h->l2 >> 10),
             s->nactive, h->cpus);
}

const char *hints_why(enum stream_why why)
{
    switch (why) {
    case STREAM_FORCED_ON: return "--stream-rows on";
    case STREAM_FORCED_OFF: return "--stream-rows off";
    case STREAM_CPU_READS: return "the engine reads rows with the CPU";
    case STREAM_COPIED: return "rows are copied into batch buffers";
    case STREAM_NO_AGENTS: return "no agents";
    case STREAM_CROWDED: return "more than 8 agents per CPU";
    case STREAM_IN_CACHE: return "the rows in flight fit in the writers' L2";
    case STREAM_OUT_OF_CACHE: return "the rows in flight overflow the writers' L2";
    }
    return "?";
}
