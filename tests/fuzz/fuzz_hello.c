/*
 * fuzz_hello.c - libFuzzer harness for the supervisor's side of the control socket: the first
 * message of a connection as src/scheduler/lanes.c reads it (HELLO: magic, ABI, kind, agent id,
 * a truncated or oversized message) and, for a control client, the command src/scheduler/ctl.c
 * parses (status, scale, trace, reload ...).
 *
 * A whole supervisor (identity engine, no fleet) runs inside this process, on its own thread:
 * the scheduler's sources are compiled into the harness with main renamed (meson.build), so its
 * code is instrumented and a crash in it is a crash here. Each input is sent as the first
 * message of a fresh connection; the harness then reads whatever comes back (a WELCOME with
 * fds, closed at once, or control text up to CTL_END) until the supervisor closes or 300 ms
 * pass, and checks that the supervisor is still running. Inputs whose command would stop it
 * ("stop") are skipped.
 *
 * Input: the bytes of the first message (at most sizeof(struct oag_hello) + 64).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm/layout.h"
#include "shm/proto.h"

int oag_sup_main(int argc, char **argv); /* the supervisor's main(), renamed */

static char sock_path[108], name[64];
static pthread_t sup_th;
static atomic_int sup_exited;

static void *sup_thread(void *arg)
{
    (void)arg;
    char a0[] = "oag-supervisor", a1[] = "--name", a3[] = "--socket", a5[] = "--backend",
         a6[] = "identity", a7[] = "--quiet";
    char *argv[] = { a0, a1, name, a3, sock_path, a5, a6, a7, NULL };
    oag_sup_main(8, argv);
    atomic_store(&sup_exited, 1);
    return NULL;
}

/* At exit: stop the supervisor the way an operator would (oag-ctl stop), so that it removes its
 * segment, socket and lock. */
static void cleanup(void)
{
    if (sup_th && !atomic_load(&sup_exited)) {
        struct oag_hello h;
        memset(&h, 0, sizeof h);
        h.magic = OAG_PROTO_MAGIC;
        h.abi = OAG_ABI_VERSION;
        h.kind = OAG_HELLO_CTL;
        snprintf(h.cmd, sizeof h.cmd, "stop");
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
            send(fd, &h, sizeof h, MSG_NOSIGNAL) == (ssize_t)sizeof h) {
            for (int i = 0; i < 500 && !atomic_load(&sup_exited); i++)
                usleep(10000);
            if (atomic_load(&sup_exited))
                pthread_join(sup_th, NULL);
        }
        if (fd >= 0)
            close(fd);
    }
    unlink(sock_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* No re-exec for OpenBLAS's pool (main.c): we are not the supervisor binary. */
    setenv("OAG_BLAS_PINNED", "1", 1);
    setenv("OPENBLAS_NUM_THREADS", "1", 1);
    snprintf(name, sizeof name, "fuzz-hello-%d", (int)getpid());
    snprintf(sock_path, sizeof sock_path, "/tmp/oag-fuzz-hello-%d.sock", (int)getpid());
    atexit(cleanup);
    if (pthread_create(&sup_th, NULL, sup_thread, NULL))
        abort();
    /* Ready when the socket answers. */
    for (int i = 0; i < 1000; i++) {
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
        int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
        close(fd);
        if (ok)
            return 0;
        if (atomic_load(&sup_exited))
            break;
        usleep(10000);
    }
    fprintf(stderr, "fuzz_hello: the in-process supervisor did not start\n");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!sup_th)
        LLVMFuzzerInitialize(NULL, NULL);
    if (size > sizeof(struct oag_hello) + 64)
        return 0;
    /* Skip what would legitimately stop the supervisor. */
    struct oag_hello h;
    memset(&h, 0, sizeof h);
    memcpy(&h, data, size < sizeof h ? size : sizeof h);
    if (size >= offsetof(struct oag_hello, cmd) && h.kind == OAG_HELLO_CTL &&
        !strncmp(h.cmd, "stop", 4))
        return 0;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        abort(); /* the supervisor is gone */
    if (send(fd, data, size, MSG_NOSIGNAL) < 0 && errno != EPIPE && errno != ECONNRESET)
        abort();
    /* Read replies until the supervisor closes (or an agent's WELCOME: then we hang up). */
    for (;;) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, 300) <= 0)
            break;
        char buf[sizeof(struct oag_ctl_msg) + 64];
        union {
            char b[CMSG_SPACE(sizeof(int) * 8)];
            struct cmsghdr align;
        } u;
        struct iovec iov = { .iov_base = buf, .iov_len = sizeof buf };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                             .msg_controllen = sizeof u.b };
        ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);
        int got_fds = 0;
        for (struct cmsghdr *cm = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; cm; cm = CMSG_NXTHDR(&mh, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
                int k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (int i = 0; i < k; i++) {
                    int f;
                    memcpy(&f, CMSG_DATA(cm) + i * sizeof(int), sizeof f);
                    close(f);
                    got_fds = 1;
                }
            }
        if (n <= 0 || got_fds)
            break;
        struct oag_ctl_msg m;
        memcpy(&m, buf, (size_t)n < sizeof m ? (size_t)n : sizeof m);
        if ((size_t)n >= offsetof(struct oag_ctl_msg, text) && m.magic == OAG_PROTO_MAGIC &&
            m.type == OAG_MSG_CTL_END)
            break;
    }
    close(fd);
    if (atomic_load(&sup_exited))
        abort(); /* the input stopped or crashed the supervisor's loop */
    return 0;
}
