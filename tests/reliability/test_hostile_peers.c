/*
 * test_hostile_peers.c - scenario 7: an agent that never reads its results and one that floods
 * affect only themselves.
 *
 * Two well-behaved agents run one task at a time (oag_infer) against an identity supervisor:
 * first alone (baseline: rate and latency), then while (i) a raw agent fills its submission
 * ring, rings the doorbell and never takes a result, and (ii) a flooder keeps its whole lane
 * full as fast as it can. It checks that the well-behaved agents keep getting correct results
 * at a rate of at least a tenth of their baseline with p99 latency below 100 ms (the two cores
 * are shared with the flooder, so some slowdown is CPU, not the supervisor), that the
 * never-reader holds at most its own ring's worth of results (the supervisor stops taking its
 * tasks instead of queueing them), that the supervisor stays up with flat memory, and that the
 * flooder's every admitted task comes back once. Short: 2 s phases; OAG_LONG=1: 10 s.
 */
#include "rel.h"

struct good {
    pthread_t th;
    oag_client *c;
    int id;
    uint64_t n, wrong;
    uint64_t lat[200000];
    size_t nlat;
};

static atomic_int run;

static void *good_main(void *arg)
{
    struct good *g = arg;
    uint8_t in[64], out[64];
    while (atomic_load(&run)) {
        for (int i = 0; i < 64; i++)
            in[i] = (uint8_t)(g->n * 3 + (uint64_t)i + (uint64_t)g->id);
        size_t ol = 0;
        uint64_t t0 = rel_now_us();
        int rc = oag_infer(g->c, in, sizeof in, out, sizeof out, &ol, 5000);
        uint64_t us = rel_now_us() - t0;
        if (rc || ol != sizeof in || memcmp(in, out, sizeof in))
            g->wrong++;
        g->n++;
        if (g->nlat < 200000)
            g->lat[g->nlat++] = us;
    }
    return NULL;
}

struct flood {
    pthread_t th;
    oag_client *c;
    uint64_t submitted, completed, failed, refused;
};

static void *flood_main(void *arg)
{
    struct flood *f = arg;
    uint8_t in[64] = { 1 };
    oag_completion done[64];
    while (atomic_load(&run)) {
        uint64_t t;
        int rc;
        while ((rc = oag_submit(f->c, in, sizeof in, &t)) == 0)
            f->submitted++;
        f->refused++;
        /* Lane full: wait for results (a flooder that spins here measures the shared CPU,
         * not the supervisor) and refill at once. */
        int n = oag_poll(f->c, done, 64, 1);
        for (int i = 0; i < n; i++)
            done[i].status == 0 ? f->completed++ : f->failed++;
    }
    uint64_t end = h_now_ms() + 5000;
    while (oag_outstanding(f->c) && h_now_ms() < end) {
        int n = oag_poll(f->c, done, 64, 20);
        for (int i = 0; i < n; i++)
            done[i].status == 0 ? f->completed++ : f->failed++;
    }
    return NULL;
}

static void phase(struct good *g, unsigned ms, double *rate, uint64_t *p50, uint64_t *p99)
{
    for (int i = 0; i < 2; i++)
        g[i].n = g[i].nlat = 0;
    atomic_store(&run, 1);
    for (int i = 0; i < 2; i++)
        pthread_create(&g[i].th, NULL, good_main, &g[i]);
    h_sleep_ms(ms);
    atomic_store(&run, 0);
    for (int i = 0; i < 2; i++)
        pthread_join(g[i].th, NULL);
    static uint64_t all[400000];
    size_t n = 0;
    for (int i = 0; i < 2; i++) {
        memcpy(all + n, g[i].lat, g[i].nlat * sizeof *all);
        n += g[i].nlat;
    }
    *rate = (double)(g[0].n + g[1].n) * 1000.0 / ms / 2;
    *p50 = rel_pct(all, n, 50);
    *p99 = rel_pct(all, n, 99);
}

int main(void)
{
    int lng = rel_long();
    unsigned ms = lng ? 10000 : 2000;
    h_init(lng ? 200 : 60);
    struct rel_sup s;
    rel_sup_init(&s, "hostile");
    const char *args[] = { "--backend", "identity", "--max-payload", "256", "--ring-slots", "64",
                           NULL };
    if (rel_sup_start(&s, args)) {
        CHECK(0, "start failed");
        rel_sup_cleanup(&s);
        return 1;
    }
    static struct good g[2];
    for (int i = 0; i < 2; i++) {
        g[i].id = i;
        CHECK_EQ(oag_connect(&g[i].c, s.sock), 0);
    }
    double r0, r1;
    uint64_t a50, a99, b50, b99;
    phase(g, ms / 2, &r0, &a50, &a99);
    long rss0 = rel_rss_kb(s.pid);
    printf("baseline: 2 agents, %.0f tasks/s each, latency p50 %.1f us p99 %.1f us\n", r0,
           (double)a50, (double)a99);

    /* The never-reader: fill the ring, ring, never take anything. */
    struct rel_raw nr;
    CHECK_EQ(rel_raw_connect(&nr, s.sock, -1), 0);
    for (uint32_t i = 0; i < nr.hdr.sub_slots; i++)
        rel_raw_submit(&nr, 1 + i, 64, 1);
    /* The flooder. */
    static struct flood f;
    CHECK_EQ(oag_connect(&f.c, s.sock), 0);
    atomic_store(&run, 1);
    pthread_create(&f.th, NULL, flood_main, &f);
    phase(g, ms, &r1, &b50, &b99);
    atomic_store(&run, 1); /* phase() cleared it: the flooder stops with the next store */
    long long queued = rel_status_num(s.sock, "queued");
    atomic_store(&run, 0);
    pthread_join(f.th, NULL);
    long rss1 = rel_rss_kb(s.pid);
    uint32_t held = oag_load_acquire_u32(&nr.ctl->cmp_prod) - oag_load_acquire_u32(&nr.ctl->cmp_cons);
    printf("with a never-reader and a flooder: %.0f tasks/s each (%.0f%% of baseline), latency "
           "p50 %.1f us p99 %.1f us; flooder submitted %llu completed %llu (lane full %llu times); never-reader holds %u results (its ring: %u); queued %lld; RSS "
           "%ld -> %ld KiB\n", r1, 100.0 * r1 / r0, (double)b50, (double)b99,
           (unsigned long long)f.submitted, (unsigned long long)f.completed,
           (unsigned long long)f.refused, held, nr.hdr.cmp_slots, queued, rss0, rss1);
    for (int i = 0; i < 2; i++)
        CHECK_EQ(g[i].wrong, 0);
    CHECK(r1 >= r0 / 10, "well-behaved agents slowed to %.0f%% of their baseline", 100 * r1 / r0);
    CHECK(b99 < 100000, "well-behaved p99 latency %.1f ms", b99 / 1e3);
    CHECK(held <= nr.hdr.cmp_slots, "never-reader holds %u results", held);
    CHECK(f.submitted == f.completed + f.failed && f.failed == 0,
          "flooder: submitted %llu completed %llu failed %llu", (unsigned long long)f.submitted,
          (unsigned long long)f.completed, (unsigned long long)f.failed);
    CHECK(rss1 - rss0 <= 2048, "supervisor RSS grew %ld KiB", rss1 - rss0);
    CHECK(h_sup_alive_pid(s.pid), "supervisor died");
    rel_raw_close(&nr);
    oag_close(f.c);
    for (int i = 0; i < 2; i++)
        oag_close(g[i].c);
    for (int k = 0; k < 200 && rel_status_num(s.sock, "lanes") != 0; k++)
        h_sleep_ms(5);
    CHECK_EQ(rel_status_num(s.sock, "lanes"), 0);
    int st = rel_sup_stop(&s);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status 0x%x", st);
    rel_sup_cleanup(&s);
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
