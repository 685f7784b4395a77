/*
 * gateway.c - remote agents served through a ZeroMQ ROUTER, passed on to the supervisor's own
 * lanes through liboag (contract: gateway.h; frames: wire.h).
 *
 * One thread owns the ROUTER, the ZAP socket (CURVE) and the lanes; it waits in zmq_poll on
 * the ROUTER, the lanes' event fds, a timer and a stop eventfd. Its state is private; the etcd
 * thread reads only the load counter (an atomic).
 *
 * A task's life: a TASKS record is validated with its frame, looked up by (client, task id)
 * (a duplicate, after a reconnect, is dropped: its result comes once), submitted to a lane (or
 * held in a bounded overflow queue when every lane is full, else answered -EBUSY), its result
 * appended to the client's results frame, and the frame kept until the client's ack covers it;
 * only then is the (client, task id) entry released. A client that reconnects says in its
 * HELLO which frames it holds; the others are sent again.
 */
#include "gateway.h"

#include <arpa/inet.h>
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
#include "net/hmap.h"
#include "net/wire.h"
#include "oag/oag.h"
#include "scheduler/log.h"

#define GW_MAX_LANES 16
#define GW_MAX_CLIENTS 64     /* the task pool holds 2 x window for each (~16 KiB x window) */
#define GW_MAX_KEYS 1024
#define GW_OVERFLOW 16384
#define GW_IDLE_NS 60000000000ull /* a silent client with nothing pending is forgotten */

enum { T_FREE, T_LANE, T_OVERFLOW, T_DONE };

struct gtask {
    uint64_t task;
    uint64_t ticket;
    uint32_t cli;
    uint32_t next;             /* free list */
    uint8_t state, lane;
};

struct rframe {                /* a results frame kept until acknowledged */
    uint64_t seq;
    uint8_t *buf;
    size_t len;
    uint32_t *tasks;           /* gtask indices it finishes */
    uint32_t ntasks;
};

struct gclient {
    int used;
    uint64_t id;
    uint8_t rid[256];
    size_t rid_len;
    char key[41];              /* CURVE: the client key (ZAP User-Id) that owns this client id */
    uint64_t seq_in;           /* last TASKS frame taken */
    uint64_t seq_out;          /* last RESULTS frame built */
    uint64_t last_ns;
    uint32_t tracked;          /* gtasks held for it (any state) */
    struct rframe *ret;        /* ring of kept frames */
    uint32_t ret_head, ret_n, ret_cap;
    uint32_t unsent;           /* kept frames not yet handed to ZeroMQ (at the tail) */
    /* results frame being built */
    uint8_t *bb;
    size_t blen, bcap;
    uint32_t bcount;
    uint32_t *btasks;
    uint32_t bntasks, btcap;
    uint64_t bfirst_ns;
};

struct ovf {                   /* a task waiting for lane room */
    uint32_t t;
    uint32_t len, timeout_us;
    uint8_t priority;
    uint8_t *data;
};

struct gateway {
    struct gateway_cfg cfg;
    uint64_t session;          /* random per start (WELCOME): sequence numbers begin again */
    void *zctx, *router, *zap, *mon;
    int stop_efd, tfd, reg_efd;
    pthread_t thr, reg;
    int thr_started, reg_started;
    atomic_int stop;
    atomic_uint load;          /* tasks in flight: written by the gateway thread, read by reg */
    atomic_int draining;       /* the supervisor stopped publishing ready: written by the
                                  gateway thread, read by reg (which then deregisters) */
    /* lanes */
    oag_client *lane[GW_MAX_LANES];
    int lane_fd[GW_MAX_LANES];
    uint32_t nlanes, rr;
    uint32_t max_payload;
    oag_info info;
    /* tasks */
    struct gtask *tasks;
    uint32_t ntasks_cap, free_head, nlive;
    struct hmap by_task;       /* (client slot, task id) -> gtask */
    struct hmap by_ticket;     /* (lane, ticket) -> gtask */
    struct ovf *ovf;
    uint32_t ovf_head, ovf_n;
    struct gclient *cli;
    uint32_t ncli;
    uint8_t (*keys)[32];
    int nkeys;
    uint64_t refused_frames, dup_tasks, dropped_tasks;
    uint64_t hs_warn_ns, hs_quiet;  /* handshake refusals: rate-limited log */
    char addr[256];            /* as registered */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int gateway_is_loopback(const char *listen)
{
    if (strncmp(listen, "tcp://", 6))
        return 0;
    const char *h = listen + 6;
    const char *colon = strrchr(h, ':');
    if (!colon || colon == h)
        return 0;
    char host[128];
    size_t n = (size_t)(colon - h);
    if (n >= sizeof host)
        return 0;
    memcpy(host, h, n);
    host[n] = '\0';
    if (!strcmp(host, "localhost"))
        return 1;
    if (host[0] == '[' && n > 2 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return 0;
}

/* ---- keys ------------------------------------------------------------------------------------ */

/* Reads the Z85 token number which (0-based) of a file into out. */
static int key_token(const char *path, int which, char out[41])
{
    char buf[512];
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *s = buf;
    for (int k = 0; k < which; k++) {
        s += strspn(s, " \t\r\n");
        s += strcspn(s, " \t\r\n");
    }
    s += strspn(s, " \t\r\n");
    if (strcspn(s, " \t\r\n") != 40)
        return -EINVAL;
    memcpy(out, s, 40);
    out[40] = '\0';
    uint8_t bin[32];
    return zmq_z85_decode(bin, out) ? 0 : -EINVAL;
}

static int load_allowed(struct gateway *g, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        log_err("--curve-allowed-keys %s: %s", path, strerror(errno));
        return -EINVAL;
    }
    char line[256];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line + strspn(line, " \t");
        if (*s == '#')
            continue; /* a comment: only at the start ('#' is a Z85 character) */
        size_t n = strcspn(s, " \t\r\n");
        if (n == 0)
            continue;
        char z[41];
        if (n != 40 || g->nkeys >= GW_MAX_KEYS) {
            log_err("%s:%d: expected a 40-character Z85 public key (at most %d keys)", path,
                    lineno, GW_MAX_KEYS);
            fclose(f);
            return -EINVAL;
        }
        memcpy(z, s, 40);
        z[40] = '\0';
        if (!zmq_z85_decode(g->keys[g->nkeys], z)) {
            log_err("%s:%d: not a Z85 key", path, lineno);
            fclose(f);
            return -EINVAL;
        }
        g->nkeys++;
    }
    fclose(f);
    return 0;
}

/* Answers one ZAP request (RFC 27): CURVE clients whose key is in the allowed file pass. */
static void zap_answer(struct gateway *g)
{
    zmq_msg_t part[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], g->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&part[n]);
            break;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    while (more) { /* too many parts: drain */
        zmq_msg_t x;
        zmq_msg_init(&x);
        if (zmq_msg_recv(&x, g->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&x);
            break;
        }
        more = zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    if (n < 6)
        goto out;
    /* version, request id, domain, address, routing id, mechanism, credentials... */
    const char *code = "400", *text = "key not allowed";
    char peer[64] = "?", z[41] = "?";
    size_t al = zmq_msg_size(&part[3]);
    if (al < sizeof peer) {
        memcpy(peer, zmq_msg_data(&part[3]), al);
        peer[al] = '\0';
    }
    int curve = zmq_msg_size(&part[5]) == 5 && !memcmp(zmq_msg_data(&part[5]), "CURVE", 5);
    if (curve && n >= 7 && zmq_msg_size(&part[6]) == 32) {
        zmq_z85_encode(z, zmq_msg_data(&part[6]), 32);
        for (int k = 0; k < g->nkeys; k++)
            if (!memcmp(g->keys[k], zmq_msg_data(&part[6]), 32)) {
                code = "200";
                text = "OK";
            }
    }
    if (code[0] != '2')
        log_warn("gateway: refused a client from %s: CURVE key %s is not in %s", peer, z,
                 g->cfg.curve_allowed);
    zmq_send(g->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(g->zap, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
    zmq_send(g->zap, code, 3, ZMQ_SNDMORE);
    zmq_send(g->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(g->zap, z, code[0] == '2' ? 40 : 0, ZMQ_SNDMORE);
    zmq_send(g->zap, "", 0, 0);
out:
    for (int k = 0; k < n; k++)
        zmq_msg_close(&part[k]);
}

/* Logs the connections ZeroMQ refused before any frame: a failed CURVE handshake (unknown or
 * wrong keys, or no CURVE at all), a peer cut for a message over ZMQ_MAXMSGSIZE. */
static void on_monitor(struct gateway *g)
{
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, g->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return;
        }
        uint16_t ev = 0;
        uint32_t val = 0;
        if (zmq_msg_size(&m) >= 6) {
            memcpy(&ev, zmq_msg_data(&m), 2);
            memcpy(&val, (uint8_t *)zmq_msg_data(&m) + 2, 4);
        }
        int more = zmq_msg_more(&m);
        zmq_msg_close(&m);
        char peer[128] = "";
        if (more) {
            zmq_msg_init(&m);
            int n = zmq_msg_recv(&m, g->mon, ZMQ_DONTWAIT);
            if (n > 0)
                snprintf(peer, sizeof peer, "%.*s", n < 120 ? n : 120,
                         (const char *)zmq_msg_data(&m));
            zmq_msg_close(&m);
        }
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
            /* A refused peer retries every ~100 ms: one line per second at most. */
            uint64_t now = now_ns();
            if (now - g->hs_warn_ns >= 1000000000ull) {
                log_warn("gateway: refused a connection: handshake failed (%s; a client without "
                         "the right CURVE keys, or not speaking ZMTP)%s",
                         g->zap ? "CURVE required" : "protocol error",
                         g->hs_quiet ? " (more refused meanwhile)" : "");
                g->hs_warn_ns = now;
                g->hs_quiet = 0;
            } else {
                g->hs_quiet++;
            }
        }
        else if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
            log_debug("gateway: authentication failed (status %u)", val);
        else if (ev == ZMQ_EVENT_DISCONNECTED)
            log_debug("gateway: a client disconnected");
    }
}

/* ---- clients and frames ------------------------------------------------------------------------ */

static int send_raw(struct gateway *g, struct gclient *c, const void *buf, size_t len)
{
    if (zmq_send(g->router, c->rid, c->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return -zmq_errno();
    if (zmq_send(g->router, buf, len, ZMQ_DONTWAIT) < 0)
        return -zmq_errno();
    return 0;
}

static void send_ctl(struct gateway *g, struct gclient *c, uint8_t type, const void *body,
                     size_t blen)
{
    uint8_t b[NET_HDR + 256];
    struct net_hdr h = { .type = type, .client = c->id, .ack = c->seq_in,
                         .body_len = (uint32_t)blen };
    net_put_hdr(b, &h);
    memcpy(b + NET_HDR, body, blen);
    send_raw(g, c, b, NET_HDR + blen);
}

/* ERROR to a routing id we may not know as a client (a refused frame). */
static void send_error(struct gateway *g, const void *rid, size_t rid_len, int32_t code,
                       const char *text, uint64_t client, uint64_t seq)
{
    uint8_t b[NET_HDR + 8 + 200];
    size_t n = strnlen(text, 200);
    struct net_hdr h = { .type = NET_ERROR, .client = client, .seq = seq,
                         .body_len = (uint32_t)(8 + n) };
    net_put_hdr(b, &h);
    uint8_t *p = b + NET_HDR;
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)((uint32_t)code >> (8 * i));
        p[4 + i] = (uint8_t)(n >> (8 * i));
    }
    memcpy(p + 8, text, n);
    if (zmq_send(g->router, rid, rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send(g->router, b, NET_HDR + 8 + n, ZMQ_DONTWAIT);
}

static void task_free(struct gateway *g, uint32_t t)
{
    struct gtask *x = &g->tasks[t];
    hmap_del(&g->by_task, x->cli, x->task);
    g->cli[x->cli].tracked--;
    x->state = T_FREE;
    x->next = g->free_head;
    g->free_head = t;
    g->nlive--;
    atomic_store_explicit(&g->load, g->nlive, memory_order_relaxed); /* a gauge: relaxed */
}

static void frame_free(struct gateway *g, struct rframe *f)
{
    for (uint32_t k = 0; k < f->ntasks; k++)
        task_free(g, f->tasks[k]);
    free(f->buf);
    free(f->tasks);
    f->buf = NULL;
    f->tasks = NULL;
}

/* The client acknowledged every RESULTS frame up to ack: release them and their tasks. */
static void on_ack(struct gateway *g, struct gclient *c, uint64_t ack)
{
    while (c->ret_n > 0) {
        struct rframe *f = &c->ret[c->ret_head];
        if (f->seq > ack || c->ret_n <= c->unsent)
            break; /* never release a frame we did not send */
        frame_free(g, f);
        c->ret_head = (c->ret_head + 1) % c->ret_cap;
        c->ret_n--;
    }
}

/* Hands the kept frames not yet sent to ZeroMQ, in order; stops at the first refusal (the
 * client's pipe is full, or it is not connected: kept for its reconnect). */
static void send_pending(struct gateway *g, struct gclient *c)
{
    while (c->unsent > 0) {
        struct rframe *f = &c->ret[(c->ret_head + c->ret_n - c->unsent) % c->ret_cap];
        if (send_raw(g, c, f->buf, f->len) != 0)
            return;
        c->unsent--;
    }
}

/* Closes the results frame being built: it joins the kept frames and is sent. */
static int finish_frame(struct gateway *g, struct gclient *c)
{
    if (c->bcount == 0)
        return 0;
    if (c->ret_n == c->ret_cap) {
        uint32_t cap = c->ret_cap ? c->ret_cap * 2 : 16;
        struct rframe *nr = malloc(cap * sizeof *nr);
        if (!nr)
            return -ENOMEM;
        for (uint32_t k = 0; k < c->ret_n; k++)
            nr[k] = c->ret[(c->ret_head + k) % c->ret_cap];
        free(c->ret);
        c->ret = nr;
        c->ret_head = 0;
        c->ret_cap = cap;
    }
    struct net_hdr h = { .type = NET_RESULTS, .client = c->id, .seq = ++c->seq_out,
                         .ack = c->seq_in };
    net_put_hdr(c->bb, &h);
    net_finish(c->bb, c->blen, c->bcount);
    struct rframe *f = &c->ret[(c->ret_head + c->ret_n) % c->ret_cap];
    f->seq = h.seq;
    f->buf = c->bb;
    f->len = c->blen;
    f->tasks = c->btasks;
    f->ntasks = c->bntasks;
    c->ret_n++;
    c->unsent++;
    c->bb = NULL;
    c->btasks = NULL;
    c->blen = c->bcap = 0;
    c->bcount = c->bntasks = c->btcap = 0;
    send_pending(g, c);
    return 0;
}

/* Appends task t's result to its client's frame (which leaves when full). On -ENOMEM the task
 * is dropped from the gateway (its client resubmits it after a timeout or reconnect). */
static void add_result(struct gateway *g, uint32_t t, int32_t status, const void *data,
                       uint32_t len)
{
    struct gtask *x = &g->tasks[t];
    struct gclient *c = &g->cli[x->cli];
    x->state = T_DONE;
    size_t need = NET_RESULT_REC + len;
    if (c->bcount > 0 && (c->blen + need > g->cfg.frame_max || c->bcount >= g->cfg.batch_max))
        finish_frame(g, c);
    if (c->blen + need > c->bcap) {
        size_t cap = c->bcap ? c->bcap : 16384;
        while (cap < (c->blen ? c->blen : NET_HDR) + need)
            cap *= 2;
        uint8_t *nb = realloc(c->bb, cap);
        if (!nb) {
            task_free(g, t);
            return;
        }
        c->bb = nb;
        c->bcap = cap;
    }
    if (c->bntasks == c->btcap) {
        uint32_t cap = c->btcap ? c->btcap * 2 : 64;
        uint32_t *nt = realloc(c->btasks, cap * sizeof *nt);
        if (!nt) {
            task_free(g, t);
            return;
        }
        c->btasks = nt;
        c->btcap = cap;
    }
    if (c->bcount == 0) {
        c->blen = NET_HDR;
        c->bfirst_ns = now_ns();
    }
    net_put_result(c->bb, &c->blen, x->task, status, data, len);
    c->bcount++;
    c->btasks[c->bntasks++] = t;
}

static void client_reset(struct gateway *g, struct gclient *c)
{
    while (c->ret_n > 0) {
        frame_free(g, &c->ret[c->ret_head]);
        c->ret_head = (c->ret_head + 1) % c->ret_cap;
        c->ret_n--;
    }
    for (uint32_t k = 0; k < c->bntasks; k++)
        task_free(g, c->btasks[k]);
    free(c->ret);
    free(c->bb);
    free(c->btasks);
    memset(c, 0, sizeof *c);
}

/* The client with this id (created if asked and there is room), or NULL. Under CURVE a client id
 * belongs to the key that first used it: a frame naming it from another key gets NULL with
 * *stolen set (it would otherwise take over that client's results). */
static struct gclient *client_find(struct gateway *g, uint64_t id, const void *rid, size_t rlen,
                                   const char *key, int create, int *stolen)
{
    int freei = -1;
    *stolen = 0;
    if (!key)
        key = "";
    for (uint32_t i = 0; i < g->ncli; i++) {
        if (g->cli[i].used && g->cli[i].id == id) {
            struct gclient *c = &g->cli[i];
            if (strcmp(c->key, key)) {
                *stolen = 1;
                return NULL;
            }
            if (c->rid_len != rlen || memcmp(c->rid, rid, rlen)) {
                memcpy(c->rid, rid, rlen); /* reconnected: a new ROUTER identity */
                c->rid_len = rlen;
            }
            c->last_ns = now_ns();
            return c;
        }
        if (!g->cli[i].used && freei < 0)
            freei = (int)i;
    }
    if (!create)
        return NULL;
    if (freei < 0) {
        if (g->ncli >= GW_MAX_CLIENTS)
            return NULL;
        freei = (int)g->ncli++;
    }
    struct gclient *c = &g->cli[freei];
    memset(c, 0, sizeof *c);
    c->used = 1;
    c->id = id;
    snprintf(c->key, sizeof c->key, "%s", key);
    memcpy(c->rid, rid, rlen);
    c->rid_len = rlen;
    c->last_ns = now_ns();
    return c;
}

/* ---- lanes ------------------------------------------------------------------------------------- */

static int lane_submit(struct gateway *g, uint32_t t, const void *data, uint32_t len,
                       uint32_t timeout_us, uint8_t priority)
{
    oag_submit_opts o = { .timeout_us = timeout_us, .priority = priority };
    int rc = -EAGAIN;
    for (uint32_t k = 0; k < g->nlanes; k++) {
        uint32_t l = (g->rr + k) % g->nlanes;
        uint64_t ticket;
        rc = oag_submit_ex(g->lane[l], data, len, &o, &ticket);
        if (rc == 0) {
            g->rr = l + 1;
            g->tasks[t].state = T_LANE;
            g->tasks[t].lane = (uint8_t)l;
            g->tasks[t].ticket = ticket;
            hmap_put(&g->by_ticket, l, ticket, t); /* room: sized for every task */
            return 0;
        }
        if (rc != -EAGAIN && rc != -EBUSY)
            return rc;
    }
    return rc;
}

static void drain_lanes(struct gateway *g)
{
    oag_completion done[256];
    for (uint32_t l = 0; l < g->nlanes; l++) {
        for (;;) {
            int n = oag_poll(g->lane[l], done, 256, 0);
            if (n <= 0)
                break;
            for (int k = 0; k < n; k++) {
                uint32_t t = hmap_del(&g->by_ticket, l, done[k].ticket);
                if (t == HMAP_EMPTY)
                    continue;
                add_result(g, t, done[k].status, done[k].data, done[k].len);
            }
            if (n < 256)
                break;
        }
    }
    /* Lanes have room again: the overflow goes first, in order. */
    while (g->ovf_n > 0) {
        struct ovf *o = &g->ovf[g->ovf_head];
        int rc = lane_submit(g, o->t, o->data, o->len, o->timeout_us, o->priority);
        if (rc == -EAGAIN || rc == -EBUSY)
            break;
        if (rc)
            add_result(g, o->t, rc, NULL, 0);
        free(o->data);
        g->ovf_head = (g->ovf_head + 1) % GW_OVERFLOW;
        g->ovf_n--;
    }
}

/* ---- frames from clients ----------------------------------------------------------------------- */

static void on_tasks(struct gateway *g, struct gclient *c, const uint8_t *p, size_t len,
                     const struct net_hdr *h)
{
    on_ack(g, c, h->ack);
    if (h->seq <= c->seq_in) {
        log_debug("gateway: client %016llx: frame %llu again, dropped",
                  (unsigned long long)c->id, (unsigned long long)h->seq);
        return;
    }
    c->seq_in = h->seq;
    uint32_t ci = (uint32_t)(c - g->cli);
    size_t off = NET_HDR;
    struct net_rec r;
    while (net_rec_next(p, len, h, &off, &r)) {
        if (hmap_get(&g->by_task, ci, r.task) != HMAP_EMPTY) {
            g->dup_tasks++; /* resubmitted after a reconnect: its result comes once */
            continue;
        }
        if (c->tracked >= 2 * g->cfg.window || g->free_head == HMAP_EMPTY) {
            /* Past the window (plus the results it has not acknowledged yet): a client that
             * ignores the window it was told. Not taken; it learns from the log line. */
            if (g->dropped_tasks++ == 0)
                log_warn("gateway: client %016llx exceeds its window of %u tasks: tasks dropped",
                         (unsigned long long)c->id, g->cfg.window);
            continue;
        }
        uint32_t t = g->free_head;
        struct gtask *x = &g->tasks[t];
        g->free_head = x->next;
        x->task = r.task;
        x->cli = ci;
        x->state = T_DONE;
        g->nlive++;
        c->tracked++;
        hmap_put(&g->by_task, ci, r.task, t);
        atomic_store_explicit(&g->load, g->nlive, memory_order_relaxed); /* a gauge */
        if (r.len > g->max_payload) {
            add_result(g, t, -EMSGSIZE, NULL, 0);
            continue;
        }
        if (atomic_load_explicit(&g->draining, memory_order_relaxed)) {
            add_result(g, t, -ECANCELED, NULL, 0); /* shutting down: as a local agent sees */
            continue;
        }
        int rc = g->ovf_n ? -EAGAIN : lane_submit(g, t, r.data, r.len, r.timeout_us, r.priority);
        if (rc == -EAGAIN || rc == -EBUSY) {
            uint8_t *copy = g->ovf_n < GW_OVERFLOW ? malloc(r.len ? r.len : 1) : NULL;
            if (!copy) {
                add_result(g, t, -EBUSY, NULL, 0);
                continue;
            }
            memcpy(copy, r.data, r.len);
            g->ovf[(g->ovf_head + g->ovf_n) % GW_OVERFLOW] =
                (struct ovf){ t, r.len, r.timeout_us, r.priority, copy };
            g->ovf_n++;
            x->state = T_OVERFLOW;
        } else if (rc) {
            add_result(g, t, rc, NULL, 0);
        }
    }
}

static void on_message(struct gateway *g, const uint8_t *rid, size_t rlen, const uint8_t *p,
                       size_t len, const char *key)
{
    struct net_hdr h;
    const char *why = "";
    memset(&h, 0, sizeof h);
    /* Records over the payload cap are answered one by one (-EMSGSIZE results, in on_tasks):
     * the frame's other tasks still run. The frame cap bounds every record already. */
    int rc = net_frame_parse(p, len, g->cfg.frame_max, &h, &why);
    if (len > g->cfg.frame_max) {
        rc = -EMSGSIZE;
        why = "frame larger than --net-frame-max";
    }
    if (rc == 0 && h.type != NET_TASKS && h.type != NET_HELLO && h.type != NET_ACK) {
        rc = -EPROTO;
        why = "frame type a client may not send";
    }
    if (rc) {
        g->refused_frames++;
        log_warn("gateway: refused a frame of %zu bytes: %s (%s)", len, why, strerror(-rc));
        /* A TASKS frame whose header was readable is named by its seq: the client ends its
         * tasks with this error instead of waiting for them. */
        int named = len >= NET_HDR && h.magic == NET_MAGIC && h.type == NET_TASKS;
        send_error(g, rid, rlen, rc, why, named ? h.client : 0, named ? h.seq : 0);
        return;
    }
    int stolen;
    struct gclient *c = client_find(g, h.client, rid, rlen, g->zap ? key : NULL,
                                    h.type == NET_HELLO || h.type == NET_TASKS, &stolen);
    if (stolen) {
        g->refused_frames++;
        log_warn("gateway: refused a frame: client id %llx belongs to another CURVE key",
                 (unsigned long long)h.client);
        send_error(g, rid, rlen, -EACCES, "client id of another key", 0, 0);
        return;
    }
    if (!c) {
        if (h.type != NET_ACK)
            send_error(g, rid, rlen, -EBUSY, "too many clients", h.client,
                       h.type == NET_TASKS ? h.seq : 0);
        return;
    }
    if (h.type == NET_HELLO) {
        struct net_welcome w = { .max_payload = g->max_payload, .window = g->cfg.window,
                                 .input_dim = g->info.input_dim,
                                 .output_dim = g->info.output_dim,
                                 .frame_max = g->cfg.frame_max, .session = g->session };
        snprintf(w.engine, sizeof w.engine, "%s", g->info.engine);
        uint8_t body[NET_WELCOME_LEN];
        net_put_welcome(body, &w);
        send_ctl(g, c, NET_WELCOME, body, sizeof body);
        /* It holds everything up to h.ack; the rest goes again, in order. */
        c->unsent = 0;
        on_ack(g, c, h.ack);
        c->unsent = c->ret_n;
        send_pending(g, c);
        return;
    }
    if (h.type == NET_ACK) {
        on_ack(g, c, h.ack);
        return;
    }
    on_tasks(g, c, p, len, &h);
}

static void recv_router(struct gateway *g)
{
    for (int n = 0; n < 512; n++) {
        zmq_msg_t rid, m;
        zmq_msg_init(&rid);
        if (zmq_msg_recv(&rid, g->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&rid);
            return;
        }
        if (!zmq_msg_more(&rid) || zmq_msg_size(&rid) > 255) {
            zmq_msg_close(&rid);
            continue;
        }
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, g->router, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            zmq_msg_close(&rid);
            return;
        }
        if (zmq_msg_more(&m)) { /* a client sends one part per message: drain and refuse */
            while (zmq_msg_more(&m)) {
                zmq_msg_close(&m);
                zmq_msg_init(&m);
                if (zmq_msg_recv(&m, g->router, ZMQ_DONTWAIT) < 0)
                    break;
            }
            g->refused_frames++;
            log_warn("gateway: refused a message of several parts");
        } else {
            /* Under CURVE, the key ZAP accepted (the User-Id it returned) */
            on_message(g, zmq_msg_data(&rid), zmq_msg_size(&rid), zmq_msg_data(&m),
                       zmq_msg_size(&m), g->zap ? zmq_msg_gets(&m, "User-Id") : NULL);
        }
        zmq_msg_close(&m);
        zmq_msg_close(&rid);
    }
}

/* ---- the thread -------------------------------------------------------------------------------- */

static int connect_lanes(struct gateway *g)
{
    for (uint32_t l = 0; l < g->cfg.lanes; l++) {
        int rc = -ENOENT;
        for (int tries = 0; tries < 100 && !atomic_load(&g->stop); tries++) {
            rc = oag_connect(&g->lane[l], g->cfg.local);
            if (rc != -ENOENT && rc != -ETIMEDOUT)
                break;
            usleep(100000);
        }
        if (rc) {
            log_err("gateway: cannot open a lane to the supervisor: %s (%s)", oag_strerror(rc),
                    oag_last_error());
            return rc;
        }
        g->lane_fd[l] = oag_event_fd(g->lane[l]);
        g->nlanes++;
    }
    oag_get_info(g->lane[0], &g->info);
    g->max_payload = g->info.max_payload;
    return 0;
}

static void *gw_main(void *arg)
{
    struct gateway *g = arg;
    if (connect_lanes(g))
        return NULL;
    log_info("gateway: serving remote agents on %s (%u lanes)", g->cfg.listen, g->nlanes);
    zmq_pollitem_t items[5 + GW_MAX_LANES];
    uint64_t last_sweep = now_ns(), last_check = 0, next = UINT64_MAX;
    while (!atomic_load(&g->stop)) {
        int n = 0;
        items[n++] = (zmq_pollitem_t){ .socket = g->router, .events = ZMQ_POLLIN };
        items[n++] = (zmq_pollitem_t){ .fd = g->stop_efd, .events = ZMQ_POLLIN };
        items[n++] = (zmq_pollitem_t){ .fd = g->tfd, .events = ZMQ_POLLIN };
        for (uint32_t l = 0; l < g->nlanes; l++)
            items[n++] = (zmq_pollitem_t){ .fd = g->lane_fd[l], .events = ZMQ_POLLIN };
        items[n++] = (zmq_pollitem_t){ .socket = g->mon, .events = ZMQ_POLLIN };
        zmq_pollitem_t zi = { .socket = g->zap, .events = ZMQ_POLLIN };
        if (g->zap)
            items[n++] = zi;
        if (next != UINT64_MAX) {
            struct itimerspec its = { .it_value = { .tv_sec = (time_t)(next / 1000000000ull),
                                                    .tv_nsec = (long)(next % 1000000000ull) } };
            timerfd_settime(g->tfd, TFD_TIMER_ABSTIME, &its, NULL);
        }
        if (zmq_poll(items, n, 500) < 0 && zmq_errno() == ETERM)
            break;
        if (items[2].revents & ZMQ_POLLIN) {
            uint64_t v;
            if (read(g->tfd, &v, sizeof v) < 0) {
                /* EAGAIN: re-armed meanwhile */
            }
        }
        if (g->zap && (items[n - 1].revents & ZMQ_POLLIN))
            zap_answer(g);
        if (items[n - 1 - (g->zap != NULL)].revents & ZMQ_POLLIN)
            on_monitor(g);
        recv_router(g);
        drain_lanes(g);
        /* Results frames: full ones left already; the others leave after the delay. */
        uint64_t now = now_ns(), dl = (uint64_t)g->cfg.delay_us * 1000ull;
        next = UINT64_MAX;
        for (uint32_t i = 0; i < g->ncli; i++) {
            struct gclient *c = &g->cli[i];
            if (!c->used)
                continue;
            if (c->bcount && now >= c->bfirst_ns + dl)
                finish_frame(g, c);
            else if (c->bcount && c->bfirst_ns + dl < next)
                next = c->bfirst_ns + dl;
            if (c->unsent) {
                send_pending(g, c);
                if (c->unsent && now + 1000000 < next)
                    next = now + 1000000; /* its pipe is full: try again in 1 ms */
            }
        }
        if (g->ovf_n && now + 1000000 < next)
            next = now + 1000000;
        if (now - last_check > 100000000ull) {
            /* A supervisor that publishes ready = 0 after serving is shutting down: take no
             * more tasks (they would hold its drain open) and leave etcd. */
            last_check = now;
            oag_info inf;
            if (oag_get_info(g->lane[0], &inf) == 0 && !inf.ready &&
                !atomic_load_explicit(&g->draining, memory_order_relaxed)) {
                log_info("gateway: the supervisor is draining: new remote tasks are cancelled");
                atomic_store_explicit(&g->draining, 1, memory_order_relaxed); /* a flag */
                uint64_t one = 1;
                if (write(g->reg_efd, &one, sizeof one) < 0) {
                    /* EAGAIN: already signalled */
                }
            }
        }
        if (now - last_sweep > 1000000000ull) {
            last_sweep = now;
            for (uint32_t i = 0; i < g->ncli; i++) {
                struct gclient *c = &g->cli[i];
                if (c->used && now - c->last_ns > GW_IDLE_NS) {
                    int busy = 0;
                    for (uint32_t t = 0; t < g->ntasks_cap && !busy; t++)
                        busy = g->tasks[t].state != T_FREE && g->tasks[t].state != T_DONE &&
                               g->tasks[t].cli == i;
                    if (!busy) {
                        log_info("gateway: client %016llx silent for a minute: forgotten",
                                 (unsigned long long)c->id);
                        client_reset(g, c);
                    }
                }
            }
        }
    }
    return NULL;
}

/* ---- etcd registration ------------------------------------------------------------------------ */

static void *reg_main(void *arg)
{
    struct gateway *g = arg;
    struct etcd *e = NULL;
    if (etcd_create(&e, g->cfg.etcd, 1000)) {
        log_err("gateway: --etcd %s: cannot set up the client", g->cfg.etcd);
        return NULL;
    }
    char key[512];
    snprintf(key, sizeof key, "%s/%s-%d", g->cfg.etcd_prefix, g->cfg.name, (int)getpid());
    int64_t lease = 0;
    uint64_t last_put = 0;
    unsigned last_load = UINT32_MAX;
    int warned = 0;
    uint64_t period_ms = g->cfg.etcd_ttl_s * 1000ull / 3;
    if (period_ms < 200)
        period_ms = 200;
    while (!atomic_load(&g->stop)) {
        int rc = 0;
        if (!lease) {
            rc = etcd_lease_grant(e, (int)g->cfg.etcd_ttl_s, &lease);
            if (rc)
                lease = 0;
            last_load = UINT32_MAX;
        } else {
            rc = etcd_lease_keepalive(e, lease);
            if (rc == -ENOENT) {
                log_warn("gateway: etcd lease expired; registering again");
                lease = 0;
                continue;
            }
        }
        unsigned load = atomic_load_explicit(&g->load, memory_order_relaxed); /* a gauge */
        uint64_t now = now_ns();
        if (!rc && lease && (load != last_load || now - last_put > 5000000000ull)) {
            char val[512];
            snprintf(val, sizeof val, "{\"addr\":\"%s\",\"gpus\":%d,\"engine\":\"%.32s\","
                     "\"load\":%u,\"pid\":%d}", g->addr, g->cfg.gpus,
                     g->cfg.engine ? g->cfg.engine : "", load, (int)getpid());
            rc = etcd_put(e, key, val, lease);
            if (!rc) {
                if (last_load == UINT32_MAX)
                    log_info("gateway: registered %s in etcd %s (lease TTL %u s)", key,
                             g->cfg.etcd, g->cfg.etcd_ttl_s);
                last_load = load;
                last_put = now;
            }
        }
        if (rc && !warned) {
            log_warn("gateway: etcd %s: %s (retrying)", g->cfg.etcd, strerror(-rc));
            warned = 1;
        } else if (!rc) {
            warned = 0;
        }
        struct pollfd pf[2] = { { .fd = g->stop_efd, .events = POLLIN },
                                { .fd = g->reg_efd, .events = POLLIN } };
        poll(pf, 2, rc ? 200 : (int)period_ms);
        if (atomic_load_explicit(&g->draining, memory_order_relaxed)) {
            if (lease)
                etcd_lease_revoke(e, lease); /* clients see the key go at once */
            lease = 0;
            log_info("gateway: left etcd (draining)");
            break;
        }
    }
    if (lease)
        etcd_lease_revoke(e, lease);
    etcd_destroy(e);
    return NULL;
}

/* ---- start / stop ----------------------------------------------------------------------------- */

int gateway_start(struct gateway **out, const struct gateway_cfg *cfg)
{
    int rc = -ENOMEM;
    struct gateway *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->cfg = *cfg;
    g->stop_efd = g->tfd = g->reg_efd = -1;
    if (g->cfg.lanes == 0 || g->cfg.lanes > GW_MAX_LANES)
        g->cfg.lanes = 2;
    if (!gateway_is_loopback(cfg->listen) && !cfg->curve_secret) {
        log_err("--listen %s: without --curve-secret-key (and --curve-allowed-keys) the gateway "
                "listens only on loopback addresses (127.0.0.0/8, ::1, localhost)", cfg->listen);
        rc = -EINVAL;
        goto fail;
    }
    if (!!cfg->curve_secret != !!cfg->curve_allowed) {
        log_err("--curve-secret-key and --curve-allowed-keys go together");
        rc = -EINVAL;
        goto fail;
    }
    if (g->cfg.window == 0)
        g->cfg.window = 1024;
    g->ntasks_cap = GW_MAX_CLIENTS * 2 * g->cfg.window;
    g->tasks = calloc(g->ntasks_cap, sizeof *g->tasks);
    g->cli = calloc(GW_MAX_CLIENTS, sizeof *g->cli);
    g->ovf = calloc(GW_OVERFLOW, sizeof *g->ovf);
    g->keys = calloc(GW_MAX_KEYS, 32);
    if (!g->tasks || !g->cli || !g->ovf || !g->keys || hmap_init(&g->by_task, g->ntasks_cap) ||
        hmap_init(&g->by_ticket, g->ntasks_cap))
        goto fail;
    for (uint32_t t = 0; t < g->ntasks_cap; t++)
        g->tasks[t].next = t + 1 < g->ntasks_cap ? t + 1 : HMAP_EMPTY;
    g->free_head = 0;
    if (getrandom(&g->session, sizeof g->session, 0) != sizeof g->session)
        g->session = now_ns() ^ ((uint64_t)getpid() << 40);
    g->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    g->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    g->reg_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    g->zctx = zmq_ctx_new();
    if (g->stop_efd < 0 || g->tfd < 0 || g->reg_efd < 0 || !g->zctx)
        goto fail;
    g->router = zmq_socket(g->zctx, ZMQ_ROUTER);
    if (!g->router)
        goto fail;
    int one = 1, zero = 0, hb = 1000, hbto = 3000, hwm = (int)cfg->hwm;
    /* Frames up to twice the cap arrive and are refused with a reason; ZeroMQ cuts a peer
     * that sends a larger one. */
    int64_t maxmsg = 2 * (int64_t)cfg->frame_max;
    zmq_setsockopt(g->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(g->router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(g->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zmq_setsockopt(g->router, ZMQ_HEARTBEAT_IVL, &hb, sizeof hb);
    zmq_setsockopt(g->router, ZMQ_HEARTBEAT_TIMEOUT, &hbto, sizeof hbto);
    if (hwm > 0) {
        zmq_setsockopt(g->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(g->router, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    if (cfg->curve_secret) {
        char pub[41], sec[41];
        if (key_token(cfg->curve_secret, 0, pub) || key_token(cfg->curve_secret, 1, sec)) {
            log_err("--curve-secret-key %s: expected 'PUBLIC SECRET' (two 40-character Z85 "
                    "keys, as oag-keygen writes)", cfg->curve_secret);
            rc = -EINVAL;
            goto fail;
        }
        if (load_allowed(g, cfg->curve_allowed)) {
            rc = -EINVAL;
            goto fail;
        }
        g->zap = zmq_socket(g->zctx, ZMQ_REP);
        if (!g->zap || zmq_bind(g->zap, "inproc://zeromq.zap.01") != 0)
            goto fail;
        zmq_setsockopt(g->router, ZMQ_CURVE_SERVER, &one, sizeof one);
        zmq_setsockopt(g->router, ZMQ_CURVE_SECRETKEY, sec, 40);
        zmq_setsockopt(g->router, ZMQ_ZAP_DOMAIN, "oag", 3);
    }
    if (zmq_socket_monitor(g->router, "inproc://oag-gateway-mon",
                           ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_DISCONNECTED) != 0)
        goto fail;
    g->mon = zmq_socket(g->zctx, ZMQ_PAIR);
    if (!g->mon || zmq_connect(g->mon, "inproc://oag-gateway-mon") != 0)
        goto fail;
    if (zmq_bind(g->router, cfg->listen) != 0) {
        rc = zmq_errno() == EADDRINUSE ? -EADDRINUSE : -EINVAL;
        log_err("--listen %s: %s", cfg->listen, zmq_strerror(zmq_errno()));
        goto fail;
    }
    /* The address clients should dial: the advertised one, or the bound one (port 0 resolved). */
    size_t al = sizeof g->addr;
    if (cfg->advertise)
        snprintf(g->addr, sizeof g->addr, "%s", cfg->advertise);
    else if (zmq_getsockopt(g->router, ZMQ_LAST_ENDPOINT, g->addr, &al) != 0)
        snprintf(g->addr, sizeof g->addr, "%s", cfg->listen);
    g->cfg.listen = g->addr;
    if (pthread_create(&g->thr, NULL, gw_main, g))
        goto fail;
    g->thr_started = 1;
    if (cfg->etcd) {
        if (pthread_create(&g->reg, NULL, reg_main, g))
            goto fail;
        g->reg_started = 1;
    }
    *out = g;
    return 0;
fail:
    gateway_stop(g);
    return rc;
}

void gateway_stop(struct gateway *g)
{
    if (!g)
        return;
    atomic_store(&g->stop, 1);
    if (g->stop_efd >= 0) {
        uint64_t one = 1;
        if (write(g->stop_efd, &one, sizeof one) < 0) {
            /* cannot fail on a fresh eventfd */
        }
    }
    if (g->thr_started)
        pthread_join(g->thr, NULL);
    if (g->reg_started)
        pthread_join(g->reg, NULL);
    for (uint32_t l = 0; l < g->nlanes; l++)
        oag_close(g->lane[l]);
    if (g->cli)
        for (uint32_t i = 0; i < g->ncli; i++)
            if (g->cli[i].used)
                client_reset(g, &g->cli[i]);
    if (g->ovf)
        for (uint32_t k = 0; k < g->ovf_n; k++)
            free(g->ovf[(g->ovf_head + k) % GW_OVERFLOW].data);
    if (g->zap)
        zmq_close(g->zap);
    if (g->mon)
        zmq_close(g->mon);
    if (g->router)
        zmq_close(g->router);
    if (g->zctx)
        zmq_ctx_term(g->zctx);
    if (g->stop_efd >= 0)
        close(g->stop_efd);
    if (g->tfd >= 0)
        close(g->tfd);
    if (g->reg_efd >= 0)
        close(g->reg_efd);
    hmap_fini(&g->by_task);
    hmap_fini(&g->by_ticket);
    free(g->tasks);
    free(g->cli);
    free(g->ovf);
    free(g->keys);
    free(g);
}
