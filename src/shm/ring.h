/*
 * ring.h - single-producer single-consumer ring of fixed-size slots in shared memory.
 *
 * Each side keeps private copies of the indices it owns (struct ring_side) and publishes them;
 * the index it reads from the peer is untrusted and validated before use: a peer index that
 * would make the ring hold more than `slots` entries, or that moves backwards, is corruption
 * (-EPROTO), and the caller cuts the peer off. A slot is only reused after the consumer's
 * release of it is seen, so a peer that dies half-way through writing a slot leaves nothing
 * published: the partial slot is simply never committed.
 *
 * Batching: reserve/peek work on many slots at once, and one publish covers them all.
 *
 * Wake protocol (ring ctl `waiting`, one eventfd per direction):
 *
 *   consumer (about to sleep)            producer (after filling slots)
 *   -------------------------            ------------------------------
 *   store waiting = 1   (seq_cst)        store prod = p + n   (release)
 *   fence seq_cst                        fence seq_cst
 *   load prod: empty? -> sleep on efd    load waiting: 1? -> xchg(waiting, 0) == 1 ? write(efd)
 *   ...woken or not: store waiting = 0
 *
 * With both fences, at least one side sees the other's store: either the consumer sees the new
 * prod and does not sleep, or the producer sees waiting == 1 and writes the eventfd. The xchg makes
 * several producers' attempts (or repeated publishes) coalesce into one eventfd write per sleep.
 * eventfd counts, so a write that lands before the read is not lost; EAGAIN counts as success.
 */
#ifndef OAG_SHM_RING_H
#define OAG_SHM_RING_H

#include <errno.h>
#include <stdint.h>

#include "atomic.h"
#include "layout.h"

struct ring_side {
    oag_atomic_u32 *prod;    /* the ring's indices in shared memory (a lane groups them by */
    oag_atomic_u32 *cons;    /* writer: layout.h, struct oag_lane_ctl) */
    oag_atomic_u32 *waiting;
    uint8_t *slots;       /* base of the slot header array */
    uint8_t *pay;         /* base of the payload array */
    uint32_t mask;        /* slots - 1 */
    uint32_t pay_stride;
    uint32_t mine;        /* private copy of the index this side owns (prod or cons) */
    uint32_t peer;        /* last validated copy of the peer's index */
};

static inline void ring_side_init_idx(struct ring_side *r, oag_atomic_u32 *prod,
                                      oag_atomic_u32 *cons, oag_atomic_u32 *waiting,
                                      uint8_t *hdrs, uint8_t *pay, uint32_t nslots,
                                      uint32_t pay_stride)
{
    r->prod = prod;
    r->cons = cons;
    r->waiting = waiting;
    r->slots = hdrs;
    r->pay = pay;
    r->mask = nslots - 1;
    r->pay_stride = pay_stride;
    r->mine = 0;
    r->peer = 0;
}

/* A lane's two rings (its header validated), both sides' view: indices in its oag_lane_ctl. */
static inline void ring_lane_init(struct ring_side *sub, struct ring_side *cmp, uint8_t *lane,
                                  const struct oag_lane_hdr *h)
{
    struct oag_lane_ctl *c = (struct oag_lane_ctl *)(lane + h->ctl_off);
    ring_side_init_idx(sub, &c->sub_prod, &c->sub_cons, &c->sub_waiting, lane + h->sub_off,
                       lane + h->sub_pay_off, h->sub_slots, h->pay_stride);
    ring_side_init_idx(cmp, &c->cmp_prod, &c->cmp_cons, &c->cmp_waiting, lane + h->cmp_off,
                       lane + h->cmp_pay_off, h->cmp_slots, h->pay_stride);
}

/* A ring whose indices are one struct oag_ring_ctl. */
static inline void ring_side_init(struct ring_side *r, struct oag_ring_ctl *ctl, uint8_t *hdrs,
                                  uint8_t *pay, uint32_t nslots, uint32_t pay_stride)
{
    ring_side_init_idx(r, &ctl->prod, &ctl->cons, &ctl->waiting, hdrs, pay, nslots, pay_stride);
}

/* Slot idx's header and payload (idx is a free-running index). */
static inline struct oag_slot_hdr *ring_slot(const struct ring_side *r, uint32_t idx)
{
    return (struct oag_slot_hdr *)(r->slots + (uint64_t)(idx & r->mask) *
                                                  sizeof(struct oag_slot_hdr));
}

static inline uint8_t *ring_payload(const struct ring_side *r, uint32_t idx)
{
    return r->pay + (uint64_t)(idx & r->mask) * r->pay_stride;
}

/* ---- producer side --------------------------------------------------------------------- */

/* Slots the producer may fill now (refreshing the consumer index when needed, up to `want`).
 * Returns the count (0: full) or -EPROTO if the consumer's published index is impossible. */
static inline int ring_prod_space(struct ring_side *r, uint32_t want)
{
    uint32_t cap = r->mask + 1;
    uint32_t free = cap - (r->mine - r->peer);
    if (free >= want)
        return (int)free;
    /* Pairs with the release in ring_cons_release(): slots up to cons are no longer read. */
    uint32_t cons = oag_load_acquire_u32(r->cons);
    uint32_t used = r->mine - cons;
    if (used > cap || (uint32_t)(cons - r->peer) > cap)
        return -EPROTO;
    r->peer = cons;
    return (int)(cap - used);
}

/* Makes n filled slots visible to the consumer. */
static inline void ring_prod_publish(struct ring_side *r, uint32_t n)
{
    r->mine += n;
    /* Pairs with the acquire in ring_cons_avail(): slot contents are visible before prod. */
    oag_store_release_u32(r->prod, r->mine);
}

/* ring_prod_needs_wake() without its fence, for a producer that publishes several rings, then
 * fences once (oag_fence_seqcst()) and asks each: every ring's publication still precedes the
 * fence, which precedes its `waiting` load, as the wake protocol needs. */
static inline int ring_prod_waiter(struct ring_side *r)
{
    if (oag_load_relaxed_u32(r->waiting) == 0)
        return 0;
    return oag_xchg_u32(r->waiting, 0) != 0;
}

/* After publishing: returns 1 if the consumer declared it sleeps and must be woken (the caller
 * writes the eventfd), 0 otherwise. See the wake protocol above. */
static inline int ring_prod_needs_wake(struct ring_side *r)
{
    oag_fence_seqcst();
    return ring_prod_waiter(r);
}

/* ---- consumer side --------------------------------------------------------------------- */

/* Slots ready to read. Returns the count or -EPROTO if the producer's index is impossible. */
static inline int ring_cons_avail(struct ring_side *r)
{
    /* Pairs with the release in ring_prod_publish(). */
    uint32_t prod = oag_load_acquire_u32(r->prod);
    uint32_t avail = prod - r->mine;
    if (avail > r->mask + 1 || (uint32_t)(prod - r->peer) > r->mask + 1)
        return -EPROTO;
    r->peer = prod;
    return (int)avail;
}

/* Hands n read slots back to the producer. */
static inline void ring_cons_release(struct ring_side *r, uint32_t n)
{
    r->mine += n;
    /* Pairs with the acquire in ring_prod_space(): we are done reading these slots. */
    oag_store_release_u32(r->cons, r->mine);
}

/* Consumer about to sleep: declares it and re-checks. Returns >0 if slots arrived meanwhile (do
 * not sleep; `waiting` has been cleared), 0 if it is safe to sleep on the eventfd, or -EPROTO. */
static inline int ring_cons_prepare_sleep(struct ring_side *r)
{
    oag_store_seqcst_u32(r->waiting, 1);
    oag_fence_seqcst();
    int n = ring_cons_avail(r);
    if (n != 0)
        oag_store_relaxed_u32(r->waiting, 0); /* relaxed: only a hint to the producer */
    return n;
}

static inline void ring_cons_awake(struct ring_side *r)
{
    oag_store_relaxed_u32(r->waiting, 0); /* relaxed: a stale 1 costs one spare wake-up */
}

#endif
