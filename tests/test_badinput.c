/*
 * test_badinput.c - wrong, hostile and unauthorised input against a real supervisor (and, for the
 * client's ABI checks, against a fake one inside the test).
 *
 *   (a) oversized tasks: oag_submit/oag_submit_ex/oag_infer/oag_reserve -> -EMSGSIZE, nothing
 *       queued, and the client still works afterwards (also -ENOBUFS for a small output buffer);
 *   (b) wrong ABI: a raw HELLO with abi = OAG_ABI_VERSION + 1 gets a WELCOME with err -EPROTO, a
 *       reason and no fds, then the socket closes; bad magic, unknown kind and a truncated hello
 *       are refused too. A fake supervisor passes a region with a wrong ABI (and other broken
 *       welcomes): oag_connect returns -EPROTO (or the refusal's code) and oag_last_error() names
 *       the mismatch, with no fd or mapping leaked;
 *   (c) (root only) a uid the supervisor does not allow gets -EACCES; with --allow-uid it works;
 *   (d) rogue agents that connect with a raw socket, map their lane and write garbage (producer
 *       index far ahead, slot lengths > max_payload, impossible completion consumer index,
 *       garbage agent state) are cut off (their socket sees hang-up, nothing is echoed), while a
 *       well-behaved client connected at the same time keeps getting correct results and the
 *       supervisor survives and still answers oag-ctl.
 *
 * Environment: OAG_SUPERVISOR, OAG_CTL.
 */
#include "harness.h"

#include <grp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "oag/oag.h"
#include "shm/layout.h"
#include "shm/proto.h"

#define MAXP 1024
#define SLOTS 64

/* ---- small helpers ----------------------------------------------------------------------- */

static void pattern(uint8_t *p, size_t n, uint32_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 31u + i * 7u + (i >> 8));
}

static int connect_raw(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_un sa;
    if (h_sun(&sa, path) < 0) {
        close(fd);
        return -ENAMETOOLONG;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static struct oag_hello make_hello(void)
{
    struct oag_hello h;
    memset(&h, 0, sizeof h);
    h.magic = OAG_PROTO_MAGIC;
    h.abi = OAG_ABI_VERSION;
    h.kind = OAG_HELLO_AGENT;
    h.agent_id = -1;
    h.pid = (uint32_t)getpid();
    return h;
}

/* Receives one message with up to 8 fds. Returns the byte count (0: EOF) or -errno. */
static ssize_t recv_fds(int fd, void *buf, size_t len, int *fds, int *nfds)
{
    union {
        char b[CMSG_SPACE(sizeof(int) * 8)];
        struct cmsghdr align;
    } u;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                         .msg_controllen = sizeof u.b };
    ssize_t n;
    do
        n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    *nfds = 0;
    if (n < 0)
        return -errno;
    for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < k; i++)
                if (*nfds < 8)
                    memcpy(&fds[(*nfds)++], CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
        }
    return n;
}

/* Waits up to ms for the peer to hang up: 1 on EOF/HUP/reset, 0 if still open. Any message
 * read meanwhile is discarded. */
static int wait_hangup(int fd, int ms)
{
    uint64_t end = h_now_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t now = h_now_ms();
        if (now >= end)
            return 0;
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        int r = poll(&pf, 1, (int)(end - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        char buf[8192];
        ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return 1;
        if (pf.revents & (POLLHUP | POLLERR))
            return 1;
    }
}

/* Open fds of this process that a connection can leak: memfds, eventfds, sockets. */
static int count_self_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    char path[300], target[256];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%.200s", e->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (k <= 0)
            continue;
        target[k] = '\0';
        if (strstr(target, "memfd:") || strstr(target, "eventfd") || strstr(target, "socket:"))
            n++;
    }
    closedir(d);
    return n;
}
static int count_self_maps(void) { return h_count_maps((int)getpid()); }

/* ---- (a) oversized tasks ------------------------------------------------------------------- */

static void part_a(const struct h_sup *s)
{
    printf("(a) oversized tasks -> -EMSGSIZE, client still works\n");
    oag_client *c = NULL;
    int rc = oag_connect(&c, s->sock);
    CHECK(rc == 0, "oag_connect: %d %s", rc, oag_last_error());
    if (rc)
        return;
    oag_info info;
    CHECK_EQ(oag_get_info(c, &info), 0);
    CHECK_EQ(info.max_payload, MAXP);
    CHECK_EQ(info.ring_slots, SLOTS);
    CHECK(!strcmp(info.engine, "identity"), "engine \"%s\"", info.engine);

    static uint8_t in[1 << 20], out[MAXP + 64];
    pattern(in, sizeof in, 1);
    uint64_t ticket = 0;
    size_t out_len = 0;
    CHECK_EQ(oag_submit(c, in, MAXP + 1, &ticket), -EMSGSIZE);
    CHECK_EQ(oag_submit(c, in, sizeof in, &ticket), -EMSGSIZE);
    oag_submit_opts so = { .timeout_us = 0, .priority = 1 };
    CHECK_EQ(oag_submit_ex(c, in, MAXP + 1, &so, &ticket), -EMSGSIZE);
    CHECK_EQ(oag_infer(c, in, MAXP + 1, out, sizeof out, &out_len, 2000), -EMSGSIZE);
    void *buf = NULL;
    CHECK_EQ(oag_reserve(c, MAXP + 1, &buf), -EMSGSIZE);
    CHECK_EQ(oag_outstanding(c), 0);

    /* Exactly max_payload is fine, synchronously and asynchronously. */
    rc = oag_infer(c, in, MAXP, out, sizeof out, &out_len, 5000);
    CHECK(rc == 0, "oag_infer(max_payload): %d %s", rc, oag_strerror(rc));
    CHECK(rc != 0 || (out_len == MAXP && !memcmp(out, in, MAXP)), "echo of %zu bytes", out_len);
    /* A result larger than the caller's buffer: -ENOBUFS, and the task is consumed. */
    rc = oag_infer(c, in, 100, out, 10, &out_len, 5000);
    CHECK_EQ(rc, -ENOBUFS);
    CHECK_EQ(out_len, 100);
    CHECK_EQ(oag_outstanding(c), 0);

    uint64_t tickets[20];
    for (int i = 0; i < 20; i++) {
        rc = oag_submit(c, in + i, (size_t)(i * 50 + 1), &tickets[i]);
        CHECK(rc == 0, "submit %d: %d", i, rc);
        if (i == 10)
            CHECK_EQ(oag_submit(c, in, MAXP + 100, &ticket), -EMSGSIZE);
    }
    int got = 0, bad = 0;
    uint64_t end = h_now_ms() + 5000;
    while (got < 20 && h_now_ms() < end) {
        oag_completion d[20];
        int n = oag_poll(c, d, 20, 500);
        if (n < 0) {
            CHECK(0, "oag_poll: %d %s", n, oag_strerror(n));
            break;
        }
        for (int k = 0; k < n; k++) {
            int i;
            for (i = 0; i < 20; i++)
                if (tickets[i] == d[k].ticket)
                    break;
            if (i == 20 || d[k].status != 0 || d[k].len != (uint32_t)(i * 50 + 1) ||
                memcmp(d[k].data, in + i, d[k].len) != 0)
                bad++;
            else
                tickets[i] = 0;
            got++;
        }
    }
    CHECK_EQ(got, 20);
    CHECK_EQ(bad, 0);
    /* Zero-copy path still works after the refusal. */
    rc = oag_reserve(c, 64, &buf);
    CHECK_EQ(rc, 0);
    if (rc == 0) {
        memcpy(buf, in, 64);
        CHECK_EQ(oag_commit(c, 64, NULL, &ticket), 0);
        oag_completion d;
        int n = oag_poll(c, &d, 1, 5000);
        CHECK(n == 1 && d.ticket == ticket && d.status == 0 && d.len == 64 &&
                  !memcmp(d.data, in, 64), "reserve/commit round trip (n %d)", n);
    }
    oag_close(c);
}

/* ---- (b) wrong ABI over the real socket -------------------------------------------------- */

/* Sends hello (len bytes of it) raw and expects a refusal: a WELCOME with err == want_err (or,
 * when accept_hangup, a plain hang-up), never fds. */
static void raw_refused(const struct h_sup *s, const char *what, const struct oag_hello *h,
                        size_t len, int want_err, int accept_hangup)
{
    int fd = connect_raw(s->sock);
    CHECK(fd >= 0, "%s: connect: %s", what, strerror(-fd));
    if (fd < 0)
        return;
    CHECK(send(fd, h, len, MSG_NOSIGNAL) == (ssize_t)len, "%s: send: %s", what, strerror(errno));
    struct oag_welcome w;
    memset(&w, 0, sizeof w);
    int fds[8], nfds = 0;
    ssize_t n = recv_fds(fd, &w, sizeof w, fds, &nfds);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    CHECK_EQ(nfds, 0);
    if (n == 0 || n == -ECONNRESET) {
        CHECK(accept_hangup, "%s: supervisor hung up without a WELCOME carrying the error", what);
        printf("    %s: hang-up\n", what);
    } else if (n < 0) {
        CHECK(0, "%s: no answer: %s", what, strerror((int)-n));
    } else {
        w.reason[sizeof w.reason - 1] = '\0';
        printf("    %s: err %d reason \"%s\"\n", what, w.err, w.reason);
        CHECK((size_t)n >= offsetof(struct oag_welcome, reason), "%s: short welcome (%zd)", what, n);
        CHECK_EQ(w.magic, OAG_PROTO_MAGIC);
        CHECK_EQ(w.type, OAG_MSG_WELCOME);
        CHECK(w.err == want_err, "%s: err %d, expected %d", what, w.err, want_err);
        CHECK(w.reason[0] != '\0', "%s: refusal without a reason", what);
        CHECK_EQ(w.abi, OAG_ABI_VERSION);
        CHECK(wait_hangup(fd, 3000), "%s: socket not closed after the refusal", what);
    }
    close(fd);
}

static void part_b_raw(const struct h_sup *s)
{
    printf("(b) raw HELLO with a wrong ABI (and other bad hellos) are refused\n");
    struct oag_hello h = make_hello();
    h.abi = OAG_ABI_VERSION + 1;
    raw_refused(s, "abi+1", &h, sizeof h, -EPROTO, 0);
    h = make_hello();
    h.abi = 0;
    raw_refused(s, "abi 0", &h, sizeof h, -EPROTO, 0);
    h = make_hello();
    h.magic = 0x12345678;
    raw_refused(s, "bad magic", &h, sizeof h, -EPROTO, 1);
    h = make_hello();
    h.kind = 99;
    raw_refused(s, "unknown kind", &h, sizeof h, -EPROTO, 1);
    h = make_hello();
    raw_refused(s, "truncated hello", &h, 8, -EPROTO, 1);

    /* The supervisor still accepts a proper client. */
    oag_client *c = NULL;
    int rc = oag_connect(&c, s->sock);
    CHECK(rc == 0, "oag_connect after bad hellos: %d %s", rc, oag_last_error());
    if (rc == 0) {
        uint8_t in[32], out[32];
        size_t ol = 0;
        pattern(in, sizeof in, 9);
        CHECK_EQ(oag_infer(c, in, sizeof in, out, sizeof out, &ol, 5000), 0);
        CHECK(ol == sizeof in && !memcmp(in, out, sizeof in), "echo after bad hellos");
    }
    oag_close(c);
}

/* ---- (b) a fake supervisor with broken welcomes ----------------------------------------- */

enum fake_case {
    FAKE_REGION_ABI,     /* region header abi = ABI+1 */
    FAKE_REGION_MAGIC,   /* region header magic wrong */
    FAKE_REGION_SMALL,   /* region smaller than struct oag_region */
    FAKE_LANE_ABI,       /* lane header abi = ABI+1 */
    FAKE_LANE_GEOM,      /* lane header sub_off moved */
    FAKE_LANE_SIZE,      /* welcome lane_size differs from the memfd */
    FAKE_LANE_SHARD,     /* lane header names a data thread the region does not have */
    FAKE_WELCOME_ABI,    /* welcome abi = ABI+1, err 0 */
    FAKE_TWO_FDS,        /* only 2 of the 4 fds */
    FAKE_REFUSE,         /* err -EACCES with a reason */
    FAKE_NO_ANSWER,      /* closes without answering */
    FAKE_OK,             /* everything right: connect must succeed */
    FAKE_NCASES
};

static const struct {
    const char *name;
    int want;
    const char *msg1;   /* a substring oag_last_error() must contain (or NULL) */
    int names_version;  /* oag_last_error() must also name the wrong version, OAG_ABI_VERSION+1 */
} fake_cases[FAKE_NCASES] = {
    [FAKE_REGION_ABI] = { "region ABI+1", -EPROTO, "ABI", 1 },
    [FAKE_REGION_MAGIC] = { "region magic", -EPROTO, NULL, 0 },
    [FAKE_REGION_SMALL] = { "region too small", -EPROTO, NULL, 0 },
    [FAKE_LANE_ABI] = { "lane ABI+1", -EPROTO, "ABI", 1 },
    [FAKE_LANE_GEOM] = { "lane geometry", -EPROTO, NULL, 0 },
    [FAKE_LANE_SIZE] = { "lane size", -EPROTO, NULL, 0 },
    [FAKE_LANE_SHARD] = { "lane shard", -EPROTO, "thread 2 of 2", 0 },
    [FAKE_WELCOME_ABI] = { "welcome ABI+1", -EPROTO, "ABI", 1 },
    [FAKE_TWO_FDS] = { "two fds", -EPROTO, NULL, 0 },
    [FAKE_REFUSE] = { "refusal", -EACCES, "not welcome here", 0 },
    [FAKE_NO_ANSWER] = { "no answer", -ECONNRESET, NULL, 0 },
    [FAKE_OK] = { "valid", 0, NULL, 0 },
};

struct fake {
    int listen_fd;
    atomic_int which;
    atomic_int bad_hello; /* liboag sent something other than a proper agent HELLO */
    atomic_int handled;   /* connections fully handled and closed */
    atomic_int quit;      /* set, then one connection wakes the server so that it returns */
};

/* Waits until the fake server has closed its side of n connections. */
static void fake_wait(struct fake *f, int n)
{
    uint64_t end = h_now_ms() + 10000;
    while (atomic_load(&f->handled) < n && h_now_ms() < end)
        h_sleep_ms(1);
}

static int make_memfd(const char *name, size_t size)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, (off_t)size) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void *fake_server(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int c = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            return NULL;
        if (atomic_load(&f->quit)) {
            close(c);
            return NULL;
        }
        int which = atomic_load(&f->which);
        struct oag_hello h;
        ssize_t n = recv(c, &h, sizeof h, 0);
        if (n != (ssize_t)sizeof h || h.magic != OAG_PROTO_MAGIC || h.abi != OAG_ABI_VERSION ||
            h.kind != OAG_HELLO_AGENT || h.pid != (uint32_t)getpid())
            atomic_store(&f->bad_hello, 1);
        if (which == FAKE_NO_ANSWER) {
            close(c);
            atomic_fetch_add(&f->handled, 1);
            continue;
        }
        struct oag_lane_geom g;
        oag_lane_geom(&g, 256, 16);
        size_t rsize = which == FAKE_REGION_SMALL ? 64 : 4096;
        int rfd = make_memfd("fake-region", rsize);
        int lfd = make_memfd("fake-lane", g.size);
        int e1 = eventfd(0, EFD_CLOEXEC), e2 = eventfd(0, EFD_CLOEXEC);
        if (which != FAKE_REGION_SMALL) {
            struct oag_region *r = mmap(NULL, rsize, PROT_READ | PROT_WRITE, MAP_SHARED, rfd, 0);
            if (r != MAP_FAILED) {
                r->hdr.size = rsize;
                r->hdr.sup_pid = (uint32_t)getpid();
                r->hdr.global_off = (uint32_t)offsetof(struct oag_region, global);
                r->hdr.nshards = 2;
                oag_store_relaxed_u32(&r->hdr.abi, which == FAKE_REGION_ABI ? OAG_ABI_VERSION + 1
                                                                            : OAG_ABI_VERSION);
                oag_store_release_u32(&r->hdr.magic, which == FAKE_REGION_MAGIC
                                                         ? 0x0bad0badu : OAG_REGION_MAGIC);
                munmap(r, rsize);
            }
        }
        struct oag_lane_hdr *lh = mmap(NULL, g.size, PROT_READ | PROT_WRITE, MAP_SHARED, lfd, 0);
        if (lh != MAP_FAILED) {
            memset(lh, 0, sizeof *lh);
            lh->magic = OAG_LANE_MAGIC;
            lh->abi = which == FAKE_LANE_ABI ? OAG_ABI_VERSION + 1 : OAG_ABI_VERSION;
            lh->lane_id = 5;
            lh->generation = 3;
            lh->size = g.size;
            lh->pay_stride = g.pay_stride;
            lh->max_payload = g.max_payload;
            lh->sub_slots = g.sub_slots;
            lh->cmp_slots = g.cmp_slots;
            lh->state_off = g.state_off;
            lh->ctl_off = g.ctl_off;
            lh->sub_off = which == FAKE_LANE_GEOM ? g.sub_off + 4096 : g.sub_off;
            lh->cmp_off = g.cmp_off;
            lh->sub_pay_off = g.sub_pay_off;
            lh->cmp_pay_off = g.cmp_pay_off;
            lh->shard = which == FAKE_LANE_SHARD ? 2 : 1;
            munmap(lh, g.size);
        }
        struct oag_welcome w;
        memset(&w, 0, sizeof w);
        w.magic = OAG_PROTO_MAGIC;
        w.type = OAG_MSG_WELCOME;
        w.abi = which == FAKE_WELCOME_ABI ? OAG_ABI_VERSION + 1 : OAG_ABI_VERSION;
        w.lane_id = 5;
        w.generation = 3;
        w.lane_size = which == FAKE_LANE_SIZE ? g.size + 4096 : g.size;
        w.region_size = rsize;
        int nf = which == FAKE_TWO_FDS ? 2 : 4;
        if (which == FAKE_REFUSE) {
            w.err = -EACCES;
            snprintf(w.reason, sizeof w.reason, "uid 1234 is not welcome here");
            nf = 0;
        }
        int fds[4] = { rfd, lfd, e1, e2 };
        union {
            char b[CMSG_SPACE(sizeof fds)];
            struct cmsghdr align;
        } u;
        memset(&u, 0, sizeof u);
        struct iovec iov = { .iov_base = &w, .iov_len = sizeof w };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (nf) {
            mh.msg_control = u.b;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nf);
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nf);
            memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nf);
        }
        if (sendmsg(c, &mh, MSG_NOSIGNAL) < 0)
            fprintf(stderr, "fake server: sendmsg: %s\n", strerror(errno));
        close(rfd);
        close(lfd);
        close(e1);
        close(e2);
        /* Keep the connection open until the client closes it (as a real supervisor would). */
        char sink[64];
        struct timeval tv = { .tv_sec = 5 };
        setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        while (recv(c, sink, sizeof sink, 0) > 0)
            ;
        close(c);
        atomic_fetch_add(&f->handled, 1);
    }
}

static void part_b_fake(void)
{
    printf("(b) fake supervisor with broken welcomes -> oag_connect refuses, no leaks\n");
    char dir[256], path[300];
    h_tmpdir(dir, sizeof dir, "fake", 0700);
    snprintf(path, sizeof path, "%s/fake.sock", dir);
    struct fake f;
    memset(&f, 0, sizeof f);
    f.listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa;
    if (f.listen_fd < 0 || h_sun(&sa, path) < 0 || bind(f.listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(f.listen_fd, 8) < 0) {
        CHECK(0, "fake server socket: %s", strerror(errno));
        h_rmtree(dir);
        return;
    }
    pthread_t th;
    pthread_create(&th, NULL, fake_server, &f);

    /* Warm-up connect (valid) so that lazily allocated library state does not count as a leak. */
    oag_client *c = NULL;
    atomic_store(&f.which, FAKE_OK);
    int rc = oag_connect(&c, path);
    CHECK(rc == 0, "valid fake welcome refused: %d %s", rc, oag_last_error());
    oag_close(c);
    fake_wait(&f, 1);
    int fds0 = count_self_fds(), maps0 = count_self_maps();

    for (int k = 0; k < FAKE_NCASES; k++) {
        atomic_store(&f.which, k);
        c = NULL;
        rc = oag_connect(&c, path);
        const char *err = oag_last_error();
        printf("    %-16s -> %d (%s): \"%s\"\n", fake_cases[k].name, rc, oag_strerror(rc), err);
        CHECK(rc == fake_cases[k].want, "%s: oag_connect returned %d, expected %d",
              fake_cases[k].name, rc, fake_cases[k].want);
        CHECK((rc == 0) == (c != NULL), "%s: *out must be set exactly on success",
              fake_cases[k].name);
        if (fake_cases[k].msg1)
            CHECK(strstr(err, fake_cases[k].msg1) != NULL, "%s: oag_last_error() \"%s\" does not "
                  "mention \"%s\"", fake_cases[k].name, err, fake_cases[k].msg1);
        char ver[16];
        snprintf(ver, sizeof ver, "%u", OAG_ABI_VERSION + 1);
        if (fake_cases[k].names_version)
            CHECK(strstr(err, ver) != NULL, "%s: oag_last_error() \"%s\" does not name the "
                  "version %s", fake_cases[k].name, err, ver);
        if (rc != 0 && fake_cases[k].want != 0)
            CHECK(err[0] != '\0' || k == FAKE_NO_ANSWER, "%s: empty oag_last_error()",
                  fake_cases[k].name);
        oag_close(c);
        fake_wait(&f, k + 2);
    }
    int fds1 = count_self_fds(), maps1 = count_self_maps();
    printf("    client fds %d -> %d, mappings %d -> %d\n", fds0, fds1, maps0, maps1);
    CHECK(fds1 == fds0, "failed connects leaked %d fd(s)", fds1 - fds0);
    CHECK(maps1 == maps0, "failed connects leaked %d mapping(s)", maps1 - maps0);
    CHECK(!atomic_load(&f.bad_hello), "liboag sent a malformed HELLO");

    /* The server returns on its own (a thread cancelled inside a block leaves its stack
     * poisoned for ASan, which then reports its own teardown as stack-use-after-scope). */
    atomic_store(&f.quit, 1);
    int wake = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (wake >= 0 && connect(wake, (struct sockaddr *)&sa, sizeof sa) == 0)
        pthread_join(th, NULL);
    else
        pthread_detach(th);
    if (wake >= 0)
        close(wake);
    close(f.listen_fd);
    h_rmtree(dir);
}

/* ---- (c) uid checks ------------------------------------------------------------------------ */

/* Forks a child that drops to uid/gid 65534 and connects; returns the child's oag_connect result
 * (or 1000 + code on a setup failure). When it connects it also runs one task. */
static int connect_as_nobody(const char *sock)
{
    int p[2];
    if (pipe(p) < 0)
        return 1000;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        int res = 0;
        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0) {
            res = 1001;
        } else {
            oag_client *c = NULL;
            res = oag_connect(&c, sock);
            fprintf(stderr, "    as uid %d: oag_connect -> %d (%s) \"%s\"\n", (int)getuid(), res,
                    oag_strerror(res), oag_last_error());
            if (res == 0) {
                uint8_t in[100], out[100];
                size_t ol = 0;
                pattern(in, sizeof in, 3);
                int r = oag_infer(c, in, sizeof in, out, sizeof out, &ol, 5000);
                if (r != 0 || ol != sizeof in || memcmp(in, out, sizeof in))
                    res = 1002;
            }
            oag_close(c);
        }
        if (write(p[1], &res, sizeof res) < 0)
            _exit(2);
        _exit(0);
    }
    close(p[1]);
    int res = 1003;
    if (pid < 0 || read(p[0], &res, sizeof res) != (ssize_t)sizeof res)
        res = 1003;
    close(p[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return res;
}

static void part_c(void)
{
    if (geteuid() != 0) {
        printf("(c) uid checks: SKIPPED (not root)\n");
        return;
    }
    printf("(c) a uid not allowed gets -EACCES; --allow-uid admits it\n");
    struct h_sup s;
    const char *const extra1[] = { "--socket-mode", "0666", NULL };
    if (h_sup_start(&s, "uid", 0755, extra1, NULL) == 0) {
        struct stat st;
        CHECK(stat(s.sock, &st) == 0 && (st.st_mode & 0777) == 0666, "socket mode %o",
              (unsigned)(st.st_mode & 0777));
        int res = connect_as_nobody(s.sock);
        CHECK(res == -EACCES, "uid 65534 without --allow-uid: %d, expected -EACCES", res);
        CHECK(h_sup_alive(&s), "supervisor died after refusing a uid");
        /* The owner itself is still welcome. */
        oag_client *c = NULL;
        int rc = oag_connect(&c, s.sock);
        CHECK(rc == 0, "owner connect: %d %s", rc, oag_last_error());
        oag_close(c);
    }
    h_cleanup(&s);

    const char *const extra2[] = { "--allow-uid", "65534", NULL };
    if (h_sup_start(&s, "uidok", 0755, extra2, NULL) == 0) {
        int res = connect_as_nobody(s.sock);
        CHECK(res == 0, "uid 65534 with --allow-uid 65534: %d, expected 0", res);
    }
    h_cleanup(&s);
}

/* ---- (d) rogue agents ---------------------------------------------------------------------- */

struct good {
    oag_client *c;
    atomic_int stop;
    atomic_ullong done;
    atomic_ullong errors;
    int last_rc;
};

static void *good_agent(void *arg)
{
    struct good *g = arg;
    enum { W = 8 };
    uint8_t in[W][200];
    uint64_t tickets[W] = { 0 };
    uint32_t lens[W];
    uint64_t seq = 0;
    while (!atomic_load(&g->stop)) {
        for (int i = 0; i < W; i++) {
            if (tickets[i])
                continue;
            lens[i] = (uint32_t)(1 + seq % 200);
            pattern(in[i], lens[i], (uint32_t)seq++);
            int rc = oag_submit(g->c, in[i], lens[i], &tickets[i]);
            if (rc == -EAGAIN) {
                tickets[i] = 0;
                break;
            }
            if (rc) {
                g->last_rc = rc;
                atomic_fetch_add(&g->errors, 1);
                return NULL;
            }
        }
        oag_completion d[W];
        int n = oag_poll(g->c, d, W, 1000);
        if (n < 0) {
            g->last_rc = n;
            atomic_fetch_add(&g->errors, 1);
            return NULL;
        }
        for (int k = 0; k < n; k++) {
            int i;
            for (i = 0; i < W; i++)
                if (tickets[i] && tickets[i] == d[k].ticket)
                    break;
            if (i == W || d[k].status != 0 || d[k].len != lens[i] ||
                memcmp(d[k].data, in[i], lens[i]) != 0) {
                atomic_fetch_add(&g->errors, 1);
                fprintf(stderr, "good agent: bad completion ticket %llu status %d len %u\n",
                        (unsigned long long)d[k].ticket, d[k].status, d[k].len);
                continue;
            }
            tickets[i] = 0;
            atomic_fetch_add(&g->done, 1);
        }
    }
    return NULL;
}

struct rogue {
    int sock, doorbell, cmp_efd;
    const struct oag_region *region;
    size_t region_size;
    uint8_t *lane;
    size_t lane_size;
    struct oag_lane_hdr hdr;
    struct oag_lane_ctl *ctl;
};

static int rogue_connect(const struct h_sup *s, struct rogue *r)
{
    memset(r, 0, sizeof *r);
    r->sock = r->doorbell = r->cmp_efd = -1;
    int fd = connect_raw(s->sock);
    if (fd < 0) {
        CHECK(0, "rogue connect: %s", strerror(-fd));
        return -1;
    }
    r->sock = fd;
    struct oag_hello h = make_hello();
    send(fd, &h, sizeof h, MSG_NOSIGNAL);
    struct oag_welcome w;
    int fds[8], nfds = 0;
    ssize_t n = recv_fds(fd, &w, sizeof w, fds, &nfds);
    if (n < (ssize_t)offsetof(struct oag_welcome, reason) || w.err != 0 || nfds != 4) {
        CHECK(0, "rogue: welcome n %zd err %d nfds %d", n, n > 0 ? w.err : 0, nfds);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        return -1;
    }
    /* The region is read-only for agents: the fd must not allow a writable shared mapping. */
    int fl = fcntl(fds[0], F_GETFL);
    CHECK((fl & O_ACCMODE) == O_RDONLY, "region fd is opened with mode %d, not O_RDONLY",
          fl & O_ACCMODE);
    struct stat st;
    fstat(fds[0], &st);
    void *wr = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    CHECK(wr == MAP_FAILED && errno == EACCES, "region fd allows a writable shared mapping");
    if (wr != MAP_FAILED)
        munmap(wr, (size_t)st.st_size);
    r->region_size = (size_t)st.st_size;
    r->region = mmap(NULL, r->region_size, PROT_READ, MAP_SHARED, fds[0], 0);
    fstat(fds[1], &st);
    r->lane_size = (size_t)st.st_size;
    r->lane = mmap(NULL, r->lane_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[1], 0);
    close(fds[0]);
    close(fds[1]);
    r->doorbell = fds[2];
    r->cmp_efd = fds[3];
    if (r->region == MAP_FAILED || r->lane == MAP_FAILED) {
        CHECK(0, "rogue mmap: %s", strerror(errno));
        return -1;
    }
    memcpy(&r->hdr, r->lane, sizeof r->hdr);
    CHECK_EQ(oag_lane_hdr_check(&r->hdr, r->lane_size), 0);
    CHECK_EQ(r->hdr.max_payload, MAXP);
    r->ctl = (struct oag_lane_ctl *)(r->lane + r->hdr.ctl_off);
    return 0;
}

static void rogue_close(struct rogue *r)
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
}

static struct oag_slot_hdr *rogue_sub_slot(struct rogue *r, uint32_t idx)
{
    return (struct oag_slot_hdr *)(r->lane + r->hdr.sub_off) + (idx & (r->hdr.sub_slots - 1));
}

static uint8_t *rogue_sub_payload(struct rogue *r, uint32_t idx)
{
    return r->lane + r->hdr.sub_pay_off +
           (uint64_t)(idx & (r->hdr.sub_slots - 1)) * r->hdr.pay_stride;
}

static const struct oag_slot_hdr *rogue_cmp_slot(struct rogue *r, uint32_t idx)
{
    return (const struct oag_slot_hdr *)(r->lane + r->hdr.cmp_off) +
           (idx & (r->hdr.cmp_slots - 1));
}

static const uint8_t *rogue_cmp_payload(struct rogue *r, uint32_t idx)
{
    return r->lane + r->hdr.cmp_pay_off +
           (uint64_t)(idx & (r->hdr.cmp_slots - 1)) * r->hdr.pay_stride;
}

static void ring_doorbell(struct rogue *r)
{
    uint64_t one = 1;
    if (write(r->doorbell, &one, sizeof one) < 0 && errno != EAGAIN)
        fprintf(stderr, "doorbell: %s\n", strerror(errno));
}

/* Writes a valid task into submission slot idx (the rogue publishes prod itself). */
static void rogue_task(struct rogue *r, uint32_t idx, uint32_t len)
{
    struct oag_slot_hdr *sl = rogue_sub_slot(r, idx);
    sl->ticket = 1000 + idx;
    sl->len = len;
    sl->status = 0;
    sl->timeout_us = 0;
    sl->priority = 0;
    pattern(rogue_sub_payload(r, idx), len < MAXP ? len : MAXP, idx);
}

/* Checks the well-behaved client is healthy and progressing across a rogue scenario. */
static void good_progress(struct good *g, const char *when, unsigned long long before)
{
    uint64_t end = h_now_ms() + 3000;
    while (atomic_load(&g->done) < before + 100 && h_now_ms() < end)
        h_sleep_ms(10);
    unsigned long long now = atomic_load(&g->done);
    CHECK(now >= before + 100, "%s: the good client made no progress (%llu -> %llu, last rc %d)",
          when, before, now, g->last_rc);
    CHECK(atomic_load(&g->errors) == 0, "%s: the good client saw %llu error(s) (last rc %d)", when,
          (unsigned long long)atomic_load(&g->errors), g->last_rc);
}

static void part_d(struct h_sup *s)
{
    printf("(d) rogue agents are cut off; a good client keeps working\n");
    struct good g;
    memset(&g, 0, sizeof g);
    int rc = oag_connect(&g.c, s->sock);
    CHECK(rc == 0, "good client connect: %d %s", rc, oag_last_error());
    if (rc)
        return;
    pthread_t th;
    pthread_create(&th, NULL, good_agent, &g);
    good_progress(&g, "before the rogues", 0);

    struct rogue r;
    unsigned long long before;

    /* d1: producer index far ahead of anything the ring can hold. */
    printf("    d1: submission prod index 1000000 ahead\n");
    before = atomic_load(&g.done);
    if (rogue_connect(s, &r) == 0) {
        oag_store_release_u32(&r.ctl->sub_prod, 1000000);
        ring_doorbell(&r);
        CHECK(wait_hangup(r.sock, 5000), "d1: rogue with prod far ahead was not cut off");
        CHECK_EQ(oag_load_acquire_u32(&r.ctl->cmp_prod), 0);
    }
    rogue_close(&r);
    CHECK(h_sup_alive(s), "d1: supervisor died");
    good_progress(&g, "d1", before);

    /* d2: a slot claiming more than max_payload bytes. */
    static const uint32_t bad_lens[] = { MAXP + 1, 0x7fffffffu, 0xffffffffu };
    for (size_t k = 0; k < sizeof bad_lens / sizeof bad_lens[0]; k++) {
        printf("    d2: slot len %u (max_payload %u)\n", bad_lens[k], MAXP);
        before = atomic_load(&g.done);
        if (rogue_connect(s, &r) == 0) {
            rogue_task(&r, 0, 16); /* one good task first, then the bad one */
            rogue_task(&r, 1, 16);
            rogue_sub_slot(&r, 1)->len = bad_lens[k];
            oag_store_release_u32(&r.ctl->sub_prod, 2);
            ring_doorbell(&r);
            int cut = wait_hangup(r.sock, 5000);
            uint32_t cprod = oag_load_acquire_u32(&r.ctl->cmp_prod);
            int echoed = 0;
            for (uint32_t i = 0; i < cprod && i < r.hdr.cmp_slots; i++) {
                const struct oag_slot_hdr *c = rogue_cmp_slot(&r, i);
                if (c->ticket == 1001) {
                    echoed = 1;
                    fprintf(stderr, "    d2: completion for the bad slot: status %d len %u\n",
                            c->status, c->len);
                }
                CHECK(c->len <= MAXP, "d2: completion with len %u > max_payload", c->len);
            }
            CHECK(cut, "d2: rogue with slot len %u was not cut off%s", bad_lens[k],
                  echoed ? " (the supervisor answered the bad slot instead)" : "");
            CHECK(!echoed || cut, "d2: bad slot answered");
        }
        rogue_close(&r);
        CHECK(h_sup_alive(s), "d2: supervisor died");
        good_progress(&g, "d2", before);
    }

    /* d3: completion consumer index impossible once the supervisor needs it. */
    printf("    d3: completion ring full, then cons index garbage\n");
    before = atomic_load(&g.done);
    if (rogue_connect(s, &r) == 0) {
        uint32_t n = r.hdr.sub_slots;
        for (uint32_t i = 0; i < n; i++)
            rogue_task(&r, i, 8);
        oag_store_release_u32(&r.ctl->sub_prod, n);
        ring_doorbell(&r);
        uint64_t end = h_now_ms() + 5000;
        while (oag_load_acquire_u32(&r.ctl->cmp_prod) < n && h_now_ms() < end)
            h_sleep_ms(5);
        uint32_t cprod = oag_load_acquire_u32(&r.ctl->cmp_prod);
        CHECK(cprod == n, "d3: %u of %u rogue tasks completed", cprod, n);
        int bad = 0;
        for (uint32_t i = 0; i < cprod && i < n; i++) {
            const struct oag_slot_hdr *c = rogue_cmp_slot(&r, i);
            uint8_t want[8];
            uint32_t idx = (uint32_t)(c->ticket - 1000);
            pattern(want, 8, idx);
            if (c->status != 0 || c->len != 8 || idx >= n ||
                memcmp(rogue_cmp_payload(&r, i), want, 8))
                bad++;
        }
        CHECK_EQ(bad, 0);
        /* Now the completion ring is full (we never released): lie about cons and submit more. */
        oag_store_release_u32(&r.ctl->cmp_cons, 0x7fffffffu);
        uint32_t sp = oag_load_acquire_u32(&r.ctl->sub_prod);
        for (uint32_t i = 0; i < 4; i++)
            rogue_task(&r, sp + i, 8);
        oag_store_release_u32(&r.ctl->sub_prod, sp + 4);
        ring_doorbell(&r);
        CHECK(wait_hangup(r.sock, 5000), "d3: rogue with an impossible completion cons index "
              "was not cut off");
        CHECK_EQ(oag_load_acquire_u32(&r.ctl->cmp_prod), n);
    }
    rogue_close(&r);
    CHECK(h_sup_alive(s), "d3: supervisor died");
    good_progress(&g, "d3", before);

    /* d4: garbage in the agent state latch (odd sequence, random words), then a valid task. The
     * supervisor may serve it or cut the rogue off, but must not hang or die, and must still
     * answer status requests (which read agent state). */
    printf("    d4: garbage agent state\n");
    before = atomic_load(&g.done);
    if (rogue_connect(s, &r) == 0) {
        uint64_t x = 0x1234567;
        for (size_t i = 0; i < sizeof(struct oag_latch_agent); i += 8) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            memcpy(r.lane + r.hdr.state_off + i, &x, 8);
        }
        struct oag_latch_agent *la = (struct oag_latch_agent *)(r.lane + r.hdr.state_off);
        oag_store_release_u32(&la->seq, 0xffffffffu);
        rogue_task(&r, 0, 32);
        oag_store_release_u32(&r.ctl->sub_prod, 1);
        ring_doorbell(&r);
        struct h_status st;
        CHECK(h_status(s, &st) == 0, "d4: status failed with a garbage agent state attached");
        int cut = wait_hangup(r.sock, 1000);
        uint32_t cprod = oag_load_acquire_u32(&r.ctl->cmp_prod);
        printf("    d4: %s, %u completion(s)\n", cut ? "cut off" : "still attached", cprod);
        if (cprod >= 1) {
            const struct oag_slot_hdr *c = rogue_cmp_slot(&r, 0);
            uint8_t want[32];
            pattern(want, 32, 0);
            CHECK(c->ticket == 1000 && c->status == 0 && c->len == 32 &&
                      !memcmp(rogue_cmp_payload(&r, 0), want, 32),
                  "d4: wrong completion");
        }
        /* Keep hammering the latch while the supervisor publishes status a few times. */
        for (int i = 0; i < 5 && !cut; i++) {
            oag_store_release_u32(&la->seq, (uint32_t)(2 * i + 1));
            CHECK(h_status(s, &st) == 0, "d4: status failed (round %d)", i);
        }
    }
    rogue_close(&r);
    CHECK(h_sup_alive(s), "d4: supervisor died");
    good_progress(&g, "d4", before);

    /* d5: a rogue that dies with a half-written, unpublished slot and a doorbell storm. */
    printf("    d5: half-written slot, doorbell storm, then vanish\n");
    before = atomic_load(&g.done);
    if (rogue_connect(s, &r) == 0) {
        rogue_task(&r, 0, 64);
        rogue_sub_slot(&r, 0)->len = 0xdeadbeef; /* never published */
        for (int i = 0; i < 10000; i++)
            ring_doorbell(&r);
    }
    rogue_close(&r);
    CHECK(h_sup_alive(s), "d5: supervisor died");
    good_progress(&g, "d5", before);

    atomic_store(&g.stop, 1);
    pthread_join(th, NULL);
    printf("    good client: %llu tasks verified, %llu errors\n",
           (unsigned long long)atomic_load(&g.done), (unsigned long long)atomic_load(&g.errors));
    CHECK_EQ(atomic_load(&g.errors), 0);
    oag_close(g.c);
}

int main(void)
{
    h_init(100);
    h_env_bin("OAG_CTL");
    char maxp[16], slots[16];
    snprintf(maxp, sizeof maxp, "%d", MAXP);
    snprintf(slots, sizeof slots, "%d", SLOTS);
    const char *const extra[] = { "--max-payload", maxp, "--ring-slots", slots, NULL };
    struct h_sup s;
    if (h_sup_start(&s, "bad", 0700, extra, NULL) == 0) {
        part_a(&s);
        part_b_raw(&s);
        part_d(&s);
        CHECK(h_sup_alive(&s), "supervisor died");
        if (h_sup_alive(&s)) {
            kill(s.pid, SIGTERM);
            int st = h_sup_wait(&s, 10000);
            CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "SIGTERM after the rogues: status 0x%x", st);
        }
    }
    h_cleanup(&s);
    part_b_fake();
    part_c();
    if (h_failures) {
        printf("test_badinput: %d check(s) FAILED\n", h_failures);
        return 1;
    }
    printf("test_badinput: passed\n");
    return 0;
}
