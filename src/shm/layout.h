/*
 * layout.h - the shared-memory ABI between oag-supervisor and agents. Changing any offset or size
 * here is an ABI change: bump OAG_ABI_VERSION.
 *
 * Two kinds of segment, both fixed-width, offsets not pointers:
 *
 * 1. The region (one per supervisor, shm_open "/oag-UID-NAME", 0600). Written only by the
 *    supervisor; agents receive a read-only fd and map it PROT_READ, so they cannot change it.
 *
 *      0      struct oag_region_hdr   magic, abi (stored last, release), sizes, pid, hints
 *                                       (OAG_HINT_*: rewritten while the supervisor runs)
 *      64     struct oag_shard_ctl[16]  one line per data-plane thread of the supervisor (its
 *                                       shard; --data-threads, ABI 4), hdr.nshards of them used:
 *               +0 oag_atomic_u32 sleeping  sleep epoch: the shard makes it odd before it
 *                                           sleeps, even when awake; an agent of that shard (the
 *                                           lane header's `shard`) reads it to decide whether to
 *                                           ring the shard's doorbell (the fd it got at hello)
 *               +4 oag_atomic_u32 busy      the shard writes 1 while its queue is full; its
 *                                           agents' submits then fail at once with -EBUSY
 *      1088   struct oag_latch_global  double-buffered global state (supervisor writes)
 *      results_off  the shared result area (--shared-results, else empty): whole batches of
 *                   results, written by the engine (one copy-engine transfer a batch on a
 *                   GPU); a completion slot flagged OAG_CMP_SHARED points into it (ABI 3).
 *                   Every agent can read every result there: for fleets that trust each
 *                   other with their outputs.
 *
 * 2. A lane (one per attached agent, an anonymous memfd passed over the control socket). Shared
 *    between the supervisor and that one agent only. The supervisor treats every byte of it as
 *    untrusted input: it keeps its own copy of every index it owns and only ever publishes them.
 *
 *      0                 struct oag_lane_hdr     geometry (supervisor writes once before passing
 *                                                the fd; the agent copies and validates it)
 *      256               struct oag_latch_agent  agent state (agent writes, supervisor reads)
 *      ctl_off           struct oag_lane_ctl     both rings' indices, grouped by writer: the
 *                                                agent's (submission prod, completion cons) on
 *                                                one line, the supervisor's on another, so a
 *                                                side learns both of the other's with one miss
 *                                                (ABI 3)
 *      sub_off           sub_slots x 32          submission slot headers
 *      cmp_off           cmp_slots x 32          completion slot headers
 *      sub_pay_off       sub_slots x pay_stride  submission payloads (page aligned)
 *      cmp_pay_off       cmp_slots x pay_stride  completion payloads (page aligned)
 *
 *    Slot i is struct oag_slot_hdr i of its header array and payload i of its payload array (up
 *    to max_payload bytes; pay_stride is max_payload rounded up to 64). Payloads sit apart from
 *    the headers so that consecutive slots' payloads are one contiguous range when a task fills
 *    its payload (rows of a model whose row is a multiple of 64 bytes): the engine moves a run of
 *    them with one copy-engine transfer instead of a copy per row (ABI 2).
 */
#ifndef OAG_SHM_LAYOUT_H
#define OAG_SHM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "atomic.h"

#define OAG_REGION_MAGIC 0x4f414752u /* "OAGR" */
#define OAG_LANE_MAGIC   0x4f41474cu /* "OAGL" */
#define OAG_ABI_VERSION  4u
#define OAG_MAX_SHARDS   16u /* data-plane threads of one supervisor */

/* ---- region ---------------------------------------------------------------------------- */

struct oag_region_hdr {
    oag_atomic_u32 magic;   /* OAG_REGION_MAGIC; stored last with release by the creator */
    oag_atomic_u32 abi;     /* OAG_ABI_VERSION; stored just before magic */
    uint64_t size;          /* bytes of the whole region */
    uint32_t sup_pid;
    uint32_t global_off;    /* offset of struct oag_latch_global */
    uint64_t start_ns;      /* CLOCK_MONOTONIC at creation */
    uint64_t results_off;   /* the shared result area: page aligned, 0 when there is none */
    uint64_t results_size;  /* its bytes */
    uint32_t nshards;       /* shard lines in use, 1..OAG_MAX_SHARDS (ABI 4) */
    oag_atomic_u32 hints;   /* OAG_HINT_*: advice to agents, the supervisor rewrites it while
                               it runs (relaxed); 0 from a supervisor that gives none */
    uint8_t pad[8];
};
_Static_assert(sizeof(struct oag_region_hdr) == 64, "region header is one cache line");

/* hints: payloads of 1 KB or more are best written with streaming stores. Set while a device
 * reads rows across the bus and the rows in flight would sit modified in the writers' caches
 * when it does (src/scheduler/hints.h). */
#define OAG_HINT_STREAM_ROWS 1u

/* Published by the supervisor; agents copy it out through the latch. */
struct oag_global_state {
    uint64_t generation;
    uint64_t tasks_done;
    uint32_t sup_pid;
    uint32_t max_payload;
    uint32_t max_batch;
    uint32_t max_delay_us;
    uint32_t ring_slots;
    uint32_t agents;
    uint32_t ready;
    uint32_t model_version;
    char engine[32];
    char model[64];
    uint32_t input_dim;     /* model engines: floats per task input row (0: any bytes) */
    uint32_t output_dim;    /* model engines: floats per result row */
};
_Static_assert(sizeof(struct oag_global_state) == 152, "global state size is ABI");
_Static_assert(sizeof(struct oag_global_state) % 8 == 0, "latch copies 8-byte words");

/*
 * A latch (Linux's seqcount_latch): two copies of a record and one sequence. The writer bumps seq
 * to odd, writes copy 0, bumps seq to even, writes copy 1. A reader reads seq, copies record
 * [seq & 1], and retries if seq changed: the copy it read was never being written meanwhile
 * unless seq moved. Readers never block the writer and never see a torn record.
 */
struct oag_latch_global {
    oag_atomic_u32 seq;
    uint32_t pad[15];
    oag_atomic_u64 rec[2][sizeof(struct oag_global_state) / 8];
};

/* One data-plane thread's words (the supervisor writes, its agents read). */
struct oag_shard_ctl {
    oag_atomic_u32 sleeping;     /* sleep epoch (wake protocol in shard.c) */
    oag_atomic_u32 busy;         /* the shard's queue is full */
    uint32_t pad[14];
};
_Static_assert(sizeof(struct oag_shard_ctl) == OAG_CACHELINE, "shard ctl ABI");

struct oag_region {
    struct oag_region_hdr hdr;
    struct oag_shard_ctl shard[OAG_MAX_SHARDS];
    struct oag_latch_global global;
};
_Static_assert(offsetof(struct oag_region, shard) == 64, "region ABI");
_Static_assert(offsetof(struct oag_region, global) == 1088, "region ABI");

/* ---- lane ------------------------------------------------------------------------------ */

struct oag_lane_hdr {
    uint32_t magic;        /* OAG_LANE_MAGIC */
    uint32_t abi;          /* OAG_ABI_VERSION */
    uint32_t lane_id;
    uint32_t generation;   /* bumps each time the lane id is handed to a new connection */
    uint64_t size;         /* bytes of the whole lane */
    uint32_t pay_stride;   /* bytes from one slot's payload to the next, multiple of 64 */
    uint32_t max_payload;
    uint32_t sub_slots;    /* power of two */
    uint32_t cmp_slots;    /* power of two */
    uint32_t state_off;
    uint32_t ctl_off;      /* struct oag_lane_ctl */
    uint32_t pad_ctl;
    uint32_t shard;        /* the supervisor's data-plane thread serving the lane: its line of
                              the region (sleep epoch, busy) and its doorbell (ABI 4) */
    uint64_t sub_off;      /* slot headers */
    uint64_t cmp_off;
    uint64_t sub_pay_off;  /* payloads */
    uint64_t cmp_pay_off;
    uint8_t pad[168];
};
_Static_assert(sizeof(struct oag_lane_hdr) == 256, "lane header ABI");

/* What an agent publishes about itself (agent writes, supervisor reads, untrusted). */
struct oag_agent_state {
    uint64_t heartbeat_ns;  /* CLOCK_MONOTONIC of the agent's last library call */
    uint64_t submitted;
    uint64_t completed;
    uint32_t pid;
    uint32_t flags;
    uint64_t rejected;      /* submits refused with -EAGAIN or -EBUSY */
    uint64_t pad[3];
};
_Static_assert(sizeof(struct oag_agent_state) == 64, "agent state ABI");

struct oag_latch_agent {
    oag_atomic_u32 seq;
    uint32_t pad[15];
    oag_atomic_u64 rec[2][sizeof(struct oag_agent_state) / 8];
};
_Static_assert(sizeof(struct oag_latch_agent) == 192, "agent latch ABI");

/*
 * Ring indices (a standalone ring's; a lane groups its two rings' by writer, oag_lane_ctl below):
 * free-running u32 counters, slot = index & (slots - 1). Each on its own cache line.
 *   prod    - producer writes (release after filling slots), consumer reads (acquire)
 *   cons    - consumer writes (release after it is done with slots), producer reads (acquire)
 *   waiting - consumer writes 1 (seq_cst) before it sleeps on the ring's eventfd; producer reads
 *             it after publishing and, if set, swaps it to 0 and writes the eventfd.
 */
struct oag_ring_ctl {
    oag_atomic_u32 prod;
    uint32_t pad0[15];
    oag_atomic_u32 cons;
    uint32_t pad1[15];
    oag_atomic_u32 waiting;
    uint32_t pad2[15];
};
_Static_assert(sizeof(struct oag_ring_ctl) == 3 * OAG_CACHELINE, "ring ctl ABI");
_Static_assert(offsetof(struct oag_ring_ctl, cons) == OAG_CACHELINE, "ring ctl ABI");
_Static_assert(offsetof(struct oag_ring_ctl, waiting) == 2 * OAG_CACHELINE, "ring ctl ABI");

/* A lane's ring indices, by writer (same rules as struct oag_ring_ctl). The agent writes the
 * submission ring's prod and the completion ring's cons, the supervisor the other two: each
 * side's intake finds both of the peer's indices in one cache line. */
struct oag_lane_ctl {
    oag_atomic_u32 sub_prod;     /* agent writes */
    oag_atomic_u32 cmp_cons;     /* agent writes */
    uint32_t pad0[14];
    oag_atomic_u32 sub_cons;     /* supervisor writes */
    oag_atomic_u32 cmp_prod;     /* supervisor writes */
    uint32_t pad1[14];
    oag_atomic_u32 cmp_waiting;  /* agent sets before it sleeps, supervisor clears */
    uint32_t pad2[15];
    oag_atomic_u32 sub_waiting;  /* the submission ring's (the supervisor sleeps on its shard's
                                    sleep epoch in the region instead) */
    uint32_t pad3[15];
};
_Static_assert(sizeof(struct oag_lane_ctl) == 4 * OAG_CACHELINE, "lane ctl ABI");
_Static_assert(offsetof(struct oag_lane_ctl, sub_cons) == OAG_CACHELINE, "lane ctl ABI");
_Static_assert(offsetof(struct oag_lane_ctl, cmp_waiting) == 2 * OAG_CACHELINE, "lane ctl ABI");

/* Slot header: the producer fills it and the slot's payload, then publishes prod. */
struct oag_slot_hdr {
    uint64_t ticket;       /* agent's ticket, echoed back in the completion */
    uint32_t len;          /* payload bytes, <= max_payload */
    int32_t status;        /* completion: 0 or negative errno; submission: 0 */
    uint32_t timeout_us;   /* submission: relative deadline, 0 = none */
    uint8_t priority;      /* submission: 0 highest */
    uint8_t flags;         /* completion: OAG_CMP_* */
    uint8_t rsvd[2];
    union {
        uint64_t submit_ns;  /* submission: agent's CLOCK_MONOTONIC at submit (tracing) */
        uint64_t result_off; /* completion with OAG_CMP_SHARED: the result's offset in the
                                region's shared result area (len bytes there) */
    };
};
#define OAG_CMP_SHARED 1u  /* the result is in the shared result area, not the slot's payload */
_Static_assert(sizeof(struct oag_slot_hdr) == 32, "slot header ABI");
_Static_assert(offsetof(struct oag_slot_hdr, len) == 8, "slot header ABI");
_Static_assert(offsetof(struct oag_slot_hdr, flags) == 21, "slot header ABI");
_Static_assert(offsetof(struct oag_slot_hdr, result_off) == 24, "slot header ABI");

#define OAG_LANE_STATE_OFF 256u

/* Geometry of a lane for the given parameters; returns 0 or -EINVAL if they are out of range. */
struct oag_lane_geom {
    uint32_t pay_stride, max_payload, sub_slots, cmp_slots;
    uint32_t state_off, ctl_off;
    uint64_t sub_off, cmp_off, sub_pay_off, cmp_pay_off, size;
};
int oag_lane_geom(struct oag_lane_geom *g, uint32_t max_payload, uint32_t slots);

/* Validates a lane header copied out of shared memory against the mapping size. 0 or -EPROTO. */
int oag_lane_hdr_check(const struct oag_lane_hdr *h, uint64_t map_size);

#define OAG_MAX_PAYLOAD_LIMIT (16u << 20)
#define OAG_MAX_SLOTS (1u << 16)

#endif
