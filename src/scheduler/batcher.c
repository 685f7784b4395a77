/*
 * batcher.c - the dynamic batcher between the lanes and the engine instances.
 *
 * Intake: tasks are taken from the lanes round-robin, a quantum per lane per sweep, into FIFO
 * queues per priority level. With --intake-settle (auto: where the engine reads rows in place
 * across a bus), a lane whose submission index moved since the last visit and holds less than
 * a quantum (and SETTLE_BYTES) is left to the next visit: an agent submits a burst a task at a
 * time, and taken mid-burst its rows would reach the device as two runs (two copy-engine
 * transfers, or a gather kernel for the short one) and its results come back in two pieces,
 * which it then resubmits as two bursts again: on the H100 machine, 768-wide rows, 512 agents,
 * the share of rows the SMs gathered went from 9-33 % to under 1 % and tasks/s up 4-11 %
 * (docs/BENCHMARKS.md, session 13). The shard does not sleep while such a lane waits
 * (lanes_have_work()), and a lane whose agent never pauses waits SETTLE_MAX_NS at most.
 * The queues are bounded overall by --max-queue; when full, intake stops and the region's busy
 * flag makes agents' submits fail at once with -EBUSY. Only the validated header is copied at
 * intake; the payload stays in the lane's slot until the task enters a batch, where it is
 * copied exactly once, into the engine's (pinned) batch buffer. Because tasks of different
 * priorities leave a lane out of order, each lane keeps a flag per slot and hands slots back to
 * the agent in ring order as soon as a prefix has been copied out.
 *
 * Batch formation (Triton's semantics): a batch leaves when max_batch tasks wait, or when the
 * largest preferred size that fits is reached, or when the oldest task has waited max_delay_us
 * (0: at once); highest priority first, FIFO within a level.
 *
 * Deadlines: a queued task whose deadline passes is completed with -ETIMEDOUT by the loop's
 * timer, whatever the engine is doing; a task whose batch finishes after its deadline also
 * reports -ETIMEDOUT.
 *
 * Flow control: a task is only taken while its lane's completion ring has a slot reserved for
 * its result (lane->owed), so results are never held back and an agent that stops reading
 * stalls only itself. In in-order mode the result of submission index i goes to completion slot
 * i (the reservation guarantees it is free); otherwise a result takes the next completion slot
 * (lane->cmp_assign) when it is written, or, for a row the engine handles by pointer, when its
 * batch leaves. Either way the ring is published over the prefix of written slots: ordering
 * costs no copy.
 *
 * Rows by pointer (engines with host_register, lanes registered with it, unless --copy-rows):
 * the engine reads the task's input in the agent's submission slot and writes its result
 * straight into the completion slot reserved for it; the supervisor copies no payload at all,
 * only writes the 32-byte result header when the batch is back. The submission slot is handed
 * back only then, and the lane's memory stays mapped while any such row is out (lane_mem).
 * The price: in any-order mode a result written later (a deadline expiring in the queue) is
 * published after that lane's rows in the engine, at most one batch time later.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inst.h"
#include "log.h"
#include "metrics.h"
#include "sup.h"

#define NIL UINT32_MAX
#define F_TAKEN 1u   /* submission slot copied out (or expired): may be handed back */
#define F_READY 2u   /* completion slot written, not yet published (indexed by completion slot) */
#define NO_SHARED UINT64_MAX /* lane_put_result: the result is not in the shared result area */
#define SETTLE_BYTES (256u << 10) /* --intake-settle: bursts up to this many bytes wait whole */
#define SETTLE_MAX_NS 50000ull    /* ... for this long at most */

static uint32_t prio_of(uint8_t p) { return p < OAG_PRIORITY_LEVELS ? p : OAG_PRIORITY_LEVELS - 1; }

int batcher_init(struct shard *sh)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    /* --max-queue is split between the shards (each takes its lanes' tasks on its own). */
    bt->pool_cap = (s->cfg.max_queue + s->nsh - 1) / s->nsh;
    bt->pool = calloc(bt->pool_cap, sizeof *bt->pool);
    bt->free_idx = calloc(bt->pool_cap, sizeof *bt->free_idx);
    if (!bt->pool || !bt->free_idx)
        return -ENOMEM;
    for (uint32_t i = 0; i < bt->pool_cap; i++)
        bt->free_idx[i] = bt->pool_cap - 1 - i; /* entry 0 on top */
    for (int p = 0; p < OAG_PRIORITY_LEVELS; p++)
        bt->qhead[p] = bt->qtail[p] = NIL;
    bt->next_deadline = UINT64_MAX;
    bt->jobs = calloc(s->cfg.max_batch, sizeof *bt->jobs);
    bt->trace = calloc(TRACE_CAP, sizeof *bt->trace);
    if (!bt->jobs || !bt->trace)
        return -ENOMEM;
    int nt = s->cfg.copy_threads;
    if (nt < 0) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        nt = cpus >= 8 ? (int)(cpus / 4 < 8 ? cpus / 4 : 8) : 0;
    }
    bt->copy_init = 1; /* copypool_fini undoes a partial init too */
    return copypool_init(&bt->copy, nt, 256 * 1024);
}

void batcher_fini(struct shard *sh)
{
    if (sh->bat.copy_init)
        copypool_fini(&sh->bat.copy);
    sh->bat.copy_init = 0;
    free(sh->bat.trace);
    free(sh->bat.jobs);
    free(sh->bat.pool);
    free(sh->bat.free_idx);
    sh->bat.pool = NULL;
    sh->bat.free_idx = NULL;
    sh->bat.jobs = NULL;
    sh->bat.trace = NULL;
}

/* Queues one row copy for the current batch; flush_copies() runs them. */
static void add_copy(struct batcher *bt, void *dst, const void *src, size_t len)
{
    if (!len)
        return;
    bt->jobs[bt->njobs++] = (struct copy_job){ .dst = dst, .src = src, .len = len };
    bt->job_bytes += len;
}

static void flush_copies(struct batcher *bt)
{
    copypool_run(&bt->copy, bt->jobs, bt->njobs, bt->job_bytes);
    bt->njobs = 0;
    bt->job_bytes = 0;
}

/* ---- batch slots (per engine instance) ------------------------------------------------- */

static void *host_alloc(struct inst *in, size_t bytes)
{
    if (in->ops->host_alloc)
        return in->ops->host_alloc(in->e, bytes);
    return aligned_alloc(64, (bytes + 63) & ~(size_t)63);
}

static void host_free(struct inst *in, void *p)
{
    if (p && in->ops->host_free)
        in->ops->host_free(in->e, p);
    else
        free(p);
}

void bslot_free(struct sup *s, struct bslot *bs)
{
    (void)s;
    if (!bs)
        return;
    host_free(bs->inst, bs->b.in);
    host_free(bs->inst, bs->b.out);
    free(bs->tasks);
    free(bs->b.in_ptr);
    free(bs->b.out_ptr);
    free(bs->b.in_len);
    free(bs->b.out_len);
    free(bs->b.status);
    free(bs);
}

struct bslot *bslot_new(struct sup *s, struct inst *in)
{
    uint32_t mb = s->cfg.max_batch;
    struct bslot *bs = calloc(1, sizeof *bs);
    if (!bs)
        return NULL;
    bs->inst = in;
    uint32_t in_stride = (s->cfg.max_payload + 63u) & ~63u;
    uint32_t out_row = in->ops->out_row_bytes ? in->ops->out_row_bytes(in->e) : 0;
    uint32_t out_stride = out_row ? ((out_row + 63u) & ~63u) : in_stride;
    bs->b.in_stride = in_stride;
    bs->b.out_stride = out_stride;
    bs->b.in = host_alloc(in, (size_t)mb * in_stride);
    bs->b.out = host_alloc(in, (size_t)mb * out_stride);
    bs->tasks = calloc(mb, sizeof *bs->tasks);
    bs->b.in_len = calloc(mb, sizeof(uint32_t));
    bs->b.out_len = calloc(mb, sizeof(uint32_t));
    bs->b.status = calloc(mb, sizeof(int32_t));
    bs->b.user = bs;
    int by_ptr = in->ops->host_register && !s->cfg.copy_rows;
    if (by_ptr) {
        bs->b.in_ptr = calloc(mb, sizeof *bs->b.in_ptr);
        bs->b.out_ptr = calloc(mb, sizeof *bs->b.out_ptr);
    }
    if (!bs->b.in || !bs->b.out || !bs->tasks || !bs->b.in_len || !bs->b.out_len ||
        !bs->b.status || (by_ptr && (!bs->b.in_ptr || !bs->b.out_ptr))) {
        bslot_free(s, bs);
        return NULL;
    }
    return bs;
}

/* ---- per-lane helpers ------------------------------------------------------------------ */

/* Hands the copied-out prefix of the submission ring back to the agent. */
static void lane_release_prefix(struct lane *l)
{
    uint32_t n = 0, idx = l->sub.mine;
    while (idx != l->intake && (l->flags[idx & l->sub.mask] & F_TAKEN)) {
        l->flags[idx & l->sub.mask] &= (uint8_t)~F_TAKEN;
        idx++;
        n++;
    }
    if (n)
        ring_cons_release(&l->sub, n);
}

static void lane_mark_touched(struct shard *sh, struct lane *l)
{
    if (!l->touched) {
        l->touched = 1;
        sh->bat.touched[sh->bat.ntouched++] = l->id;
    }
}

/* The completion slot for the result of submission sub_idx (taking it from lane->owed). */
static uint32_t lane_assign(struct sup *s, struct lane *l, uint32_t sub_idx)
{
    l->owed--;
    return s->cfg.in_order ? sub_idx : l->cmp_assign++;
}

/* Completion slots reserved from cmp.mine on: written or to be written, not yet published. */
static uint32_t lane_reserved(struct sup *s, struct lane *l)
{
    if (s->cfg.in_order)
        return l->intake - l->cmp.mine;
    return l->owed + (l->cmp_assign - l->cmp.mine);
}

/* Writes one result into the lane's completion ring (not yet published): into completion slot
 * cidx if the task has one already (rows by pointer: the engine wrote the payload there, data
 * is NULL), else into the one it is given now. */
static uint32_t lane_put_result(struct shard *sh, struct lane *l, uint32_t sub_idx, uint32_t cidx,
                                uint64_t ticket, int32_t status, const void *data, uint32_t len,
                                uint64_t shared_off)
{
    struct sup *s = sh->s;
    if (cidx == NIL)
        cidx = lane_assign(s, l, sub_idx);
    struct oag_slot_hdr *slot = ring_slot(&l->cmp, cidx);
    /* Field by field, straight into the slot: a header built on the stack and copied with
     * 16-byte loads made each copy wait (store forwarding fails across the narrower stores)
     * until the store buffer drained, with the previous results' misses in it. */
    slot->ticket = ticket;
    slot->len = len;
    slot->status = status;
    slot->timeout_us = 0;
    slot->priority = 0;
    slot->flags = shared_off != NO_SHARED ? OAG_CMP_SHARED : 0;
    memset(slot->rsvd, 0, sizeof slot->rsvd);
    slot->result_off = shared_off != NO_SHARED ? shared_off : 0;
    if (len && data)
        add_copy(&sh->bat, ring_payload(&l->cmp, cidx), data, len); /* copied before the lane
                                                                     is published */
    l->flags[cidx & l->cmp.mask] |= F_READY;
    l->tasks_done++;
    sh->tasks_done++;
    if (status == 0)
        sh->bat.ok++;
    else
        sh->bat.failed++;
    lane_mark_touched(sh, l);
    return cidx;
}

/* Records a finished task's timings (its publication time is set by publish_touched). */
static void trace_add(struct batcher *bt, uint32_t lane, uint32_t gen, uint64_t ticket,
                      uint64_t submit_ns, uint64_t enq_ns, uint64_t start_ns, uint64_t done_ns,
                      uint32_t batch, int32_t status)
{
    struct trace_rec *r = &bt->trace[bt->trace_n++ % TRACE_CAP];
    *r = (struct trace_rec){ .lane = lane, .gen = gen, .ticket = ticket, .submit_ns = submit_ns,
                             .enq_ns = enq_ns, .start_ns = start_ns, .done_ns = done_ns,
                             .batch = batch, .status = status };
}

#define PUB_AHEAD 8 /* lines fetched this many lanes or tasks ahead of their use */

/* Publishes what was written to each touched lane, waking agents that sleep. */
static void publish_touched(struct shard *sh)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    flush_copies(bt);
    /* Results are visible to their agents from here on: stamp the traces written since. */
    uint64_t pub = now_ns();
    if (bt->trace_n - bt->trace_unpub > TRACE_CAP)
        bt->trace_unpub = bt->trace_n - TRACE_CAP;
    for (; bt->trace_unpub < bt->trace_n; bt->trace_unpub++)
        bt->trace[bt->trace_unpub % TRACE_CAP].pub_ns = pub;
    /* Publish every touched lane, then one fence, then look which agents sleep: a fence per
     * lane waited each time for the store buffer to drain, the index's miss (a line its agent
     * reads) with it. The index and `waiting` lines are fetched a few lanes ahead. */
    uint32_t nwake = 0, npub = 0;
    for (uint32_t k = 0; k < bt->ntouched; k++) {
        if (k + PUB_AHEAD < bt->ntouched) {
            const struct lane *la = &s->lanes[bt->touched[k + PUB_AHEAD]];
            if (la->in_use) {
                oag_prefetch_w(la->cmp.prod);
                __builtin_prefetch(la->cmp.waiting);
            }
        }
        struct lane *l = &s->lanes[bt->touched[k]];
        l->touched = 0;
        if (!l->in_use)
            continue;
        uint32_t n = 0, idx = l->cmp.mine;
        while (l->flags[idx & l->cmp.mask] & F_READY) {
            l->flags[idx & l->cmp.mask] &= (uint8_t)~F_READY;
            idx++;
            n++;
        }
        if (n) {
            ring_prod_publish(&l->cmp, n);
            bt->touched[npub++] = l->id; /* k >= npub: the slot is read already */
        }
    }
    if (npub)
        oag_fence_seqcst();
    for (uint32_t k = 0; k < npub; k++) {
        struct lane *l = &s->lanes[bt->touched[k]];
        if (ring_prod_waiter(&l->cmp))
            bt->wake_fd[nwake++] = l->cmp_efd;
    }
    bt->ntouched = 0;
    /* A few wake-ups are written here (a hand-off would only add latency); a burst goes to the
     * waker thread, so the loop goes on batching while they are written. */
    bt->wakes += nwake;
    if (nwake <= 2 || sh->wakers.n == 0) {
        for (uint32_t k = 0; k < nwake; k++) {
            uint64_t one = 1;
            if (write(bt->wake_fd[k], &one, sizeof one) < 0 && errno != EAGAIN)
                log_debug("wake-up: %s", strerror(errno));
        }
    } else {
        wakers_burst(&sh->wakers, bt->wake_fd, nwake);
        bt->wakes_handed += nwake;
    }
}

/* ---- intake ---------------------------------------------------------------------------- */

static uint32_t pend_alloc(struct batcher *bt)
{
    if (bt->pool_used == bt->pool_cap)
        return NIL;
    return bt->free_idx[bt->pool_cap - ++bt->pool_used];
}

static void pend_free(struct batcher *bt, uint32_t i)
{
    bt->free_idx[bt->pool_cap - bt->pool_used--] = i;
}

/* Takes up to `want` new tasks from one lane into the queues. Returns the number taken. */
static uint32_t intake_lane(struct shard *sh, struct lane *l, uint32_t want, uint64_t now)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    if (l->cut_why)
        return 0; /* being cut by the main thread */
    uint32_t seen = l->sub.peer; /* the index the last visit read */
    int avail = ring_cons_avail(&l->sub);
    if (avail < 0) {
        shard_cut(sh, l, "submission ring index out of range");
        return 0;
    }
    uint32_t fresh = (uint32_t)avail - (l->intake - l->sub.mine);
    if (fresh == 0)
        return 0;
    if (fresh < s->settle_rows && fresh < want && l->sub.peer != seen) {
        /* The agent is still adding to these: take them next visit, as one run. The shard
         * does not sleep meanwhile (lanes_have_work() sees them). An agent that never pauses
         * waits SETTLE_MAX_NS at most. */
        if (!l->settle_since)
            l->settle_since = now;
        if (now - l->settle_since < SETTLE_MAX_NS) {
            bt->settle_waits++;
            return 0;
        }
    }
    l->settle_since = 0;
    uint32_t reserved = lane_reserved(s, l);
    int space = ring_prod_space(&l->cmp, reserved + 1);
    if (space < 0) {
        shard_cut(sh, l, "completion ring index out of range");
        return 0;
    }
    uint32_t room = (uint32_t)space > reserved ? (uint32_t)space - reserved : 0;
    uint32_t n = fresh < want ? fresh : want;
    if (n > room)
        n = room;
    if (n > bt->pool_cap - bt->pool_used)
        n = bt->pool_cap - bt->pool_used;
    /* The headers were written on the agent's core: start every miss at once. */
    for (uint32_t k = 0; k < n; k++)
        __builtin_prefetch(ring_slot(&l->sub, l->intake + k), 0);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t idx = l->intake;
        struct oag_slot_hdr h;
        memcpy(&h, ring_slot(&l->sub, idx), sizeof h); /* copy the header once; use the copy */
        if (h.len > l->hdr.max_payload) {
            shard_cut(sh, l, "task length exceeds the lane's max payload");
            return k;
        }
        uint32_t pi = pend_alloc(bt);
        struct pend *p = &bt->pool[pi];
        p->lane = l->id;
        p->gen = l->generation;
        p->idx = idx;
        p->len = h.len;
        p->ticket = h.ticket;
        p->enq_ns = now;
        p->dead = 0;
        /* The agent's submit time is its own CLOCK_MONOTONIC (same host); a lie only changes
         * when its own task times out. */
        p->deadline_ns = h.timeout_us ? h.submit_ns + (uint64_t)h.timeout_us * 1000u : 0;
        p->submit_ns = h.submit_ns && h.submit_ns <= now ? h.submit_ns : now; /* for metrics */
        if (p->deadline_ns && p->deadline_ns < bt->next_deadline)
            bt->next_deadline = p->deadline_ns;
        uint32_t q = prio_of(h.priority);
        p->next = NIL;
        if (bt->qtail[q] == NIL)
            bt->qhead[q] = pi;
        else
            bt->pool[bt->qtail[q]].next = pi;
        bt->qtail[q] = pi;
        bt->npend++;
        l->intake++;
        l->owed++;
    }
    return n;
}

static void update_busy(struct shard *sh)
{
    struct batcher *bt = &sh->bat;
    uint32_t busy = oag_load_relaxed_u32(&sh->ctl->busy);
    if (!busy && bt->pool_used >= bt->pool_cap) {
        oag_store_relaxed_u32(&sh->ctl->busy, 1); /* relaxed: a hint agents poll */
        bt->busy_events++;
    } else if (busy && bt->pool_used < bt->pool_cap - bt->pool_cap / 4) {
        oag_store_relaxed_u32(&sh->ctl->busy, 0);
    }
}

int batcher_collect(struct shard *sh)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    int total = 0;
    if (sh->nactive == 0 || !s->ready)
        return 0;
    /* A lane's tasks taken in one visit sit together in the queue, and so in a batch: with rows
     * by pointer they are adjacent in the lane, and the engine moves such a run as one transfer
     * (one call per run: the fewer, the less host time per batch). So take up to 32 at a time
     * where batches are large enough for that to stay fair within a few batches, 64 from 512
     * (an eighth of a batch; 768 model, 64 agents, H200: 10.8 / 10.9 M tasks/s against 10.7 /
     * 10.3 M with 32, docs/BENCHMARKS.md session 11). */
    uint32_t quantum = s->cfg.intake_quantum;
    if (!quantum) {
        quantum = s->cfg.max_batch / sh->nactive;
        uint32_t floor = s->cfg.max_batch >= 512 ? 64 : s->cfg.max_batch >= 128 ? 32 : 8;
        if (quantum < floor)
            quantum = floor;
    }
    uint64_t now = now_ns();
    /* Sweep until the queues are full or a whole sweep found nothing. */
    uint32_t idle = 0;
    while (bt->pool_used < bt->pool_cap && sh->nactive > 0 && idle < sh->nactive) {
        if (bt->rr >= sh->nactive)
            bt->rr = 0;
        struct lane *l = &s->lanes[sh->active[bt->rr]];
        uint32_t got = intake_lane(sh, l, quantum, now);
        bt->rr++;
        bt->visits++;
        if (got) {
            total += (int)got;
            idle = 0;
            /* Enough for a full batch and an engine is free: stop sweeping, dispatch first. */
            if (bt->npend >= s->cfg.max_batch * 2)
                break;
        } else {
            idle++;
            bt->visits_empty++;
        }
    }
    update_busy(sh);
    return total;
}

void batcher_settle_resolve(struct sup *s)
{
    const struct oag_engine_ops *ops = s->engine_ops;
    int on = s->cfg.intake_settle;
    if (on < 0)
        on = ops && ops->bus_reads && ops->host_register && !s->cfg.copy_rows;
    /* Rows up to SETTLE_BYTES, at least 2: longer runs gain a transfer little (16 KB rows:
     * 16, 3 KB rows: 85, more than the quantum). */
    uint32_t rows = SETTLE_BYTES / (s->cfg.max_payload ? s->cfg.max_payload : 1);
    s->settle_rows = on ? (rows < 2 ? 2 : rows) : 0;
}

int lanes_have_work(struct shard *sh)
{
    struct sup *s = sh->s;
    for (uint32_t i = 0; i < sh->nactive; i++) {
        struct lane *l = &s->lanes[sh->active[i]];
        /* Pairs with the release in the agent's ring_prod_publish(). */
        if (oag_load_acquire_u32(l->sub.prod) != l->intake)
            return 1;
    }
    return 0;
}

/* ---- deadlines ------------------------------------------------------------------------- */

void batcher_expire(struct shard *sh, uint64_t now)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    if (now < bt->next_deadline)
        return;
    uint64_t next = UINT64_MAX;
    for (int q = 0; q < OAG_PRIORITY_LEVELS; q++) {
        for (uint32_t i = bt->qhead[q]; i != NIL; i = bt->pool[i].next) {
            struct pend *p = &bt->pool[i];
            if (p->dead || !p->deadline_ns)
                continue;
            if (p->deadline_ns > now) {
                if (p->deadline_ns < next)
                    next = p->deadline_ns;
                continue;
            }
            p->dead = 1;
            bt->npend--;
            bt->timed_out++;
            struct lane *l = &s->lanes[p->lane];
            if (!l->in_use || l->generation != p->gen)
                continue;
            l->flags[p->idx & l->sub.mask] |= F_TAKEN;
            metrics_task_done(sh, p->submit_ns, now, -ETIMEDOUT);
            trace_add(bt, p->lane, p->gen, p->ticket, p->submit_ns, p->enq_ns, 0, 0, 0,
                      -ETIMEDOUT);
            lane_put_result(sh, l, p->idx, NIL, p->ticket, -ETIMEDOUT, NULL, 0, NO_SHARED);
            lane_release_prefix(l);
        }
    }
    bt->next_deadline = next;
    publish_touched(sh);
}

/* ---- dispatch -------------------------------------------------------------------------- */

static void run_retries(struct shard *sh);

/* Completes every queued task with status err (no engine can serve it). */
static void fail_queued(struct shard *sh, int err)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    for (int q = 0; q < OAG_PRIORITY_LEVELS; q++) {
        while (bt->qhead[q] != NIL) {
            uint32_t pi = bt->qhead[q];
            struct pend p = bt->pool[pi];
            bt->qhead[q] = p.next;
            pend_free(bt, pi);
            if (p.dead)
                continue;
            bt->npend--;
            struct lane *l = &s->lanes[p.lane];
            if (!l->in_use || l->generation != p.gen)
                continue;
            l->flags[p.idx & l->sub.mask] |= F_TAKEN;
            metrics_task_done(sh, p.submit_ns, now_ns(), err);
            trace_add(bt, p.lane, p.gen, p.ticket, p.submit_ns, p.enq_ns, 0, 0, 0, err);
            lane_put_result(sh, l, p.idx, NIL, p.ticket, err, NULL, 0, NO_SHARED);
            lane_release_prefix(l);
        }
        bt->qtail[q] = NIL;
    }
    publish_touched(sh);
}

static uint64_t oldest_enq(struct batcher *bt)
{
    uint64_t o = UINT64_MAX;
    for (int q = 0; q < OAG_PRIORITY_LEVELS; q++) {
        uint32_t i = bt->qhead[q];
        while (i != NIL && bt->pool[i].dead)
            i = bt->pool[i].next;
        if (i != NIL && bt->pool[i].enq_ns < o)
            o = bt->pool[i].enq_ns;
    }
    return o;
}

/* How many tasks the next batch should take now (0: keep waiting). Sets *wake_at to when the
 * delay runs out if it returns 0 with tasks waiting. */
static uint32_t batch_size_now(struct shard *sh, uint64_t now, uint64_t *wake_at)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    uint32_t n = bt->npend;
    if (n == 0)
        return 0;
    if (n >= s->cfg.max_batch)
        return s->cfg.max_batch;
    for (int k = (int)s->cfg.npreferred - 1; k >= 0; k--)
        if (s->cfg.preferred[k] <= n)
            return s->cfg.preferred[k];
    if (s->cfg.max_delay_us == 0 || s->draining)
        return n;
    uint64_t due = oldest_enq(bt) + (uint64_t)s->cfg.max_delay_us * 1000u;
    if (now >= due)
        return n;
    *wake_at = due;
    return 0;
}

/* Fills bs with up to n tasks, highest priority first. Returns the rows filled. */
static uint32_t fill_batch(struct shard *sh, struct bslot *bs, uint32_t n)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    uint32_t rows = 0, nrel = 0;
    uint64_t now = now_ns();
    /* What the engine may write into a row: its output row, or (identity) an input's length,
     * itself at most the lane's max payload. */
    struct inst *ei = bs->inst;
    uint32_t out_row = ei->ops->out_row_bytes ? ei->ops->out_row_bytes(ei->e) : 0;
    /* Results into the shared result area when a chunk is free (rows by pointer only). */
    struct rchunk *ch = bs->b.out_ptr ? results_take(sh, out_row) : NULL;
    bs->chunk = ch;
    for (int q = 0; q < OAG_PRIORITY_LEVELS && rows < n; q++) {
        while (rows < n && bt->qhead[q] != NIL) {
            uint32_t pi = bt->qhead[q];
            struct pend *p = &bt->pool[pi];
            bt->qhead[q] = p->next;
            if (bt->qhead[q] == NIL)
                bt->qtail[q] = NIL;
            int dead = p->dead;
            struct pend copy = *p;
            pend_free(bt, pi);
            if (dead)
                continue;
            bt->npend--;
            struct lane *l = &s->lanes[copy.lane];
            if (!l->in_use || l->generation != copy.gen) {
                bt->dropped++;
                continue;
            }
            struct task *t = &bs->tasks[rows];
            *t = (struct task){ .lane = copy.lane, .gen = copy.gen, .idx = copy.idx,
                                .cidx = NIL, .ticket = copy.ticket,
                                .deadline_ns = copy.deadline_ns, .submit_ns = copy.submit_ns,
                                .enq_ns = copy.enq_ns };
            bs->b.in_len[rows] = copy.len;
            if (bs->b.in_ptr && l->mem->registered && out_row <= l->hdr.max_payload) {
                /* By pointer: the engine reads the agent's slot and writes the completion slot
                 * reserved here (or the batch's chunk of the shared result area: the slot
                 * then gets only the header); the submission slot is handed back when the
                 * batch is. */
                t->cidx = lane_assign(s, l, copy.idx);
                t->mem = l->mem;
                l->mem->refs++;
                bs->b.in_ptr[rows] = ring_payload(&l->sub, copy.idx);
                bs->b.out_ptr[rows] = ch ? s->res.base + rchunk_row(ch, rows)
                                         : ring_payload(&l->cmp, t->cidx);
            } else {
                /* The payload's only copy: from the agent's slot into the engine's buffer (run
                 * below, before the slots are handed back). */
                uint8_t *in = bs->b.in + (size_t)rows * bs->b.in_stride;
                add_copy(bt, in, ring_payload(&l->sub, copy.idx), copy.len);
                if (bs->b.in_ptr) {
                    bs->b.in_ptr[rows] = in;
                    bs->b.out_ptr[rows] = ch ? s->res.base + rchunk_row(ch, rows)
                                             : bs->b.out + (size_t)rows * bs->b.out_stride;
                }
                l->flags[copy.idx & l->sub.mask] |= F_TAKEN;
                if (!l->release_mark) {
                    l->release_mark = 1;
                    bt->released[nrel++] = copy.lane;
                }
            }
            bt->queue_ns += now - copy.enq_ns;
            metrics_task_queued(sh, now - copy.enq_ns);
            rows++;
        }
    }
    flush_copies(bt);
    if (ch && rows == 0) { /* nothing left to run: the chunk goes back */
        ch->busy = 0;
        bs->chunk = NULL;
    }
    /* Hand the copied slots back: one release store per lane per batch. */
    for (uint32_t k = 0; k < nrel; k++) {
        struct lane *l = &s->lanes[bt->released[k]];
        l->release_mark = 0;
        if (l->in_use)
            lane_release_prefix(l);
    }
    return rows;
}

/* The instance to run the next batch: a free batch slot on the least loaded healthy instance
 * of the current model version. */
static struct bslot *pick_slot(struct shard *sh)
{
    struct sup *s = sh->s;
    struct bslot *best = NULL;
    uint32_t best_load = UINT32_MAX;
    for (uint32_t i = 0; i < s->ninst; i++) {
        struct inst *in = s->inst[i];
        if (in->shard != sh->id || in->retired || in->failed || in->inflight >= in->max_inflight)
            continue;
        if (in->inflight >= best_load)
            continue;
        for (uint32_t k = 0; k < s->nslots; k++) {
            struct bslot *bs = s->slots[k];
            if (bs->inst == in && !bs->busy) {
                best = bs;
                best_load = in->inflight;
                break;
            }
        }
    }
    return best;
}

int batcher_dispatch(struct shard *sh, uint64_t now, uint64_t *wake_at)
{
    int started = 0;
    if (sh->bat.nretry)
        run_retries(sh);
    for (;;) {
        uint32_t n = batch_size_now(sh, now, wake_at);
        if (n == 0)
            return started;
        struct bslot *bs = pick_slot(sh);
        if (!bs) {
            if (engines_usable_shard(sh))
                return started; /* every engine busy: tasks wait (and batch up) */
            /* No engine can run anything: fail what waits rather than let it hang. */
            fail_queued(sh, -EIO);
            return started;
        }
        uint32_t rows = fill_batch(sh, bs, n);
        if (rows == 0)
            continue;
        bs->b.n = rows;
        bs->busy = 1;
        bs->start_ns = now_ns();
        bs->run = bs->inst;
        bs->retried = 0;
        int rc = inst_submit(bs->inst, &bs->b);
        if (rc < 0) {
            log_warn("engine %s: batch of %u could not start: %s", bs->inst->ops->name, rows,
                     strerror(-rc));
            bs->b.whole_rc = rc;
            batcher_complete(sh, &bs->b);
            continue;
        }
        started++;
        if (inst_event_fd(bs->inst) < 0) {
            struct oag_batch *done;
            while ((done = inst_reap(bs->inst)) != NULL)
                batcher_complete(sh, done);
        }
    }
}

/* ---- completion ------------------------------------------------------------------------ */

/* The least loaded healthy instance other than `not` with room for a batch; *any is set if a
 * healthy one exists at all (room or not). */
static struct inst *other_instance(struct shard *sh, const struct inst *not, int *any)
{
    struct sup *s = sh->s;
    struct inst *best = NULL;
    *any = 0;
    for (uint32_t i = 0; i < s->ninst; i++) {
        struct inst *in = s->inst[i];
        if (in->shard != sh->id || in == not || in->retired || in->failed)
            continue;
        *any = 1;
        if (in->inflight < in->max_inflight && (!best || in->inflight < best->inflight))
            best = in;
    }
    return best;
}

/* Runs a failed batch again on `in`. Returns 0, or -1 if it could not start. */
static int rerun(struct shard *sh, struct bslot *bs, struct inst *in)
{
    bs->run = in;
    if (inst_submit(in, &bs->b) < 0)
        return -1;
    sh->bat.retried++;
    if (inst_event_fd(in) < 0) { /* inline: it has finished already */
        struct oag_batch *done;
        while ((done = inst_reap(in)) != NULL)
            batcher_complete(sh, done);
    }
    return 0;
}

/* After a whole-batch failure on one instance: the batch runs once more on another healthy
 * instance (a failing GPU's tasks go to the others), at once if one has room, else when one
 * has (batcher_dispatch runs waiting retries first). Returns 1 if the batch will come back
 * again, 0 if its tasks are to fail now (no other healthy instance, or it failed twice). */
static int retry_elsewhere(struct shard *sh, struct bslot *bs)
{
    if (bs->retried)
        return 0;
    int any;
    struct inst *in = other_instance(sh, bs->run, &any);
    if (!any)
        return 0;
    bs->retried = 1;
    if (in)
        return rerun(sh, bs, in) == 0;
    sh->bat.retry_q[sh->bat.nretry++] = bs; /* at most one entry per batch slot */
    return 1;
}

/* Starts waiting retries on instances with room; fails them if no healthy instance is left. */
static void run_retries(struct shard *sh)
{
    struct batcher *bt = &sh->bat;
    while (bt->nretry) {
        struct bslot *bs = bt->retry_q[0];
        int any;
        struct inst *in = other_instance(sh, bs->run, &any);
        if (any && !in)
            return; /* wait for room */
        memmove(bt->retry_q, bt->retry_q + 1, --bt->nretry * sizeof bt->retry_q[0]);
        if (!in || rerun(sh, bs, in) < 0) {
            bs->b.whole_rc = -EIO;
            batcher_complete(sh, &bs->b); /* retried is set: its tasks fail now */
        }
    }
}

static inline void prefetch_result_slot(struct sup *s, const struct task *t)
{
    const struct lane *l = &s->lanes[t->lane];
    if (t->cidx != NIL && l->in_use && l->generation == t->gen)
        oag_prefetch_w(ring_slot(&l->cmp, t->cidx));
}

void batcher_complete(struct shard *sh, struct oag_batch *b)
{
    struct sup *s = sh->s;
    struct batcher *bt = &sh->bat;
    struct bslot *bs = b->user;
    struct inst *run = bs->run ? bs->run : bs->inst;
    uint64_t done_ns = now_ns();
    uint32_t n = b->n;
    if (b->whole_rc < 0) {
        bt->engine_errors++;
        log_warn("engine %s (device %d) failed a batch of %u: %s", run->ops->name,
                 run->device, n, strerror(-b->whole_rc));
        if (++run->consec_errors >= 3 && !run->failed) {
            run->failed = 1;
            /* At once the first time; an instance that fails again within 10 s of its
             * re-creation (a GPU that keeps breaking) waits 1, 2, 4 ... 60 s. */
            run->retry_ns = done_ns + run->backoff_ns;
            log_err("engine %s (device %d) failed %u batches in a row: out of rotation until "
                    "it is re-created", run->ops->name, run->device, run->consec_errors);
        }
        if (retry_elsewhere(sh, bs))
            return;
    } else {
        run->consec_errors = 0;
    }
    bt->compute_ns += done_ns - bs->start_ns;
    /* Result headers go into completion slots the agents' cores hold: fetch them (for
     * writing) PUB_AHEAD tasks ahead of the loop that writes them, so that the misses overlap
     * its work (all at once, most prefetches waited for a free fill buffer). */
    struct rchunk *ch = bs->chunk;
    for (uint32_t i = 0; i < n && i < PUB_AHEAD; i++)
        prefetch_result_slot(s, &bs->tasks[i]);
    uint32_t nrel = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i + PUB_AHEAD < n)
            prefetch_result_slot(s, &bs->tasks[i + PUB_AHEAD]);
        struct task *t = &bs->tasks[i];
        struct lane *l = &s->lanes[t->lane];
        struct lane_mem *mem = t->mem;
        t->mem = NULL;
        if (!l->in_use || l->generation != t->gen) {
            bt->dropped++;
            lane_mem_put(s, mem); /* the lane went while its row was out: maybe its last */
            continue;
        }
        if (mem) {
            lane_mem_put(s, mem); /* the lane's own reference keeps it */
            l->flags[t->idx & l->sub.mask] |= F_TAKEN;
            if (!l->release_mark) {
                l->release_mark = 1;
                bt->released[nrel++] = t->lane;
            }
        }
        int32_t status = b->whole_rc < 0 ? b->whole_rc : b->status[i];
        uint32_t len = status == 0 ? b->out_len[i] : 0;
        if (status == 0 && t->deadline_ns && done_ns > t->deadline_ns) {
            status = -ETIMEDOUT; /* too late: the agent asked for an error instead */
            len = 0;
            bt->timed_out++;
        }
        if (len > l->hdr.max_payload) {
            status = -EMSGSIZE;
            len = 0;
        }
        metrics_task_done(sh, t->submit_ns, done_ns, status);
        trace_add(bt, t->lane, t->gen, t->ticket, t->submit_ns, t->enq_ns, bs->start_ns, done_ns,
                  n, status);
        if (ch) {
            /* In the chunk: the header points there; the chunk is held until it is read. */
            uint64_t off = rchunk_row(ch, i);
            uint32_t cidx = lane_put_result(sh, l, t->idx, t->cidx, t->ticket, status, NULL, len,
                                            status == 0 ? off : NO_SHARED);
            if (status == 0)
                results_note(ch, t->lane, t->gen, cidx);
        } else if (mem) {
            lane_put_result(sh, l, t->idx, t->cidx, t->ticket, status, NULL, len, NO_SHARED);
        } else {
            lane_put_result(sh, l, t->idx, NIL, t->ticket, status,
                            b->out + (size_t)i * b->out_stride, len, NO_SHARED);
        }
    }
    if (ch) {
        ch->busy = 0; /* back in the pool once every result recorded is handed back */
        bs->chunk = NULL;
        if (b->whole_rc == 0)
            sh->res_batches++;
    }
    for (uint32_t k = 0; k < nrel; k++) {
        struct lane *l = &s->lanes[bt->released[k]];
        l->release_mark = 0;
        lane_release_prefix(l);
    }
    metrics_batch(sh, n);
    bt->batches++;
    bt->tasks_total += n;
    publish_touched(sh); /* runs the result copies out of bs: only then is bs free */
    bs->busy = 0;
}

int batcher_busy(struct shard *sh)
{
    struct sup *s = sh->s;
    for (uint32_t k = 0; k < s->nslots; k++)
        if (s->slots[k]->inst->shard == sh->id && s->slots[k]->busy)
            return 1;
    return sh->bat.npend > 0;
}
