/*
 * batcher.c - takes tasks from the lanes round-robin into a batch, runs the engine on it, and
 * writes each result into its agent's completion ring.
 *
 * Fairness: each visit to a lane takes at most a quantum of tasks, and the next sweep resumes
 * after the last lane visited, so one busy agent cannot starve the others.
 * Flow control: a task is only taken while its lane's completion ring has a free slot reserved
 * for its result, so a result is never held back and an agent that stops reading stalls only
 * itself (its submission ring fills and its own submits get -EAGAIN).
 * Copies: a task's payload is copied once out of the lane (it is untrusted and the agent may
 * reuse the slot), and its result once into the completion slot.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sup.h"

static void *host_alloc(struct sup *s, size_t bytes)
{
    if (s->engine_ops->host_alloc)
        return s->engine_ops->host_alloc(s->engine, bytes);
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

static void host_free(struct sup *s, void *p)
{
    if (p && s->engine_ops->host_free)
        s->engine_ops->host_free(s->engine, p);
    else
        free(p);
}

int batcher_init(struct sup *s)
{
    struct batcher *bt = &s->bat;
    uint32_t mb = s->cfg.max_batch;
    uint32_t stride = (s->cfg.max_payload + 63u) & ~63u;
    bt->b.in_stride = bt->b.out_stride = stride;
    bt->tasks = calloc(mb, sizeof *bt->tasks);
    bt->b.in = host_alloc(s, (size_t)mb * stride);
    bt->b.out = host_alloc(s, (size_t)mb * stride);
    bt->b.in_len = calloc(mb, sizeof(uint32_t));
    bt->b.out_len = calloc(mb, sizeof(uint32_t));
    bt->b.status = calloc(mb, sizeof(int32_t));
    if (!bt->tasks || !bt->b.in || !bt->b.out || !bt->b.in_len || !bt->b.out_len || !bt->b.status)
        return -ENOMEM;
    return 0;
}

void batcher_fini(struct sup *s)
{
    struct batcher *bt = &s->bat;
    free(bt->tasks);
    host_free(s, bt->b.in);
    host_free(s, bt->b.out);
    free(bt->b.in_len);
    free(bt->b.out_len);
    free(bt->b.status);
}

/* Takes up to `want` tasks from one lane into the batch. Returns the number taken. */
static uint32_t take_from_lane(struct sup *s, struct lane *l, uint32_t want)
{
    struct batcher *bt = &s->bat;
    int avail = ring_cons_avail(&l->sub);
    if (avail <= 0) {
        if (avail < 0)
            lane_cut(s, l, "submission ring index out of range");
        return 0;
    }
    /* Room for the results: completion slots free, minus those owed to tasks already taken. */
    int space = ring_prod_space(&l->cmp, l->owed + want);
    if (space < 0) {
        lane_cut(s, l, "completion ring index out of range");
        return 0;
    }
    uint32_t room = (uint32_t)space > l->owed + l->pending ? (uint32_t)space - l->owed - l->pending
                                                           : 0;
    uint32_t n = (uint32_t)avail;
    if (n > want)
        n = want;
    if (n > room)
        n = room;
    uint64_t now = 0;
    for (uint32_t k = 0; k < n; k++) {
        const struct oag_slot_hdr *slot = ring_slot(&l->sub, l->sub.mine + k);
        struct oag_slot_hdr h;
        memcpy(&h, slot, sizeof h); /* copy the header out once; validate the copy */
        if (h.len > l->hdr.max_payload) {
            lane_cut(s, l, "task length exceeds the lane's max payload");
            return k;
        }
        uint32_t i = bt->n;
        memcpy(bt->b.in + (size_t)i * bt->b.in_stride, slot + 1, h.len);
        bt->b.in_len[i] = h.len;
        bt->tasks[i].lane = l->id;
        bt->tasks[i].gen = l->generation;
        bt->tasks[i].ticket = h.ticket;
        bt->tasks[i].deadline_ns = 0;
        if (h.timeout_us) {
            /* The agent's submit time is its own CLOCK_MONOTONIC (same host); a lie only
             * changes when its own task times out. */
            bt->tasks[i].deadline_ns = h.submit_ns + (uint64_t)h.timeout_us * 1000u;
        }
        if (bt->n++ == 0) {
            if (!now)
                now = now_ns();
            bt->oldest_ns = now;
        }
    }
    if (n) {
        ring_cons_release(&l->sub, n);
        l->owed += n;
    }
    return n;
}

int batcher_collect(struct sup *s)
{
    struct batcher *bt = &s->bat;
    int total = 0;
    if (s->nactive == 0)
        return 0;
    uint32_t quantum = s->cfg.max_batch / s->nactive;
    if (quantum < 8)
        quantum = 8;
    /* Sweep until the batch is full or a whole sweep found nothing. */
    uint32_t idle = 0;
    while (bt->n < s->cfg.max_batch && s->nactive > 0 && idle < s->nactive) {
        if (bt->rr >= s->nactive)
            bt->rr = 0;
        struct lane *l = &s->lanes[s->active[bt->rr]];
        uint32_t want = s->cfg.max_batch - bt->n;
        if (want > quantum)
            want = quantum;
        uint32_t got = take_from_lane(s, l, want);
        bt->rr++;
        if (got) {
            total += (int)got;
            idle = 0;
        } else {
            idle++;
        }
    }
    return total;
}

int batcher_due(struct sup *s, uint64_t now)
{
    struct batcher *bt = &s->bat;
    if (bt->n == 0)
        return 0;
    if (bt->n >= s->cfg.max_batch || s->cfg.max_delay_us == 0 || s->draining)
        return 1;
    return now - bt->oldest_ns >= (uint64_t)s->cfg.max_delay_us * 1000u;
}

int lanes_have_work(struct sup *s)
{
    for (uint32_t i = 0; i < s->nactive; i++) {
        struct lane *l = &s->lanes[s->active[i]];
        /* Pairs with the release in the agent's ring_prod_publish(). */
        if (oag_load_acquire_u32(&l->sub.ctl->prod) != l->sub.mine)
            return 1;
    }
    return 0;
}

void batcher_flush(struct sup *s)
{
    struct batcher *bt = &s->bat;
    uint32_t n = bt->n;
    if (n == 0)
        return;
    bt->b.n = n;
    bt->b.whole_rc = 0;
    int rc = s->engine_ops->submit(s->engine, &bt->b);
    if (rc == 0 && s->engine_ops->reap) {
        /* An asynchronous engine: wait for this batch (one batch in flight for now). */
        struct oag_batch *done;
        while ((done = s->engine_ops->reap(s->engine)) == NULL)
            oag_cpu_relax();
        rc = done->whole_rc;
    } else if (rc == 0) {
        rc = bt->b.whole_rc;
    }
    uint64_t done_ns = now_ns();
    if (rc < 0) {
        log_warn("engine failed a batch of %u: %s", n, strerror(-rc));
        for (uint32_t i = 0; i < n; i++) {
            bt->b.status[i] = rc;
            bt->b.out_len[i] = 0;
        }
    }
    /* Write every result into its lane, then publish once per lane. */
    uint32_t touched[64];
    uint32_t ntouched = 0;
    int overflow = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct task *t = &bt->tasks[i];
        struct lane *l = &s->lanes[t->lane];
        if (!l->in_use || l->generation != t->gen) {
            bt->dropped++;
            continue;
        }
        struct oag_slot_hdr *slot = ring_slot(&l->cmp, l->cmp.mine + l->pending);
        uint32_t len = bt->b.out_len[i];
        if (t->deadline_ns && done_ns > t->deadline_ns) {
            bt->b.status[i] = -ETIMEDOUT; /* too late: the agent asked for an error instead */
            len = 0;
            bt->timed_out++;
        }
        if (len > l->hdr.max_payload) {
            len = 0;
            bt->b.status[i] = -EMSGSIZE;
        }
        struct oag_slot_hdr h = { .ticket = t->ticket, .len = len, .status = bt->b.status[i] };
        memcpy(slot, &h, sizeof h);
        memcpy(slot + 1, bt->b.out + (size_t)i * bt->b.out_stride, len);
        if (l->pending++ == 0) {
            if (ntouched < 64)
                touched[ntouched++] = l->id;
            else
                overflow = 1;
        }
        l->owed--;
        l->tasks_done++;
    }
    s->tasks_done += n;
    bt->batches++;
    bt->tasks_total += n;
    bt->n = 0;
    if (overflow) {
        for (uint32_t i = 0; i < s->nactive; i++) {
            struct lane *l = &s->lanes[s->active[i]];
            if (l->pending) {
                ring_prod_publish(&l->cmp, l->pending);
                l->pending = 0;
                if (ring_prod_needs_wake(&l->cmp))
                    lane_wake(s, l);
            }
        }
        return;
    }
    for (uint32_t k = 0; k < ntouched; k++) {
        struct lane *l = &s->lanes[touched[k]];
        if (!l->in_use || !l->pending)
            continue;
        ring_prod_publish(&l->cmp, l->pending);
        l->pending = 0;
        if (ring_prod_needs_wake(&l->cmp))
            lane_wake(s, l);
    }
}
