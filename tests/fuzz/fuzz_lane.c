/*
 * fuzz_lane.c - libFuzzer harness for lane records as the supervisor reads them: the ring
 * indices an agent publishes (src/shm/ring.h), the slot headers it writes, its state latch
 * (src/shm/latch.h), and the lane header check liboag applies (src/shm/lane.c).
 *
 * The lane is a heap block of exactly the geometry's size (so ASan flags any access outside
 * it). The input is a program: a geometry, then operations, each one byte opcode and its
 * operands, that interleave a hostile agent's writes (any prod/cons value, any slot header,
 * any latch words, all at any time) with the supervisor's reading steps, done with the same
 * functions and rules as src/scheduler/batcher.c: validate the peer index (ring_cons_avail /
 * ring_prod_space), copy each slot header once, refuse a length above max_payload, then read
 * the payload from the copy's length. After a refusal (-EPROTO or a bad length) the lane is
 * cut: nothing more is read from it. Invariants checked: a validated count never exceeds the
 * ring, every byte read lies inside the lane, latch_read returns 0 or -EAGAIN, and a lane
 * header that oag_lane_hdr_check accepts describes regions inside the mapping.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "shm/latch.h"
#include "shm/layout.h"
#include "shm/ring.h"

struct in {
    const uint8_t *p;
    size_t n;
};

static int take(struct in *in, void *out, size_t n)
{
    if (in->n < n) {
        memset(out, 0, n);
        in->n = 0;
        return -1;
    }
    memcpy(out, in->p, n);
    in->p += n;
    in->n -= n;
    return 0;
}

static void hdr_check(struct in *in)
{
    struct oag_lane_hdr h;
    uint64_t map_size;
    take(in, &h, sizeof h);
    take(in, &map_size, sizeof map_size);
    if (oag_lane_hdr_check(&h, map_size) != 0)
        return;
    /* Accepted: every region it names lies inside map_size and they do not overlap. */
    uint64_t sub_end = h.sub_off + (uint64_t)h.sub_slots * sizeof(struct oag_slot_hdr);
    uint64_t cmp_end = h.cmp_off + (uint64_t)h.cmp_slots * sizeof(struct oag_slot_hdr);
    uint64_t sub_pay_end = h.sub_pay_off + (uint64_t)h.sub_slots * h.pay_stride;
    uint64_t cmp_pay_end = h.cmp_pay_off + (uint64_t)h.cmp_slots * h.pay_stride;
    if (h.size > map_size || h.state_off < sizeof h ||
        h.state_off + sizeof(struct oag_latch_agent) > h.ctl_off ||
        h.ctl_off + sizeof(struct oag_lane_ctl) > h.sub_off || sub_end > h.cmp_off ||
        cmp_end > h.sub_pay_off || sub_pay_end > h.cmp_pay_off || cmp_pay_end > h.size ||
        h.pay_stride < h.max_payload)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct in in = { data, size };
    uint8_t g8[2];
    if (take(&in, g8, 2))
        return 0;
    if (g8[0] & 0x80) { /* the header-check mode */
        while (in.n > 0)
            hdr_check(&in);
        return 0;
    }
    struct oag_lane_geom g;
    uint32_t max_payload = 16u + (g8[0] & 0x7f) * 8u, slots = 2u << (g8[1] % 6);
    if (oag_lane_geom(&g, max_payload, slots) != 0)
        abort();
    uint8_t *lane = calloc(1, g.size);
    uint8_t *payload = malloc(max_payload);
    if (!lane || !payload)
        abort();
    struct ring_side sub, cmp;
    struct oag_lane_ctl *ctl = (struct oag_lane_ctl *)(lane + g.ctl_off);
    struct oag_latch_agent *la = (struct oag_latch_agent *)(lane + g.state_off);
    ring_side_init_idx(&sub, &ctl->sub_prod, &ctl->sub_cons, &ctl->sub_waiting, lane + g.sub_off,
                       lane + g.sub_pay_off, g.sub_slots, g.pay_stride);
    ring_side_init_idx(&cmp, &ctl->cmp_prod, &ctl->cmp_cons, &ctl->cmp_waiting, lane + g.cmp_off,
                       lane + g.cmp_pay_off, g.cmp_slots, g.pay_stride);
    int cut = 0;
    uint32_t owed = 0; /* taken from sub, result not yet produced */

    while (in.n > 0 && !cut) {
        uint8_t op;
        uint32_t v;
        take(&in, &op, 1);
        switch (op % 7) {
        case 0: /* agent: any submission prod */
            take(&in, &v, 4);
            oag_store_release_u32(&ctl->sub_prod, v);
            break;
        case 1: /* agent: any completion cons */
            take(&in, &v, 4);
            oag_store_release_u32(&ctl->cmp_cons, v);
            break;
        case 2: { /* agent: any slot header, into either ring */
            uint8_t which;
            struct oag_slot_hdr h;
            take(&in, &which, 1);
            take(&in, &h, sizeof h);
            struct ring_side *r = which & 1 ? &cmp : &sub;
            memcpy(ring_slot(r, which >> 1), &h, sizeof h);
            break;
        }
        case 3: { /* supervisor: intake (batcher.c intake_lane) */
            int avail = ring_cons_avail(&sub);
            if (avail < 0) {
                cut = 1;
                break;
            }
            if ((uint32_t)avail > slots)
                abort();
            for (int k = 0; k < avail; k++) {
                struct oag_slot_hdr h;
                const uint8_t *slot = (const uint8_t *)ring_slot(&sub, sub.mine + (uint32_t)k);
                memcpy(&h, slot, sizeof h); /* copied once; only the copy is used */
                if (h.len > max_payload) {
                    cut = 1;
                    break;
                }
                memcpy(payload, ring_payload(&sub, sub.mine + (uint32_t)k), h.len);
                owed++;
            }
            if (!cut)
                ring_cons_release(&sub, (uint32_t)avail);
            break;
        }
        case 4: { /* supervisor: publish results (batcher.c, completion side) */
            int space = ring_prod_space(&cmp, owed ? owed : 1);
            if (space < 0) {
                cut = 1;
                break;
            }
            if ((uint32_t)space > slots)
                abort();
            uint32_t n = owed < (uint32_t)space ? owed : (uint32_t)space;
            for (uint32_t k = 0; k < n; k++) {
                uint8_t *slot = (uint8_t *)ring_slot(&cmp, cmp.mine + k);
                struct oag_slot_hdr h = { .ticket = k, .len = max_payload };
                memcpy(slot, &h, sizeof h);
                memcpy(ring_payload(&cmp, cmp.mine + k), payload, max_payload);
            }
            ring_prod_publish(&cmp, n);
            owed -= n;
            (void)ring_prod_needs_wake(&cmp);
            break;
        }
        case 5: { /* agent: any latch sequence and words; supervisor reads the state */
            uint8_t w;
            uint64_t word;
            take(&in, &v, 4);
            take(&in, &w, 1);
            take(&in, &word, 8);
            oag_store_relaxed_u32(&la->seq, v);
            oag_store_relaxed_u64(&la->rec[w & 1][(w >> 1) % 8], word);
            struct oag_agent_state st;
            int rc = latch_read(&la->seq, la->rec[0], sizeof st / 8, &st, 8);
            if (rc != 0 && rc != -EAGAIN)
                abort();
            break;
        }
        case 6: { /* supervisor about to sleep: declares it, re-checks the ring */
            int n = ring_cons_prepare_sleep(&sub);
            if (n < 0)
                cut = 1;
            else if ((uint32_t)n > slots)
                abort();
            ring_cons_awake(&sub);
            break;
        }
        }
    }
    free(payload);
    free(lane);
    return 0;
}
