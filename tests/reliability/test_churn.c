/*
 * test_churn.c - scenario 4: an agent killed and restarted at once under the same id, over and
 * over (1000 times; OAG_LONG=1: 10000).
 *
 * Each incarnation is a child process that connects as agent id 5 (retrying while the previous
 * incarnation's lane is still being reclaimed: -EBUSY "already attached"), runs two tasks, tells
 * the test it is ready and is SIGKILLed. After a warm-up, the test takes a baseline of the
 * /dev/shm entries, the supervisor's open fds, its resident memory and its lanes in use, and
 * checks at the end that all are flat: same entries, same fds, same lanes (none: the last
 * incarnation is gone), resident memory within 1 MiB. Prints the figures and the time per
 * kill-restart cycle.
 */
#include "rel.h"

#define AGENT_ID "5"

/* The supervisor's fd count, settled: the least of samples over half a second (an oag-ctl
 * connection of our own may still be closing when we look, and a loaded 2-core machine can
 * keep the supervisor's loop from closing it for tens of milliseconds). */
static int settled_fds(int pid)
{
    int best = h_count_fds(pid);
    for (int i = 0; i < 20; i++) {
        h_sleep_ms(25);
        int n = h_count_fds(pid);
        if (n < best)
            best = n;
    }
    return best;
}

static int incarnation(const char *sock, int ready_fd)
{
    setenv("OAG_AGENT_ID", AGENT_ID, 1);
    oag_client *c = NULL;
    int rc;
    uint64_t end = h_now_ms() + 5000;
    while ((rc = oag_connect(&c, sock)) == -EBUSY && h_now_ms() < end)
        h_sleep_ms(1);
    if (rc) {
        fprintf(stderr, "incarnation: oag_connect %d %s\n", rc, oag_last_error());
        return 1;
    }
    for (int i = 0; i < 2; i++) {
        uint8_t in[32], out[32];
        memset(in, i + 1, sizeof in);
        size_t ol = 0;
        rc = oag_infer(c, in, sizeof in, out, sizeof out, &ol, 5000);
        if (rc || ol != sizeof in || memcmp(in, out, sizeof in)) {
            fprintf(stderr, "incarnation: task %d: %d\n", i, rc);
            return 1;
        }
    }
    char b = 'r';
    if (write(ready_fd, &b, 1) != 1)
        return 1;
    for (;;)
        pause();
}

int main(void)
{
    int lng = rel_long();
    int n = lng ? 10000 : 1000, warm = 100;
    h_init(lng ? 1700 : 170);
    struct rel_sup s;
    rel_sup_init(&s, "churn");
    const char *args[] = { "--backend", "identity", "--max-lanes", "16", "--max-payload", "256",
                           "--ring-slots", "16", NULL };
    if (rel_sup_start(&s, args)) {
        CHECK(0, "start failed");
        rel_sup_cleanup(&s);
        return 1;
    }
    char prefix[160]; /* this instance's entries only: other tests may run beside us */
    h_shm_name(prefix, sizeof prefix, s.name);
    int shm0 = 0, fds0 = 0;
    long rss0 = 0;
    uint64_t t0 = 0, cyc_start = h_now_ms();
    int bad = 0;
    for (int i = 0; i < n && !bad; i++) {
        if (i == warm) {
            /* Baseline with no incarnation alive: wait for the last one's lane to go. */
            for (int k = 0; k < 200 && rel_status_num(s.sock, "lanes") != 0; k++)
                h_sleep_ms(5);
            shm0 = h_shm_count(prefix);
            fds0 = settled_fds(s.pid);
            rss0 = rel_rss_kb(s.pid);
            t0 = h_now_ms();
        }
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
            CHECK(0, "pipe: %s", strerror(errno));
            break;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            close(p[0]);
            _exit(incarnation(s.sock, p[1]));
        }
        close(p[1]);
        struct pollfd pf = { .fd = p[0], .events = POLLIN };
        char b = 0;
        int got = poll(&pf, 1, 10000) == 1 && read(p[0], &b, 1) == 1 && b == 'r';
        close(p[0]);
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        if (!got) {
            CHECK(0, "incarnation %d never got ready (status 0x%x)", i, st);
            bad = 1;
        }
        if (waitpid(s.pid, &st, WNOHANG) == s.pid) {
            s.pid = 0;
            CHECK(0, "supervisor died at incarnation %d (0x%x)", i, st);
            bad = 1;
        }
    }
    uint64_t t1 = h_now_ms();
    for (int k = 0; k < 400 && rel_status_num(s.sock, "lanes") != 0; k++)
        h_sleep_ms(5);
    long long lanes = rel_status_num(s.sock, "lanes");
    int shm1 = h_shm_count(prefix), fds1 = settled_fds(s.pid);
    long rss1 = rel_rss_kb(s.pid);
    long long refused = rel_status_num(s.sock, "refused");
    printf("churn: %d kill-restart cycles of agent id %s in %.1f s (%.2f ms per cycle after "
           "warm-up)\n", n, AGENT_ID, (t1 - cyc_start) / 1e3,
           n > warm ? (double)(t1 - t0) / (n - warm) : 0.0);
    printf("after churn: /dev/shm %s* %d -> %d, supervisor fds %d -> %d, RSS %ld -> %ld KiB, "
           "lanes in use %lld, refused connects %lld\n", prefix, shm0, shm1, fds0, fds1, rss0,
           rss1, lanes, refused);
    CHECK(shm1 == shm0, "/dev/shm entries %d -> %d", shm0, shm1);
    CHECK(fds1 == fds0, "supervisor fds %d -> %d", fds0, fds1);
    if (fds1 != fds0)
        h_dump_fds(s.pid);
    CHECK(rss1 - rss0 <= 1024, "supervisor RSS grew %ld KiB", rss1 - rss0);
    CHECK(lanes == 0, "%lld lanes still in use", lanes);
    int st = rel_sup_stop(&s);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status 0x%x", st);
    CHECK(h_shm_leftovers(s.name) == 0, "segment left after stop");
    rel_sup_cleanup(&s);
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
