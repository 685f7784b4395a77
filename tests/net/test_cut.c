/*
 * test_cut.c - cross-host faults (issue 6, scenario 10): remote agents reach a real supervisor
 * through a TCP relay on loopback that the test controls, and the relay
 *   cuts every live connection every 50-150 ms, at whatever byte it has reached, so frames
 *   are cut in the middle (a part of a chunk forwarded, then a reset), and also cuts any
 *   connection whose peer stops reading for 50 ms.
 * (TCP itself never duplicates or reorders bytes; duplicated and reordered frames are sent on
 * a raw connection by net_remote: repeated frames and resubmitted task ids get no second
 * result.)
 * Three agent_worker processes (pipelined, varied sizes, windows that fill up) must each see
 * every task end exactly once with its correct result (they exit 0 only then); the supervisor
 * keeps serving through it all and answers status afterwards. The relay must have cut at least
 * 5 times while tasks flowed, or the test proves nothing and fails.
 * (A supervisor killed under load: net_etcd and net_remote; repeated frames and resubmitted
 * task ids on a raw connection: net_remote.)
 */
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

#include "nethelp.h"

#define MAXC 64

struct relay {
    int lfd, up_port;
    atomic_int stop;
    atomic_int cuts, conns;
    atomic_ullong bytes;
};

struct pair {
    int a, b;                  /* client side, supervisor side */
};

static void reset_close(int fd)
{
    struct linger lg = { .l_onoff = 1, .l_linger = 0 }; /* RST, not FIN */
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static unsigned rnd_state = 7;
static unsigned rnd(unsigned n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    struct pair p[MAXC];
    int np = 0;
    static char buf[1 << 16];
    uint64_t next_cut = h_now_ms() + 50 + rnd(100);
    while (!atomic_load(&r->stop)) {
        struct pollfd pf[1 + 2 * MAXC];
        pf[0] = (struct pollfd){ .fd = r->lfd, .events = POLLIN };
        for (int i = 0; i < np; i++) {
            pf[1 + 2 * i] = (struct pollfd){ .fd = p[i].a, .events = POLLIN };
            pf[2 + 2 * i] = (struct pollfd){ .fd = p[i].b, .events = POLLIN };
        }
        poll(pf, (nfds_t)(1 + 2 * np), 20);
        int cut_now = h_now_ms() >= next_cut;
        if (pf[0].revents & POLLIN) {
            int a = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (a >= 0 && np < MAXC) {
                int b = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in sa = { .sin_family = AF_INET,
                                          .sin_port = htons((uint16_t)r->up_port),
                                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
                if (b >= 0 && connect(b, (struct sockaddr *)&sa, sizeof sa) == 0) {
                    /* a peer that stops reading must not stall the relay: a send that cannot
                     * finish within 50 ms cuts that connection */
                    struct timeval tv = { .tv_sec = 0, .tv_usec = 50000 };
                    setsockopt(a, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                    setsockopt(b, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
                    p[np++] = (struct pair){ a, b };
                    atomic_fetch_add(&r->conns, 1);
                } else {
                    if (b >= 0)
                        close(b);
                    close(a);
                }
            } else if (a >= 0) {
                close(a);
            }
        }
        for (int i = 0; i < np; i++) {
            int dead = 0;
            for (int side = 0; side < 2 && !dead; side++) {
                short ev = pf[1 + 2 * i + side].revents;
                if (!(ev & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                int from = side ? p[i].b : p[i].a, to = side ? p[i].a : p[i].b;
                ssize_t n = recv(from, buf, sizeof buf, MSG_DONTWAIT);
                if (n <= 0) {
                    dead = n == 0 || (errno != EAGAIN && errno != EINTR);
                    continue;
                }
                if (cut_now && n > 1) {
                    /* mid-frame: forward a part of what arrived, then reset both sides */
                    (void)!send(to, buf, (size_t)(1 + rnd((unsigned)n - 1)), MSG_NOSIGNAL);
                    dead = 2;
                    break;
                }
                if (send(to, buf, (size_t)n, MSG_NOSIGNAL) != n) {
                    dead = 2; /* cut with part of the chunk sent */
                    continue;
                }
                atomic_fetch_add(&r->bytes, (unsigned long long)n);
            }
            if (dead) {
                if (dead == 2)
                    atomic_fetch_add(&r->cuts, 1);
                reset_close(p[i].a);
                reset_close(p[i].b);
                p[i] = p[--np];
                i--;
            }
        }
        if (cut_now) {
            /* connections that were quiet this round are cut too, between frames */
            if (np)
                atomic_fetch_add(&r->cuts, 1);
            while (np) {
                np--;
                reset_close(p[np].a);
                reset_close(p[np].b);
            }
            next_cut = h_now_ms() + 50 + rnd(100);
        }
    }
    for (int i = 0; i < np; i++) {
        close(p[i].a);
        close(p[i].b);
    }
    return NULL;
}

int main(void)
{
    h_init(110);
    rnd_state ^= (unsigned)getpid();
    int sup_port = n_free_port();
    char listen_ep[64], relay_ep[64];
    snprintf(listen_ep, sizeof listen_ep, "tcp://127.0.0.1:%d", sup_port);
    const char *extra[] = { "--listen", listen_ep, "--max-payload", "4096", NULL };
    struct h_sup s;
    if (h_sup_start(&s, "netcut", 0700, extra, NULL) != 0)
        return 1;

    struct relay r = { .up_port = sup_port };
    r.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    int one = 1;
    setsockopt(r.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(r.lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(r.lfd, 64) < 0 ||
        getsockname(r.lfd, (struct sockaddr *)&sa, &sl) < 0) {
        perror("relay");
        return 1;
    }
    snprintf(relay_ep, sizeof relay_ep, "tcp://127.0.0.1:%d", ntohs(sa.sin_port));
    pthread_t th;
    pthread_create(&th, NULL, relay_main, &r);

    const char *a1[] = { "--endpoint", relay_ep, "--tasks", "100000", "--window", "64", "--quiet",
                         NULL };
    const char *a2[] = { "--endpoint", relay_ep, "--tasks", "40000", "--vary", "--size", "2000",
                         "--window", "200", "--quiet", NULL };
    const char *a3[] = { "--endpoint", relay_ep, "--tasks", "5000", "--sync", "--quiet", NULL };
    const char *const *args[] = { a1, a2, a3 };
    pid_t pid[3];
    uint64_t t0 = h_now_ms();
    for (int i = 0; i < 3; i++)
        pid[i] = n_worker(i, args[i], NULL);
    for (int i = 0; i < 3; i++) {
        int rc = n_wait(pid[i], 80000);
        CHECK(rc == 0, "remote agent_worker %d through the cutting relay exited %d (a task lost, "
              "wrong or completed twice, or stalled)", i, rc);
    }
    atomic_store(&r.stop, 1);
    pthread_join(th, NULL);
    close(r.lfd);
    printf("cut: 3 remote agents done in %llu ms through %d connections; %d cuts (mid-frame "
           "or between frames), %llu bytes relayed\n",
           (unsigned long long)(h_now_ms() - t0), atomic_load(&r.conns), atomic_load(&r.cuts),
           (unsigned long long)atomic_load(&r.bytes));
    CHECK(atomic_load(&r.cuts) >= 5, "only %d cuts while tasks flowed", atomic_load(&r.cuts));
    CHECK(h_sup_alive(&s), "the supervisor died");
    struct h_status st;
    CHECK(h_status(&s, &st) == 0, "no status from the supervisor after the cuts");
    kill(s.pid, SIGTERM);
    int ws = h_sup_wait(&s, 15000);
    CHECK(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "SIGTERM exit status 0x%x", ws);
    h_cleanup(&s);
    if (h_failures) {
        fprintf(stderr, "test_cut: %d failure(s)\n", h_failures);
        return 1;
    }
    printf("test_cut: ok\n");
    return 0;
}
