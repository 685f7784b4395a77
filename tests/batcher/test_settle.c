/*
 * test_settle.c - --intake-settle against a real supervisor (identity engine, results equal
 * inputs):
 *  1. the mode shows in status as set, and auto resolves to off for the identity engine (it
 *     reads no row across a bus);
 *  2. on: tasks submitted in bursts with pauses inside them all come back right, and the intake
 *     left lanes to settle (status counts the waits);
 *  3. on: a lone task after the data thread has gone to sleep completes, every time: a lane left
 *     to settle keeps its thread awake until the next visit takes it;
 *  4. off: the same bursts come back right and nothing waits.
 */
#include <errno.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "../harness.h"
#include "oag/oag.h"

#define ROW 256
#define BURST 8

static void fill(uint8_t *buf, uint64_t seed)
{
    for (int i = 0; i < ROW; i++)
        buf[i] = (uint8_t)(seed * 131u + (uint64_t)i * 7u + (seed >> 8));
}

static void spin_us(unsigned us)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000L + (b.tv_nsec - a.tv_nsec) / 1000 < (long)us);
}

/* status's intake_settle: mode, on, waits. Returns 0 or -1. */
static int settle_status(const struct h_sup *s, char *mode, size_t cap, int *on, long long *waits)
{
    cJSON *j = h_status_json(s);
    if (!j)
        return -1;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "intake_settle");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "mode");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "on");
    int ok = cJSON_IsString(m) && cJSON_IsBool(b);
    if (ok) {
        snprintf(mode, cap, "%s", m->valuestring);
        *on = cJSON_IsTrue(b);
        *waits = h_json_ll(o, "waits", &ok);
    }
    cJSON_Delete(j);
    return ok ? 0 : -1;
}

/* Submits `rounds` bursts of BURST tasks, gap_us between the submits of a burst, each burst's
 * results collected and checked before the next. Returns the results that came back right. */
static int bursts(oag_client *c, int rounds, unsigned gap_us, uint64_t base)
{
    int right = 0;
    uint8_t in[ROW];
    for (int r = 0; r < rounds; r++) {
        uint64_t tick[BURST], seed[BURST];
        for (int i = 0; i < BURST; i++) {
            seed[i] = base + (uint64_t)r * BURST + (uint64_t)i;
            fill(in, seed[i]);
            int rc = oag_submit(c, in, ROW, &tick[i]);
            CHECK(rc == 0, "oag_submit: %s", oag_strerror(rc));
            if (rc)
                return right;
            if (gap_us)
                spin_us(gap_us);
        }
        int got = 0;
        uint64_t end = h_now_ms() + 5000;
        while (got < BURST && h_now_ms() < end) {
            oag_completion d[BURST];
            int k = oag_poll(c, d, BURST - got, 100);
            CHECK(k >= 0, "oag_poll: %s", oag_strerror(k));
            if (k < 0)
                return right;
            for (int i = 0; i < k; i++) {
                int t = 0;
                while (t < BURST && tick[t] != d[i].ticket)
                    t++;
                CHECK(t < BURST, "unknown ticket %llu", (unsigned long long)d[i].ticket);
                if (t == BURST)
                    continue;
                fill(in, seed[t]);
                right += d[i].status == 0 && d[i].len == ROW && !memcmp(d[i].data, in, ROW);
            }
            got += k;
        }
        CHECK(got == BURST, "burst %d: %d of %d results within 5 s", r, got, BURST);
        if (got != BURST)
            return right;
    }
    return right;
}

static int run(const char *mode, int expect_on, int expect_waits)
{
    fprintf(stderr, "== --intake-settle %s\n", mode);
    struct h_sup s;
    const char *extra[] = { "--backend", "identity", "--intake-settle", mode, "--max-payload",
                            "1024", "--data-threads", "1", NULL };
    if (h_sup_start(&s, "settle", 0700, extra, NULL))
        return 1;
    char m[16] = "";
    int on = -1;
    long long w0 = -1, w1 = -1, w2 = -1;
    CHECK_EQ(settle_status(&s, m, sizeof m, &on, &w0), 0);
    CHECK(!strcmp(m, mode), "status says mode '%s', set '%s'", m, mode);
    CHECK(on == expect_on, "status says on=%d for %s", on, mode);
    oag_client *c = NULL;
    CHECK_EQ(oag_connect(&c, s.sock), 0);
    if (c) {
        CHECK_EQ(bursts(c, 40, 200, 1000), 40 * BURST);
        CHECK_EQ(settle_status(&s, m, sizeof m, &on, &w1), 0);
        fprintf(stderr, "   bursts: %lld -> %lld waits\n", w0, w1);
        if (expect_waits)
            CHECK(w1 > w0, "no lane was left to settle (%lld -> %lld waits)", w0, w1);
        else
            CHECK(w1 == 0, "%lld waits with settling %s", w1, mode);

        /* Lone tasks, the data thread asleep before each (it spins ~50 us, then sleeps). */
        uint8_t in[ROW];
        int late = 0;
        for (int i = 0; i < 50; i++) {
            h_sleep_ms(3);
            uint64_t t, t0 = h_now_ms();
            fill(in, 90000 + (uint64_t)i);
            CHECK_EQ(oag_submit(c, in, ROW, &t), 0);
            oag_completion d;
            int k = oag_poll(c, &d, 1, 3000);
            CHECK(k == 1, "lone task %d: no result within 3 s (%d)", i, k);
            if (k != 1)
                break;
            CHECK(d.ticket == t && d.status == 0 && d.len == ROW && !memcmp(d.data, in, ROW),
                  "lone task %d: wrong result", i);
            late += h_now_ms() - t0 > 500;
        }
        CHECK(late == 0, "%d lone tasks took over 500 ms", late);
        CHECK_EQ(settle_status(&s, m, sizeof m, &on, &w2), 0);
        if (!expect_waits)
            CHECK(w2 == 0, "%lld waits with settling %s", w2, mode);
        CHECK(h_sup_alive(&s), "the supervisor died");
    }
    oag_close(c);
    h_cleanup(&s);
    return 0;
}

int main(void)
{
    h_init(100);
    if (!getenv("OAG_SUPERVISOR"))
        return H_SKIP;
    run("on", 1, 1);
    run("off", 0, 0);
    run("auto", 0, 0); /* identity: no bus between the rows and the engine */
    fprintf(stderr, h_failures ? "FAILED (%d)\n" : "all intake-settle checks passed\n", h_failures);
    return h_failures ? 1 : 0;
}
