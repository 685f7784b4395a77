/*
 * test_clock.c - scenario 12: clock steps. Liveness, deadlines, backoff and the wait backstop
 * use CLOCK_MONOTONIC only; the wall clock may step at any time without effect.
 *
 *   (a) source check: in src/, every clock read is CLOCK_MONOTONIC except the allowed wall-clock
 *       uses listed below (each for display only); no gettimeofday(), time(), sem_timedwait or
 *       pthread_mutex_timedlock (which take wall-clock deadlines); every pthread_cond_timedwait
 *       has a condattr set to CLOCK_MONOTONIC in the same file;
 *   (b) run: a supervisor and its fleet with libclockjump preloaded (their wall clock steps by
 *       +-1 h and +-1 day every 200 ms): 4 agents run 20000 tasks each (agent_worker checks
 *       every result) and the test's own tasks with 2 s deadlines all complete: none timed out,
 *       no agent restarted, the fleet exits 0. (A CLOCK_REALTIME step cannot be faked for real
 *       without changing the host's clock, and time namespaces only offset the monotonic and
 *       boot clocks: the shim is the way to step the wall clock of these processes alone.)
 */
#include "rel.h"

#include <dirent.h>

static const struct {
    const char *file, *what;
} allowed[] = {
    { "scheduler/metrics.c", "CLOCK_REALTIME" }, /* process start time for Prometheus (display) */
};

static int is_allowed(const char *rel, const char *what)
{
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++)
        if (!strcmp(allowed[i].file, rel) && !strcmp(allowed[i].what, what))
            return 1;
    return 0;
}

static int scanned;

static void scan_file(const char *root, const char *rel)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    scanned++;
    char line[1024];
    int ln = 0, has_timedwait = 0, has_setclock = 0;
    static const char *bad[] = { "CLOCK_REALTIME", "gettimeofday(", "time(NULL)", "time(0)",
                                 "sem_timedwait", "pthread_mutex_timedlock", "CLOCK_TAI" };
    while (fgets(line, sizeof line, f)) {
        ln++;
        const char *s = line;
        while (*s == ' ')
            s++;
        if (!strncmp(s, "*", 1) || !strncmp(s, "/*", 2) || !strncmp(s, "//", 2))
            continue; /* comments */
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
            if (strstr(line, bad[i]) && !is_allowed(rel, bad[i]))
                CHECK(0, "%s:%d uses %s: %s", rel, ln, bad[i], line);
        if (strstr(line, "pthread_cond_timedwait("))
            has_timedwait = 1;
        if (strstr(line, "pthread_condattr_setclock(") && strstr(line, "CLOCK_MONOTONIC"))
            has_setclock = 1;
    }
    fclose(f);
    CHECK(!has_timedwait || has_setclock, "%s: pthread_cond_timedwait without a CLOCK_MONOTONIC "
          "condattr", rel);
}

static void scan_dir(const char *root, const char *rel)
{
    char path[1300];
    snprintf(path, sizeof path, "%s/%s", root, rel);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char sub[1000];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        size_t n = strlen(e->d_name);
        if (e->d_type == DT_DIR)
            scan_dir(root, sub);
        else if (n > 2 && (!strcmp(e->d_name + n - 2, ".c") || !strcmp(e->d_name + n - 2, ".h") ||
                           (n > 3 && !strcmp(e->d_name + n - 3, ".cu"))))
            scan_file(root, sub);
    }
    if (d)
        closedir(d);
}

int main(void)
{
    h_init(100);
    const char *src = getenv("OAG_SRC_DIR");
    if (src) {
        int before = h_failures;
        scan_dir(src, "");
        printf("(a) %d source files: clock reads are CLOCK_MONOTONIC except %zu allowed "
               "wall-clock use(s) for display; %s\n", scanned, sizeof allowed / sizeof allowed[0],
               h_failures == before ? "ok" : "VIOLATIONS above");
        CHECK(scanned > 20, "only %d files scanned under %s", scanned, src);
    } else {
        CHECK(0, "$OAG_SRC_DIR not set");
    }

    const char *shim = getenv("OAG_CLOCKJUMP");
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    if (!shim || access(shim, R_OK)) {
        CHECK(0, "$OAG_CLOCKJUMP not set");
        return 1;
    }
    struct rel_sup s;
    rel_sup_init(&s, "clock");
    setenv("LD_PRELOAD", shim, 1);
    /* Under ASan the runtime must come first in the library list; the shim is not instrumented
     * memory-wise and only forwards clock reads. */
    char asan[512];
    const char *ao = getenv("ASAN_OPTIONS");
    snprintf(asan, sizeof asan, "%s%sverify_asan_link_order=0", ao ? ao : "", ao && *ao ? ":" : "");
    setenv("ASAN_OPTIONS", asan, 1);
    const char *args[] = { "--backend", "identity", "--agents", "4", "--restart-delay-ms", "50",
                           "--", worker, "--tasks", "20000", "--window", "16", "--quiet", NULL };
    int rc = rel_sup_start(&s, args);
    unsetenv("LD_PRELOAD");
    if (rc) {
        CHECK(0, "start failed");
        rel_sup_cleanup(&s);
        return 1;
    }
    char maps[64], buf[1 << 16];
    snprintf(maps, sizeof maps, "/proc/%d/maps", (int)s.pid);
    rel_read_file(maps, buf, sizeof buf);
    CHECK(strstr(buf, "clockjump") != NULL, "the shim is not loaded in the supervisor");
    /* Our own tasks with deadlines, while the supervisor's wall clock jumps around. */
    oag_client *c = NULL;
    CHECK_EQ(oag_connect(&c, s.sock), 0);
    int ok = 0, tmo = 0;
    uint64_t end = h_now_ms() + 2000;
    while (c && h_now_ms() < end) {
        uint8_t in[32] = { 5 };
        oag_submit_opts o = { .timeout_us = 2000000 };
        uint64_t t;
        if (oag_submit_ex(c, in, sizeof in, &o, &t) != 0)
            continue;
        oag_completion d[4];
        int n;
        while ((n = oag_poll(c, d, 4, 1000)) == 0)
            ;
        for (int i = 0; i < n; i++)
            d[i].status == 0 ? ok++ : tmo++;
        h_sleep_ms(1);
    }
    oag_close(c);
    /* The fleet: wait for the 4 x 20000 tasks. */
    end = h_now_ms() + 60000;
    long long done = 0;
    while (h_now_ms() < end && (done = rel_status_num(s.sock, "tasks_done")) < 80000 + ok)
        h_sleep_ms(50);
    long long timed_out = rel_status_num(s.sock, "timed_out");
    struct h_sup tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.sock, sizeof tmp.sock, "%s", s.sock);
    struct h_status st;
    int restarts = 0;
    if (h_status(&tmp, &st) == 0)
        for (int i = 0; i < st.nagents; i++)
            restarts += st.a[i].restarts;
    printf("(b) wall clock stepping +-1 h / +-1 day every 200 ms in the supervisor and agents: "
           "%d deadline tasks completed, %d failed; fleet tasks done %lld; timed out %lld; "
           "agent restarts %d\n", ok, tmo, done, timed_out, restarts);
    CHECK(ok > 0 && tmo == 0, "deadline tasks: %d ok, %d failed", ok, tmo);
    CHECK(done >= 80000 + ok, "fleet finished only %lld tasks", done);
    CHECK_EQ(timed_out, 0);
    CHECK_EQ(restarts, 0);
    int sst = rel_sup_stop(&s);
    CHECK(sst >= 0 && WIFEXITED(sst) && WEXITSTATUS(sst) == 0, "SIGTERM: 0x%x", sst);
    rel_sup_cleanup(&s);
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
