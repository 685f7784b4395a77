/*
 * test_fault_sweep.c - fault injection at allocation, mmap, eventfd and socket calls (fault.h,
 * fault-injection builds): for each kind and N = 1, 2, ... the supervisor runs with the Nth call
 * of that kind failing, through start-up, two agents attaching, tasks, detaching and SIGTERM.
 *
 * For every N, one of two outcomes, nothing else:
 *   - start-up refused: the supervisor exits with a non-zero code (not a signal) after an
 *     "error:" line, and leaves no /dev/shm segment and no socket behind;
 *   - it serves: every connect either succeeds or fails with a negative errno and a message
 *     (a retry then succeeds), every task completes with its own input (identity engine) or an
 *     explicit error, the supervisor stays up, holds as many fds after the agents left as before
 *     they came, and on SIGTERM exits 0 leaving nothing in /dev/shm (under ASan, LeakSanitizer
 *     also fails that exit on a leak).
 * The sweep of a kind ends at the first N past the last call of that kind (no "oag-fault:
 * injected" line). Short by default (N <= 60 per kind); OAG_LONG=1 sweeps up to 400 and runs
 * more agents and tasks per cycle. Prints per kind: calls swept, start-ups refused, runs served.
 */
#include "../harness.h"

#include "oag/oag.h"

static int is_long;

struct run {
    int injected;      /* the fault fired */
    int refused;       /* start-up refused cleanly */
    int served;        /* served the whole cycle */
    int connect_errs;  /* connects refused with an explicit error */
    int task_errs;     /* tasks that ended with an explicit error */
};

static int read_file(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? (int)n : 0;
}

/* One agent: connect (retrying after an explicit refusal), run tasks, close. */
static void agent_cycle(const char *sock, int tasks, struct run *r, const char *tag)
{
    oag_client *c = NULL;
    int rc = -1;
    for (int tries = 0; tries < 3 && rc != 0; tries++) {
        rc = oag_connect(&c, sock);
        if (rc != 0) {
            CHECK(rc < 0 && oag_last_error()[0] != '\0', "%s: connect returned %d with no reason",
                  tag, rc);
            CHECK(c == NULL, "%s: failed connect left a client", tag);
            r->connect_errs++;
        }
    }
    CHECK(rc == 0, "%s: no connect succeeded after retries (%d: %s)", tag, rc, oag_last_error());
    if (rc)
        return;
    for (int i = 0; i < tasks; i++) {
        uint64_t in[8], out[8];
        for (int k = 0; k < 8; k++)
            in[k] = ((uint64_t)i << 8) ^ (uint64_t)k ^ 0x5a5a;
        size_t out_len = 0;
        rc = oag_infer(c, in, sizeof in, out, sizeof out, &out_len, 5000);
        if (rc == 0) {
            CHECK(out_len == sizeof in && !memcmp(in, out, sizeof in), "%s: task %d wrong result",
                  tag, i);
        } else {
            CHECK(rc < 0 && rc != -ETIMEDOUT, "%s: task %d ended with %d (%s)", tag, i, rc,
                  oag_strerror(rc));
            r->task_errs++;
            if (rc == -ECONNRESET)
                break;
        }
    }
    oag_close(c);
}

/* One supervisor run with kind:n failing. */
static void one(const char *kind, int n, struct run *r)
{
    char dir[256], name[80], sock[400], errpath[400], env[64];
    h_tmpdir(dir, sizeof dir, "fault", 0700);
    h_unique_name(name, sizeof name, "fault");
    snprintf(sock, sizeof sock, "%s/s.sock", dir);
    snprintf(errpath, sizeof errpath, "%s/stderr", dir);
    snprintf(env, sizeof env, "%s:%d", kind, n);
    const char *sup = h_env_bin("OAG_SUPERVISOR");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(fd, 2);
        setenv("OAG_FAULT_INJECT", env, 1);
        alarm(0);
        execl(sup, sup, "--name", name, "--socket", sock, "--backend", "identity",
              "--max-payload", "256", "--ring-slots", "16", (char *)NULL);
        _exit(127);
    }
    h_sup_pid_for_alarm = pid;
    char tag[64];
    snprintf(tag, sizeof tag, "%s:%d", kind, n);
    static char log[1 << 16];
    int ready = 0, st = 0, exited = 0;
    uint64_t end = h_now_ms() + 10000;
    while (h_now_ms() < end) {
        read_file(errpath, log, sizeof log);
        if (strstr(log, "oag-supervisor: ready")) {
            ready = 1;
            break;
        }
        if (waitpid(pid, &st, WNOHANG) == pid) {
            exited = 1;
            break;
        }
        h_sleep_ms(5);
    }
    if (!ready && !exited) {
        CHECK(0, "%s: neither ready nor exited within 10 s", tag);
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        exited = 1;
    }
    char shm[256];
    h_shm_name(shm, sizeof shm, name);
    if (exited) {
        read_file(errpath, log, sizeof log);
        r->injected = strstr(log, "oag-fault: injected") != NULL;
        CHECK(r->injected, "%s: start-up failed without the injected fault:\n%s", tag, log);
        /* 1 or 2: the supervisor's own failure codes (a sanitizer's report exits 23-26). */
        CHECK(WIFEXITED(st) && (WEXITSTATUS(st) == 1 || WEXITSTATUS(st) == 2),
              "%s: start-up failure ended with status 0x%x:\n%s", tag, st, log);
        CHECK(strstr(log, "error:") != NULL, "%s: start-up failure said no error:\n%s", tag, log);
        CHECK(h_shm_leftovers(name) == 0, "%s: start-up failure left its segment", tag);
        CHECK(access(sock, F_OK) != 0, "%s: start-up failure left its socket", tag);
        r->refused = 1;
    } else {
        int fds0 = h_count_fds(pid);
        int agents = is_long ? 4 : 2, tasks = is_long ? 200 : 20;
        for (int a = 0; a < agents; a++)
            agent_cycle(sock, tasks, r, tag);
        /* Detaching is seen through the socket hang-up: give the loop a moment. */
        int fds1 = -1;
        for (int i = 0; i < 200; i++) {
            fds1 = h_count_fds(pid);
            if (fds1 == fds0)
                break;
            h_sleep_ms(5);
        }
        CHECK(fds1 == fds0, "%s: supervisor fds %d after the agents left, %d before", tag, fds1,
              fds0);
        if (fds1 != fds0)
            h_dump_fds(pid);
        CHECK(waitpid(pid, &st, WNOHANG) == 0, "%s: supervisor died serving", tag);
        kill(pid, SIGTERM);
        uint64_t e2 = h_now_ms() + 10000;
        int done = 0;
        while (h_now_ms() < e2 && !(done = waitpid(pid, &st, WNOHANG) == pid))
            h_sleep_ms(5);
        if (!done) {
            CHECK(0, "%s: no exit within 10 s of SIGTERM", tag);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        read_file(errpath, log, sizeof log);
        r->injected = strstr(log, "oag-fault: injected") != NULL;
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: exit status 0x%x after SIGTERM:\n%s",
              tag, st, log);
        CHECK(h_shm_leftovers(name) == 0, "%s: segment left after exit", tag);
        CHECK(!strstr(log, "Sanitizer") && !strstr(log, "runtime error"), "%s: sanitizer report:\n%s",
              tag, log);
        r->served = 1;
    }
    h_sup_pid_for_alarm = 0;
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", shm);
    unlink(path);
    h_rmtree(dir);
}

int main(void)
{
    is_long = getenv("OAG_LONG") && atoi(getenv("OAG_LONG")) > 0;
    h_init(is_long ? 1700 : 280);
    h_env_bin("OAG_SUPERVISOR");
    if (!getenv("OAG_FAULT_BUILD")) {
        printf("SKIP: not a fault-injection build (-Dfault_injection=true)\n");
        return H_SKIP;
    }
    const char *kinds[] = { "alloc", "mmap", "eventfd", "socket" };
    int maxn = is_long ? 400 : 60;
    printf("%-8s %6s %9s %7s %12s %10s\n", "kind", "swept", "refused", "served", "conn-errors",
           "task-errs");
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int refused = 0, served = 0, cerr = 0, terr = 0, n;
        for (n = 1; n <= maxn; n++) {
            struct run r = { 0 };
            int before = h_failures;
            one(kinds[k], n, &r);
            refused += r.refused && r.injected;
            served += r.served && r.injected;
            cerr += r.connect_errs;
            terr += r.task_errs;
            if (h_failures != before)
                fprintf(stderr, "  (failures above: %s:%d)\n", kinds[k], n);
            if (!r.injected)
                break; /* past the last call of this kind */
        }
        printf("%-8s %6d %9d %7d %12d %10d%s\n", kinds[k], n - 1, refused, served, cerr, terr,
               n > maxn ? " (cap reached)" : "");
    }
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
