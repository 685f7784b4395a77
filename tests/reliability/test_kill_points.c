/*
 * test_kill_points.c - scenario 1, deterministically: an agent SIGKILLed at each point of a
 * submission, while a bystander agent (agent_worker --forever, checking every result) runs.
 *
 *   claimed     oag_reserve() took a slot, payload half written, never committed
 *   half        a raw agent wrote a slot header and half its payload, prod not published
 *   unnotified  a raw agent published prod but never rang the doorbell
 *   holding     8 results wait in the agent's completion ring, unread
 * Each point 5 times (OAG_LONG=1: 50). After each kill the lane must be reclaimed (oag-ctl
 * status shows only the bystander's lane) — the time from the kill is reported as p50/p99 — the
 * supervisor stays up and the bystander keeps progressing with no error. At the end the
 * supervisor's fds and this instance's /dev/shm entries are back to their baseline.
 */
#include "rel.h"

enum { P_CLAIMED, P_HALF, P_UNNOTIFIED, P_HOLDING, NPOINTS };
static const char *point_names[NPOINTS] = { "claimed", "half", "unnotified", "holding" };

static int child(int point, const char *sock, int ready_fd)
{
    char r = 'r';
    if (point == P_CLAIMED) {
        oag_client *c = NULL;
        if (oag_connect(&c, sock))
            return 1;
        void *buf;
        if (oag_reserve(c, 128, &buf))
            return 2;
        memset(buf, 0x5a, 64); /* half of it */
    } else {
        struct rel_raw rr;
        if (rel_raw_connect(&rr, sock, -1))
            return 1;
        if (point == P_HALF) {
            struct oag_slot_hdr *sl = (struct oag_slot_hdr *)(rr.lane + rr.hdr.sub_off);
            sl->ticket = 1;
            sl->len = 128;
            memset(rr.lane + rr.hdr.sub_pay_off, 0x5a, 64);
        } else if (point == P_UNNOTIFIED) {
            rel_raw_submit(&rr, 1, 128, 0);
        } else {
            for (int i = 0; i < 8; i++)
                rel_raw_submit(&rr, 1 + (uint64_t)i, 128, 1);
            uint64_t end = h_now_ms() + 3000;
            while (oag_load_acquire_u32(&rr.ctl->cmp_prod) < 8 && h_now_ms() < end)
                h_sleep_ms(1);
            if (oag_load_acquire_u32(&rr.ctl->cmp_prod) < 8)
                return 3;
        }
    }
    if (write(ready_fd, &r, 1) != 1)
        return 4;
    for (;;)
        pause();
}

static long long bystander_done(const char *pdir, long long *err)
{
    char p[400], buf[128];
    snprintf(p, sizeof p, "%s/agent-0.progress", pdir);
    long long pid = 0, done = -1, e = 0;
    if (rel_read_file(p, buf, sizeof buf) && sscanf(buf, "%lld %lld %lld", &pid, &done, &e) == 3) {
        if (err)
            *err = e;
        return done;
    }
    return -1;
}

static int settled_fds(int pid)
{
    int best = h_count_fds(pid);
    for (int i = 0; i < 5; i++) {
        h_sleep_ms(10);
        int n = h_count_fds(pid);
        if (n < best)
            best = n;
    }
    return best;
}

int main(void)
{
    int reps = rel_long() ? 50 : 5;
    h_init(rel_long() ? 400 : 90);
    struct rel_sup s;
    rel_sup_init(&s, "killpt");
    const char *args[] = { "--backend", "identity", "--max-payload", "256", "--ring-slots", "16",
                           NULL };
    if (rel_sup_start(&s, args)) {
        CHECK(0, "start failed");
        rel_sup_cleanup(&s);
        return 1;
    }
    char pdir[300];
    snprintf(pdir, sizeof pdir, "%s/progress", s.dir);
    mkdir(pdir, 0700);
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    fflush(stdout);
    fflush(stderr);
    pid_t by = fork();
    if (by == 0) {
        setenv("OAG_AGENT_ID", "0", 1);
        execl(worker, worker, "--forever", "--window", "8", "--endpoint", s.sock, "--progress-dir",
              pdir, "--quiet", (char *)NULL);
        _exit(127);
    }
    uint64_t end = h_now_ms() + 5000;
    while (bystander_done(pdir, NULL) < 100 && h_now_ms() < end)
        h_sleep_ms(10);
    char prefix[160];
    h_shm_name(prefix, sizeof prefix, s.name);
    int fds0 = settled_fds(s.pid), shm0 = h_shm_count(prefix);
    static uint64_t reclaim[NPOINTS][64];
    for (int pt = 0; pt < NPOINTS; pt++) {
        for (int k = 0; k < reps; k++) {
            long long before = bystander_done(pdir, NULL);
            int p[2];
            if (pipe2(p, O_CLOEXEC) < 0)
                break;
            fflush(stdout);
            fflush(stderr);
            pid_t pid = fork();
            if (pid == 0) {
                close(p[0]);
                _exit(child(pt, s.sock, p[1]));
            }
            close(p[1]);
            struct pollfd pf = { .fd = p[0], .events = POLLIN };
            char b = 0;
            int ready = poll(&pf, 1, 5000) == 1 && read(p[0], &b, 1) == 1;
            close(p[0]);
            CHECK(ready, "%s #%d: the agent never reached its point", point_names[pt], k);
            uint64_t t0 = rel_now_us();
            kill(pid, SIGKILL);
            int st;
            waitpid(pid, &st, 0);
            long long lanes = -1;
            uint64_t e2 = h_now_ms() + 3000;
            while (h_now_ms() < e2 && (lanes = rel_status_num(s.sock, "lanes")) != 1)
                ;
            reclaim[pt][k] = rel_now_us() - t0;
            CHECK(lanes == 1, "%s #%d: %lld lanes in use after the kill", point_names[pt], k, lanes);
            CHECK(h_sup_alive_pid(s.pid), "%s #%d: supervisor died", point_names[pt], k);
            long long err = 0, after;
            e2 = h_now_ms() + 3000;
            while ((after = bystander_done(pdir, &err)) <= before + 50 && h_now_ms() < e2)
                h_sleep_ms(5);
            CHECK(after > before + 50 && err == 0, "%s #%d: bystander %lld -> %lld, errors %lld",
                  point_names[pt], k, before, after, err);
        }
        printf("%-10s %d kills: lane reclaimed after p50 %.2f ms, p99 %.2f ms (as seen through "
               "oag-ctl); bystander unaffected\n", point_names[pt], reps,
               rel_pct(reclaim[pt], (size_t)reps, 50) / 1e3,
               rel_pct(reclaim[pt], (size_t)reps, 99) / 1e3);
    }
    kill(by, SIGKILL);
    waitpid(by, NULL, 0);
    for (int k = 0; k < 200 && rel_status_num(s.sock, "lanes") != 0; k++)
        h_sleep_ms(5);
    int fds1 = settled_fds(s.pid), shm1 = h_shm_count(prefix);
    printf("supervisor fds %d -> %d (bystander gone: one connection and one eventfd fewer), "
           "/dev/shm entries %d -> %d\n", fds0, fds1, shm0, shm1);
    CHECK(fds1 == fds0 - 2, "fds %d -> %d", fds0, fds1);
    CHECK_EQ(shm1, shm0);
    int st = rel_sup_stop(&s);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: 0x%x", st);
    rel_sup_cleanup(&s);
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
