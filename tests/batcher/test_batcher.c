/*
 * test_batcher.c - the dynamic batcher's semantics against a real supervisor (identity engine):
 *  1. a queued task whose deadline passes gets -ETIMEDOUT from the timer, long before the batch
 *     delay would have released it; a task without a deadline still completes after the delay;
 *  2. priorities: in one batch, priority 0 tasks run (and complete) before priority 3 ones;
 *  3. overall queue bound: with the queue full, another agent's submit fails at once with -EBUSY,
 *     and succeeds again once the queue drained;
 *  4. --in-order: completions come back in submission order even when priorities reorder them;
 *     and `oag-ctl trace` shows where each task's time went;
 *  5. oag_infer() with the caller's own asynchronous tasks outstanding (a full lane, even):
 *     it returns its own result, and every asynchronous result still comes out of oag_poll()
 *     exactly once, with its data.
 */
#include <errno.h>
#include <string.h>

#include "../harness.h"
#include "oag/oag.h"

static int wait_results(oag_client *c, oag_completion *out, int want, int timeout_ms)
{
    int got = 0;
    uint64_t end = h_now_ms() + (uint64_t)timeout_ms;
    while (got < want && h_now_ms() < end) {
        oag_completion d[64];
        int n = oag_poll(c, d, 64, 50);
        if (n < 0)
            return n;
        for (int i = 0; i < n && got < want; i++)
            out[got++] = d[i];
    }
    return got;
}

/* `oag-ctl trace --json` shows both tasks of test_deadline with where their time went. */
static void check_trace(struct h_sup *s, uint64_t t_short, uint64_t t_none)
{
    static char out[1 << 16];
    CHECK_EQ(h_ctl(s, out, sizeof out, "trace", "--json", NULL), 0);
    cJSON *j = cJSON_Parse(out);
    CHECK(j != NULL, "trace --json is not JSON: %.200s", out);
    if (!j)
        return;
    int found = 0;
    cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItem(j, "tasks"))
    {
        double ticket = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "ticket"));
        double st = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "status"));
        double sub = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "submit_ns"));
        double enq = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "enqueue_ns"));
        double start = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "batch_start_ns"));
        double done = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "engine_done_ns"));
        double pub = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "completion_ns"));
        double queued = cJSON_GetNumberValue(cJSON_GetObjectItem(t, "queued_us"));
        if (ticket == (double)t_short) {
            found |= 1;
            CHECK(st == -ETIMEDOUT, "expired task traced with status %g", st);
            CHECK(start == 0 && sub <= enq && enq <= pub, "expired task's times out of order");
        } else if (ticket == (double)t_none) {
            found |= 2;
            CHECK(st == 0, "task traced with status %g", st);
            CHECK(sub <= enq && enq <= start && start <= done && done <= pub,
                  "stages out of order: %g %g %g %g %g", sub, enq, start, done, pub);
            CHECK(queued >= 350000, "queued %g us, the batch delay is 400 ms", queued);
        }
    }
    CHECK(found == 3, "trace lacks the test's tasks (found mask %d)", found);
    cJSON_Delete(j);
    CHECK(h_ctl(s, out, sizeof out, "trace", "0", NULL) != 0, "trace 0 accepted");
}

static void test_deadline(void)
{
    struct h_sup s;
    const char *extra[] = { "--backend", "identity", "--max-batch", "64", "--max-delay-us",
                            "400000", NULL };
    if (h_sup_start(&s, "bdl", 0700, extra, NULL))
        return;
    oag_client *c;
    int rc = oag_connect(&c, s.sock);
    CHECK_EQ(rc, 0);
    if (rc == 0) {
        uint64_t t_short, t_none;
        oag_submit_opts o = { .timeout_us = 30000 };
        char in[16] = "deadline";
        uint64_t t0 = h_now_ms();
        CHECK_EQ(oag_submit_ex(c, in, sizeof in, &o, &t_short), 0);
        CHECK_EQ(oag_submit(c, in, sizeof in, &t_none), 0);
        oag_completion d[2];
        int n = wait_results(c, d, 1, 2000);
        uint64_t t1 = h_now_ms() - t0;
        CHECK_EQ(n, 1);
        if (n == 1) {
            CHECK_EQ(d[0].ticket, t_short);
            CHECK_EQ(d[0].status, -ETIMEDOUT);
            /* The timer fired, not the 400 ms batch delay. */
            CHECK(t1 < 250, "timed-out result after %llu ms (batch delay is 400 ms)",
                  (unsigned long long)t1);
        }
        n = wait_results(c, d, 1, 3000);
        uint64_t t2 = h_now_ms() - t0;
        CHECK_EQ(n, 1);
        if (n == 1) {
            CHECK_EQ(d[0].ticket, t_none);
            CHECK_EQ(d[0].status, 0);
            CHECK(t2 >= 350, "undeadlined task completed after %llu ms, before the delay",
                  (unsigned long long)t2);
        }
        check_trace(&s, t_short, t_none);
        oag_close(c);
    }
    h_cleanup(&s);
}

/* Submits 8 priority-3 then 4 priority-0 tasks; returns the completion order (tickets). */
static void run_priorities(int in_order)
{
    struct h_sup s;
    const char *extra[] = { "--backend", "identity", "--max-batch", "16", "--max-delay-us",
                            "150000", in_order ? "--in-order" : "--max-queue",
                            in_order ? "--max-queue" : "4096", in_order ? "4096" : NULL, NULL };
    if (h_sup_start(&s, in_order ? "bio" : "bpr", 0700, extra, NULL))
        return;
    oag_client *c;
    int rc = oag_connect(&c, s.sock);
    CHECK_EQ(rc, 0);
    if (rc == 0) {
        uint64_t tk[12];
        for (int i = 0; i < 12; i++) {
            oag_submit_opts o = { .priority = i < 8 ? 3 : 0 };
            int v = i;
            CHECK_EQ(oag_submit_ex(c, &v, sizeof v, &o, &tk[i]), 0);
        }
        oag_completion d[12];
        int n = wait_results(c, d, 12, 3000);
        CHECK_EQ(n, 12);
        if (n == 12) {
            for (int i = 0; i < 12; i++) {
                int v;
                memcpy(&v, d[i].data, sizeof v);
                CHECK_EQ(d[i].status, 0);
                if (in_order)
                    CHECK(d[i].ticket == tk[i], "in-order: completion %d has ticket %llu, "
                          "expected %llu", i, (unsigned long long)d[i].ticket,
                          (unsigned long long)tk[i]);
                else if (i < 4)
                    CHECK(v >= 8, "completion %d is task %d: priority 0 tasks must come first",
                          i, v);
            }
        }
        oag_close(c);
    }
    h_cleanup(&s);
}

static void test_busy(void)
{
    struct h_sup s;
    /* The batch delay holds the 16 queued tasks: the queue is full until it runs out. */
    /* One data thread: --max-queue is split between data threads (test_shards checks that). */
    const char *extra[] = { "--backend", "identity", "--max-batch", "64", "--max-queue", "16",
                            "--max-delay-us", "300000", "--data-threads", "1", NULL };
    if (h_sup_start(&s, "bbz", 0700, extra, NULL))
        return;
    oag_client *a, *b;
    int ra = oag_connect(&a, s.sock), rb = oag_connect(&b, s.sock);
    CHECK_EQ(ra, 0);
    CHECK_EQ(rb, 0);
    if (ra == 0 && rb == 0) {
        char in[8] = "busy";
        for (int i = 0; i < 16; i++)
            CHECK_EQ(oag_submit(a, in, sizeof in, NULL), 0);
        /* The supervisor takes them into its queue (full at 16) and raises the busy flag. */
        int rc = 0;
        uint64_t end = h_now_ms() + 200;
        while (h_now_ms() < end) {
            uint64_t t;
            uint64_t t0 = h_now_ms();
            rc = oag_submit(b, in, sizeof in, &t);
            if (rc == -EBUSY) {
                CHECK(h_now_ms() - t0 < 5, "busy error took %llu ms",
                      (unsigned long long)(h_now_ms() - t0));
                break;
            }
            CHECK_EQ(rc, 0); /* accepted before the queue filled: lane's own ring */
            h_sleep_ms(1);
        }
        CHECK_EQ(rc, -EBUSY);
        oag_completion d[32];
        int n = wait_results(a, d, 16, 3000);
        CHECK_EQ(n, 16);
        /* Drained: b may submit again. */
        rc = -EBUSY;
        end = h_now_ms() + 2000;
        while (rc == -EBUSY && h_now_ms() < end) {
            rc = oag_submit(b, in, sizeof in, NULL);
            h_sleep_ms(5);
        }
        CHECK_EQ(rc, 0);
    }
    oag_close(a);
    oag_close(b);
    h_cleanup(&s);
}

static void test_infer_mixed(void)
{
    struct h_sup s;
    const char *extra[] = { "--backend", "identity", "--ring-slots", "16", NULL };
    if (h_sup_start(&s, "bmx", 0700, extra, NULL))
        return;
    oag_client *c;
    int rc = oag_connect(&c, s.sock);
    CHECK_EQ(rc, 0);
    if (rc == 0) {
        uint64_t tk[15];
        for (int i = 0; i < 15; i++) /* one slot left: infer must make room by stashing */
            CHECK_EQ(oag_submit(c, &i, sizeof i, &tk[i]), 0);
        int seen[15] = { 0 };
        for (int round = 0; round < 3; round++) {
            int v = 1000 + round, got = -1;
            size_t len = 0;
            CHECK_EQ(oag_infer(c, &v, sizeof v, &got, sizeof got, &len, 3000), 0);
            CHECK_EQ(len, sizeof got);
            CHECK_EQ(got, v);
        }
        int n = 0;
        uint64_t end = h_now_ms() + 3000;
        while (n < 15 && h_now_ms() < end) {
            oag_completion d[8];
            int k = oag_poll(c, d, 8, 100);
            CHECK(k >= 0, "poll %d", k);
            for (int i = 0; i < k; i++) {
                int val;
                memcpy(&val, d[i].data, sizeof val);
                CHECK(val >= 0 && val < 15 && d[i].ticket == tk[val], "stray result %d", val);
                if (val >= 0 && val < 15)
                    seen[val]++;
                n++;
            }
        }
        CHECK_EQ(n, 15);
        for (int i = 0; i < 15; i++)
            CHECK(seen[i] == 1, "async task %d delivered %d times", i, seen[i]);
        CHECK_EQ(oag_outstanding(c), 0);
        oag_close(c);
    }
    h_cleanup(&s);
}

int main(void)
{
    h_init(100);
    if (!getenv("OAG_SUPERVISOR"))
        return H_SKIP;
    fprintf(stderr, "== deadline expiry by timer\n");
    test_deadline();
    fprintf(stderr, "== priority order within a batch\n");
    run_priorities(0);
    fprintf(stderr, "== in-order completion despite priorities\n");
    run_priorities(1);
    fprintf(stderr, "== overall queue bound: -EBUSY at submit\n");
    test_busy();
    fprintf(stderr, "== oag_infer with asynchronous tasks outstanding\n");
    test_infer_mixed();
    fprintf(stderr, h_failures ? "FAILED (%d)\n" : "all batcher checks passed\n", h_failures);
    return h_failures ? 1 : 0;
}
