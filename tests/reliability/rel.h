/*
 * rel.h - helpers for the reliability scenarios (header-only, on top of ../harness.h):
 *   - a supervisor started under a fixed name and socket (so that it can be killed and started
 *     again as "the same" instance), stderr to a file;
 *   - a raw agent that speaks the protocol itself (connect, HELLO, WELCOME + fds, map the lane)
 *     and writes submission records directly, with or without ringing the doorbell;
 *   - process figures: RSS, fds; percentiles.
 */
#ifndef OAG_TESTS_REL_H
#define OAG_TESTS_REL_H

#include "../harness.h"

#include <poll.h>
#include <sys/mman.h>

#include "oag/oag.h"
#include "shm/atomic.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shm/ring.h"

static inline int rel_long(void)
{
    const char *v = getenv("OAG_LONG");
    return v && atoi(v) > 0;
}

static inline int rel_read_file(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t len = 0;
    ssize_t n;
    while (len < cap - 1 && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    return (int)len;
}

/* ---- a supervisor under a fixed name --------------------------------------------------- */

struct rel_sup {
    pid_t pid;
    char name[80], dir[256], sock[400], errpath[400];
    int status;
};

/* Prepares names (dir created once); rel_sup_start can then be called again after a kill. */
static inline void rel_sup_init(struct rel_sup *s, const char *tag)
{
    memset(s, 0, sizeof *s);
    h_unique_name(s->name, sizeof s->name, tag);
    h_tmpdir(s->dir, sizeof s->dir, tag, 0755);
    snprintf(s->sock, sizeof s->sock, "%s/s.sock", s->dir);
    snprintf(s->errpath, sizeof s->errpath, "%s/stderr", s->dir);
}

/* Starts SUP --name --socket [args...] (NULL-terminated), stderr appended to errpath, and waits
 * up to 15 s for a new ready line. Returns 0, or -1 (exited or no ready line; status kept). */
static inline int rel_sup_start(struct rel_sup *s, const char *const *args)
{
    const char *sup = h_env_bin("OAG_SUPERVISOR");
    const char *argv[64];
    int n = 0;
    argv[n++] = sup;
    argv[n++] = "--name";
    argv[n++] = s->name;
    argv[n++] = "--socket";
    argv[n++] = s->sock;
    static char dt[32]; /* $OAG_TEST_DATA_THREADS, as h_sup_start (a test's own value wins) */
    const char *k = getenv("OAG_TEST_DATA_THREADS");
    if (k && *k) {
        snprintf(dt, sizeof dt, "--data-threads=%s", k);
        argv[n++] = dt;
    }
    for (int i = 0; args && args[i] && n < 62; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    static char buf[1 << 18];
    rel_read_file(s->errpath, buf, sizeof buf);
    size_t before = strlen(buf);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(s->errpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        dup2(fd, 2);
        alarm(0);
        signal(SIGPIPE, SIG_DFL);
        execv(sup, (char *const *)argv);
        _exit(127);
    }
    s->pid = pid;
    h_sup_pid_for_alarm = pid;
    uint64_t end = h_now_ms() + 15000;
    while (h_now_ms() < end) {
        rel_read_file(s->errpath, buf, sizeof buf);
        if (strlen(buf) > before && strstr(buf + before, "oag-supervisor: ready"))
            return 0;
        if (waitpid(pid, &s->status, WNOHANG) == pid) {
            s->pid = 0;
            fprintf(stderr, "supervisor exited before ready (0x%x):\n%s\n", s->status, buf + before);
            return -1;
        }
        h_sleep_ms(2);
    }
    fprintf(stderr, "supervisor not ready within 15 s:\n%s\n", buf + before);
    return -1;
}

/* 1 if pid (our child) is still running. */
static inline int h_sup_alive_pid(pid_t pid)
{
    int st;
    return pid > 0 && waitpid(pid, &st, WNOHANG) == 0;
}

/* SIGTERM and wait (10 s, then SIGKILL). Returns the wait status. */
static inline int rel_sup_stop(struct rel_sup *s)
{
    if (s->pid <= 0)
        return s->status;
    kill(s->pid, SIGTERM);
    uint64_t end = h_now_ms() + 10000;
    while (h_now_ms() < end) {
        if (waitpid(s->pid, &s->status, WNOHANG) == s->pid) {
            s->pid = 0;
            return s->status;
        }
        h_sleep_ms(2);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &s->status, 0);
    s->pid = 0;
    return -1;
}

static inline void rel_sup_kill9(struct rel_sup *s)
{
    if (s->pid <= 0)
        return;
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &s->status, 0);
    s->pid = 0;
    h_sup_pid_for_alarm = 0;
}

/* Removes everything left of the instance (after the test's own checks). */
static inline void rel_sup_cleanup(struct rel_sup *s)
{
    if (s->pid > 0)
        rel_sup_stop(s);
    h_sup_pid_for_alarm = 0;
    h_kill_all();
    char shm[256], path[300];
    h_shm_name(shm, sizeof shm, s->name);
    snprintf(path, sizeof path, "/dev/shm/%s", shm);
    unlink(path);
    h_rmtree(s->dir);
}

/* A top-level number from `oag-ctl status --json` (-1 on failure). */
static inline long long rel_status_num(const char *sock, const char *key)
{
    struct h_sup tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.sock, sizeof tmp.sock, "%s", sock);
    static char out[1 << 16];
    if (h_ctl(&tmp, out, sizeof out, "status", "--json", (char *)NULL) != 0)
        return -1;
    cJSON *j = cJSON_Parse(out);
    const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    long long r = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
    cJSON_Delete(j);
    return r;
}

/* ---- process figures ------------------------------------------------------------------- */

/* Resident set size of pid in KiB, -1 if unknown. */
static inline long rel_rss_kb(int pid)
{
    char p[64], buf[4096];
    snprintf(p, sizeof p, "/proc/%d/status", pid);
    rel_read_file(p, buf, sizeof buf);
    const char *v = strstr(buf, "VmRSS:");
    return v ? atol(v + 6) : -1;
}

static int rel_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (sorts v). */
static inline uint64_t rel_pct(uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, n, sizeof *v, rel_cmp_u64);
    size_t k = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

static inline uint64_t rel_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000ull;
}

/* ---- a raw agent ----------------------------------------------------------------------- */

struct rel_raw {
    int sock, doorbell, cmp_efd;
    uint8_t *lane;
    size_t lane_size;
    struct oag_lane_hdr hdr;
    struct oag_lane_ctl *ctl;
    const struct oag_region *region;
    size_t region_size;
    uint32_t prod, cons; /* our own indices */
    uint32_t generation;
};

/* Connects as agent_id (-1: any). Returns 0, or the WELCOME's error / -errno. */
static inline int rel_raw_connect(struct rel_raw *r, const char *sock, int agent_id)
{
    memset(r, 0, sizeof *r);
    r->sock = r->doorbell = r->cmp_efd = -1;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    if (fd < 0 || h_sun(&sa, sock) < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = -errno;
        if (fd >= 0)
            close(fd);
        return e;
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    r->sock = fd;
    struct oag_hello h;
    memset(&h, 0, sizeof h);
    h.magic = OAG_PROTO_MAGIC;
    h.abi = OAG_ABI_VERSION;
    h.kind = OAG_HELLO_AGENT;
    h.agent_id = agent_id;
    h.pid = (uint32_t)getpid();
    if (send(fd, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h)
        return -errno;
    struct oag_welcome w;
    union {
        char b[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = &w, .iov_len = sizeof w };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                         .msg_controllen = sizeof u.b };
    ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    int fds[8], nfds = 0;
    for (struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k && nfds < 8; i++)
                memcpy(&fds[nfds++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        }
    if (n < (ssize_t)offsetof(struct oag_welcome, reason) || w.err != 0 || nfds != 4) {
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return n <= 0 ? -ECONNRESET : w.err ? w.err : -EPROTO;
    }
    struct stat st;
    fstat(fds[0], &st);
    r->region_size = (size_t)st.st_size;
    r->region = mmap(NULL, r->region_size, PROT_READ, MAP_SHARED, fds[0], 0);
    fstat(fds[1], &st);
    r->lane_size = (size_t)st.st_size;
    r->lane = mmap(NULL, r->lane_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
    close(fds[0]);
    close(fds[1]);
    r->doorbell = fds[2];
    r->cmp_efd = fds[3];
    if (r->region == MAP_FAILED || r->lane == MAP_FAILED)
        return -ENOMEM;
    memcpy(&r->hdr, r->lane, sizeof r->hdr);
    if (oag_lane_hdr_check(&r->hdr, r->lane_size))
        return -EPROTO;
    r->ctl = (struct oag_lane_ctl *)(r->lane + r->hdr.ctl_off);
    r->generation = w.generation;
    return 0;
}

static inline void rel_raw_close(struct rel_raw *r)
{
    if (r->lane && r->lane != MAP_FAILED)
        munmap(r->lane, r->lane_size);
    if (r->region && r->region != MAP_FAILED)
        munmap((void *)r->region, r->region_size);
    if (r->sock >= 0)
        close(r->sock);
    if (r->doorbell >= 0)
        close(r->doorbell);
    if (r->cmp_efd >= 0)
        close(r->cmp_efd);
    memset(r, 0, sizeof *r);
    r->sock = r->doorbell = r->cmp_efd = -1;
}

/* Writes one task (ticket, len bytes of pattern) and publishes it; rings the doorbell only if
 * ring is set. */
static inline void rel_raw_submit(struct rel_raw *r, uint64_t ticket, uint32_t len, int ring)
{
    uint32_t i = r->prod & (r->hdr.sub_slots - 1);
    struct oag_slot_hdr *sl = (struct oag_slot_hdr *)(r->lane + r->hdr.sub_off) + i;
    sl->ticket = ticket;
    sl->len = len;
    sl->status = 0;
    sl->timeout_us = 0;
    sl->priority = 0;
    sl->submit_ns = 0;
    memset(r->lane + r->hdr.sub_pay_off + (uint64_t)i * r->hdr.pay_stride, (int)(ticket & 0xff),
           len);
    r->prod++;
    oag_store_release_u32(&r->ctl->sub_prod, r->prod);
    if (ring) {
        uint64_t one = 1;
        if (write(r->doorbell, &one, sizeof one) < 0) {
            /* EAGAIN counts as rung */
        }
    }
}

/* Takes one completion if there is one: 1 (ticket/status filled), 0 none. */
static inline int rel_raw_take(struct rel_raw *r, uint64_t *ticket, int32_t *status)
{
    uint32_t prod = oag_load_acquire_u32(&r->ctl->cmp_prod);
    if (prod == r->cons)
        return 0;
    const struct oag_slot_hdr *sl = (const struct oag_slot_hdr *)(r->lane + r->hdr.cmp_off) +
                                    (r->cons & (r->hdr.cmp_slots - 1));
    *ticket = sl->ticket;
    *status = sl->status;
    r->cons++;
    oag_store_release_u32(&r->ctl->cmp_cons, r->cons);
    return 1;
}

/* 1 if the supervisor hung up on this raw agent within ms. */
static inline int rel_raw_hungup(struct rel_raw *r, int ms)
{
    struct pollfd pf = { .fd = r->sock, .events = POLLIN | POLLRDHUP };
    if (poll(&pf, 1, ms) <= 0)
        return 0;
    return (pf.revents & (POLLHUP | POLLRDHUP | POLLERR)) != 0;
}

#endif
