/*
 * test_remote.c - remote agents over ZeroMQ against a real oag-supervisor (identity engine) on a
 * loopback port:
 *  1. agent_worker processes in several modes (pipelined, synchronous, mixed windows that fill
 *     up, varied sizes) through tcp://: every result correct, none lost or duplicated;
 *  2. bad input from a raw DEALER: truncated header and body, unknown version, a record over the
 *     payload cap, a frame over --net-frame-max: each answered with an ERROR frame carrying the
 *     exact code; a repeated frame and resubmitted task ids are dropped (no second result);
 *     a frame beyond ZeroMQ's cap cuts that peer only; the supervisor keeps serving;
 *  3. kill -9 the supervisor under load and start another on the same port: the client
 *     reconnects and resubmits, every task ends exactly once with its correct result;
 *  4. --listen on a non-loopback address without CURVE keys is refused at start;
 *  5. the client's window counts live tasks: a polled window held, the next is accepted.
 */
#include <poll.h>
#include <zmq.h>

#include "nethelp.h"
#include "net/wire.h"

static void workers(const char *ep)
{
    const char *a1[] = { "--endpoint", ep, "--tasks", "20000", "--window", "64", "--quiet", NULL };
    const char *a2[] = { "--endpoint", ep, "--tasks", "2000", "--sync", "--quiet", NULL };
    const char *a3[] = { "--endpoint", ep, "--tasks", "8000", "--mix", "--quiet", NULL };
    const char *a4[] = { "--endpoint", ep, "--tasks", "8000", "--vary", "--size", "2000",
                         "--window", "200", "--quiet", NULL };
    const char *const *args[] = { a1, a2, a3, a3, a4 };
    pid_t pid[5];
    uint64_t t0 = h_now_ms();
    for (int i = 0; i < 5; i++)
        pid[i] = n_worker(i == 3 ? 7 : i, args[i], NULL); /* ids 2 and 7: --mix modes 2, 3 */
    for (int i = 0; i < 5; i++) {
        int rc = n_wait(pid[i], 40000);
        CHECK(rc == 0, "remote agent_worker %d exited %d", i, rc);
    }
    fprintf(stderr, "workers: 5 remote agents done in %llu ms\n",
            (unsigned long long)(h_now_ms() - t0));
}

/* ---- raw frames --------------------------------------------------------------------------- */

static uint8_t fb[300000];

static size_t tasks_frame(uint64_t client, uint64_t seq, int n, uint32_t len, uint64_t first_id)
{
    struct net_hdr h = { .type = NET_TASKS, .client = client, .seq = seq };
    net_put_hdr(fb, &h);
    size_t off = NET_HDR;
    static uint8_t data[8192];
    for (int i = 0; i < n; i++) {
        memset(data, 'a' + i, len);
        net_put_task(fb, &off, first_id + (uint64_t)i, 0, 0, data, len);
    }
    net_finish(fb, off, (uint32_t)n);
    return off;
}

/* Receives one frame within ms into rb; returns its length, or -1. */
static uint8_t rb[1 << 20];
static int recv_frame(void *s, int ms)
{
    zmq_pollitem_t it = { .socket = s, .events = ZMQ_POLLIN };
    if (zmq_poll(&it, 1, ms) <= 0)
        return -1;
    return zmq_recv(s, rb, sizeof rb, 0);
}

/* Sends frame, expects an ERROR with code want. */
static void expect_error(void *s, size_t len, int want, const char *what)
{
    zmq_send(s, fb, len, 0);
    int n = recv_frame(s, 3000);
    struct net_hdr h;
    if (n < 0 || net_frame_parse(rb, (size_t)n, 1u << 20, &h, NULL) || h.type != NET_ERROR) {
        CHECK(0, "%s: no ERROR frame back (got %d bytes)", what, n);
        return;
    }
    char text[128];
    int32_t code = net_get_error(rb, (size_t)n, text, sizeof text);
    CHECK(code == want, "%s: ERROR code %d (%s), want %d", what, code, text, want);
    fprintf(stderr, "bad input: %s -> refused: %s\n", what, text);
}

static void *raw_socket(void *ctx, const char *ep)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_connect(s, ep);
    return s;
}

static void bad_input(const char *ep)
{
    void *ctx = zmq_ctx_new();
    void *s = raw_socket(ctx, ep);
    uint64_t client = 0xabcdef0012345678ull;

    /* HELLO -> WELCOME */
    struct net_hdr h = { .type = NET_HELLO, .client = client };
    net_put_hdr(fb, &h);
    zmq_send(s, fb, NET_HDR, 0);
    int n = recv_frame(s, 5000);
    struct net_hdr rh;
    CHECK(n == NET_HDR + NET_WELCOME_LEN && net_frame_parse(rb, (size_t)n, 4096, &rh, NULL) == 0 &&
          rh.type == NET_WELCOME, "no WELCOME for HELLO (%d bytes)", n);

    size_t len = tasks_frame(client, 1, 3, 100, 1);
    expect_error(s, 10, -EPROTO, "truncated header (10 bytes)");
    expect_error(s, len - 3, -EPROTO, "truncated body");
    fb[4] = 7;
    expect_error(s, len, -EPROTONOSUPPORT, "unknown version 7");
    /* A record over the payload cap: that task alone ends with -EMSGSIZE, its frame-mate runs. */
    {
        struct net_hdr th = { .type = NET_TASKS, .client = client, .seq = 1 };
        net_put_hdr(fb, &th);
        size_t off = NET_HDR;
        static uint8_t big[5000];
        net_put_task(fb, &off, 100, 0, 0, big, 5000);
        net_put_task(fb, &off, 101, 0, 0, "ok", 2);
        net_finish(fb, off, 2);
        zmq_send(s, fb, off, 0);
        int st100 = 1, st101 = 1;
        for (int k = 0; k < 3 && (st100 == 1 || st101 == 1); k++) {
            int m = recv_frame(s, 3000);
            if (m <= 0 || net_frame_parse(rb, (size_t)m, 4096, &rh, NULL) || rh.type != NET_RESULTS)
                continue;
            size_t o = NET_HDR;
            struct net_rec r;
            while (net_rec_next(rb, (size_t)m, &rh, &o, &r)) {
                if (r.task == 100)
                    st100 = r.status;
                if (r.task == 101)
                    st101 = r.status;
            }
        }
        CHECK(st100 == -EMSGSIZE && st101 == 0, "record over the payload cap: statuses %d, %d "
              "(want %d, 0)", st100, st101, -EMSGSIZE);
        fprintf(stderr, "bad input: record of 5000 bytes over --max-payload 4096 -> that task "
                        "ends with %d, its frame-mate with %d\n", st100, st101);
    }
    len = tasks_frame(client, 1, 20, 3500, 1);
    expect_error(s, len, -EMSGSIZE, "frame of 70 KB over --net-frame-max 64 KiB");

    /* A valid frame: three results. */
    len = tasks_frame(client, 2, 3, 100, 1);
    zmq_send(s, fb, len, 0);
    int got = 0;
    for (int k = 0; k < 3 && got < 3; k++) {
        n = recv_frame(s, 3000);
        if (n > 0 && net_frame_parse(rb, (size_t)n, 4096, &rh, NULL) == 0 &&
            rh.type == NET_RESULTS) {
            size_t off = NET_HDR;
            struct net_rec r;
            while (net_rec_next(rb, (size_t)n, &rh, &off, &r)) {
                CHECK(r.status == 0 && r.len == 100 && r.data[0] == 'a' + (int)(r.task - 1),
                      "result of task %llu", (unsigned long long)r.task);
                got++;
            }
        }
    }
    CHECK(got == 3, "%d results for 3 tasks", got);
    /* The same frame again (same seq), then the same task ids in a new frame: both dropped. */
    zmq_send(s, fb, len, 0);
    len = tasks_frame(client, 3, 3, 100, 1);
    zmq_send(s, fb, len, 0);
    n = recv_frame(s, 700);
    CHECK(n < 0, "a repeated frame or resubmitted task ids got a second result (%d bytes)", n);

    /* A frame beyond ZeroMQ's cap (2x --net-frame-max): that connection is cut. */
    void *big = raw_socket(ctx, ep);
    memset(fb, 0, 200000);
    zmq_send(big, fb, 200000, 0);
    h_sleep_ms(200);
    zmq_close(big);

    /* Still serving: task 4 on the first connection. */
    len = tasks_frame(client, 4, 1, 10, 4);
    zmq_send(s, fb, len, 0);
    n = recv_frame(s, 3000);
    CHECK(n > 0 && net_frame_parse(rb, (size_t)n, 4096, &rh, NULL) == 0 && rh.type == NET_RESULTS &&
          rh.count == 1, "no result after the bad input (%d)", n);
    zmq_close(s);
    zmq_ctx_term(ctx);
}

/* ---- the high-water mark: -EBUSY at submit, nothing lost ------------------------------------
 * The supervisor is stopped (SIGSTOP): frames pile up in the kernel's buffers, then in
 * ZeroMQ's pipe up to its high-water mark (1 frame here), and then oag_submit says -EBUSY;
 * after SIGCONT every task accepted before completes exactly once. */
static void hwm_busy(struct h_sup *a, const char *ep)
{
    setenv("OAG_NET_HWM", "1", 1);
    setenv("OAG_NET_BATCH_MAX", "1", 1);
    setenv("OAG_NET_WINDOW", "16384", 1);
    oag_client *c = NULL;
    int rc = oag_connect(&c, ep);
    unsetenv("OAG_NET_HWM");
    unsetenv("OAG_NET_BATCH_MAX");
    unsetenv("OAG_NET_WINDOW");
    CHECK(rc == 0, "connect: %d", rc);
    if (rc)
        return;
    struct n_load l;
    n_load_init(&l, c, 16384, 16384, 4000);
    kill(a->pid, SIGSTOP);
    int busy = 0;
    uint8_t in[4096];
    uint64_t end = h_now_ms() + 10000;
    while (!busy && l.submitted < l.total && h_now_ms() < end) {
        n_fill(in, l.size, l.submitted);
        uint64_t t;
        rc = oag_submit(c, in, l.size, &t);
        if (rc == -EBUSY)
            busy = 1;
        else if (rc == -EAGAIN)
            h_sleep_ms(1);
        else if (rc == 0)
            l.ticket_of[l.submitted++] = t;
        else
            break;
        if (l.submitted % 256 == 0)
            h_sleep_ms(2); /* let the I/O thread push frames into the pipe */
    }
    uint32_t at_busy = l.submitted;
    kill(a->pid, SIGCONT);
    l.total = l.submitted; /* the ones accepted */
    while (l.completed < l.total && h_now_ms() < end + 20000 && n_load_step(&l, 100) >= 0)
        ;
    fprintf(stderr, "hwm: -EBUSY after %u tasks of 4000 bytes with the supervisor stopped; "
                    "%u of them completed after SIGCONT (bad %u dup %u errors %u)\n", at_busy,
            l.completed, l.bad, l.dup, l.errs);
    CHECK(busy, "no -EBUSY at the high-water mark (last rc %d, %u submitted)", rc, at_busy);
    CHECK(l.completed == l.total && n_load_missing(&l) == 0 && !l.bad && !l.dup && !l.errs,
          "after the high-water mark: %u of %u, bad %u dup %u errors %u", l.completed, l.total,
          l.bad, l.dup, l.errs);
    n_load_fini(&l);
    oag_close(c);
}

/* ---- the window counts live tasks, not the results a poll handed out ------------------------
 * A caller that polled a whole window in one call submits again at once (as on a shared-memory
 * lane), and the polled results stay intact until its next poll while new results arrive; a
 * caller using only oag_infer leaves nothing behind for oag_poll. */
#define WR_WIN 64
#define WR_SIZE 256
static void window_reuse(const char *ep)
{
    setenv("OAG_NET_WINDOW", "64", 1);
    oag_client *c = NULL;
    int rc = oag_connect(&c, ep);
    unsetenv("OAG_NET_WINDOW");
    CHECK(rc == 0, "connect: %d", rc);
    if (rc)
        return;
    uint8_t in[WR_SIZE], want[WR_SIZE];
    uint64_t tk[WR_WIN];
    oag_completion d[WR_WIN];
    int got = 0;
    uint32_t base = 0;
    for (int round = 0; round < 20 && got < WR_WIN; round++, base += WR_WIN) {
        for (uint32_t k = 0; k < WR_WIN; k++) {
            n_fill(in, WR_SIZE, base + k);
            rc = oag_submit(c, in, WR_SIZE, &tk[k]);
            CHECK(rc == 0, "window_reuse: submit %u of a free window: %d", k, rc);
            if (rc)
                goto out;
        }
        n_fill(in, WR_SIZE, 999999);
        rc = oag_submit(c, in, WR_SIZE, NULL);
        CHECK(rc == -EAGAIN, "window_reuse: submit past the window: %d, want -EAGAIN", rc);
        h_sleep_ms(100 + 100 * (unsigned)round); /* every result in: one poll takes them all */
        got = oag_poll(c, d, WR_WIN, 2000);
        if (got < WR_WIN) { /* slow machine: take the rest, try again */
            int left = WR_WIN - (got > 0 ? got : 0);
            for (uint64_t end = h_now_ms() + 10000; left > 0 && h_now_ms() < end;) {
                int n = oag_poll(c, d, WR_WIN, 1000);
                left -= n > 0 ? n : 0;
            }
            CHECK(left == 0, "window_reuse: %d results missing", left);
            if (left)
                goto out;
            got = 0;
        }
    }
    CHECK(got == WR_WIN, "window_reuse: never one poll with the whole window");
    if (got != WR_WIN)
        goto out;
    base -= WR_WIN;
    /* The whole window is held by the caller: a new window is accepted at once. */
    uint32_t nbase = base + 10000;
    for (uint32_t k = 0; k < WR_WIN; k++) {
        n_fill(in, WR_SIZE, nbase + k);
        rc = oag_submit(c, in, WR_SIZE, NULL);
        CHECK(rc == 0, "window_reuse: submit %u with a polled window held: %d (%s)", k, rc,
              oag_last_error());
        if (rc)
            goto out;
    }
    CHECK(oag_outstanding(c) == WR_WIN, "window_reuse: oag_outstanding %u, want %u",
          oag_outstanding(c), WR_WIN);
    h_sleep_ms(300); /* the new results land meanwhile, in other slots */
    int intact = 0;
    for (int i = 0; i < got; i++) {
        uint32_t k;
        for (k = 0; k < WR_WIN && tk[k] != d[i].ticket; k++)
            ;
        n_fill(want, WR_SIZE, base + k);
        intact += k < WR_WIN && d[i].status == 0 && d[i].len == WR_SIZE &&
                  !memcmp(d[i].data, want, WR_SIZE);
    }
    CHECK(intact == WR_WIN, "window_reuse: %d of %d polled results intact after new results",
          intact, WR_WIN);
    int left = WR_WIN, bad = 0;
    for (uint64_t end = h_now_ms() + 10000; left > 0 && h_now_ms() < end;) {
        int n = oag_poll(c, d, WR_WIN, 1000);
        for (int i = 0; i < n; i++) {
            uint32_t seq;
            memcpy(&seq, d[i].data, 4);
            n_fill(want, WR_SIZE, seq);
            bad += d[i].status || seq < nbase || seq >= nbase + WR_WIN ||
                   memcmp(d[i].data, want, WR_SIZE);
        }
        left -= n > 0 ? n : 0;
    }
    CHECK(left == 0 && bad == 0, "window_reuse: second window: %d missing, %d bad", left, bad);
    /* oag_infer only, three windows' worth: nothing is left for oag_poll. */
    uint8_t out[WR_SIZE];
    int ibad = 0;
    for (uint32_t k = 0; k < 3 * WR_WIN; k++) {
        size_t olen = 0;
        n_fill(in, WR_SIZE, 50000 + k);
        rc = oag_infer(c, in, WR_SIZE, out, sizeof out, &olen, 5000);
        ibad += rc != 0 || olen != WR_SIZE || memcmp(out, in, WR_SIZE);
    }
    CHECK(ibad == 0, "window_reuse: %d of %d oag_infer calls wrong", ibad, 3 * WR_WIN);
    rc = oag_poll(c, d, WR_WIN, 0);
    CHECK(rc == 0 && oag_outstanding(c) == 0, "window_reuse: after oag_infer only, oag_poll "
          "gave %d and oag_outstanding is %u (want 0, 0)", rc, oag_outstanding(c));
    fprintf(stderr, "window_reuse: a polled window held, the next accepted at once; %d infers\n",
            3 * WR_WIN);
out:
    oag_close(c);
}

/* ---- kill -9 and restart -------------------------------------------------------------------- */

static void restart(struct h_sup *a, const char *ep, const char *const *extra)
{
    oag_client *c = NULL;
    int rc = oag_connect(&c, ep);
    CHECK(rc == 0, "oag_connect(%s): %s (%s)", ep, oag_strerror(rc), oag_last_error());
    if (rc)
        return;
    oag_info info;
    CHECK(oag_get_info(c, &info) == 0 && !strcmp(info.engine, "identity") &&
          info.max_payload == 4096, "info over tcp: engine '%s' max_payload %u", info.engine,
          info.max_payload);
    struct n_load l;
    n_load_init(&l, c, 30000, 256, 64);
    uint64_t end = h_now_ms() + 30000;
    while (l.completed < 5000 && h_now_ms() < end && n_load_step(&l, 100) >= 0)
        ;
    CHECK(l.completed >= 5000, "only %u done before the kill", l.completed);
    kill(a->pid, SIGKILL);
    h_sup_wait(a, 3000);
    uint32_t at_kill = l.completed;
    struct h_sup b;
    if (h_sup_start(&b, "net2", 0700, extra, NULL) == 0) {
        while (l.completed < l.total && h_now_ms() < end && n_load_step(&l, 100) >= 0)
            ;
        /* Anything late would show up as a duplicate. */
        for (int k = 0; k < 5; k++)
            n_load_step(&l, 50);
    }
    fprintf(stderr, "restart: %u done before the kill, %u after; bad %u dup %u errors %u "
                    "missing %u (last error %d)\n", at_kill, l.completed - at_kill, l.bad, l.dup,
            l.errs, n_load_missing(&l), l.last_err);
    CHECK(l.completed == l.total && n_load_missing(&l) == 0, "%u of %u completed",
          l.completed, l.total);
    CHECK(l.bad == 0 && l.dup == 0 && l.errs == 0, "bad %u dup %u errors %u", l.bad, l.dup,
          l.errs);
    CHECK(oag_outstanding(c) == 0, "%u outstanding at the end", oag_outstanding(c));

    /* oag_event_fd over tcp://: readable while results wait, not after they are all taken. */
    int fd = oag_event_fd(c);
    CHECK(fd >= 0, "oag_event_fd: %d", fd);
    uint8_t in[64];
    memset(in, 7, sizeof in);
    for (int i = 0; i < 100; i++)
        oag_submit(c, in, sizeof in, NULL);
    int got = 0;
    uint64_t t_end = h_now_ms() + 5000;
    while (got < 100 && h_now_ms() < t_end) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (poll(&pf, 1, 2000) != 1)
            break;
        oag_completion d[16];
        int n;
        while ((n = oag_poll(c, d, 16, 0)) > 0) {
            got += n;
            if (n < 16)
                break;
        }
    }
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    CHECK(got == 100, "event fd loop took %d of 100 results", got);
    CHECK(poll(&pf, 1, 50) == 0, "event fd readable with nothing to poll");

    /* A deadline holds with no supervisor at all: -ETIMEDOUT from the client itself. */
    kill(b.pid, SIGKILL);
    h_sup_wait(&b, 3000);
    oag_submit_opts so = { .timeout_us = 300000 };
    uint64_t tk = 0, t0 = h_now_ms();
    CHECK(oag_submit_ex(c, in, sizeof in, &so, &tk) == 0, "submit with no supervisor");
    oag_completion d1[4];
    int n1 = oag_poll(c, d1, 4, 3000);
    uint64_t el = h_now_ms() - t0;
    CHECK(n1 == 1 && d1[0].ticket == tk && d1[0].status == -ETIMEDOUT && el >= 250 && el < 1500,
          "deadline with the supervisor gone: n %d status %d after %llu ms", n1,
          n1 > 0 ? d1[0].status : 0, (unsigned long long)el);
    oag_close(c);
    n_load_fini(&l);
    h_cleanup(&b);
}

static void refuse_public(void)
{
    const char *sup = h_env_bin("OAG_SUPERVISOR");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s --name t-net-pub-%d --socket /tmp/oag-net-pub-%d.sock "
                              "--listen tcp://0.0.0.0:%d 2>&1", sup, (int)getpid(), (int)getpid(),
             n_free_port());
    FILE *p = popen(cmd, "r");
    char out[2048] = "";
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    int st = p ? pclose(p) : -1;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) != 0, "supervisor accepted a public --listen");
    CHECK(strstr(out, "only on loopback") != NULL, "no clear refusal: %s", out);
    fprintf(stderr, "public address refused: %s", out);
}

int main(void)
{
    h_init(85);
    char ep[64], frame_max[] = "65536";
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", n_free_port());
    const char *extra[] = { "--listen", ep, "--net-frame-max", frame_max, "--max-payload", "4096",
                            "--ring-slots", "256", NULL };
    struct h_sup a;
    if (h_sup_start(&a, "net", 0700, extra, NULL) == 0) {
        workers(ep);
        window_reuse(ep);
        bad_input(ep);
        hwm_busy(&a, ep);
        restart(&a, ep, extra);
    }
    h_cleanup(&a);
    refuse_public();
    if (h_failures) {
        fprintf(stderr, "%d failure(s)\n", h_failures);
        return 1;
    }
    printf("net_remote: ok\n");
    return 0;
}
