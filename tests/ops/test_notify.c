/*
 * test_notify.c - systemd notification (sd_notify), with the test in systemd's place: an
 * AF_UNIX datagram socket named by NOTIFY_SOCKET in the supervisor's environment.
 *  1. NOTIFY_SOCKET alone: READY=1 arrives, with a STATUS= line, once the supervisor is ready;
 *     no WATCHDOG=1 (no watchdog asked for); SIGTERM brings STOPPING=1 and exit 0;
 *  2. NOTIFY_SOCKET and WATCHDOG_USEC=200000: READY=1, then WATCHDOG=1 pings about every
 *     100 ms (half the interval): at least 8 in 1.5 s, never two more than 200 ms apart;
 *     the agent's environment has neither NOTIFY_SOCKET nor WATCHDOG_USEC (its output, in
 *     --log-dir, says so); SIGTERM brings STOPPING=1 and exit 0.
 *
 * Environment: OAG_SUPERVISOR.
 */
#include <poll.h>

#include "ops.h"

#define MAX_MSGS 4096

struct listener {
    int fd;
    pthread_t thread;
    atomic_int stop;
    atomic_int n;
    char *msg[MAX_MSGS];
    uint64_t at_ms[MAX_MSGS];
};

static void *listen_main(void *arg)
{
    struct listener *l = arg;
    while (!atomic_load(&l->stop)) {
        struct pollfd p = { .fd = l->fd, .events = POLLIN };
        if (poll(&p, 1, 20) <= 0)
            continue;
        char buf[4096];
        ssize_t r = recv(l->fd, buf, sizeof buf - 1, 0);
        if (r <= 0)
            continue;
        buf[r] = '\0';
        int i = atomic_load(&l->n);
        if (i < MAX_MSGS) {
            l->msg[i] = strdup(buf);
            l->at_ms[i] = h_now_ms();
            atomic_store(&l->n, i + 1); /* pairs with the loads in the main thread */
        }
    }
    return NULL;
}

static int listen_start(struct listener *l, const char *path)
{
    memset(l, 0, sizeof *l);
    struct sockaddr_un sa;
    if (h_sun(&sa, path))
        return -1;
    l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    return pthread_create(&l->thread, NULL, listen_main, l) ? -1 : 0;
}

static void listen_stop(struct listener *l)
{
    atomic_store(&l->stop, 1);
    pthread_join(l->thread, NULL);
    close(l->fd);
    for (int i = 0; i < atomic_load(&l->n); i++)
        free(l->msg[i]);
}

/* Index of the first message from `from` on that contains `what` (a line of it), or -1. */
static int find_msg(struct listener *l, int from, const char *what)
{
    int n = atomic_load(&l->n);
    for (int i = from; i < n; i++) {
        const char *p = strstr(l->msg[i], what);
        if (p && (p == l->msg[i] || p[-1] == '\n'))
            return i;
    }
    return -1;
}

static int wait_msg(struct listener *l, const char *what, unsigned timeout_ms)
{
    uint64_t end = h_now_ms() + timeout_ms;
    int i;
    while ((i = find_msg(l, 0, what)) < 0 && h_now_ms() < end)
        h_sleep_ms(10);
    return i;
}

static int count_msgs(struct listener *l, const char *what, uint64_t since_ms)
{
    int c = 0, n = atomic_load(&l->n);
    for (int i = 0; i < n; i++)
        if (l->at_ms[i] >= since_ms && !strcmp(l->msg[i], what))
            c++;
    return c;
}

static void round_trip(const char *tag, int watchdog)
{
    char dir[256], path[400], logs[400];
    h_tmpdir(dir, sizeof dir, tag, 0700);
    snprintf(path, sizeof path, "%s/notify.sock", dir);
    snprintf(logs, sizeof logs, "%s/logs", dir);
    CHECK_EQ(mkdir(logs, 0700), 0);
    struct listener l;
    if (listen_start(&l, path)) {
        CHECK(0, "cannot listen on %s: %s", path, strerror(errno));
        return;
    }
    setenv("NOTIFY_SOCKET", path, 1);
    if (watchdog)
        setenv("WATCHDOG_USEC", "200000", 1);
    const char *extra[] = { "--backend", "identity", "--log-dir", logs, NULL };
    const char *cmd[] = { "sh", "-c", "echo \"NOTIFY_SOCKET=${NOTIFY_SOCKET:-unset} "
                          "WATCHDOG_USEC=${WATCHDOG_USEC:-unset}\"; exec sleep 60", NULL };
    struct h_sup s;
    int rc = h_sup_start(&s, tag, 0700, extra, cmd);
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    if (rc == 0) {
        int ready = wait_msg(&l, "READY=1", 5000);
        CHECK(ready >= 0, "no READY=1 within 5 s of the ready line");
        if (ready >= 0)
            CHECK(strstr(l.msg[ready], "\nSTATUS=") || !strncmp(l.msg[ready], "STATUS=", 7),
                  "no STATUS= with READY=1: '%s'", l.msg[ready]);
        uint64_t t0 = h_now_ms();
        h_sleep_ms(1500);
        int pings = count_msgs(&l, "WATCHDOG=1", t0);
        if (watchdog) {
            CHECK(pings >= 8, "%d WATCHDOG=1 in 1.5 s (interval 200 ms: expected ~15)", pings);
            uint64_t last = 0, worst = 0;
            int n = atomic_load(&l.n);
            for (int i = 0; i < n; i++)
                if (strstr(l.msg[i], "WATCHDOG=1")) {
                    if (last && l.at_ms[i] - last > worst)
                        worst = l.at_ms[i] - last;
                    last = l.at_ms[i];
                }
            CHECK(worst < 200, "two watchdog pings %llu ms apart (limit 200)",
                  (unsigned long long)worst);
            fprintf(stderr, "   %d pings in 1.5 s, longest gap %llu ms\n", pings,
                    (unsigned long long)worst);
        } else {
            CHECK_EQ(pings, 0);
        }
        char log[500];
        snprintf(log, sizeof log, "%s/agent-0.log", logs);
        char *text = NULL;
        for (int i = 0; i < 200 && !(text = ops_slurp(log, NULL)); i++)
            h_sleep_ms(10);
        for (int i = 0; i < 200 && text && !strchr(text, '\n'); i++) {
            free(text);
            h_sleep_ms(10);
            text = ops_slurp(log, NULL);
        }
        CHECK(text && strstr(text, "NOTIFY_SOCKET=unset WATCHDOG_USEC=unset"),
              "the agent inherited systemd's variables: '%s'", text ? text : "(no log)");
        free(text);
        kill(s.pid, SIGTERM);
        int st = h_sup_wait(&s, 8000);
        CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "after SIGTERM: status 0x%x", st);
        h_sleep_ms(50);
        CHECK(find_msg(&l, 0, "STOPPING=1") > ready, "no STOPPING=1 after READY=1");
    }
    h_cleanup(&s);
    listen_stop(&l);
    h_rmtree(dir);
}

int main(void)
{
    h_init(50);
    h_env_bin("OAG_SUPERVISOR");
    fprintf(stderr, "== NOTIFY_SOCKET, no watchdog\n");
    round_trip("notify", 0);
    fprintf(stderr, "== NOTIFY_SOCKET and WATCHDOG_USEC=200000\n");
    round_trip("watchdog", 1);
    h_kill_all();
    if (h_failures) {
        fprintf(stderr, "%d check(s) failed\n", h_failures);
        return 1;
    }
    printf("notify: ok\n");
    return 0;
}
