/*
 * remote.c - liboag over ZeroMQ (contract: remote.h, frames: src/net/wire.h).
 *
 * Threads: the caller's thread (submit, poll, infer) and an I/O thread that owns every ZeroMQ
 * socket: it builds and sends frames, receives results, answers reconnects and failovers. With
 * an etcd:// endpoint a third thread reads the supervisors registered under the prefix when a
 * fourth, watching the prefix (a streaming /v3/watch), sees a change, and at least every
 * $OAG_NET_ETCD_POLL_MS, and hands the list to the I/O thread. One mutex (mu) guards all the
 * state below; the I/O thread holds it while it works on a batch of events, never while it
 * waits. Wake-ups: the caller writes wake_efd when a frame should leave (its first task, a full
 * frame, or the caller starting to wait); the I/O thread signals the condition variable (callers
 * blocked in poll/infer) and, in event-fd mode, user_efd, which is readable exactly while
 * finished tasks wait to be polled (written and reset only under mu).
 *
 * Slots: 2 x window slots of max_payload bytes; a task's slot holds its input until the result
 * arrives, then the result, until the caller has polled it and calls again. At most window
 * tasks are live (out, or done and not yet polled); the slots a poll handed out do not count,
 * as on a shared-memory lane: a caller that polled a whole window can submit again at once,
 * while the data it polled stays valid until its next poll. Ticket = task id =
 * (counter << 20) | slot, so a result finds its slot without a table and a stale or forged id
 * (wrong counter) is ignored.
 */
#include "remote.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "net/etcd.h"
#include "net/wire.h"

#define MAX_SUPS 32
#define SLOT_BITS 20
#define SLOT_MASK ((1u << SLOT_BITS) - 1)
#define ACK_EVERY 4            /* RESULTS frames received before an ACK leaves at once ... */
#define ACK_DELAY_NS 2000000ull /* ... or this long after the first unacknowledged one */

enum { S_FREE, S_OUT, S_DONE, S_HELD };
enum { POL_RR, POL_LEAST, POL_LATENCY };

struct rslot {
    uint64_t id;
    uint64_t sent_ns;
    uint64_t deadline_ns;     /* submit + timeout_us; 0: none */
    uint64_t frame_seq;       /* the TASKS frame it last left in */
    uint8_t *data;
    uint32_t len, timeout_us;
    int32_t status;
    int16_t sup;              /* assigned supervisor, -1: none yet */
    uint8_t state, priority;
    uint8_t queued;           /* in a send queue */
};

struct qent {
    uint32_t slot;
    uint64_t id;
};

struct rsup {
    char addr[256];
    void *sock, *mon;
    int live;                 /* wanted (listed in etcd, or the tcp:// endpoint) */
    int up;                   /* connected and welcomed */
    int shook;                /* a handshake on this socket has succeeded at least once */
    int blocked;              /* last send hit the high-water mark */
    struct qent *q;           /* send queue: ring of nslots entries */
    uint32_t qh, qn;
    uint64_t q_first_ns;
    uint64_t seq_out, seq_in, acked, ack_first_ns;
    uint32_t outstanding;
    double lat_us;            /* moving average of result latency */
    struct net_welcome w;
};

struct oag_remote {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t io, disc, watch;
    int io_started, disc_started, watch_started;
    atomic_int stop;
    void *zctx;
    int wake_efd, user_efd, tfd, disc_efd;
    int evmode;
    uint32_t window, max_payload;
    uint32_t nslots;          /* 2 x window: live tasks plus those a poll handed out */
    uint32_t nlive;           /* out, or done and not polled: at most window */
    struct rslot *slots;
    uint8_t *buf;
    uint32_t *freel, nfree;
    struct qent *cq;          /* finished, not yet polled: ring of nslots entries */
    uint32_t cqh, cqn;
    uint32_t *held, nheld;
    uint64_t counter, client_id, done_total;
    uint32_t ntimed;          /* outstanding tasks with a deadline */
    unsigned mon_seq;         /* monitor endpoint names */
    int hwm;                  /* $OAG_NET_HWM: ZeroMQ high-water marks (0: ZeroMQ's 1000) */
    struct rsup sups[MAX_SUPS];
    int nsups;
    int policy;
    uint32_t rr;
    uint32_t batch_max;
    uint64_t delay_ns;
    size_t frame_max;
    int flush_now, need_assign, welcomed, auth_failed;
    /* etcd:// */
    char etcd_base[256], prefix[256];
    unsigned etcd_poll_ms;
    char (*pend)[256];        /* the latest list the discovery thread read */
    int npend, pend_valid;
    /* CURVE (client side): the supervisor's public key and ours, Z85 */
    int curve;
    char server_key[41], pub_key[41], sec_key[41];
    /* oag_reserve */
    uint8_t *resv;
    int reserved;
    char err[256];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void efd_write(int fd)
{
    uint64_t one = 1;
    if (write(fd, &one, sizeof one) < 0) {
        /* EAGAIN: the counter is saturated, the fd readable all the same */
    }
}

static void efd_drain(int fd)
{
    uint64_t v;
    if (read(fd, &v, sizeof v) < 0) {
        /* EAGAIN: nothing pending */
    }
}

int remote_is_endpoint(const char *e)
{
    return e && (!strncmp(e, "tcp://", 6) || !strncmp(e, "etcd://", 7));
}

static unsigned env_u(const char *name, unsigned def, unsigned min, unsigned max)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return def;
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (*end || x < min || x > max)
        return def;
    return (unsigned)x;
}

/* ---- supervisors and sockets (I/O thread, under mu) ---------------------------------------- */

static int sup_open(struct oag_remote *r, int i)
{
    struct rsup *s = &r->sups[i];
    s->sock = zmq_socket(r->zctx, ZMQ_DEALER);
    if (!s->sock)
        return -ENOMEM;
    int zero = 0, ivl = 100, ivlmax = 1000, hb = 500, hbto = 2000, one = 1;
    int64_t maxmsg = (int64_t)r->frame_max * 4 + 65536;
    zmq_setsockopt(s->sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s->sock, ZMQ_RECONNECT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(s->sock, ZMQ_RECONNECT_IVL_MAX, &ivlmax, sizeof ivlmax);
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(s->sock, ZMQ_HEARTBEAT_TIMEOUT, &hbto, sizeof hbto);
    zmq_setsockopt(s->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(s->sock, ZMQ_IMMEDIATE, &one, sizeof one);
    if (r->hwm) {
        zmq_setsockopt(s->sock, ZMQ_SNDHWM, &r->hwm, sizeof r->hwm);
        zmq_setsockopt(s->sock, ZMQ_RCVHWM, &r->hwm, sizeof r->hwm);
    }
    if (r->curve) {
        zmq_setsockopt(s->sock, ZMQ_CURVE_SERVERKEY, r->server_key, 40);
        zmq_setsockopt(s->sock, ZMQ_CURVE_PUBLICKEY, r->pub_key, 40);
        zmq_setsockopt(s->sock, ZMQ_CURVE_SECRETKEY, r->sec_key, 40);
    }
    char mon[96];
    /* A fresh name each time: a closed socket's monitor endpoint goes away asynchronously. */
    snprintf(mon, sizeof mon, "inproc://oag-mon-%p-%d-%u", (void *)r, i, ++r->mon_seq);
    if (zmq_socket_monitor(s->sock, mon, ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) != 0)
        goto fail;
    s->mon = zmq_socket(r->zctx, ZMQ_PAIR);
    if (!s->mon || zmq_connect(s->mon, mon) != 0)
        goto fail;
    if (zmq_connect(s->sock, s->addr) != 0) {
        snprintf(r->err, sizeof r->err, "cannot connect to %s: %s", s->addr,
                 zmq_strerror(zmq_errno()));
        goto fail;
    }
    s->live = 1;
    s->up = s->blocked = 0;
    s->qn = s->qh = 0;
    return 0;
fail:
    if (s->mon)
        zmq_close(s->mon);
    zmq_close(s->sock);
    s->sock = s->mon = NULL;
    return -EINVAL;
}

/* Takes every task away from supervisor i (it left, or its connection broke while others
 * serve): they are assigned again by assign_pass. */
static void sup_orphan_tasks(struct oag_remote *r, int i)
{
    for (uint32_t k = 0; k < r->nslots; k++) {
        struct rslot *t = &r->slots[k];
        if (t->state == S_OUT && t->sup == i) {
            t->sup = -1;
            t->queued = 0;
        }
    }
    r->sups[i].qn = r->sups[i].qh = 0;
    r->sups[i].outstanding = 0;
    r->need_assign = 1;
}

static void sup_close(struct oag_remote *r, int i)
{
    struct rsup *s = &r->sups[i];
    if (s->mon)
        zmq_close(s->mon);
    if (s->sock)
        zmq_close(s->sock);
    s->sock = s->mon = NULL;
    s->live = s->up = 0;
    sup_orphan_tasks(r, i);
}

static int usable(const struct rsup *s) { return s->sock && s->live && s->up; }

/* Picks a supervisor for a new or orphaned task by the policy; -1 if none is usable. */
static int choose(struct oag_remote *r)
{
    int best = -1, n = r->nsups;
    double bestv = 0;
    for (int k = 0; k < n; k++) {
        int i = r->policy == POL_RR ? (int)((r->rr + (uint32_t)k) % (uint32_t)n) : k;
        struct rsup *s = &r->sups[i];
        if (!usable(s) || s->blocked || s->qn >= r->window ||
            (s->w.window && s->outstanding >= s->w.window))
            continue;
        if (r->policy == POL_RR) {
            r->rr = (uint32_t)i + 1;
            return i;
        }
        double v = r->policy == POL_LEAST ? (double)s->outstanding
                                          : ((double)s->outstanding + 1.0) *
                                                (s->lat_us > 0 ? s->lat_us : 100.0);
        if (best < 0 || v < bestv) {
            best = i;
            bestv = v;
        }
    }
    return best;
}

static int queued_here(const struct oag_remote *r, int i, const struct qent *q)
{
    const struct rslot *t = &r->slots[q->slot];
    return t->state == S_OUT && t->id == q->id && t->sup == i && t->queued;
}

static void enqueue(struct oag_remote *r, int i, uint32_t slot)
{
    struct rsup *s = &r->sups[i];
    struct rslot *t = &r->slots[slot];
    if (s->qn == r->nslots) {
        /* Full of entries gone stale (tasks that expired while queued): keep the live ones,
         * at most window, in order. */
        uint32_t n = 0;
        for (uint32_t k = 0; k < s->qn; k++) {
            struct qent q = s->q[(s->qh + k) % r->nslots];
            if (queued_here(r, i, &q))
                s->q[(s->qh + n++) % r->nslots] = q;
        }
        s->qn = n;
    }
    s->q[(s->qh + s->qn) % r->nslots] = (struct qent){ slot, t->id };
    if (s->qn++ == 0)
        s->q_first_ns = now_ns();
    t->sup = (int16_t)i;
    t->queued = 1;
    s->outstanding++;
}

/* Assigns the orphaned tasks (no supervisor, or theirs went away) to usable supervisors. */
static void assign_pass(struct oag_remote *r)
{
    r->need_assign = 0;
    for (uint32_t k = 0; k < r->nslots; k++) {
        struct rslot *t = &r->slots[k];
        if (t->state != S_OUT || t->sup >= 0)
            continue;
        int i = choose(r);
        if (i < 0) {
            r->need_assign = 1;
            return;
        }
        enqueue(r, i, k);
    }
}

/* ---- sending (I/O thread, under mu) ---------------------------------------------------------- */

static int send_ctl(struct oag_remote *r, struct rsup *s, uint8_t type)
{
    uint8_t b[NET_HDR];
    struct net_hdr h = { .type = type, .client = r->client_id, .ack = s->seq_in };
    net_put_hdr(b, &h);
    if (zmq_send(s->sock, b, sizeof b, ZMQ_DONTWAIT) < 0)
        return -zmq_errno();
    s->acked = s->seq_in;
    s->ack_first_ns = 0;
    return 0;
}

/* Sends one frame of queued tasks. Returns 1 if a frame left, 0 if nothing to send, -EAGAIN
 * at the high-water mark (the tasks stay queued). */
static int flush_one(struct oag_remote *r, int i)
{
    struct rsup *s = &r->sups[i];
    size_t size = NET_HDR;
    size_t fmax = s->w.frame_max && s->w.frame_max < r->frame_max ? s->w.frame_max : r->frame_max;
    uint32_t take = 0, count = 0;
    while (take < s->qn && count < r->batch_max) {
        struct qent *q = &s->q[(s->qh + take) % r->nslots];
        struct rslot *t = &r->slots[q->slot];
        if (queued_here(r, i, q)) {
            if (count > 0 && size + NET_TASK_REC + t->len > fmax)
                break;
            size += NET_TASK_REC + t->len;
            count++;
        }
        take++;
    }
    if (count == 0) {
        s->qh = (s->qh + take) % r->nslots;
        s->qn -= take;
        return 0;
    }
    zmq_msg_t m;
    if (zmq_msg_init_size(&m, size) != 0)
        return -ENOMEM;
    uint8_t *p = zmq_msg_data(&m);
    struct net_hdr h = { .type = NET_TASKS, .client = r->client_id, .seq = s->seq_out + 1,
                         .ack = s->seq_in };
    net_put_hdr(p, &h);
    size_t off = NET_HDR;
    uint64_t now = now_ns();
    for (uint32_t k = 0; k < take; k++) {
        struct qent *q = &s->q[(s->qh + k) % r->nslots];
        struct rslot *t = &r->slots[q->slot];
        if (queued_here(r, i, q))
            net_put_task(p, &off, t->id, t->timeout_us, t->priority, t->data, t->len);
    }
    net_finish(p, size, count);
    if (zmq_msg_send(&m, s->sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&m);
        if (e == EAGAIN) {
            s->blocked = 1;
            return -EAGAIN;
        }
        return -e;
    }
    s->blocked = 0;
    s->seq_out++;
    s->acked = s->seq_in;
    s->ack_first_ns = 0;
    for (uint32_t k = 0; k < take; k++) {
        struct qent *q = &s->q[(s->qh + k) % r->nslots];
        struct rslot *t = &r->slots[q->slot];
        if (queued_here(r, i, q)) {
            t->queued = 0;
            t->sent_ns = now;
            t->frame_seq = s->seq_out;
        }
    }
    s->qh = (s->qh + take) % r->nslots;
    s->qn -= take;
    s->q_first_ns = now;
    return 1;
}

/* Sends what is due: full frames, frames whose oldest task waited the delay, everything when a
 * caller waits; ACKs. Returns the next deadline (ns) or UINT64_MAX. */
static uint64_t flush_due(struct oag_remote *r)
{
    uint64_t now = now_ns(), next = UINT64_MAX;
    int all = r->flush_now;
    r->flush_now = 0;
    for (int i = 0; i < r->nsups; i++) {
        struct rsup *s = &r->sups[i];
        if (!usable(s))
            continue;
        /* Nothing left to send there (its queue went elsewhere, or results drained it): the
         * high-water mark is found again by the next send, not remembered forever, or submits
         * would say -EBUSY for good with nothing in flight. */
        if (s->blocked && s->qn == 0)
            s->blocked = 0;
        while (s->qn > 0) {
            if (!all && s->qn < r->batch_max && now < s->q_first_ns + r->delay_ns) {
                if (s->q_first_ns + r->delay_ns < next)
                    next = s->q_first_ns + r->delay_ns;
                break;
            }
            int rc = flush_one(r, i);
            if (rc == -EAGAIN) {
                if (now + 1000000 < next)
                    next = now + 1000000;
                break;
            }
            if (rc <= 0)
                break;
        }
        if (s->seq_in > s->acked) {
            if (s->seq_in - s->acked >= ACK_EVERY || now >= s->ack_first_ns + ACK_DELAY_NS)
                send_ctl(r, s, NET_ACK);
            else if (s->ack_first_ns + ACK_DELAY_NS < next)
                next = s->ack_first_ns + ACK_DELAY_NS;
        }
    }
    return next;
}

/* ---- receiving (I/O thread, under mu) -------------------------------------------------------- */

/* Ends task k with status (its data and len already set): out of its supervisor's count and
 * the deadline list, into the finished queue. */
static void task_end(struct oag_remote *r, uint32_t k, int32_t status)
{
    struct rslot *t = &r->slots[k];
    t->status = status;
    t->state = S_DONE;
    t->queued = 0;
    if (t->deadline_ns) {
        t->deadline_ns = 0;
        r->ntimed--;
    }
    if (t->sup >= 0 && r->sups[t->sup].outstanding > 0)
        r->sups[t->sup].outstanding--;
    r->cq[(r->cqh + r->cqn) % r->nslots] = (struct qent){ k, t->id };
    r->cqn++;
}

/* After tasks ended: callers blocked in poll/infer wake, and the event fd turns readable. */
static void ended_notify(struct oag_remote *r, int ended)
{
    if (!ended)
        return;
    if (r->evmode)
        efd_write(r->user_efd);
    pthread_cond_broadcast(&r->cv);
}

static void on_results(struct oag_remote *r, int i, const uint8_t *p, size_t len,
                       const struct net_hdr *h)
{
    struct rsup *s = &r->sups[i];
    if (h->seq <= s->seq_in)
        return; /* retransmitted after a reconnect and already here */
    s->seq_in = h->seq;
    if (s->ack_first_ns == 0)
        s->ack_first_ns = now_ns();
    uint64_t now = now_ns();
    size_t off = NET_HDR;
    struct net_rec rec;
    int added = 0;
    while (net_rec_next(p, len, h, &off, &rec)) {
        uint32_t k = (uint32_t)(rec.task & SLOT_MASK);
        if (k >= r->nslots)
            continue;
        struct rslot *t = &r->slots[k];
        if (t->id != rec.task || t->state != S_OUT)
            continue; /* finished already (by another supervisor, or before a reconnect) */
        if (rec.len)
            memcpy(t->data, rec.data, rec.len);
        t->len = rec.len;
        if (t->sent_ns && t->sup == i) {
            double us = (double)(now - t->sent_ns) / 1000.0;
            s->lat_us = s->lat_us > 0 ? s->lat_us * 0.9 + us * 0.1 : us;
        }
        task_end(r, k, rec.status);
        r->done_total++;
        added++;
    }
    ended_notify(r, added);
}

static void on_welcome(struct oag_remote *r, int i, const uint8_t *p)
{
    struct rsup *s = &r->sups[i];
    uint64_t old_session = s->w.session;
    net_get_welcome(p, &s->w);
    if (s->w.session != old_session) {
        /* Another gateway (restarted): both directions number their frames from 1 again. */
        s->seq_in = s->seq_out = s->acked = 0;
        s->ack_first_ns = 0;
    }
    s->up = 1;
    s->blocked = 0;
    if (!r->welcomed) {
        r->welcomed = 1;
        r->max_payload = s->w.max_payload;
    }
    /* After a reconnect: every task of ours it had not answered goes again (it drops those it
     * still holds; results it kept for us come back by themselves after our HELLO). */
    for (uint32_t k = 0; k < r->nslots; k++) {
        struct rslot *t = &r->slots[k];
        if (t->state == S_OUT && t->sup == i && !t->queued) {
            s->outstanding--;
            enqueue(r, i, k);
        }
    }
    r->need_assign = 1;
    pthread_cond_broadcast(&r->cv);
}

/* The supervisor refused our TASKS frame seq (its ERROR names it): its tasks end with code
 * rather than wait forever (sending them again would be refused again). */
static void fail_frame(struct oag_remote *r, int i, uint64_t seq, int32_t code)
{
    int added = 0;
    for (uint32_t k = 0; k < r->nslots; k++) {
        struct rslot *t = &r->slots[k];
        if (t->state != S_OUT || t->sup != i || t->queued || t->frame_seq != seq)
            continue;
        t->len = 0;
        task_end(r, k, code);
        added++;
    }
    ended_notify(r, added);
}

static void recv_sup(struct oag_remote *r, int i)
{
    struct rsup *s = &r->sups[i];
    for (int n = 0; n < 256 && s->sock; n++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, s->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        const uint8_t *p = zmq_msg_data(&m);
        size_t len = zmq_msg_size(&m);
        struct net_hdr h;
        const char *why = "";
        int rc = net_frame_parse(p, len, r->max_payload ? r->max_payload : (1u << 30), &h, &why);
        if (rc) {
            snprintf(r->err, sizeof r->err, "bad frame from %s ignored: %s", s->addr, why);
        } else if (h.type == NET_RESULTS) {
            on_results(r, i, p, len, &h);
        } else if (h.type == NET_WELCOME) {
            on_welcome(r, i, p);
        } else if (h.type == NET_ERROR) {
            char text[200];
            int32_t code = net_get_error(p, len, text, sizeof text);
            snprintf(r->err, sizeof r->err, "%s: %s (%d)", s->addr, text, code);
            if (h.seq && h.client == r->client_id)
                fail_frame(r, i, h.seq, code < 0 ? code : -EPROTO);
        }
        zmq_msg_close(&m);
    }
}

static void recv_mon(struct oag_remote *r, int i)
{
    struct rsup *s = &r->sups[i];
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (!s->mon || zmq_msg_recv(&m, s->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        uint16_t ev = 0;
        if (zmq_msg_size(&m) >= 6)
            memcpy(&ev, zmq_msg_data(&m), 2);
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        if (more) { /* the endpoint part */
            zmq_msg_init(&m);
            zmq_msg_recv(&m, s->mon, ZMQ_DONTWAIT);
            zmq_msg_close(&m);
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            s->shook = 1;
            send_ctl(r, s, NET_HELLO);
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
            s->up = 0;
            /* Others serve: move its tasks there now rather than wait for it to come back. */
            int others = 0;
            for (int k = 0; k < r->nsups; k++)
                others += k != i && usable(&r->sups[k]);
            if (others)
                sup_orphan_tasks(r, i);
        } else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ||
                   (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && r->curve && !s->shook)) {
            /* Refused keys. A protocol failure counts as one only under CURVE before any
             * handshake succeeded (a wrong server key looks like that); later, or without
             * CURVE, it is a connection broken mid-greeting: ZeroMQ reconnects. */
            snprintf(r->err, sizeof r->err, "%s refused the CURVE handshake (wrong or unknown "
                                            "key)", s->addr);
            r->auth_failed = 1;
            pthread_cond_broadcast(&r->cv);
        }
    }
}

/* Applies the list the discovery thread read: new supervisors connected, gone ones closed and
 * their tasks moved. */
static void reconcile(struct oag_remote *r)
{
    r->pend_valid = 0;
    for (int i = 0; i < r->nsups; i++) {
        struct rsup *s = &r->sups[i];
        if (!s->sock)
            continue;
        int found = 0;
        for (int k = 0; k < r->npend && !found; k++)
            found = !strcmp(r->pend[k], s->addr);
        if (!found)
            sup_close(r, i);
    }
    for (int k = 0; k < r->npend; k++) {
        int found = -1, freei = -1;
        for (int i = 0; i < r->nsups; i++) {
            if (!strcmp(r->pend[k], r->sups[i].addr))
                found = i;
            if (!r->sups[i].sock && freei < 0)
                freei = i;
        }
        if (found >= 0 && r->sups[found].sock)
            continue;
        int i = found >= 0 ? found : freei >= 0 ? freei : r->nsups;
        if (i >= MAX_SUPS)
            continue;
        struct rsup *s = &r->sups[i];
        struct qent *q = s->q;
        memset(s, 0, sizeof *s);
        s->q = q;
        snprintf(s->addr, sizeof s->addr, "%s", r->pend[k]);
        if (i == r->nsups)
            r->nsups++;
        sup_open(r, i);
    }
}

/* Ends the tasks whose deadline passed with -ETIMEDOUT, wherever they are (queued, sent, or
 * waiting for a supervisor): the contract of oag_submit_opts.timeout_us holds even when no
 * supervisor answers. A result that comes later is ignored. Returns the next deadline. */
static uint64_t expire(struct oag_remote *r)
{
    uint64_t now = now_ns(), next = UINT64_MAX;
    int added = 0;
    for (uint32_t k = 0; k < r->nslots && r->ntimed; k++) {
        struct rslot *t = &r->slots[k];
        if (t->state != S_OUT || !t->deadline_ns)
            continue;
        if (now < t->deadline_ns) {
            if (t->deadline_ns < next)
                next = t->deadline_ns;
            continue;
        }
        t->len = 0;
        task_end(r, k, -ETIMEDOUT);
        added++;
    }
    ended_notify(r, added);
    return next;
}

static void *io_main(void *arg)
{
    struct oag_remote *r = arg;
    zmq_pollitem_t items[2 + 2 * MAX_SUPS];
    int idx[2 * MAX_SUPS];
    uint64_t next = UINT64_MAX;
    while (!atomic_load(&r->stop)) {
        int n = 0;
        pthread_mutex_lock(&r->mu);
        items[n++] = (zmq_pollitem_t){ .fd = r->wake_efd, .events = ZMQ_POLLIN };
        items[n++] = (zmq_pollitem_t){ .fd = r->tfd, .events = ZMQ_POLLIN };
        for (int i = 0; i < r->nsups; i++) {
            if (!r->sups[i].sock)
                continue;
            idx[n - 2] = i;
            items[n++] = (zmq_pollitem_t){ .socket = r->sups[i].sock, .events = ZMQ_POLLIN };
            idx[n - 2] = i;
            items[n++] = (zmq_pollitem_t){ .socket = r->sups[i].mon, .events = ZMQ_POLLIN };
        }
        pthread_mutex_unlock(&r->mu);
        long tmo = 200;
        if (next != UINT64_MAX) {
            struct itimerspec its = { .it_value = { .tv_sec = (time_t)(next / 1000000000ull),
                                                    .tv_nsec = (long)(next % 1000000000ull) } };
            timerfd_settime(r->tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        int rc = zmq_poll(items, n, tmo);
        if (rc < 0 && zmq_errno() == ETERM)
            break;
        if (items[0].revents & ZMQ_POLLIN)
            efd_drain(r->wake_efd);
        if (items[1].revents & ZMQ_POLLIN)
            efd_drain(r->tfd);
        pthread_mutex_lock(&r->mu);
        if (r->pend_valid)
            reconcile(r);
        for (int k = 2; k < n; k++) {
            if (!(items[k].revents & ZMQ_POLLIN))
                continue;
            int i = idx[k - 2];
            if (!r->sups[i].sock || (items[k].socket != r->sups[i].sock &&
                                     items[k].socket != r->sups[i].mon))
                continue; /* closed by reconcile above */
            if (items[k].socket == r->sups[i].mon)
                recv_mon(r, i);
            else
                recv_sup(r, i);
        }
        if (r->need_assign)
            assign_pass(r);
        next = flush_due(r);
        if (r->ntimed) {
            uint64_t d = expire(r);
            if (d < next)
                next = d;
        }
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

/* ---- discovery (etcd://) ------------------------------------------------------------------- */

struct disc_list {
    char (*addr)[256];
    int n, cap;
};

static void on_kv(const char *key, const char *val, void *arg)
{
    struct disc_list *l = arg;
    (void)key;
    if (l->n >= l->cap)
        return;
    cJSON *j = cJSON_Parse(val);
    const cJSON *a = j ? cJSON_GetObjectItemCaseSensitive(j, "addr") : NULL;
    if (cJSON_IsString(a) && !strncmp(a->valuestring, "tcp://", 6) &&
        strlen(a->valuestring) < 256)
        snprintf(l->addr[l->n++], 256, "%s", a->valuestring);
    cJSON_Delete(j);
}

/* The watch thread: any change under the prefix wakes the discovery thread at once (which
 * then reads the whole prefix); the periodic read stays as the fallback. */
static int watch_event(void *arg)
{
    struct oag_remote *r = arg;
    efd_write(r->disc_efd);
    return atomic_load(&r->stop);
}

static int watch_stop(void *arg) { return atomic_load(&((struct oag_remote *)arg)->stop); }

static void *watch_main(void *arg)
{
    struct oag_remote *r = arg;
    struct etcd *e = NULL;
    if (etcd_create(&e, r->etcd_base, 1000))
        return NULL;
    while (!atomic_load(&r->stop)) {
        etcd_watch_prefix(e, r->prefix, watch_event, watch_stop, r);
        /* Ended (etcd restarted, or an error): read the prefix now, watch again soon. */
        efd_write(r->disc_efd);
        for (int k = 0; k < 5 && !atomic_load(&r->stop); k++)
            usleep(100000);
    }
    etcd_destroy(e);
    return NULL;
}

static void *disc_main(void *arg)
{
    struct oag_remote *r = arg;
    struct etcd *e = NULL;
    struct disc_list l = { .cap = MAX_SUPS };
    l.addr = calloc(MAX_SUPS, 256);
    if (!l.addr || etcd_create(&e, r->etcd_base, 1000)) {
        free(l.addr);
        return NULL;
    }
    while (!atomic_load(&r->stop)) {
        l.n = 0;
        int rc = etcd_range_prefix(e, r->prefix, on_kv, &l);
        if (rc >= 0) {
            pthread_mutex_lock(&r->mu);
            memcpy(r->pend, l.addr, (size_t)l.n * 256);
            r->npend = l.n;
            r->pend_valid = 1;
            pthread_mutex_unlock(&r->mu);
            efd_write(r->wake_efd);
        }
        struct pollfd pf = { .fd = r->disc_efd, .events = POLLIN };
        if (poll(&pf, 1, (int)r->etcd_poll_ms) > 0)
            efd_drain(r->disc_efd);
    }
    etcd_destroy(e);
    free(l.addr);
    return NULL;
}

/* ---- connect / close ----------------------------------------------------------------------- */

/* Reads a CURVE key: $NAME holds 40 Z85 characters, or a file path whose first such token is the
 * key (secret files hold "public secret" or two lines). */
static int read_key(const char *spec, int which, char out[41])
{
    char buf[256];
    const char *s = spec;
    if (strlen(spec) != 40) {
        FILE *f = fopen(spec, "r");
        if (!f)
            return -errno;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        s = buf;
        for (int k = 0; k < which; k++) {
            s += strspn(s, " \t\r\n");
            s += strcspn(s, " \t\r\n");
        }
        s += strspn(s, " \t\r\n");
        if (strcspn(s, " \t\r\n") != 40)
            return -EINVAL;
    }
    memcpy(out, s, 40);
    out[40] = '\0';
    uint8_t bin[32];
    return zmq_z85_decode(bin, out) ? 0 : -EINVAL;
}

void remote_close(struct oag_remote *r)
{
    if (!r)
        return;
    atomic_store(&r->stop, 1);
    if (r->wake_efd >= 0)
        efd_write(r->wake_efd);
    if (r->disc_efd >= 0)
        efd_write(r->disc_efd);
    if (r->io_started)
        pthread_join(r->io, NULL);
    if (r->disc_started)
        pthread_join(r->disc, NULL);
    if (r->watch_started)
        pthread_join(r->watch, NULL);
    for (int i = 0; i < MAX_SUPS; i++) {
        if (r->sups[i].mon)
            zmq_close(r->sups[i].mon);
        if (r->sups[i].sock)
            zmq_close(r->sups[i].sock);
    }
    for (int i = 0; i < MAX_SUPS; i++) /* every queue was allocated at connect */
        free(r->sups[i].q);
    if (r->zctx)
        zmq_ctx_term(r->zctx);
    int fds[] = { r->wake_efd, r->user_efd, r->tfd, r->disc_efd };
    for (size_t k = 0; k < sizeof fds / sizeof fds[0]; k++)
        if (fds[k] >= 0)
            close(fds[k]);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->slots);
    free(r->buf);
    free(r->freel);
    free(r->cq);
    free(r->held);
    free(r->pend);
    free(r->resv);
    free(r);
}

static int parse_endpoint(struct oag_remote *r, const char *ep, char *err, size_t errcap)
{
    char tmp[512];
    if (strlen(ep) >= sizeof tmp) {
        snprintf(err, errcap, "endpoint too long");
        return -EINVAL;
    }
    strcpy(tmp, ep);
    char *q = strchr(tmp, '?');
    if (q) {
        *q++ = '\0';
        for (char *kv = strtok(q, "&"); kv; kv = strtok(NULL, "&")) {
            if (!strcmp(kv, "policy=rr") || !strcmp(kv, "policy=round-robin"))
                r->policy = POL_RR;
            else if (!strcmp(kv, "policy=least"))
                r->policy = POL_LEAST;
            else if (!strcmp(kv, "policy=latency"))
                r->policy = POL_LATENCY;
            else {
                snprintf(err, errcap, "unknown endpoint option '%s' (known: policy=rr|least|"
                                      "latency)", kv);
                return -EINVAL;
            }
        }
    }
    if (!strncmp(tmp, "tcp://", 6)) {
        /* tcp://HOST:PORT, or several separated by commas (spread by the policy) */
        char *save = NULL;
        for (char *a = strtok_r(tmp, ",", &save); a; a = strtok_r(NULL, ",", &save)) {
            if (strncmp(a, "tcp://", 6) || !strchr(a + 6, ':') || strlen(a) >= 256 ||
                r->npend >= MAX_SUPS) {
                snprintf(err, errcap, "%.200s: expected tcp://HOST:PORT[,tcp://HOST:PORT...] "
                                      "(at most %d)", a, MAX_SUPS);
                return -EINVAL;
            }
            snprintf(r->pend[r->npend++], 256, "%s", a);
        }
        r->pend_valid = 1;
        return 0;
    }
    /* etcd://HOST:PORT/PREFIX */
    char *host = tmp + 7, *slash = strchr(host, '/');
    if (!slash || slash == host || !slash[1]) {
        snprintf(err, errcap, "%s: expected etcd://HOST:PORT/PREFIX", ep);
        return -EINVAL;
    }
    *slash = '\0';
    if (strlen(host) > 200 || strlen(slash + 1) > 200) {
        snprintf(err, errcap, "etcd host or prefix too long");
        return -EINVAL;
    }
    snprintf(r->etcd_base, sizeof r->etcd_base, "http://%.200s", host);
    snprintf(r->prefix, sizeof r->prefix, "/%.200s/", slash + 1);
    return 0;
}

int remote_connect(struct oag_remote **out, const char *endpoint, unsigned wait_ms, char *err,
                   size_t errcap)
{
    int rc = -ENOMEM;
    struct oag_remote *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->wake_efd = r->user_efd = r->tfd = r->disc_efd = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    r->window = env_u("OAG_NET_WINDOW", 1024, 1, 1u << (SLOT_BITS - 1));
    r->nslots = 2 * r->window;
    r->batch_max = env_u("OAG_NET_BATCH_MAX", 256, 1, 1u << 16);
    r->delay_ns = (uint64_t)env_u("OAG_NET_BATCH_DELAY_US", 100, 0, 10000000) * 1000ull;
    r->frame_max = env_u("OAG_NET_FRAME_MAX", 1u << 20, 4096, 1u << 28);
    r->hwm = (int)env_u("OAG_NET_HWM", 0, 1, 1u << 20);
    r->etcd_poll_ms = env_u("OAG_NET_ETCD_POLL_MS", 1000, 10, 60000);
    const char *pol = getenv("OAG_NET_POLICY");
    r->policy = pol && !strcmp(pol, "least") ? POL_LEAST
              : pol && !strcmp(pol, "latency") ? POL_LATENCY : POL_RR;
    r->pend = calloc(MAX_SUPS, 256);
    r->slots = calloc(r->nslots, sizeof *r->slots);
    r->freel = malloc(r->nslots * sizeof *r->freel);
    r->cq = malloc(r->nslots * sizeof *r->cq);
    r->held = malloc(r->nslots * sizeof *r->held);
    if (!r->pend || !r->slots || !r->freel || !r->cq || !r->held)
        goto fail;
    for (int i = 0; i < MAX_SUPS; i++)
        if (!(r->sups[i].q = malloc(r->nslots * sizeof(struct qent))))
            goto fail;
    for (uint32_t k = 0; k < r->nslots; k++) {
        r->slots[k].sup = -1;
        r->freel[k] = r->nslots - 1 - k;
    }
    r->nfree = r->nslots;
    rc = parse_endpoint(r, endpoint, err, errcap);
    if (rc)
        goto fail;
    const char *sk = getenv("OAG_CURVE_SERVER_KEY"), *ck = getenv("OAG_CURVE_CLIENT_KEY");
    if (sk && *sk) {
        if (!ck || !*ck) {
            snprintf(err, errcap, "OAG_CURVE_SERVER_KEY is set but OAG_CURVE_CLIENT_KEY (a file "
                                  "with this client's public and secret keys) is not");
            rc = -EINVAL;
            goto fail;
        }
        if (read_key(sk, 0, r->server_key) || read_key(ck, 0, r->pub_key) ||
            read_key(ck, 1, r->sec_key)) {
            snprintf(err, errcap, "cannot read the CURVE keys (OAG_CURVE_SERVER_KEY: 40 Z85 "
                                  "characters or a file; OAG_CURVE_CLIENT_KEY: a file holding "
                                  "'PUBLIC SECRET')");
            rc = -EINVAL;
            goto fail;
        }
        r->curve = 1;
    }
    if (getrandom(&r->client_id, sizeof r->client_id, 0) != sizeof r->client_id)
        r->client_id = now_ns() ^ ((uint64_t)getpid() << 32);
    r->wake_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->user_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->disc_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    r->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    r->zctx = zmq_ctx_new();
    if (r->wake_efd < 0 || r->user_efd < 0 || r->disc_efd < 0 || r->tfd < 0 || !r->zctx) {
        rc = -EMFILE;
        goto fail;
    }
    if (pthread_create(&r->io, NULL, io_main, r)) {
        rc = -EAGAIN;
        goto fail;
    }
    r->io_started = 1;
    if (r->etcd_base[0]) {
        if (pthread_create(&r->disc, NULL, disc_main, r)) {
            rc = -EAGAIN;
            goto fail;
        }
        r->disc_started = 1;
        if (pthread_create(&r->watch, NULL, watch_main, r)) {
            rc = -EAGAIN;
            goto fail;
        }
        r->watch_started = 1;
    }
    efd_write(r->wake_efd);

    /* Wait for a first supervisor to welcome us: it tells the payload size. */
    if (!wait_ms)
        wait_ms = env_u("OAG_NET_CONNECT_MS", 10000, 1, 3600000);
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += wait_ms / 1000;
    dl.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&r->mu);
    while (!r->welcomed && !r->auth_failed)
        if (pthread_cond_timedwait(&r->cv, &r->mu, &dl) == ETIMEDOUT)
            break;
    int ok = r->welcomed;
    if (!ok) {
        rc = r->auth_failed ? -EACCES : -ENOENT;
        snprintf(err, errcap, "%s", r->err[0] ? r->err
                 : r->etcd_base[0] ? "no supervisor registered under the prefix answered"
                                   : "no supervisor answered at this endpoint");
    } else if (!(r->buf = malloc((size_t)r->nslots * r->max_payload + 1)) ||
               !(r->resv = malloc(r->max_payload + 1))) {
        ok = 0;
        rc = -ENOMEM;
    } else {
        for (uint32_t k = 0; k < r->nslots; k++)
            r->slots[k].data = r->buf + (size_t)k * r->max_payload;
    }
    pthread_mutex_unlock(&r->mu);
    if (!ok)
        goto fail;
    *out = r;
    return 0;
fail:
    remote_close(r);
    return rc;
}

/* ---- the calls ----------------------------------------------------------------------------- */

/* Frees the slots the previous poll handed out (their data is no longer the caller's). */
static void release_held(struct oag_remote *r)
{
    for (uint32_t k = 0; k < r->nheld; k++) {
        r->slots[r->held[k]].state = S_FREE;
        r->slots[r->held[k]].id = 0;
        r->freel[r->nfree++] = r->held[k];
    }
    r->nheld = 0;
}

static int submit_locked(struct oag_remote *r, const void *in, size_t len,
                         const oag_submit_opts *opts, uint64_t *ticket)
{
    if (r->auth_failed)
        return -EACCES;
    if (len > r->max_payload) {
        snprintf(r->err, sizeof r->err, "task of %zu bytes exceeds the maximum payload of %u "
                                        "bytes", len, r->max_payload);
        return -EMSGSIZE;
    }
    if (r->nlive >= r->window)
        return -EAGAIN;
    int i = choose(r);
    if (i < 0) {
        int any_live = 0, any_blocked = 0;
        for (int k = 0; k < r->nsups; k++) {
            any_live |= usable(&r->sups[k]);
            any_blocked |= usable(&r->sups[k]) && r->sups[k].blocked;
        }
        if (any_blocked)
            return -EBUSY; /* the connections are at their high-water mark */
        if (any_live)
            return -EAGAIN; /* at the supervisors' windows: poll results first */
        /* None connected right now (reconnecting, or failing over): the task waits for one. */
    }
    uint32_t k = r->freel[--r->nfree]; /* nlive < window: at least window slots are not held */
    r->nlive++;
    struct rslot *t = &r->slots[k];
    t->id = (++r->counter << SLOT_BITS) | k;
    t->len = (uint32_t)len;
    t->timeout_us = opts ? opts->timeout_us : 0;
    t->priority = opts ? opts->priority : 0;
    t->status = 0;
    t->state = S_OUT;
    t->sent_ns = 0;
    t->deadline_ns = 0;
    if (t->timeout_us) {
        t->deadline_ns = now_ns() + (uint64_t)t->timeout_us * 1000ull;
        if (r->ntimed++ == 0)
            efd_write(r->wake_efd); /* the I/O thread arms its timer for it */
    }
    t->sup = -1;
    t->queued = 0;
    if (in != t->data && len)
        memcpy(t->data, in, len);
    if (ticket)
        *ticket = t->id;
    if (i < 0) {
        r->need_assign = 1;
        efd_write(r->wake_efd);
        return 0;
    }
    enqueue(r, i, k);
    uint32_t qn = r->sups[i].qn;
    if (qn == 1 || qn >= r->batch_max)
        efd_write(r->wake_efd);
    return 0;
}

int remote_submit(struct oag_remote *r, const void *in, size_t len, const oag_submit_opts *opts,
                  uint64_t *ticket)
{
    if (r->reserved)
        return -EBUSY;
    pthread_mutex_lock(&r->mu);
    int rc = submit_locked(r, in, len, opts, ticket);
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int remote_reserve(struct oag_remote *r, size_t len, void **buf)
{
    if (r->reserved)
        return -EBUSY;
    if (len > r->max_payload)
        return -EMSGSIZE;
    r->reserved = 1;
    *buf = r->resv;
    return 0;
}

int remote_commit(struct oag_remote *r, size_t len, const oag_submit_opts *opts,
                  uint64_t *ticket)
{
    if (!r->reserved)
        return -EINVAL;
    r->reserved = 0;
    return remote_submit(r, r->resv, len, opts, ticket);
}

/* Waits on the condition variable until deadline (UINT64_MAX: forever); asks the I/O thread to
 * send everything queued first, since the caller now waits for it. */
static int wait_locked(struct oag_remote *r, uint64_t deadline)
{
    r->flush_now = 1;
    efd_write(r->wake_efd);
    if (deadline == UINT64_MAX) {
        pthread_cond_wait(&r->cv, &r->mu);
        return 0;
    }
    if (now_ns() >= deadline)
        return -ETIMEDOUT;
    struct timespec ts = { .tv_sec = (time_t)(deadline / 1000000000ull),
                           .tv_nsec = (long)(deadline % 1000000000ull) };
    return pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT ? -ETIMEDOUT : 0;
}

int remote_poll(struct oag_remote *r, oag_completion *done, int max, int timeout_ms)
{
    if (max <= 0)
        return -EINVAL;
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int n = 0;
    pthread_mutex_lock(&r->mu);
    release_held(r);
    for (;;) {
        while (n < max && r->cqn > 0) {
            struct qent q = r->cq[r->cqh];
            r->cqh = (r->cqh + 1) % r->nslots;
            r->cqn--;
            struct rslot *t = &r->slots[q.slot];
            if (t->state != S_DONE || t->id != q.id)
                continue; /* not expected: oag_infer removes the entry of the task it takes */
            t->state = S_HELD;
            r->nlive--;
            r->held[r->nheld++] = q.slot;
            done[n++] = (oag_completion){ .ticket = t->id, .status = t->status, .len = t->len,
                                          .data = t->data };
        }
        if (n > 0 || timeout_ms == 0 || r->auth_failed)
            break;
        if (wait_locked(r, deadline) == -ETIMEDOUT && r->cqn == 0)
            break;
    }
    if (r->evmode && r->cqn == 0)
        efd_drain(r->user_efd);
    int rc = n == 0 && r->auth_failed ? -EACCES : n;
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int remote_infer(struct oag_remote *r, const void *in, size_t in_len, void *out, size_t out_cap,
                 size_t *out_len, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ull;
    uint64_t ticket;
    if (r->reserved)
        return -EBUSY;
    pthread_mutex_lock(&r->mu);
    release_held(r);
    int rc = submit_locked(r, in, in_len, NULL, &ticket);
    if (rc) {
        pthread_mutex_unlock(&r->mu);
        return rc;
    }
    struct rslot *t = &r->slots[ticket & SLOT_MASK];
    while (t->state != S_DONE) {
        if (wait_locked(r, deadline) == -ETIMEDOUT && t->state != S_DONE) {
            /* The task stays outstanding: its result, when it comes, is polled like any. */
            pthread_mutex_unlock(&r->mu);
            return -ETIMEDOUT;
        }
        if (r->auth_failed) {
            pthread_mutex_unlock(&r->mu);
            return -EACCES;
        }
    }
    rc = t->status;
    if (out_len)
        *out_len = t->len;
    if (rc == 0 && t->len > out_cap)
        rc = -ENOBUFS;
    else if (rc == 0 && t->len)
        memcpy(out, t->data, t->len);
    /* Its completion-queue entry goes (poll returns in any order: the last one takes its
     * place), so a caller using only oag_infer never fills the queue with dead entries. */
    for (uint32_t k = 0; k < r->cqn; k++) {
        struct qent *q = &r->cq[(r->cqh + k) % r->nslots];
        if (q->id == ticket) {
            *q = r->cq[(r->cqh + r->cqn - 1) % r->nslots];
            r->cqn--;
            break;
        }
    }
    t->state = S_FREE;
    t->id = 0;
    r->nlive--;
    r->freel[r->nfree++] = (uint32_t)(ticket & SLOT_MASK);
    if (r->evmode && r->cqn == 0)
        efd_drain(r->user_efd); /* not readable for a result oag_poll will never see */
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int remote_event_fd(struct oag_remote *r)
{
    pthread_mutex_lock(&r->mu);
    r->evmode = 1;
    if (r->cqn > 0)
        efd_write(r->user_efd);
    pthread_mutex_unlock(&r->mu);
    return r->user_efd;
}

unsigned remote_outstanding(const struct oag_remote *r)
{
    struct oag_remote *m = (struct oag_remote *)r;
    pthread_mutex_lock(&m->mu);
    unsigned n = m->nlive;
    pthread_mutex_unlock(&m->mu);
    return n;
}

int remote_get_info(struct oag_remote *r, oag_info *info)
{
    memset(info, 0, sizeof *info);
    pthread_mutex_lock(&r->mu);
    int agents = 0;
    const struct rsup *first = NULL;
    for (int i = 0; i < r->nsups; i++)
        if (usable(&r->sups[i])) {
            agents++;
            if (!first)
                first = &r->sups[i];
        }
    info->max_payload = r->max_payload;
    info->ring_slots = r->window;
    info->agents = (uint32_t)agents; /* supervisors reachable */
    info->ready = agents > 0;
    info->tasks_done = r->done_total;
    if (first) {
        snprintf(info->engine, sizeof info->engine, "%s", first->w.engine);
        info->input_dim = first->w.input_dim;
        info->output_dim = first->w.output_dim;
    }
    pthread_mutex_unlock(&r->mu);
    return 0;
}
