/*
 * test_metrics.c - the Prometheus metrics and health endpoints (--metrics ADDR:PORT) against a
 * real supervisor (identity engine), scraped with a plain-socket HTTP/1.1 GET:
 *  1. bad --metrics values exit 2 with one clear line; an address already in use exits 1;
 *  2. counts: a client runs a known number of tasks through a supervisor with a long batch
 *     delay and a small queue: some time out in the queue (-ETIMEDOUT), some are refused at
 *     submit (-EBUSY), the first batch fails (-EIO) where the build has fault injection, the rest
 *     succeed. oag_tasks_total by outcome equals what the client received; the histograms'
 *     counts equal the task counts, their buckets are cumulative and end with +Inf = count,
 *     and every task's latency and queue time lie in the buckets the batch delay puts them in;
 *     the page is valid exposition text (HELP and TYPE for every family, counters end in
 *     _total, no duplicate series); /healthz and /readyz answer 200, other paths 404, POST 405;
 *     the agents' rejected counts stay after the agent detaches;
 *  3. drain: with an agent that ignores SIGTERM still attached, SIGTERM turns /readyz to 503
 *     ("draining") while /healthz stays 200, until the supervisor exits;
 *  4. restarts: an agent that keeps failing shows in oag_agent_restarts_total and, once given
 *     up on, in oag_agents{state="failed"}.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/time.h>

#include "../harness.h"
#include "oag/oag.h"

/* ---- HTTP ------------------------------------------------------------------------------ */

/* Any free loopback port right now (the supervisor binds it a moment later). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
        fprintf(stderr, "free_port: %s\n", strerror(errno));
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

struct resp {
    int code;
    char ctype[128];
    char *body;               /* points into buf */
    char buf[1 << 18];
};

/* One request with Connection: close. Returns 0 and fills r, or a negative errno (-ECONNREFUSED
 * when nothing listens). */
static int http(int port, const char *method, const char *path, struct resp *r)
{
    memset(r, 0, offsetof(struct resp, buf));
    r->buf[0] = '\0';
    r->body = r->buf;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = 5 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                                      "Content-Length: 0\r\n\r\n", method, path);
    if (write(fd, req, (size_t)n) != n) {
        int rc = -errno;
        close(fd);
        return rc ? rc : -EIO;
    }
    size_t len = 0;
    for (;;) {
        ssize_t k = read(fd, r->buf + len, sizeof r->buf - 1 - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
        if (len == sizeof r->buf - 1)
            break;
    }
    close(fd);
    r->buf[len] = '\0';
    if (sscanf(r->buf, "HTTP/1.%*d %d", &r->code) != 1)
        return -EPROTO;
    char *end = strstr(r->buf, "\r\n\r\n");
    if (!end)
        return -EPROTO;
    *end = '\0';
    r->body = end + 4;
    const char *ct = strcasestr(r->buf, "\r\nContent-Type:");
    if (ct) {
        ct += 15;
        while (*ct == ' ')
            ct++;
        size_t k = strcspn(ct, "\r\n");
        if (k >= sizeof r->ctype)
            k = sizeof r->ctype - 1;
        memcpy(r->ctype, ct, k);
        r->ctype[k] = '\0';
    }
    return 0;
}

static struct resp R; /* large: one at a time */

/* GET path; returns the status code (-1 when the request failed). */
static int get(int port, const char *path)
{
    int rc = http(port, "GET", path, &R);
    if (rc) {
        fprintf(stderr, "GET %s: %s\n", path, strerror(-rc));
        return -1;
    }
    return R.code;
}

/* ---- the exposition text ------------------------------------------------------------------- */

/* The value of the series written exactly as key ("name" or "name{labels}"), or NAN. */
static double mval(const char *page, const char *key)
{
    size_t kl = strlen(key);
    for (const char *l = page; l && *l;) {
        if (!strncmp(l, key, kl) && l[kl] == ' ')
            return strtod(l + kl + 1, NULL);
        l = strchr(l, '\n');
        if (l)
            l++;
    }
    return NAN;
}

/* Like mval, but a missing series fails the test. */
static double need(const char *page, const char *key)
{
    double v = mval(page, key);
    CHECK(!isnan(v), "series %s missing from /metrics", key);
    return v;
}

#define CHECK_M(page, key, want)                                                              \
    do {                                                                                      \
        double v_ = need(page, key);                                                          \
        CHECK(v_ == (double)(want), "%s = %g, expected %g", key, v_, (double)(want));         \
    } while (0)

/* Checks the page's syntax: every sample belongs to the family of the # TYPE line above it,
 * every family has # HELP, counters end in _total, values are numbers, no series twice. */
static void lint(const char *page)
{
    static char series[1024][160];
    int nseries = 0, nfam = 0;
    char fam[128] = "", type[32] = "", help_for[128] = "";
    const char *l = page;
    while (*l) {
        const char *e = strchr(l, '\n');
        CHECK(e != NULL, "last line not terminated by a newline");
        if (!e)
            break;
        char line[1024];
        size_t n = (size_t)(e - l) < sizeof line - 1 ? (size_t)(e - l) : sizeof line - 1;
        memcpy(line, l, n);
        line[n] = '\0';
        l = e + 1;
        if (!strncmp(line, "# HELP ", 7)) {
            sscanf(line + 7, "%127s", help_for);
            CHECK(strlen(line) > 8 + strlen(help_for), "empty help: %s", line);
            continue;
        }
        if (!strncmp(line, "# TYPE ", 7)) {
            CHECK(sscanf(line + 7, "%127s %31s", fam, type) == 2, "bad TYPE line: %s", line);
            CHECK(!strcmp(fam, help_for), "family %s has no # HELP just before its # TYPE", fam);
            CHECK(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                  !strcmp(type, "histogram"), "unknown type: %s", line);
            if (!strcmp(type, "counter"))
                CHECK(strlen(fam) > 6 && !strcmp(fam + strlen(fam) - 6, "_total"),
                      "counter %s does not end in _total", fam);
            CHECK(!strncmp(fam, "oag_", 4), "family %s lacks the oag_ prefix", fam);
            nfam++;
            continue;
        }
        CHECK(line[0] != '#' && line[0] != '\0', "unexpected line: '%s'", line);
        size_t nl = strcspn(line, "{ ");
        char name[160];
        snprintf(name, sizeof name, "%.*s", (int)nl, line);
        size_t fl = strlen(fam);
        int ok = !strcmp(name, fam);
        if (!strcmp(type, "histogram") && !strncmp(name, fam, fl))
            ok = !strcmp(name + fl, "_bucket") || !strcmp(name + fl, "_sum") ||
                 !strcmp(name + fl, "_count");
        CHECK(ok, "sample %s outside its family (%s %s)", line, fam, type);
        const char *sp = strrchr(line, ' ');
        char *end = NULL;
        if (sp)
            strtod(sp + 1, &end);
        CHECK(sp && end && *end == '\0' && end != sp + 1, "bad value: '%s'", line);
        size_t kl = sp ? (size_t)(sp - line) : strlen(line);
        char key[160];
        snprintf(key, sizeof key, "%.*s", (int)kl, line);
        for (int i = 0; i < nseries; i++)
            CHECK(strcmp(series[i], key), "series %s appears twice", key);
        if (nseries < 1024)
            snprintf(series[nseries++], sizeof series[0], "%s", key);
    }
    CHECK(nfam >= 20, "only %d metric families", nfam);
}

/* Checks histogram name: TYPE line, buckets ascending in le and cumulative, the last one +Inf
 * and equal to _count. Returns _count (NAN if missing); *sum gets _sum. */
static double hist(const char *page, const char *name, double *sum)
{
    char pre[160], want_type[200];
    snprintf(want_type, sizeof want_type, "# TYPE %s histogram\n", name);
    CHECK(strstr(page, want_type) != NULL, "no histogram TYPE line for %s", name);
    int n = snprintf(pre, sizeof pre, "%s_bucket{le=\"", name);
    double prev_le = -1, prev_v = -1;
    int buckets = 0, last_inf = 0;
    for (const char *l = page; l && *l;) {
        if (!strncmp(l, pre, (size_t)n)) {
            const char *q = l + n;
            double le;
            char *end;
            if (!strncmp(q, "+Inf\"", 5)) {
                le = INFINITY;
                end = (char *)q + 4;
            } else {
                le = strtod(q, &end);
            }
            CHECK(*end == '"' && end[1] == '}', "bad bucket line for %s", name);
            double v = strtod(end + 3, NULL);
            CHECK(!last_inf, "%s: a bucket after +Inf", name);
            CHECK(le > prev_le, "%s: bucket bounds not ascending (%g after %g)", name, le, prev_le);
            CHECK(v >= prev_v, "%s: buckets not cumulative (%g after %g at le=%g)", name, v,
                  prev_v, le);
            prev_le = le;
            prev_v = v;
            last_inf = isinf(le);
            buckets++;
        }
        l = strchr(l, '\n');
        if (l)
            l++;
    }
    char key[200];
    snprintf(key, sizeof key, "%s_count", name);
    double count = need(page, key);
    snprintf(key, sizeof key, "%s_sum", name);
    *sum = need(page, key);
    CHECK(buckets >= 2 && last_inf, "%s: %d buckets, last +Inf: %d", name, buckets, last_inf);
    CHECK(prev_v == count, "%s: +Inf bucket %g != count %g", name, prev_v, count);
    return count;
}

static double bucket(const char *page, const char *name, const char *le)
{
    char key[200];
    snprintf(key, sizeof key, "%s_bucket{le=\"%s\"}", name, le);
    return need(page, key);
}

/* ---- supervisors ------------------------------------------------------------------------- */

/* h_sup_start with --metrics 127.0.0.1:PORT on a free port; retries when another process took
 * the port in between (the supervisor then exits 1 before ready). */
static int start_with_metrics(struct h_sup *s, const char *tag, const char *const *extra,
                              const char *const *cmd, int *port)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        static char addr[64];
        *port = free_port();
        snprintf(addr, sizeof addr, "127.0.0.1:%d", *port);
        const char *argv[40];
        int n = 0;
        argv[n++] = "--metrics";
        argv[n++] = addr;
        for (int i = 0; extra[i] && n < 39; i++)
            argv[n++] = extra[i];
        argv[n] = NULL;
        int before = h_failures;
        if (h_sup_start(s, tag, 0700, argv, cmd) == 0)
            return 0;
        int retry = s->exited && WIFEXITED(s->status) && WEXITSTATUS(s->status) == 1 &&
                    attempt < 2;
        h_cleanup(s);
        if (!retry)
            return -1;
        h_failures = before;
        fprintf(stderr, "port %d taken meanwhile; another one\n", *port);
    }
    return -1;
}

/* Runs the supervisor with args (NULL-terminated) expecting it to exit by itself; stderr into
 * err. Returns its exit code, or -1 (killed after 20 s, or not run). */
static int run_sup(const char *const *args, char *err, size_t cap)
{
    const char *sup = h_env_bin("OAG_SUPERVISOR");
    char dir[256], sock[320], name[80];
    h_tmpdir(dir, sizeof dir, "mbad", 0700);
    h_unique_name(name, sizeof name, "mbad");
    snprintf(sock, sizeof sock, "%s/s.sock", dir);
    const char *argv[32] = { sup, "--name", name, "--socket", sock, "--backend", "identity" };
    int n = 7;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(p[1], 2);
        alarm(20);
        signal(SIGALRM, SIG_DFL);
        execv(sup, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    ssize_t k;
    while ((k = read(p[0], err + len, cap - 1 - len)) > 0 || (k < 0 && errno == EINTR))
        if (k > 0 && (len += (size_t)k) == cap - 1)
            break;
    err[len] = '\0';
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    h_rmtree(dir);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* ---- 1. bad values ----------------------------------------------------------------------- */

static void test_bad_values(void)
{
    static const char *const bad[] = {
        "localhost:9464", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", ":9464", "1.2.3:80",
        "[::1]", "::1:9464", "127.0.0.1:94x", "127.0.0.1:-1", "[nohost]:80", "",
        "127.0.0.1:+80", "http://127.0.0.1:9464",
    };
    char err[4096];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *args[] = { "--metrics", bad[i], NULL };
        int rc = run_sup(args, err, sizeof err);
        CHECK(rc == 2, "--metrics '%s': exit %d, expected 2 (stderr: %s)", bad[i], rc, err);
        char quoted[128];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        CHECK(strstr(err, "--metrics") && strstr(err, quoted) && strstr(err, "port") &&
              !strchr(strchr(err, '\n') ? strchr(err, '\n') + 1 : "", '\n'),
              "--metrics '%s': expected one line naming the option and the value, got: %s",
              bad[i], err);
    }
    /* An address already in use: exits 1 (after loading the engine) saying so. */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 1) == 0 &&
          getsockname(fd, (struct sockaddr *)&a, &len) == 0, "cannot hold a port: %s",
          strerror(errno));
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
    const char *args[] = { "--metrics", addr, NULL };
    int rc = run_sup(args, err, sizeof err);
    CHECK(rc == 1, "--metrics %s (in use): exit %d, expected 1 (stderr: %s)", addr, rc, err);
    CHECK(strstr(err, "cannot listen") && strstr(err, "in use"),
          "--metrics %s (in use): no clear message: %s", addr, err);
    close(fd);
}

/* ---- 2. counts --------------------------------------------------------------------------- */

struct tally {
    long ok, err, to, busy, eagain, batched_err;
};

static void tally_status(struct tally *t, int st)
{
    if (st == 0)
        t->ok++;
    else if (st == -ETIMEDOUT)
        t->to++;
    else
        t->err++;
}

/* Submits until n tasks were accepted (counting refusals). Returns the accepted count. */
static int submit_n(oag_client *c, int n, uint32_t timeout_us, struct tally *t)
{
    oag_submit_opts o = { .timeout_us = timeout_us };
    char in[32] = "metrics";
    int acc = 0;
    uint64_t end = h_now_ms() + 5000;
    while (acc < n && h_now_ms() < end) {
        uint64_t ticket;
        int rc = oag_submit_ex(c, in, sizeof in, &o, &ticket);
        if (rc == 0)
            acc++;
        else if (rc == -EBUSY)
            t->busy++;
        else if (rc == -EAGAIN)
            t->eagain++;
        else
            CHECK(0, "oag_submit_ex: %d %s", rc, oag_strerror(rc));
        if (rc)
            h_sleep_ms(1);
    }
    CHECK_EQ(acc, n);
    return acc;
}

/* Collects n completions into the tally. Returns how many came. */
static int wait_n(oag_client *c, int n, struct tally *t)
{
    int got = 0;
    uint64_t end = h_now_ms() + 5000;
    while (got < n && h_now_ms() < end) {
        oag_completion d[64];
        int k = oag_poll(c, d, 64, 50);
        if (k < 0) {
            CHECK(0, "oag_poll: %s", oag_strerror(k));
            break;
        }
        for (int i = 0; i < k; i++)
            tally_status(t, d[i].status);
        got += k;
    }
    CHECK(got == n, "%d of %d completions", got, n);
    return got;
}

static void test_counts(void)
{
    struct h_sup s;
    int port;
    /* The batch delay (300 ms) holds every batch: tasks queue until it runs out, the queue (16)
     * fills, and tasks with a 20 ms deadline expire while queued. */
    const char *extra[] = { "--backend", "identity", "--max-batch", "32", "--max-queue", "16",
                            "--max-delay-us", "300000", "--shared-results", "4", NULL };
    setenv("OAG_FAULT_ENGINE_BATCHES", "1", 1); /* fault-injection builds: batch 1 gets -EIO */
    int rc = start_with_metrics(&s, "mcnt", extra, NULL, &port);
    unsetenv("OAG_FAULT_ENGINE_BATCHES");
    if (rc)
        return;
    oag_client *c;
    rc = oag_connect(&c, s.sock);
    CHECK_EQ(rc, 0);
    if (rc) {
        h_cleanup(&s);
        return;
    }
    struct tally t = { 0 };
    /* The first batch: -EIO in fault-injection builds, else ok. */
    wait_n(c, submit_n(c, 10, 0, &t), &t);
    t.batched_err = t.err;
    fprintf(stderr, "first batch: %ld ok, %ld failed (fault injection %s)\n", t.ok, t.err,
            t.err ? "on" : "off");
    /* Waves of successes. */
    for (int w = 0; w < 3; w++)
        wait_n(c, submit_n(c, 12, 0, &t), &t);
    /* Deadlines that pass in the queue. */
    wait_n(c, submit_n(c, 5, 20000, &t), &t);
    CHECK_EQ(t.to, 5);
    /* Fill the queue, then submits are refused at once. */
    int acc = submit_n(c, 16, 0, &t);
    long busy0 = t.busy;
    uint64_t end = h_now_ms() + 3000;
    while (t.busy - busy0 < 5 && h_now_ms() < end) {
        uint64_t ticket;
        char in[32] = "over";
        rc = oag_submit(c, in, sizeof in, &ticket);
        if (rc == 0)
            acc++;
        else if (rc == -EBUSY)
            t.busy++;
        else if (rc == -EAGAIN)
            t.eagain++;
        h_sleep_ms(1);
    }
    CHECK(t.busy - busy0 >= 5, "only %ld -EBUSY refusals with the queue full", t.busy - busy0);
    wait_n(c, acc, &t);
    /* One more after 150 ms: its submit republishes this agent's state record (rejected). */
    h_sleep_ms(150);
    for (;;) {
        char in[32] = "last", out[64];
        size_t olen;
        rc = oag_infer(c, in, sizeof in, out, sizeof out, &olen, 5000);
        if (rc != -EBUSY)
            break;
        t.busy++;
        h_sleep_ms(5);
    }
    tally_status(&t, rc);
    CHECK_EQ(t.eagain, 0);
    long done = t.ok + t.err + t.to;
    fprintf(stderr, "client: ok %ld, error %ld, timed out %ld, refused busy %ld\n", t.ok, t.err,
            t.to, t.busy);

    CHECK_EQ(get(port, "/metrics"), 200);
    const char *page = R.body;
    CHECK(strstr(R.ctype, "text/plain") && strstr(R.ctype, "version=0.0.4"),
          "Content-Type: %s", R.ctype);
    lint(page);
    CHECK_M(page, "oag_tasks_total{outcome=\"ok\"}", t.ok);
    CHECK_M(page, "oag_tasks_total{outcome=\"error\"}", t.err);
    CHECK_M(page, "oag_tasks_total{outcome=\"timed_out\"}", t.to);
    CHECK_M(page, "oag_tasks_total{outcome=\"rejected_busy\"}", t.busy + t.eagain);
    double qsum, lsum, bsum;
    double qn = hist(page, "oag_task_queue_seconds", &qsum);
    double ln = hist(page, "oag_task_latency_seconds", &lsum);
    double bn = hist(page, "oag_batch_size", &bsum);
    CHECK(ln == (double)done, "latency count %g, tasks completed %ld", ln, done);
    CHECK(qn == (double)(t.ok + t.err), "queue count %g, tasks batched %ld", qn, t.ok + t.err);
    CHECK(bsum == qn, "batch size sum %g != tasks batched %g", bsum, qn);
    CHECK_M(page, "oag_batches_total", bn);
    CHECK(bn >= 6, "only %g batches", bn);
    /* Every task waited for the 300 ms batch delay, or for its 20 ms deadline. */
    CHECK_M(page, "oag_task_latency_seconds_bucket{le=\"0.01\"}", 0);
    CHECK_EQ(bucket(page, "oag_task_latency_seconds", "0.25"), t.to);
    CHECK_EQ(bucket(page, "oag_task_queue_seconds", "0.25"), 0);
    CHECK_EQ(bucket(page, "oag_task_queue_seconds", "1"), qn);
    CHECK(qsum >= 0.25 * qn && qsum <= 1.0 * qn, "queue sum %g s for %g tasks", qsum, qn);
    CHECK(lsum >= qsum, "latency sum %g below queue sum %g", lsum, qsum);
    CHECK_EQ(bucket(page, "oag_batch_size", "32"), bn);
    CHECK_M(page, "oag_engine_errors_total", t.batched_err ? 1 : 0);
    CHECK(need(page, "oag_busy_events_total") >= 1, "no busy event");
    double sb = need(page, "oag_shared_result_batches_total"),
           sf = need(page, "oag_shared_result_fallbacks_total");
    CHECK(sb >= 1 && sb + sf <= bn, "shared result area: %g batches, %g fallbacks, of %g", sb, sf,
          bn);
    CHECK(need(page, "oag_engine_busy_seconds_total{backend=\"identity\",device=\"-1\"}") >= 0,
          "busy seconds");
    CHECK(need(page, "oag_engine_compute_seconds_total") >= 0, "compute seconds");
    CHECK_M(page, "oag_tasks_pending", 0);
    CHECK_M(page, "oag_queue_capacity", 16);
    CHECK_M(page, "oag_lanes", 1);
    CHECK_M(page, "oag_agents{state=\"detached\"}", 1);
    CHECK_M(page, "oag_agents{state=\"running\"}", 0);
    CHECK_M(page, "oag_agent_restarts_total", 0);
    CHECK_M(page, "oag_up", 1);
    CHECK_M(page, "oag_ready", 1);
    CHECK_M(page, "oag_draining", 0);
    CHECK_M(page, "oag_model_info{name=\"\",version=\"1\",backend=\"identity\"}", 1);
    CHECK(need(page, "oag_model_load_seconds") > 0, "model load seconds");
    CHECK(need(page, "oag_loop_heartbeat_age_seconds") < 1, "stale heartbeat");
    double occ = need(page, "oag_lane_occupancy");
    CHECK(occ >= 0 && occ <= 1, "lane occupancy %g", occ);

    struct h_status st;
    if (h_status(&s, &st) == 0)
        CHECK(st.tasks_done == done, "oag-ctl tasks_done %lld, metrics %ld", st.tasks_done, done);

    CHECK_EQ(get(port, "/healthz"), 200);
    CHECK(!strcmp(R.body, "ok\n"), "/healthz body '%s'", R.body);
    CHECK_EQ(get(port, "/readyz"), 200);
    CHECK_EQ(get(port, "/nothing"), 404);
    CHECK_EQ(http(port, "POST", "/metrics", &R), 0);
    CHECK_EQ(R.code, 405);
    CHECK_EQ(http(port, "HEAD", "/metrics", &R), 0);
    CHECK_EQ(R.code, 200);

    /* The agent detaches: its refusals stay counted. */
    oag_close(c);
    uint64_t until = h_now_ms() + 3000;
    while (h_now_ms() < until && get(port, "/metrics") == 200 &&
           mval(R.body, "oag_lanes") != 0)
        h_sleep_ms(20);
    page = R.body;
    CHECK_M(page, "oag_lanes", 0);
    CHECK_M(page, "oag_agents{state=\"detached\"}", 0);
    CHECK_M(page, "oag_tasks_total{outcome=\"rejected_busy\"}", t.busy + t.eagain);
    CHECK_M(page, "oag_tasks_total{outcome=\"ok\"}", t.ok);
    h_cleanup(&s);
}

/* ---- 3. drain ---------------------------------------------------------------------------- */

static void test_drain(void)
{
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    struct h_sup s;
    int port;
    const char *extra[] = { "--backend", "identity", "--stop-timeout-ms", "6000", NULL };
    /* An agent that keeps working and ignores SIGTERM: the drain lasts the stop timeout. */
    const char *cmd[] = { "/bin/sh", "-c", "trap '' TERM; exec \"$0\" --forever --quiet", worker,
                          NULL };
    if (start_with_metrics(&s, "mdrn", extra, cmd, &port))
        return;
    uint64_t end = h_now_ms() + 10000;
    int running = 0;
    while (h_now_ms() < end && !running) {
        if (get(port, "/metrics") == 200)
            running = mval(R.body, "oag_agents{state=\"running\"}") == 1 &&
                      mval(R.body, "oag_tasks_total{outcome=\"ok\"}") > 0;
        if (!running)
            h_sleep_ms(20);
    }
    CHECK(running, "the agent never ran tasks: %.2000s", R.body);
    CHECK_EQ(get(port, "/readyz"), 200);
    CHECK(!strcmp(R.body, "ready\n"), "/readyz body '%s'", R.body);
    uint64_t t0 = h_now_ms();
    kill(s.pid, SIGTERM);
    int code = 0;
    while (h_now_ms() < t0 + 2000 && (code = get(port, "/readyz")) == 200)
        h_sleep_ms(10);
    CHECK_EQ(code, 503);
    CHECK(strstr(R.body, "draining") != NULL, "/readyz body while draining: '%s'", R.body);
    CHECK(h_now_ms() - t0 < 1000, "/readyz turned 503 after %llu ms",
          (unsigned long long)(h_now_ms() - t0));
    CHECK_EQ(get(port, "/healthz"), 200);
    CHECK_EQ(get(port, "/metrics"), 200);
    CHECK_M(R.body, "oag_draining", 1);
    CHECK_M(R.body, "oag_ready", 0);
    CHECK_M(R.body, "oag_up", 1);
    CHECK_M(R.body, "oag_agents{state=\"stopping\"}", 1);
    CHECK(h_now_ms() - t0 < 5000, "checks took too long: the drain may have ended");
    int stw = h_sup_wait(&s, 15000);
    CHECK(stw >= 0, "supervisor did not exit after the drain");
    CHECK(http(port, "GET", "/healthz", &R) == -ECONNREFUSED, "endpoint still answers after exit");
    h_cleanup(&s);
}

/* ---- 4. restarts ------------------------------------------------------------------------- */

static void test_restarts(void)
{
    struct h_sup s;
    int port;
    const char *extra[] = { "--backend", "identity", "--restart-delay-ms", "10",
                            "--restart-max-ms", "20", "--restart-burst", "3",
                            "--restart-window-s", "60", NULL };
    const char *cmd[] = { "/bin/false", NULL };
    if (start_with_metrics(&s, "mrst", extra, cmd, &port))
        return;
    uint64_t end = h_now_ms() + 10000;
    int failed = 0;
    while (h_now_ms() < end && !failed) {
        if (get(port, "/metrics") == 200)
            failed = mval(R.body, "oag_agents{state=\"failed\"}") == 1;
        if (!failed)
            h_sleep_ms(20);
    }
    CHECK(failed, "the agent was never given up on: %.2000s", R.body);
    double restarts = need(R.body, "oag_agent_restarts_total");
    CHECK(restarts >= 2, "oag_agent_restarts_total %g", restarts);
    struct h_status st;
    if (h_status(&s, &st) == 0) {
        const struct h_agent *a = h_find_agent(&st, 0);
        CHECK(a && a->restarts == (int)restarts, "oag-ctl says %d restarts, metrics %g",
              a ? a->restarts : -1, restarts);
    }
    CHECK_M(R.body, "oag_agents{state=\"running\"}", 0);
    CHECK_EQ(get(port, "/readyz"), 200); /* a failed agent does not make the engine unready */
    h_cleanup(&s);
}

int main(void)
{
    h_init(110);
    fprintf(stderr, "== bad --metrics values\n");
    test_bad_values();
    fprintf(stderr, "== task counts by outcome, histograms, endpoints\n");
    test_counts();
    fprintf(stderr, "== /readyz while draining\n");
    test_drain();
    fprintf(stderr, "== restarts and failed agents\n");
    test_restarts();
    if (h_failures) {
        printf("FAIL: %d checks failed\n", h_failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
