/*
 * fuzz_proto.c - libFuzzer harness for the control-socket protocol as liboag reads it
 * (src/shm/proto.h, src/agent/client.c): the WELCOME message and its SCM_RIGHTS fds, the
 * region and lane they name (sizes, magic, ABI, the lane header's geometry), then completion
 * records in the lane.
 *
 * A server thread plays a broken or hostile supervisor on a private socket: it accepts the
 * real oag_connect()'s connection, reads its HELLO (and checks it is well formed), then answers
 * with the input's WELCOME bytes (possibly truncated) and a chosen set of fds: a region memfd
 * and a lane memfd whose sizes and leading bytes come from the input, and eventfds. When the
 * connect succeeds, the input also supplies completion-ring indices and a completion record,
 * and the client polls once. oag_connect must return 0 or a negative errno with no fd leaked;
 * any completion handed out must lie inside the lane (or the region's shared result area).
 *
 * Input: struct oag_welcome | u8 flags | u16 welcome bytes to send | u32 region size |
 *        region bytes (sizeof struct oag_region) | u32 lane size | lane header (256) |
 *        u32 completion prod | struct oag_slot_hdr.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "oag/oag.h"
#include "shm/atomic.h"
#include "shm/layout.h"
#include "shm/proto.h"

struct input {
    struct oag_welcome w;
    uint8_t flags;
    uint16_t wlen;
    uint32_t region_size;
    uint8_t region[sizeof(struct oag_region)];
    uint32_t lane_size;
    struct oag_lane_hdr lane_hdr;
    uint32_t cmp_prod;
    struct oag_slot_hdr cmp_slot;
} __attribute__((packed));

static char sock_path[108];
static int listen_fd = -1;
static pthread_t server;
static sem_t go, served;
static struct input cur;
static int lane_fd_server = -1;

static int memfd_with(const void *head, size_t headlen, size_t size)
{
    int fd = memfd_create("oag-fuzz", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
        abort();
    if (headlen > size)
        headlen = size;
    if (headlen && pwrite(fd, head, headlen, 0) != (ssize_t)headlen)
        abort();
    return fd;
}

static void *serve(void *arg)
{
    (void)arg;
    for (;;) {
        sem_wait(&go);
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            abort();
        struct oag_hello h;
        ssize_t n = recv(fd, &h, sizeof h, 0);
        if (n != (ssize_t)sizeof h || h.magic != OAG_PROTO_MAGIC || h.kind != OAG_HELLO_AGENT)
            abort(); /* liboag sent a malformed hello */
        int fds[5], nfds = 0;
        uint32_t rs = cur.region_size % (64u << 10);
        uint32_t ls = cur.lane_size % (4u << 20);
        if (cur.flags & 1)
            fds[nfds++] = memfd_with(cur.region, sizeof cur.region, rs);
        if (cur.flags & 2) {
            lane_fd_server = memfd_with(&cur.lane_hdr, sizeof cur.lane_hdr, ls);
            fds[nfds++] = dup(lane_fd_server);
        }
        if (cur.flags & 4)
            fds[nfds++] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (cur.flags & 8)
            fds[nfds++] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (cur.flags & 16)
            fds[nfds++] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        size_t wlen = cur.wlen % (sizeof cur.w + 1);
        if (wlen == 0)
            wlen = sizeof cur.w;
        union {
            char buf[CMSG_SPACE(sizeof fds)];
            struct cmsghdr align;
        } u;
        memset(&u, 0, sizeof u);
        struct iovec iov = { .iov_base = &cur.w, .iov_len = wlen };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (nfds) {
            mh.msg_control = u.buf;
            mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
            struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
            cm->cmsg_level = SOL_SOCKET;
            cm->cmsg_type = SCM_RIGHTS;
            cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
            memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
        }
        if (cur.flags & 32)
            shutdown(fd, SHUT_RDWR); /* hangs up without an answer */
        else
            (void)sendmsg(fd, &mh, MSG_NOSIGNAL);
        for (int i = 0; i < nfds; i++)
            close(fds[i]);
        sem_post(&served);
        /* Keep the connection until the harness is done with the client: a hang-up is part of
         * what oag_connect may see only when flags ask for it. */
        sem_wait(&go);
        close(fd);
        sem_post(&served);
    }
    return NULL;
}

static void cleanup(void) { unlink(sock_path); }

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    snprintf(sock_path, sizeof sock_path, "/tmp/oag-fuzz-proto-%d.sock", (int)getpid());
    unlink(sock_path);
    listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        listen(listen_fd, 4) < 0)
        abort();
    atexit(cleanup);
    sem_init(&go, 0, 0);
    sem_init(&served, 0, 0);
    if (pthread_create(&server, NULL, serve, NULL))
        abort();
    setenv("OAG_SPIN_US", "0", 1);
    return 0;
}

static int count_fds(void)
{
    int n = 0;
    for (int fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) >= 0;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (listen_fd < 0)
        LLVMFuzzerInitialize(NULL, NULL);
    memset(&cur, 0, sizeof cur);
    memcpy(&cur, data, size < sizeof cur ? size : sizeof cur);
    int before = count_fds();
    sem_post(&go);
    oag_client *c = NULL;
    int rc = oag_connect(&c, sock_path);
    sem_wait(&served);
    if (getenv("OAG_FUZZ_VERBOSE"))
        fprintf(stderr, "oag_connect: %d %s\n", rc, rc ? oag_last_error() : "");
    if (rc > 0 || (rc == 0) != (c != NULL))
        abort();
    if (rc == 0) {
        /* A hostile completion ring: any prod, any record in the slot it points at. */
        size_t ls = cur.lane_hdr.size;
        uint8_t *lane = mmap(NULL, ls, PROT_READ | PROT_WRITE, MAP_SHARED, lane_fd_server, 0);
        if (lane == MAP_FAILED)
            abort();
        struct oag_lane_ctl *ctl = (struct oag_lane_ctl *)(lane + cur.lane_hdr.ctl_off);
        memcpy(lane + cur.lane_hdr.cmp_off +
                   (uint64_t)(cur.cmp_prod ? (cur.cmp_prod - 1) & (cur.lane_hdr.cmp_slots - 1) : 0) *
                       sizeof(struct oag_slot_hdr),
               &cur.cmp_slot, sizeof cur.cmp_slot);
        oag_store_release_u32(&ctl->cmp_prod, cur.cmp_prod);
        oag_completion done[8];
        int n = oag_poll(c, done, 8, 0);
        volatile uint8_t sum = 0;
        for (int i = 0; i < n; i++) {
            const uint8_t *d = done[i].data;
            if (getenv("OAG_FUZZ_VERBOSE"))
                fprintf(stderr, "completion: ticket %llu status %d len %u\n",
                        (unsigned long long)done[i].ticket, done[i].status, done[i].len);
            if (done[i].len > cur.lane_hdr.max_payload)
                abort();
            for (uint32_t k = 0; k < done[i].len; k++)
                sum += d[k]; /* faults if the record points outside the client's lane */
        }
        munmap(lane, ls);
        oag_close(c);
    }
    if (lane_fd_server >= 0) {
        close(lane_fd_server);
        lane_fd_server = -1;
    }
    sem_post(&go);
    sem_wait(&served);
    if (count_fds() != before)
        abort(); /* oag_connect leaked (or closed) an fd */
    return 0;
}
