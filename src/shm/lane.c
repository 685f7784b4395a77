/* lane.c - lane geometry and header validation (shared by the supervisor and liboag). */
#include <errno.h>

#include "layout.h"

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

int oag_lane_geom(struct oag_lane_geom *g, uint32_t max_payload, uint32_t slots)
{
    if (max_payload == 0 || max_payload > OAG_MAX_PAYLOAD_LIMIT)
        return -EINVAL;
    if (slots < 2 || slots > OAG_MAX_SLOTS || (slots & (slots - 1)) != 0)
        return -EINVAL;
    g->max_payload = max_payload;
    g->pay_stride = (uint32_t)align_up(max_payload, OAG_CACHELINE);
    g->sub_slots = slots;
    g->cmp_slots = slots;
    g->state_off = OAG_LANE_STATE_OFF;
    g->ctl_off = (uint32_t)align_up(g->state_off + sizeof(struct oag_latch_agent), OAG_CACHELINE);
    g->sub_off = align_up(g->ctl_off + sizeof(struct oag_lane_ctl), OAG_CACHELINE);
    g->cmp_off = g->sub_off + (uint64_t)g->sub_slots * sizeof(struct oag_slot_hdr);
    g->sub_pay_off = align_up(g->cmp_off + (uint64_t)g->cmp_slots * sizeof(struct oag_slot_hdr),
                              4096);
    g->cmp_pay_off = align_up(g->sub_pay_off + (uint64_t)g->sub_slots * g->pay_stride, 4096);
    g->size = align_up(g->cmp_pay_off + (uint64_t)g->cmp_slots * g->pay_stride, 4096);
    return 0;
}

int oag_lane_hdr_check(const struct oag_lane_hdr *h, uint64_t map_size)
{
    struct oag_lane_geom g;
    if (h->magic != OAG_LANE_MAGIC || h->abi != OAG_ABI_VERSION)
        return -EPROTO;
    if (oag_lane_geom(&g, h->max_payload, h->sub_slots) != 0 || h->cmp_slots != h->sub_slots)
        return -EPROTO;
    /* Everything must be exactly what the geometry derives: no offset is taken on trust. */
    if (h->pay_stride != g.pay_stride || h->state_off != g.state_off ||
        h->ctl_off != g.ctl_off || h->pad_ctl != 0 ||
        h->sub_off != g.sub_off || h->cmp_off != g.cmp_off ||
        h->sub_pay_off != g.sub_pay_off || h->cmp_pay_off != g.cmp_pay_off ||
        h->size != g.size || h->size > map_size)
        return -EPROTO;
    return 0;
}
