/*
 * client.c - liboag: an agent's connection to oag-supervisor.
 *
 * The hot path (oag_submit / oag_poll) touches only shared memory: it writes a slot, publishes
 * the ring index, and makes a system call only when the supervisor said it sleeps (one doorbell
 * write per supervisor sleep, not per task). Waiting for results spins for an adaptive, bounded
 * time before sleeping on the completion eventfd, together with the control socket so that a
 * supervisor that goes away is noticed at once.
 *
 * Streaming stores: payloads of NT_MIN bytes or more go into the lane with streaming
 * (non-temporal) stores while the supervisor advises it (OAG_HINT_STREAM_ROWS in the region
 * header, read at each such submit), or always with $OAG_NT_STORES=1 (never with 0). A GPU
 * reads rows across the bus, and a line still modified in a core's cache comes from there at a
 * third of the speed of one in memory (tests/cuda/gather_bench "fresh": 16 KB rows 15.8
 * against 51.9 GB/s by the copy engines, 3 KB rows 22.8 against 39.9). End to end it pays only
 * while the rows in flight fit in the cores' caches (768 model, 64 agents: +13 %); with more
 * rows in flight they have left for the L3 anyway and the stores and fence cost the agents
 * (4096 model: 3-9 % less): the supervisor decides (src/scheduler/hints.h). Flushing lines after
 * a plain copy (clflushopt, clwb) or demoting them (cldemote) cost more than it saved.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "oag/oag.h"
#include "remote.h"
#include "shm/endpoint.h"
#include "shm/latch.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shm/ring.h"

#define SPIN_MIN_NS 2000ull
#define SPIN_MAX_NS 200000ull
#define SPIN_START_NS 50000ull
#define PURE_SPIN_NS 2000ull     /* spin without yielding this long first */
#define HEARTBEAT_NS 100000000ull /* republish agent state at least every 100 ms of activity */

struct stash_ent {
    uint64_t ticket;
    int32_t status;
    uint32_t len;
    uint8_t *data;
};

struct oag_client {
    int sock, doorbell_fd, cmp_fd;
    const struct oag_region *region;
    const struct oag_shard_ctl *shard; /* the region line of the supervisor thread serving us */
    size_t region_size;
    const uint8_t *results;      /* the region's shared result area, or NULL */
    uint64_t results_size;
    uint8_t *lane;
    size_t lane_size;
    struct oag_lane_hdr hdr;     /* validated private copy */
    struct oag_latch_agent *state;
    struct ring_side sub, cmp;
    uint32_t rung_epoch;         /* supervisor sleep epoch we already rang the doorbell for */
    uint32_t held;               /* completion slots handed to the caller, released next poll */
    uint32_t outstanding;
    uint64_t next_ticket;
    uint64_t submitted, completed, rejected;
    uint64_t spin_ns;            /* adaptive budget, 0..spin_max_ns */
    uint64_t spin_max_ns;        /* $OAG_SPIN_US, default SPIN_MAX_NS; 0: never spin */
    uint64_t last_beat_ns;
    int evmode;                  /* oag_event_fd() was called: keep the wake flag armed */
    int dead;                    /* 0, or the error every call now returns */
    int reserved;                /* oag_reserve() outstanding */
    int nt;                      /* $OAG_NT_STORES: payloads by streaming stores: 1 always, 0
                                    never, -1 (unset) as the supervisor advises (the top) */
    int nt_pending;              /* streaming stores not yet fenced */
    struct stash_ent *stash;     /* completions oag_infer() read for other tickets */
    uint8_t *stash_buf;
    uint32_t nstash;
    oag_completion *deliver;     /* scratch for oag_infer */
    struct oag_remote *remote;   /* tcp:// or etcd:// endpoint: every call goes there (remote.c) */
    struct oag_remote *fwd;      /* $OAG_FORWARD: where tasks go while the supervisor is busy */
    int fwd_epfd;                /* event-fd mode with fwd: epoll over both, or -1 */
};

/* Tickets of tasks sent to the overflow connection: never equal to a lane's sequential ones. */
#define FWD_TAG (1ull << 63)

static _Thread_local char last_error[256];

static void set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void set_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
}

OAG_EXPORT const char *oag_last_error(void) { return last_error; }
OAG_EXPORT const char *oag_version(void) { return "0.1.0"; }

OAG_EXPORT const char *oag_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0: return "success";
    case EMSGSIZE: return "task larger than the supervisor's maximum payload";
    case EAGAIN: return "lane full (busy): poll results, then retry";
    case ETIMEDOUT: return "timed out";
    case ECONNRESET: return "supervisor went away or cut this client off";
    case EPROTO: return "protocol or ABI mismatch with the supervisor";
    case EACCES: return "refused by the supervisor's credential check";
    case ENOENT: return "no supervisor at this endpoint";
    case ENOBUFS: return "output buffer too small for the result";
    case ECANCELED: return "task cancelled (supervisor shutting down)";
    case EIO: return "engine failed the batch";
    case EBUSY: return "supervisor busy (queue full)";
    default: return strerror(err);
    }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void publish_state(oag_client *c, uint64_t now)
{
    struct oag_agent_state st = {
        .heartbeat_ns = now, .submitted = c->submitted, .completed = c->completed,
        .pid = (uint32_t)getpid(), .rejected = c->rejected,
    };
    latch_write(&c->state->seq, c->state->rec[0], sizeof st / 8, &st);
    c->last_beat_ns = now;
}

/* ---- connect ------------------------------------------------------------------------- */

static int recv_welcome(int sock, struct oag_welcome *w, int fds[OAG_WELCOME_FDS], int *nfds)
{
    union {
        char buf[CMSG_SPACE(sizeof(int) * OAG_WELCOME_FDS)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = w, .iov_len = sizeof *w };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf };
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    *nfds = 0;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++) {
                int fd;
                memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
                if (*nfds < OAG_WELCOME_FDS)
                    fds[(*nfds)++] = fd;
                else
                    close(fd);
            }
        }
    }
    if (n < 0)
        return errno == EAGAIN ? -ETIMEDOUT : -errno;
    if (n == 0)
        return -ECONNRESET;
    if ((size_t)n < offsetof(struct oag_welcome, reason) || w->magic != OAG_PROTO_MAGIC ||
        w->type != OAG_MSG_WELCOME)
        return -EPROTO;
    w->reason[sizeof w->reason - 1] = '\0';
    return 0;
}

static int map_region(oag_client *c, int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((size_t)st.st_size < sizeof(struct oag_region)) {
        set_error("supervisor region is too small (%lld bytes)", (long long)st.st_size);
        return -EPROTO;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    c->region = p;
    c->region_size = (size_t)st.st_size;
    /* Pairs with the creator's release store of magic, made after everything else. */
    uint32_t magic = oag_load_acquire_u32(&c->region->hdr.magic);
    uint32_t abi = oag_load_relaxed_u32(&c->region->hdr.abi);
    if (magic != OAG_REGION_MAGIC || abi != OAG_ABI_VERSION) {
        set_error("supervisor region has magic 0x%08x ABI %u; this liboag expects 0x%08x ABI %u",
                  magic, abi, OAG_REGION_MAGIC, OAG_ABI_VERSION);
        return -EPROTO;
    }
    /* The shared result area (--shared-results): results flagged OAG_CMP_SHARED lie there. */
    uint64_t roff = c->region->hdr.results_off, rsize = c->region->hdr.results_size;
    if (rsize) {
        if (roff < sizeof(struct oag_region) || roff > c->region_size ||
            rsize > c->region_size - roff) {
            set_error("supervisor region's result area (%llu bytes at %llu) lies outside it",
                      (unsigned long long)rsize, (unsigned long long)roff);
            return -EPROTO;
        }
        c->results = (const uint8_t *)p + roff;
        c->results_size = rsize;
    }
    return 0;
}

static int map_lane(oag_client *c, int fd, const struct oag_welcome *w)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if ((uint64_t)st.st_size < sizeof(struct oag_lane_hdr) || (uint64_t)st.st_size != w->lane_size) {
        set_error("lane size %lld does not match the welcome (%llu)", (long long)st.st_size,
                  (unsigned long long)w->lane_size);
        return -EPROTO;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return -errno;
    c->lane = p;
    c->lane_size = (size_t)st.st_size;
    memcpy(&c->hdr, p, sizeof c->hdr);
    if (oag_lane_hdr_check(&c->hdr, c->lane_size) != 0 || c->hdr.lane_id != w->lane_id ||
        c->hdr.generation != w->generation) {
        set_error("lane header is invalid (magic 0x%08x ABI %u)", c->hdr.magic, c->hdr.abi);
        return -EPROTO;
    }
    uint32_t nshards = c->region->hdr.nshards;
    if (nshards == 0 || nshards > OAG_MAX_SHARDS || c->hdr.shard >= nshards) {
        set_error("lane names supervisor thread %u of %u", c->hdr.shard, nshards);
        return -EPROTO;
    }
    c->shard = &c->region->shard[c->hdr.shard];
    c->state = (struct oag_latch_agent *)(c->lane + c->hdr.state_off);
    ring_lane_init(&c->sub, &c->cmp, c->lane, &c->hdr);
    /* A fresh lane starts at zero; adopt whatever the supervisor initialised. */
    c->sub.mine = c->sub.peer = oag_load_acquire_u32(c->sub.prod);
    c->cmp.mine = c->cmp.peer = oag_load_acquire_u32(c->cmp.cons);
    return 0;
}

static int connect_remote(oag_client **out, const char *endpoint)
{
    oag_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->sock = c->doorbell_fd = c->cmp_fd = -1;
    char err[256] = "";
    c->fwd_epfd = -1;
    int rc = remote_connect(&c->remote, endpoint, 0, err, sizeof err);
    if (rc) {
        set_error("%s", err);
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/*
 * Overflow: a supervisor started with --forward URL (and an engine of its own) gives its agents
 * $OAG_FORWARD; while its queue is full, oag_submit() sends the task there instead of returning
 * -EBUSY. Not in the supervisor's own process (its gateway's lanes answer -EBUSY, so that two
 * supervisors never bounce a task between them). Best effort: without a reachable target the
 * agent gets -EBUSY as before.
 */
static void connect_overflow(oag_client *c)
{
    const char *fw = getenv("OAG_FORWARD");
    struct oag_global_state g;
    if (!fw || !remote_is_endpoint(fw) ||
        latch_read(&c->region->global.seq, c->region->global.rec[0], sizeof g / 8, &g, 1000) ||
        g.sup_pid == (uint32_t)getpid())
        return;
    char err[256];
    if (remote_connect(&c->fwd, fw, 2000, err, sizeof err) != 0)
        c->fwd = NULL;
}

OAG_EXPORT int oag_connect(oag_client **out, const char *endpoint)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int fds[OAG_WELCOME_FDS], nfds = 0, rc;
    *out = NULL;
    last_error[0] = '\0';
    const char *env_ep = endpoint ? endpoint : getenv("OAG_ENDPOINT");
    if (remote_is_endpoint(env_ep))
        return connect_remote(out, env_ep);
    rc = oag_resolve_endpoint(path, sizeof path, endpoint);
    if (rc) {
        set_error("endpoint path too long");
        return rc;
    }
    oag_client *c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->sock = c->doorbell_fd = c->cmp_fd = c->fwd_epfd = -1;
    c->spin_ns = SPIN_START_NS;
    c->spin_max_ns = SPIN_MAX_NS;
    c->next_ticket = 1;
    const char *nt = getenv("OAG_NT_STORES");
    c->nt = nt && *nt ? *nt == '1' : -1; /* unset: the supervisor's advice */
    const char *spin = getenv("OAG_SPIN_US");
    if (spin && *spin) {
        c->spin_max_ns = (uint64_t)strtoull(spin, NULL, 10) * 1000ull;
        if (c->spin_ns > c->spin_max_ns)
            c->spin_ns = c->spin_max_ns;
    }

    c->sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (c->sock < 0) {
        rc = -errno;
        goto fail;
    }
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (connect(c->sock, (struct sockaddr *)&sa, sizeof sa) < 0) {
        rc = -errno;
        if (rc == -ECONNREFUSED)
            rc = -ENOENT;
        set_error("cannot connect to %s: %s", path, strerror(errno));
        goto fail;
    }
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(c->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    struct oag_hello h = { .magic = OAG_PROTO_MAGIC, .abi = OAG_ABI_VERSION,
                           .kind = OAG_HELLO_AGENT, .agent_id = -1, .pid = (uint32_t)getpid() };
    const char *id = getenv("OAG_AGENT_ID");
    if (id && *id) {
        char *end;
        long v = strtol(id, &end, 10);
        if (*end == '\0' && v >= 0 && v < (1L << 30))
            h.agent_id = (int32_t)v;
    }
    struct oag_welcome w;
    memset(&w, 0, sizeof w);
    int send_err = 0;
    if (send(c->sock, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h)
        send_err = -errno;
    rc = recv_welcome(c->sock, &w, fds, &nfds);
    if (rc == -ECONNRESET || rc == -EPIPE) {
        /* A refusal may be queued behind the reset: it is readable once the error is out. */
        int again = recv_welcome(c->sock, &w, fds, &nfds);
        if (again == 0)
            rc = 0;
    }
    if (rc && send_err) {
        rc = send_err;
        set_error("cannot send hello to %s: %s", path, strerror(-send_err));
        goto fail_fds;
    }
    if (rc) {
        set_error("no valid welcome from %s: %s", path, oag_strerror(rc));
        goto fail_fds;
    }
    if (w.err < 0) {
        rc = w.err;
        set_error("supervisor refused the connection: %s", w.reason);
        goto fail_fds;
    }
    if (w.abi != OAG_ABI_VERSION) {
        rc = -EPROTO;
        set_error("supervisor speaks ABI %u, this liboag ABI %u", w.abi, OAG_ABI_VERSION);
        goto fail_fds;
    }
    if (nfds != OAG_WELCOME_FDS) {
        rc = -EPROTO;
        set_error("supervisor passed %d fds, expected %d", nfds, OAG_WELCOME_FDS);
        goto fail_fds;
    }
    rc = map_region(c, fds[0]);
    if (rc)
        goto fail_fds;
    rc = map_lane(c, fds[1], &w);
    if (rc)
        goto fail_fds;
    close(fds[0]);
    close(fds[1]);
    c->doorbell_fd = fds[2];
    c->cmp_fd = fds[3];
    tv.tv_sec = 0;
    setsockopt(c->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    publish_state(c, now_ns());
    connect_overflow(c);
    *out = c;
    return 0;

fail_fds:
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
fail:
    c->doorbell_fd = c->cmp_fd = -1;
    oag_close(c);
    return rc;
}

OAG_EXPORT void oag_close(oag_client *c)
{
    if (!c)
        return;
    remote_close(c->remote);
    remote_close(c->fwd);
    if (c->fwd_epfd >= 0)
        close(c->fwd_epfd);
    if (c->lane)
        munmap(c->lane, c->lane_size);
    if (c->region)
        munmap((void *)c->region, c->region_size);
    if (c->sock >= 0)
        close(c->sock);
    if (c->doorbell_fd >= 0)
        close(c->doorbell_fd);
    if (c->cmp_fd >= 0)
        close(c->cmp_fd);
    free(c->stash);
    free(c->stash_buf);
    free(c->deliver);
    free(c);
}

/* ---- submit ---------------------------------------------------------------------------- */

/* Rings the supervisor's doorbell if it declared that it sleeps (once per sleep epoch). */
static void kick_supervisor(oag_client *c)
{
    oag_fence_seqcst(); /* pairs with the supervisor's fence between its epoch store and scan */
    uint32_t epoch = oag_load_relaxed_u32(&c->shard->sleeping);
    if ((epoch & 1) && epoch != c->rung_epoch) {
        uint64_t one = 1;
        c->rung_epoch = epoch;
        if (write(c->doorbell_fd, &one, sizeof one) < 0 && errno != EAGAIN)
            c->rung_epoch = 0;
    }
}

static int check_space(oag_client *c, size_t len)
{
    if (c->dead)
        return c->dead;
    if (len > c->hdr.max_payload) {
        set_error("task of %zu bytes exceeds the maximum payload of %u bytes", len,
                  c->hdr.max_payload);
        return -EMSGSIZE;
    }
    /* The queue of the supervisor thread serving us is full: refuse at once rather than queue behind it.
     * Relaxed: a hint; at worst one task more is queued or refused around the change. */
    if (oag_load_relaxed_u32(&c->shard->busy)) {
        c->rejected++;
        return -EBUSY;
    }
    /* Never have more tasks out than the completion ring can hold: the supervisor then never
     * has to hold a result back for us. */
    if (c->outstanding + c->nstash >= c->hdr.cmp_slots) {
        c->rejected++;
        return -EAGAIN;
    }
    int space = ring_prod_space(&c->sub, 1);
    if (space < 0) {
        c->dead = -EPROTO;
        return -EPROTO;
    }
    if (space == 0) {
        c->rejected++;
        return -EAGAIN;
    }
    return 0;
}

#define NT_MIN 1024u /* smaller payloads: a plain copy (the header's line is written anyway) */

/* Copies a payload into the lane (dst: a slot's payload, 64-byte aligned). */
static void put_payload(oag_client *c, void *dst, const void *src, size_t len)
{
#if defined(__x86_64__)
    if (len >= NT_MIN && ((uintptr_t)dst & 15) == 0 &&
        (c->nt > 0 ||
         (c->nt < 0 && (oag_load_relaxed_u32(&c->region->hdr.hints) & OAG_HINT_STREAM_ROWS)))) {
        uint8_t *d = dst;
        const uint8_t *p = src;
        size_t body = len & ~(size_t)63;
        for (size_t o = 0; o < body; o += 64) {
            __m128i a = _mm_loadu_si128((const __m128i *)(p + o));
            __m128i b = _mm_loadu_si128((const __m128i *)(p + o + 16));
            __m128i e = _mm_loadu_si128((const __m128i *)(p + o + 32));
            __m128i f = _mm_loadu_si128((const __m128i *)(p + o + 48));
            _mm_stream_si128((__m128i *)(d + o), a);
            _mm_stream_si128((__m128i *)(d + o + 16), b);
            _mm_stream_si128((__m128i *)(d + o + 32), e);
            _mm_stream_si128((__m128i *)(d + o + 48), f);
        }
        if (len > body)
            memcpy(d + body, p + body, len - body);
        c->nt_pending = 1; /* fenced before the slot is published */
        return;
    }
#endif
    memcpy(dst, src, len);
}

static void fill_and_publish(oag_client *c, struct oag_slot_hdr *s, size_t len,
                             const oag_submit_opts *opts, uint64_t *ticket)
{
    s->ticket = c->next_ticket++;
    s->len = (uint32_t)len;
    s->status = 0;
    s->timeout_us = opts ? opts->timeout_us : 0;
    s->priority = opts ? opts->priority : 0;
    uint64_t now = now_ns();
    s->submit_ns = now;
    if (now - c->last_beat_ns > HEARTBEAT_NS)
        publish_state(c, now);
    if (ticket)
        *ticket = s->ticket;
    c->outstanding++;
    c->submitted++;
#if defined(__x86_64__)
    if (c->nt_pending) { /* streaming stores are not ordered by the release store */
        _mm_sfence();
        c->nt_pending = 0;
    }
#endif
    ring_prod_publish(&c->sub, 1);
    kick_supervisor(c);
}

OAG_EXPORT int oag_submit_ex(oag_client *c, const void *in, size_t in_len,
                             const oag_submit_opts *opts, uint64_t *ticket)
{
    if (c->remote)
        return remote_submit(c->remote, in, in_len, opts, ticket);
    if (c->reserved)
        return -EBUSY;
    int rc = check_space(c, in_len);
    if (rc == -EBUSY && c->fwd) {
        /* The supervisor's queue is full: the overflow target takes it. */
        uint64_t t;
        rc = remote_submit(c->fwd, in, in_len, opts, &t);
        if (rc == 0 && ticket)
            *ticket = t | FWD_TAG;
        return rc;
    }
    if (rc)
        return rc;
    put_payload(c, ring_payload(&c->sub, c->sub.mine), in, in_len);
    fill_and_publish(c, ring_slot(&c->sub, c->sub.mine), in_len, opts, ticket);
    return 0;
}

OAG_EXPORT int oag_submit(oag_client *c, const void *in, size_t in_len, uint64_t *ticket)
{
    return oag_submit_ex(c, in, in_len, NULL, ticket);
}

OAG_EXPORT int oag_reserve(oag_client *c, size_t len, void **buf)
{
    if (c->remote)
        return remote_reserve(c->remote, len, buf);
    if (c->reserved)
        return -EBUSY;
    int rc = check_space(c, len);
    if (rc)
        return rc;
    c->reserved = 1;
    *buf = ring_payload(&c->sub, c->sub.mine);
    return 0;
}

OAG_EXPORT int oag_commit(oag_client *c, size_t len, const oag_submit_opts *opts,
                          uint64_t *ticket)
{
    if (c->remote)
        return remote_commit(c->remote, len, opts, ticket);
    if (!c->reserved)
        return -EINVAL;
    if (len > c->hdr.max_payload)
        return -EMSGSIZE;
    c->reserved = 0;
    fill_and_publish(c, ring_slot(&c->sub, c->sub.mine), len, opts, ticket);
    return 0;
}

/* ---- completions ----------------------------------------------------------------------- */

/* Releases the completion slots handed out by the previous poll. */
static void release_held(oag_client *c)
{
    if (c->held) {
        ring_cons_release(&c->cmp, c->held);
        c->held = 0;
    }
}

/* Checks the control socket: a hang-up or any message means the supervisor is gone or has cut
 * us off. Returns 0 or -ECONNRESET. */
static int check_sock(oag_client *c, short revents)
{
    if (revents & (POLLHUP | POLLERR | POLLIN)) {
        c->dead = -ECONNRESET;
        set_error("the supervisor closed the connection");
        return -ECONNRESET;
    }
    return 0;
}

/* Waits until the completion ring holds something. Returns the count available, 0 on
 * timeout, or a negative errno. */
static int wait_completions(oag_client *c, int timeout_ms)
{
    int n = ring_cons_avail(&c->cmp);
    if (n != 0 || timeout_ms == 0)
        return n;
    uint64_t start = now_ns();
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms * 1000000ull;
    /* Spin for an adaptive budget, about the cost of the wake-up it saves. After a short pure
     * spin, yield between checks: when agents outnumber cores, the supervisor (or another
     * agent) gets the CPU instead of being starved by our spinning. */
    uint64_t spin_end = start + c->spin_ns, t = start;
    for (unsigned i = 1; c->spin_ns > 0; i++) {
        oag_cpu_relax();
        n = ring_cons_avail(&c->cmp);
        if (n != 0) {
            c->spin_ns += c->spin_ns / 4 + 1;
            if (c->spin_ns > c->spin_max_ns)
                c->spin_ns = c->spin_max_ns;
            return n;
        }
        if ((i & 31) == 0) {
            t = now_ns();
            if (t >= spin_end || t >= deadline)
                break;
            if (t - start > PURE_SPIN_NS)
                sched_yield();
        }
    }
    if (c->spin_ns > SPIN_MIN_NS)
        c->spin_ns -= c->spin_ns / 4;
    else if (c->spin_ns > 0 && c->spin_max_ns > 0)
        c->spin_ns = SPIN_MIN_NS < c->spin_max_ns ? SPIN_MIN_NS : c->spin_max_ns;
    if (t - c->last_beat_ns > HEARTBEAT_NS)
        publish_state(c, t);
    for (;;) {
        n = ring_cons_prepare_sleep(&c->cmp);
        if (n != 0)
            return n;
        t = now_ns();
        if (t >= deadline) {
            ring_cons_awake(&c->cmp);
            return 0;
        }
        struct pollfd pf[2] = { { .fd = c->cmp_fd, .events = POLLIN },
                                { .fd = c->sock, .events = POLLIN } };
        int ms = deadline == UINT64_MAX ? -1 : (int)((deadline - t + 999999) / 1000000);
        int r = poll(pf, 2, ms);
        /* Woken soon after falling asleep: a longer spin would have saved the wake-up. Grow
         * the budget to cover this wait, or a budget that once shrank below the peer's
         * turnaround would never succeed again, and never grow again. */
        uint64_t slept = now_ns() - t;
        if (r > 0 && slept < c->spin_max_ns) {
            uint64_t want = slept + slept / 2;
            c->spin_ns = want > c->spin_ns * 2 ? want : c->spin_ns * 2;
            if (c->spin_ns > c->spin_max_ns)
                c->spin_ns = c->spin_max_ns;
        }
        if (!c->evmode)
            ring_cons_awake(&c->cmp);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0) {
            if (pf[0].revents & POLLIN) {
                uint64_t v;
                if (read(c->cmp_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                    return -errno;
            }
            int sr = check_sock(c, pf[1].revents);
            n = ring_cons_avail(&c->cmp);
            if (n != 0)
                return n;
            if (sr)
                return sr;
        }
    }
}

/* Takes up to max completions from the ring into done[] (zero-copy: data points into slots that
 * stay held until the next call). */
static int take(oag_client *c, oag_completion *done, int max, int avail)
{
    int n = avail < max ? avail : max;
    for (int i = 0; i < n; i++) {
        uint32_t idx = c->cmp.mine + c->held + (uint32_t)i;
        const struct oag_slot_hdr *s = ring_slot(&c->cmp, idx);
        uint32_t len = s->len;
        done[i].ticket = s->ticket;
        done[i].status = s->status;
        done[i].len = len <= c->hdr.max_payload ? len : 0;
        done[i].data = ring_payload(&c->cmp, idx);
        if (s->flags & OAG_CMP_SHARED) {
            /* In the shared result area; stays there until this slot is handed back. */
            uint64_t off = s->result_off;
            if (c->results && off <= c->results_size && done[i].len <= c->results_size - off) {
                done[i].data = c->results + off;
            } else {
                done[i].status = -EPROTO;
                done[i].len = 0;
            }
        }
    }
    c->held += (uint32_t)n;
    c->outstanding -= (uint32_t)n < c->outstanding ? (uint32_t)n : c->outstanding;
    c->completed += (uint64_t)n;
    return n;
}

static int deliver_stash(oag_client *c, oag_completion *done, int max)
{
    int n = 0;
    /* Stashed entries live in stash_buf, which stays valid until the next call. */
    while (n < max && c->nstash > 0) {
        struct stash_ent *e = &c->stash[--c->nstash];
        done[n].ticket = e->ticket;
        done[n].status = e->status;
        done[n].len = e->len;
        done[n].data = e->data;
        n++;
    }
    return n;
}

/* oag_poll while tasks are out on the overflow connection: each call returns completions of
 * one side only (so each side's "valid until the next call" holds), waiting in slices of 1 ms
 * on the lane. Only while overflow tasks are out. */
static int poll_both(oag_client *c, oag_completion *done, int max, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ull;
    release_held(c);
    for (;;) {
        int n = remote_poll(c->fwd, done, max, 0);
        if (n < 0)
            return n;
        if (n > 0) {
            for (int i = 0; i < n; i++)
                done[i].ticket |= FWD_TAG;
            return n;
        }
        if (c->nstash)
            return deliver_stash(c, done, max);
        if (c->dead && ring_cons_avail(&c->cmp) <= 0)
            return c->dead;
        int avail = wait_completions(c, timeout_ms == 0 || now_ns() >= deadline ? 0 : 1);
        if (avail < 0)
            return avail;
        if (avail > 0)
            return take(c, done, max, avail);
        if (timeout_ms == 0 || now_ns() >= deadline)
            return 0;
        if (remote_outstanding(c->fwd) == 0)
            return oag_poll(c, done, max, (int)((deadline - now_ns()) / 1000000ull));
    }
}

OAG_EXPORT int oag_poll(oag_client *c, oag_completion *done, int max, int timeout_ms)
{
    if (c->remote)
        return remote_poll(c->remote, done, max, timeout_ms);
    if (max <= 0)
        return -EINVAL;
    if (c->fwd && remote_outstanding(c->fwd) > 0)
        return poll_both(c, done, max, timeout_ms);
    release_held(c);
    if (c->nstash)
        return deliver_stash(c, done, max);
    if (c->dead && ring_cons_avail(&c->cmp) <= 0)
        return c->dead;
    int avail = wait_completions(c, timeout_ms);
    if (avail < 0)
        return avail;
    int n = take(c, done, max, avail);
    if (c->evmode && n < max) {
        /* Event-fd mode: re-arm so that the next completion makes the fd readable. */
        uint64_t v;
        if (read(c->cmp_fd, &v, sizeof v) < 0 && errno != EAGAIN)
            return -errno;
        int more = ring_cons_prepare_sleep(&c->cmp);
        if (more > 0) {
            oag_store_seqcst_u32(c->cmp.waiting, 1); /* stay armed */
            n += take(c, done + n, max - n, more - n > 0 ? more - n : 0);
        }
    }
    return n;
}

OAG_EXPORT int oag_event_fd(oag_client *c)
{
    if (c->remote)
        return remote_event_fd(c->remote);
    c->evmode = 1;
    oag_store_seqcst_u32(c->cmp.waiting, 1);
    if (!c->fwd)
        return c->cmp_fd;
    /* With an overflow connection: one fd readable when either side has results. */
    if (c->fwd_epfd < 0) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event ev = { .events = EPOLLIN };
        int rfd = remote_event_fd(c->fwd);
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, c->cmp_fd, &ev) < 0 || rfd < 0 ||
            epoll_ctl(ep, EPOLL_CTL_ADD, rfd, &ev) < 0) {
            if (ep >= 0)
                close(ep);
            return -errno;
        }
        c->fwd_epfd = ep;
    }
    return c->fwd_epfd;
}

OAG_EXPORT unsigned oag_outstanding(const oag_client *c)
{
    if (c->remote)
        return remote_outstanding(c->remote);
    return c->outstanding + c->nstash + (c->fwd ? remote_outstanding(c->fwd) : 0);
}

/* Sets aside a completion oag_infer() met for another ticket (the caller's own asynchronous
 * tasks) and hands its slot back; oag_poll() delivers it later. Room is guaranteed: tasks
 * outstanding plus stashed never exceed the completion ring. */
static void stash_put(oag_client *c, const oag_completion *d)
{
    struct stash_ent *e = &c->stash[c->nstash];
    e->data = c->stash_buf + (size_t)c->nstash * c->hdr.max_payload;
    e->ticket = d->ticket;
    e->status = d->status;
    e->len = d->len;
    memcpy(e->data, d->data, d->len);
    c->nstash++;
    release_held(c);
}

OAG_EXPORT int oag_infer(oag_client *c, const void *in, size_t in_len, void *out,
                         size_t out_cap, size_t *out_len, int timeout_ms)
{
    if (c->remote)
        return remote_infer(c->remote, in, in_len, out, out_cap, out_len, timeout_ms);
    uint64_t ticket;
    int rc;
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ull;
    release_held(c);
    if (!c->stash) {
        c->stash = calloc(c->hdr.cmp_slots, sizeof *c->stash);
        c->stash_buf = malloc((size_t)c->hdr.cmp_slots * c->hdr.max_payload);
        if (!c->stash || !c->stash_buf)
            return -ENOMEM;
    }
    for (;;) {
        rc = check_space(c, in_len) == -EBUSY && c->fwd ? -EBUSY
                                                        : oag_submit(c, in, in_len, &ticket);
        if (rc == -EBUSY && c->fwd) /* the supervisor is full: the overflow target answers */
            return remote_infer(c->fwd, in, in_len, out, out_cap, out_len, timeout_ms);
        if (rc != -EAGAIN)
            break;
        /* Lane full with the caller's own async tasks: move their results aside. */
        int avail = wait_completions(c, 1);
        if (avail < 0)
            return avail;
        if (now_ns() >= deadline)
            return -ETIMEDOUT;
        for (int i = 0; i < avail && c->nstash < c->hdr.cmp_slots; i++) {
            oag_completion d;
            take(c, &d, 1, 1);
            stash_put(c, &d);
        }
    }
    if (rc)
        return rc;
    for (;;) {
        uint64_t t = now_ns();
        if (t >= deadline)
            return -ETIMEDOUT;
        int ms = deadline == UINT64_MAX ? -1 : (int)((deadline - t + 999999) / 1000000);
        int avail = wait_completions(c, ms);
        if (avail < 0)
            return avail;
        for (int i = 0; i < avail; i++) {
            oag_completion d;
            take(c, &d, 1, 1);
            if (d.ticket == ticket) {
                if (out_len)
                    *out_len = d.len;
                rc = d.status;
                if (rc == 0 && d.len > out_cap)
                    rc = -ENOBUFS;
                else if (rc == 0)
                    memcpy(out, d.data, d.len);
                release_held(c);
                return rc;
            }
            stash_put(c, &d);
        }
    }
}

OAG_EXPORT int oag_get_info(oag_client *c, oag_info *info)
{
    if (c->remote)
        return remote_get_info(c->remote, info);
    struct oag_global_state g;
    int rc = latch_read(&c->region->global.seq, c->region->global.rec[0], sizeof g / 8, &g, 1000);
    if (rc)
        return rc;
    memset(info, 0, sizeof *info);
    info->generation = g.generation;
    info->supervisor_pid = g.sup_pid;
    info->agent_id = c->hdr.lane_id;
    info->lane_generation = c->hdr.generation;
    info->max_payload = c->hdr.max_payload;
    info->max_batch = g.max_batch;
    info->max_delay_us = g.max_delay_us;
    info->ring_slots = c->hdr.cmp_slots;
    info->agents = g.agents;
    info->ready = g.ready;
    info->model_version = g.model_version;
    info->input_dim = g.input_dim;
    info->output_dim = g.output_dim;
    info->tasks_done = g.tasks_done;
    memcpy(info->engine, g.engine, sizeof info->engine);
    info->engine[sizeof info->engine - 1] = '\0';
    memcpy(info->model, g.model, sizeof info->model);
    info->model[sizeof info->model - 1] = '\0';
    return 0;
}
