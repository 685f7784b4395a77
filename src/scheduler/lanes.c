/*
 * lanes.c - control connections and the lanes they own.
 *
 * A connection is accepted, its peer credentials checked before anything is read, then its
 * HELLO decides: an agent gets a fresh lane (memfd) and its fds; a control client gets its
 * command answered. An agent's connection stays open; its hang-up is how the supervisor learns,
 * at once, that the agent is gone, whoever launched it. Reclaiming a lane discards whatever the
 * agent left unpublished or unread; tasks already in a batch complete and their results are
 * dropped (the generation no longer matches).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "inst.h"
#include "log.h"
#include "shm/latch.h"
#include "shm/proto.h"
#include "sup.h"

int conns_init(struct sup *s)
{
    s->nconns = (int)s->cfg.max_lanes + 64;
    s->conns = calloc((size_t)s->nconns, sizeof *s->conns);
    if (!s->conns)
        return -ENOMEM;
    for (int i = 0; i < s->nconns; i++)
        s->conns[i].fd = -1;
    return 0;
}

static void send_refusal(int fd, int err, const char *reason);

/* Refuses a connection whose hello may still be unread: read it first (closing a socket with
 * unread data resets it, and the peer would see ECONNRESET instead of our reason). */
static void refuse_now(int fd, int err, const char *reason)
{
    struct oag_hello h;
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    if (poll(&pf, 1, 20) > 0 && recv(fd, &h, sizeof h, MSG_DONTWAIT) < 0) {
        /* nothing to drain */
    }
    send_refusal(fd, err, reason);
    shutdown(fd, SHUT_WR);
    close(fd);
}

static void send_refusal(int fd, int err, const char *reason)
{
    struct oag_welcome w;
    memset(&w, 0, sizeof w);
    w.magic = OAG_PROTO_MAGIC;
    w.type = OAG_MSG_WELCOME;
    w.err = err;
    w.abi = OAG_ABI_VERSION;
    snprintf(w.reason, sizeof w.reason, "%s", reason);
    if (send(fd, &w, sizeof w, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("refusal not delivered: %s", strerror(errno));
}

static int peer_allowed(struct sup *s, uid_t uid, gid_t gid)
{
    if (uid == geteuid())
        return 1;
    for (int i = 0; i < s->cfg.nallow_uid; i++)
        if (s->cfg.allow_uid[i] == uid)
            return 1;
    for (int i = 0; i < s->cfg.nallow_gid; i++)
        if (s->cfg.allow_gid[i] == gid)
            return 1;
    return 0;
}

void conn_close(struct sup *s, int idx)
{
    struct conn *c = &s->conns[idx];
    if (c->kind == CONN_FREE)
        return;
    loop_cancel(s, ud_make(UD_CONN, c->gen, (uint32_t)idx));
    close(c->fd);
    c->fd = -1;
    c->kind = CONN_FREE;
    c->lane = -1;
    c->gen++;
}

int conn_accept_all(struct sup *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return 0;
            if (errno == EMFILE || errno == ENFILE) {
                log_warn("accept: %s", strerror(errno));
                return 0;
            }
            return -errno;
        }
        struct ucred cr;
        socklen_t len = sizeof cr;
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0) {
            log_warn("SO_PEERCRED failed: %s; connection refused", strerror(errno));
            close(fd);
            continue;
        }
        int allowed = peer_allowed(s, cr.uid, cr.gid);
        int idx = -1;
        for (int i = 0; i < s->nconns; i++)
            if (s->conns[i].kind == CONN_FREE) {
                idx = i;
                break;
            }
        if (idx < 0 || s->draining) {
            s->refused++;
            refuse_now(fd, -EBUSY, s->draining ? "supervisor is shutting down"
                                               : "too many connections");
            continue;
        }
        struct conn *c = &s->conns[idx];
        /* A disallowed peer is answered once its hello has been read (conn_event): nothing it
         * sends is acted upon. */
        c->refuse = allowed ? 0 : -EACCES;
        c->kind = CONN_NEW;
        c->fd = fd;
        c->lane = -1;
        c->pid = cr.pid;
        c->uid = cr.uid;
        loop_arm_poll(s, fd, ud_make(UD_CONN, c->gen, (uint32_t)idx), POLLIN | POLLRDHUP);
    }
}

/* ---- lanes ----------------------------------------------------------------------------- */

static int lane_pick(struct sup *s, int agent_id)
{
    if (agent_id >= 0) {
        if ((uint32_t)agent_id >= s->cfg.max_lanes)
            return -ERANGE;
        return s->lanes[agent_id].in_use ? -EBUSY : agent_id;
    }
    /* Agents the supervisor did not launch take ids from the top, away from the fleet's. */
    for (int i = (int)s->cfg.max_lanes - 1; i >= 0; i--)
        if (!s->lanes[i].in_use && !fleet_agent(s, i))
            return i;
    return -ENOSPC;
}

/* Offers the lane's memory to the engine for rows by pointer (pinning it for a GPU). Failure
 * only means this lane's rows are copied. */
static void lane_mem_register(struct sup *s, struct lane_mem *m)
{
    if (s->cfg.copy_rows)
        return;
    int rc = engines_host_register(s, m->map, m->size);
    if (rc == 0) {
        m->registered = 1;
    } else if (rc != -ENOTSUP && rc != -ENODEV && !s->lane_reg_warned) {
        s->lane_reg_warned = 1; /* once: with a big fleet it would repeat per agent */
        log_warn("lane memory not registered with the engine: %s (that lane's rows are "
                 "copied; said once for all lanes)", strerror(-rc));
    }
}

void lane_mem_put(struct sup *s, struct lane_mem *m)
{
    if (!m || --m->refs)
        return;
    if (m->registered)
        s->engine_ops->host_unregister(m->map);
    munmap(m->map, m->size);
    free(m);
}

static int lane_create(struct sup *s, struct lane *l, int *fd_out)
{
    struct oag_lane_geom g;
    int rc = oag_lane_geom(&g, s->cfg.max_payload, s->cfg.ring_slots);
    if (rc)
        return rc;
    char name[32];
    snprintf(name, sizeof name, "oag-lane-%u", l->id);
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)g.size) < 0) {
        rc = -errno;
        close(fd);
        return rc;
    }
    void *p = mmap(NULL, g.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        close(fd);
        return rc;
    }
    l->mem = calloc(1, sizeof *l->mem);
    if (!l->mem) {
        munmap(p, g.size);
        close(fd);
        return -ENOMEM;
    }
    *l->mem = (struct lane_mem){ .map = p, .size = g.size, .refs = 1 };
    l->map = p;
    l->size = g.size;
    struct oag_lane_hdr *h = &l->hdr;
    memset(h, 0, sizeof *h);
    h->magic = OAG_LANE_MAGIC;
    h->abi = OAG_ABI_VERSION;
    h->lane_id = l->id;
    h->generation = l->generation;
    h->size = g.size;
    h->pay_stride = g.pay_stride;
    h->max_payload = g.max_payload;
    h->sub_slots = g.sub_slots;
    h->cmp_slots = g.cmp_slots;
    h->state_off = g.state_off;
    h->ctl_off = g.ctl_off;
    h->sub_off = g.sub_off;
    h->cmp_off = g.cmp_off;
    h->sub_pay_off = g.sub_pay_off;
    h->cmp_pay_off = g.cmp_pay_off;
    h->shard = l->shard;
    memcpy(p, h, sizeof *h); /* the fd is not shared yet: no ordering needed */
    ring_lane_init(&l->sub, &l->cmp, l->map, h);
    l->flags = calloc(g.sub_slots > g.cmp_slots ? g.sub_slots : g.cmp_slots, 1);
    l->cmp_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->cmp_efd < 0 || !l->flags) {
        rc = l->flags ? -errno : -ENOMEM;
        if (l->cmp_efd >= 0)
            close(l->cmp_efd);
        free(l->flags);
        l->flags = NULL;
        free(l->mem);
        l->mem = NULL;
        munmap(p, g.size);
        close(fd);
        return rc;
    }
    lane_mem_register(s, l->mem);
    l->intake = 0;
    l->cmp_assign = 0;
    l->touched = 0;
    l->settle_since = 0;
    *fd_out = fd;
    return 0;
}

/* World stopped (the lane's shard may be another thread's). */
static void lane_release(struct sup *s, struct lane *l)
{
    if (!l->in_use)
        return;
    uint32_t last = s->active[--s->nactive];
    s->active[l->active_idx] = last;
    s->lanes[last].active_idx = l->active_idx;
    struct shard *sh = &s->sh[l->shard];
    last = sh->active[--sh->nactive];
    sh->active[l->shard_idx] = last;
    s->lanes[last].shard_idx = l->shard_idx;
    lane_mem_put(s, l->mem); /* unmapped now, or when the engine gives its last row back */
    l->mem = NULL;
    wakers_close(&sh->wakers, l->cmp_efd); /* after any wake-up still queued for it */
    l->cut_why = NULL;
    free(l->flags);
    l->flags = NULL;
    l->map = NULL;
    l->cmp_efd = -1;
    l->in_use = 0;
    l->generation++; /* results still in a batch for the old generation are dropped */
    struct agent *a = l->agent_id >= 0 ? fleet_agent(s, l->agent_id) : NULL;
    if (a)
        a->tasks_done += l->tasks_done;
    instance_publish(s, 1);
}

static void hello_agent(struct sup *s, int idx, const struct oag_hello *h)
{
    struct conn *c = &s->conns[idx];
    int id = lane_pick(s, h->agent_id);
    if (id < 0) {
        char why[128];
        snprintf(why, sizeof why, id == -EBUSY ? "agent id %d is already attached"
                                 : id == -ERANGE ? "agent id %d is out of range"
                                                 : "no free lane (agent id %d)", h->agent_id);
        log_warn("refused agent pid %d: %s", (int)c->pid, why);
        send_refusal(c->fd, id, why);
        conn_close(s, idx);
        return;
    }
    struct lane *l = &s->lanes[id];
    int lane_fd = -1;
    l->id = (uint32_t)id;
    struct shard *sh = shard_pick(s);
    l->shard = sh->id;
    int rc = lane_create(s, l, &lane_fd);
    if (rc) {
        log_err("cannot create lane %d: %s", id, strerror(-rc));
        send_refusal(c->fd, rc, "supervisor could not create a lane");
        conn_close(s, idx);
        return;
    }
    l->in_use = 1;
    l->conn = idx;
    l->owed = 0;
    l->tasks_done = 0;
    l->peer_pid = c->pid;
    l->agent_id = h->agent_id;
    l->active_idx = (int)s->nactive;
    s->active[s->nactive++] = (uint32_t)id;
    l->cut_why = NULL;
    l->shard_idx = (int)sh->nactive;
    sh->active[sh->nactive++] = (uint32_t)id; /* world stopped: ctl events are (loop.c) */
    c->kind = CONN_AGENT;
    c->lane = id;

    struct oag_welcome w;
    memset(&w, 0, sizeof w);
    w.magic = OAG_PROTO_MAGIC;
    w.type = OAG_MSG_WELCOME;
    w.abi = OAG_ABI_VERSION;
    w.lane_id = l->id;
    w.generation = l->generation;
    w.lane_size = l->size;
    w.region_size = s->region_size;
    int fds[OAG_WELCOME_FDS] = { s->region_ro_fd, lane_fd, sh->doorbell_fd, l->cmp_efd };
    union {
        char buf[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof u);
    struct iovec iov = { .iov_base = &w, .iov_len = sizeof w };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(cm), fds, sizeof fds);
    ssize_t n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    close(lane_fd); /* our mapping keeps the lane alive; the agent got its own fd */
    if (n != (ssize_t)sizeof w) {
        log_warn("agent pid %d went away during the handshake", (int)c->pid);
        lane_release(s, l);
        conn_close(s, idx);
        return;
    }
    struct agent *a = h->agent_id >= 0 ? fleet_agent(s, h->agent_id) : NULL;
    if (a && a->state == AG_STARTING)
        a->state = AG_RUNNING;
    log_debug("agent %d (pid %d) attached, lane generation %u", id, (int)c->pid, l->generation);
    loop_arm_poll(s, c->fd, ud_make(UD_CONN, c->gen, (uint32_t)idx), POLLIN | POLLRDHUP);
    instance_publish(s, 1);
}

void lane_cut(struct sup *s, struct lane *l, const char *why)
{
    if (!l->in_use)
        return;
    if (why) {
        s->cut_offs++;
        log_warn("agent %u (pid %d) cut off: %s", l->id, (int)l->peer_pid, why);
    } else {
        log_debug("agent %u (pid %d) detached", l->id, (int)l->peer_pid);
    }
    int idx = l->conn;
    world_stop(s); /* usually stopped already (control events); not when shard 0 cuts */
    lane_release(s, l);
    world_start(s);
    conn_close(s, idx);
}

void lane_wake(struct sup *s, struct lane *l)
{
    (void)s;
    uint64_t one = 1;
    if (write(l->cmp_efd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_debug("wake lane %u: %s", l->id, strerror(errno));
}

void conn_event(struct sup *s, int idx, uint32_t gen, int res)
{
    if (idx < 0 || idx >= s->nconns)
        return;
    struct conn *c = &s->conns[idx];
    if (c->kind == CONN_FREE || (c->gen & 0xffffff) != gen)
        return; /* a completion for a connection already closed */
    if (c->kind == CONN_AGENT) {
        /* Any traffic or hang-up on an attached agent's socket ends it. */
        struct lane *l = &s->lanes[c->lane];
        lane_cut(s, l, (res & POLLIN) && !(res & (POLLHUP | POLLRDHUP))
                           ? "unexpected message on the control socket" : NULL);
        return;
    }
    struct oag_hello h;
    memset(&h, 0, sizeof h);
    ssize_t n = recv(c->fd, &h, sizeof h, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        loop_arm_poll(s, c->fd, ud_make(UD_CONN, c->gen, (uint32_t)idx), POLLIN | POLLRDHUP);
        return;
    }
    if (n <= 0) {
        conn_close(s, idx);
        return;
    }
    if (c->refuse) {
        char why[160];
        snprintf(why, sizeof why, "uid %u is not allowed by this supervisor", (unsigned)c->uid);
        log_warn("refused connection from pid %d: %s", (int)c->pid, why);
        s->refused++;
        send_refusal(c->fd, c->refuse, why);
        conn_close(s, idx);
        return;
    }
    if ((size_t)n < offsetof(struct oag_hello, cmd) || h.magic != OAG_PROTO_MAGIC) {
        log_warn("refused pid %d: malformed hello (%zd bytes)", (int)c->pid, n);
        send_refusal(c->fd, -EPROTO, "malformed hello");
        conn_close(s, idx);
        return;
    }
    if (h.abi != OAG_ABI_VERSION) {
        char why[128];
        snprintf(why, sizeof why, "client ABI %u, supervisor ABI %u", h.abi, OAG_ABI_VERSION);
        log_warn("refused pid %d: %s", (int)c->pid, why);
        send_refusal(c->fd, -EPROTO, why);
        conn_close(s, idx);
        return;
    }
    if (h.kind == OAG_HELLO_AGENT) {
        if (s->draining) {
            send_refusal(c->fd, -ECONNRESET, "supervisor is shutting down");
            conn_close(s, idx);
            return;
        }
        hello_agent(s, idx, &h);
    } else if (h.kind == OAG_HELLO_CTL) {
        h.cmd[sizeof h.cmd - 1] = '\0';
        ctl_handle(s, c->fd, h.cmd);
        conn_close(s, idx);
    } else {
        send_refusal(c->fd, -EPROTO, "unknown hello kind");
        conn_close(s, idx);
    }
}
