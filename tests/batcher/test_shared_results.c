/*
 * test_shared_results.c - the shared result area (--shared-results) against a real supervisor
 * (identity engine, results equal inputs):
 *  1. results come back right and through the area (status counts batches there);
 *  2. a chunk whose results an agent still holds (data valid until its next call) is not
 *     written again: with every chunk held, other agents' batches fall back to their lanes
 *     (counted), their results are right, and the held results are unchanged;
 *  3. once the holders hand their results back, batches use the area again (a round's results
 *     are handed back by one more poll after it);
 *  4. a holder that disconnects frees its chunk too;
 *  5. a raw agent that claims to have read far more results than it was given (its completion
 *     ring's consumer index past everything published) loses only its own: another agent's
 *     results stay right while the chunks keep being lent.
 */
#include <errno.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../harness.h"
#include "../reliability/rel.h"
#include "oag/oag.h"

#define ROW 256

static void fill(uint8_t *buf, uint64_t seed)
{
    for (int i = 0; i < ROW; i++)
        buf[i] = (uint8_t)(seed * 131u + (uint64_t)i * 7u + (seed >> 8));
}

/* `oag-ctl status --json`: the area's counters. Returns 0 or -1. */
static int area_counts(const struct h_sup *s, long long *chunks, long long *batches,
                       long long *fallbacks)
{
    cJSON *j = h_status_json(s);
    if (!j)
        return -1;
    int ok = 1;
    *chunks = h_json_ll(j, "shared_results", &ok);
    *batches = h_json_ll(j, "shared_result_batches", &ok);
    *fallbacks = h_json_ll(j, "shared_result_fallbacks", &ok);
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

/* Submits n tasks (seeds base..base+n-1) and collects their n results into d[] (checked
 * against their inputs). Returns the results checked right. */
static int round_trip(oag_client *c, uint64_t base, int n, oag_completion *d)
{
    uint64_t tick[64], seed_of[64];
    uint8_t in[ROW];
    for (int i = 0; i < n; i++) {
        fill(in, base + (uint64_t)i);
        int rc = oag_submit(c, in, ROW, &tick[i]);
        CHECK_EQ(rc, 0);
        seed_of[i] = base + (uint64_t)i;
    }
    int got = 0;
    uint64_t end = h_now_ms() + 5000;
    while (got < n && h_now_ms() < end) {
        int k = oag_poll(c, d + got, n - got, 50);
        if (k < 0) {
            CHECK(0, "oag_poll: %s", oag_strerror(k));
            return 0;
        }
        got += k;
        if (got < n && k > 0) {
            /* the earlier results are released by the next poll: verify them first */
            for (int i = got - k; i < got; i++) {
                int idx = -1;
                for (int t = 0; t < n; t++)
                    if (tick[t] == d[i].ticket)
                        idx = t;
                CHECK(idx >= 0, "unknown ticket");
                if (idx >= 0) {
                    fill(in, seed_of[idx]);
                    CHECK(d[i].status == 0 && d[i].len == ROW && !memcmp(d[i].data, in, ROW),
                          "result %d wrong (status %d len %u)", i, d[i].status, d[i].len);
                }
                d[i].data = NULL; /* no longer valid after the next call */
            }
        }
    }
    CHECK_EQ(got, n);
    int right = 0;
    /* Checked below, then handed back by one more (empty) poll: nothing stays held. */
    for (int i = 0; i < got; i++) {
        int idx = -1;
        for (int t = 0; t < n; t++)
            if (tick[t] == d[i].ticket)
                idx = t;
        if (idx < 0)
            continue;
        if (!d[i].data) {
            right++; /* checked above */
            continue;
        }
        fill(in, seed_of[idx]);
        if (d[i].status == 0 && d[i].len == ROW && !memcmp(d[i].data, in, ROW))
            right++;
    }
    oag_completion none;
    oag_poll(c, &none, 1, 0);
    return right;
}

/* Every result in d[0..n) still holds its input (seeds base..): the chunk was not reused. */
static int still_intact(const oag_completion *d, int n, const uint64_t *tick, uint64_t base)
{
    uint8_t in[ROW];
    int ok = 0;
    for (int i = 0; i < n; i++)
        for (int t = 0; t < n; t++)
            if (tick[t] == d[i].ticket && d[i].data) {
                fill(in, base + (uint64_t)t);
                ok += !memcmp(d[i].data, in, ROW);
            }
    return ok;
}

/* One batch of 8 from c, all 8 results returned by one poll and held (not released). */
static int hold_batch(oag_client *c, uint64_t base, oag_completion *d, uint64_t *tick)
{
    uint8_t in[ROW];
    for (int i = 0; i < 8; i++) {
        fill(in, base + (uint64_t)i);
        CHECK_EQ(oag_submit(c, in, ROW, &tick[i]), 0);
    }
    /* Wait until all 8 are done before the one poll that takes them. */
    uint64_t end = h_now_ms() + 5000;
    int n = 0;
    while (h_now_ms() < end) {
        h_sleep_ms(20);
        n = oag_poll(c, d, 8, 0);
        if (n != 0)
            break;
    }
    return n;
}

int main(void)
{
    h_init(100);
    if (!getenv("OAG_SUPERVISOR"))
        return H_SKIP;
    struct h_sup s;
    /* 2 chunks; the batch delay makes 8 tasks submitted together one batch. */
    /* One data thread: the chunks are split between data threads (test_shards: each its own). */
    const char *extra[] = { "--backend", "identity", "--shared-results", "2", "--max-batch",
                            "8", "--max-delay-us", "20000", "--max-payload", "1024",
                            "--data-threads", "1", NULL };
    if (h_sup_start(&s, "bsr", 0700, extra, NULL))
        return 1;
    long long chunks = 0, b0 = 0, f0 = 0, b1 = 0, f1 = 0, b2 = 0, f2 = 0;
    CHECK_EQ(area_counts(&s, &chunks, &b0, &f0), 0);
    CHECK_EQ(chunks, 2);
    oag_client *a = NULL, *b = NULL, *c = NULL;
    CHECK_EQ(oag_connect(&a, s.sock), 0);
    CHECK_EQ(oag_connect(&b, s.sock), 0);
    CHECK_EQ(oag_connect(&c, s.sock), 0);
    if (a && b && c) {
        fprintf(stderr, "== results through the area\n");
        oag_completion d[64];
        CHECK_EQ(round_trip(b, 1000, 32, d), 32);
        CHECK_EQ(area_counts(&s, &chunks, &b1, &f1), 0);
        CHECK(b1 > b0, "no batch went through the shared result area (%lld -> %lld)", b0, b1);

        fprintf(stderr, "== held results keep their chunk; others fall back to the lanes\n");
        oag_completion da[8], dc[8];
        uint64_t ta[8], tc[8];
        CHECK_EQ(hold_batch(a, 5000, da, ta), 8);
        CHECK_EQ(hold_batch(c, 6000, dc, tc), 8);
        CHECK_EQ(still_intact(da, 8, ta, 5000), 8);
        CHECK_EQ(still_intact(dc, 8, tc, 6000), 8);
        for (int r = 0; r < 20; r++)
            CHECK_EQ(round_trip(b, 10000 + (uint64_t)r * 100, 16, d), 16);
        CHECK_EQ(area_counts(&s, &chunks, &b2, &f2), 0);
        CHECK(f2 >= f1 + 20, "batches did not fall back with every chunk held (%lld -> %lld)",
              f1, f2);
        CHECK(b2 == b1 + 2, "a chunk still held was lent again (%lld -> %lld batches there)",
              b1, b2);
        CHECK_EQ(still_intact(da, 8, ta, 5000), 8);
        CHECK_EQ(still_intact(dc, 8, tc, 6000), 8);

        fprintf(stderr, "== handed back (a polls again, c disconnects): the area again\n");
        oag_poll(a, da, 8, 0); /* releases the held slots */
        oag_close(c);
        c = NULL;
        h_sleep_ms(50);
        long long b3 = 0, f3 = 0;
        for (int r = 0; r < 5; r++)
            CHECK_EQ(round_trip(b, 20000 + (uint64_t)r * 100, 16, d), 16);
        CHECK_EQ(area_counts(&s, &chunks, &b3, &f3), 0);
        CHECK(b3 >= b2 + 5, "batches did not return to the area (%lld -> %lld)", b2, b3);

        fprintf(stderr, "== an agent claiming results it never read loses only its own\n");
        struct rel_raw r;
        CHECK_EQ(rel_raw_connect(&r, s.sock, -1), 0);
        if (r.lane) {
            for (int i = 0; i < 8; i++)
                rel_raw_submit(&r, 900 + (uint64_t)i, ROW, 1);
            uint64_t end = h_now_ms() + 5000;
            while (oag_load_acquire_u32(&r.ctl->cmp_prod) < 8 && h_now_ms() < end)
                h_sleep_ms(2);
            CHECK_EQ(oag_load_acquire_u32(&r.ctl->cmp_prod), 8);
            oag_store_release_u32(&r.ctl->cmp_cons, 1000); /* far past what was published */
            long long b4 = 0, f4 = 0;
            for (int k = 0; k < 10; k++)
                CHECK_EQ(round_trip(b, 40000 + (uint64_t)k * 100, 16, d), 16);
            CHECK_EQ(area_counts(&s, &chunks, &b4, &f4), 0);
            CHECK(b4 >= b3 + 10, "batches did not go through the area (%lld -> %lld)", b3, b4);
        }
        rel_raw_close(&r);
        CHECK(h_sup_alive(&s), "the supervisor died");
    }
    oag_close(a);
    oag_close(b);
    oag_close(c);
    h_cleanup(&s);
    fprintf(stderr, h_failures ? "FAILED (%d)\n" : "all shared-result checks passed\n", h_failures);
    return h_failures ? 1 : 0;
}
