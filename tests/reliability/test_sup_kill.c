/*
 * test_sup_kill.c - scenario 3: the supervisor is SIGKILLed under load, then started again under
 * the same name, with no clean-up in between.
 *
 * K agent threads (one liboag client each) keep W tasks in flight against an identity
 * supervisor. Each round, the test SIGKILLs the supervisor and starts it again at once. It
 * checks:
 *   - the new supervisor starts without anyone removing the dead one's /dev/shm segment, socket
 *     or lock (stale state is taken over through the instance lock);
 *   - every agent notices within a bounded time (oag_poll / oag_submit return -ECONNRESET),
 *     and reconnects once the new supervisor is ready;
 *   - every task an agent submitted ends exactly once: completed with its own input, or counted
 *     failed because it was in flight when -ECONNRESET came (no result ever arrives twice or for
 *     an unknown ticket): submitted = completed + failed, unaccounted = 0. Submits refused at
 *     once (-EAGAIN, -EBUSY, -ECONNRESET) are counted as rejected, never as submitted.
 * Prints recovery times (kill -> agent notices, kill -> supervisor ready, kill -> agent
 * reconnected) as p50/p99. Short: 3 rounds; OAG_LONG=1: 30 rounds.
 */
#include "rel.h"

#define K 4
#define W 16
#define PAYLOAD 64
#define MAXT 4096

struct slot {
    uint64_t ticket, seq;
    int used;
};

struct agent {
    int id;
    pthread_t th;
    struct slot fl[W];
    uint64_t seq;
    uint64_t submitted, completed, failed, rejected, wrong, unknown;
    uint64_t notice_us[64], reconn_us[64];
    int nnotice, nreconn;
    atomic_int round_seen;   /* last round whose outage this agent got through */
    atomic_ullong done_now;  /* completions, for the main thread's progress checks */
};

static const char *sock_path;
static atomic_int stop;
static atomic_ullong kill_us; /* when the supervisor was last killed */
static atomic_int round_no;

static void fill(uint8_t *p, int id, uint64_t seq)
{
    for (int i = 0; i < PAYLOAD; i++)
        p[i] = (uint8_t)((uint64_t)id * 131u + seq * 7u + (uint64_t)i);
}

static int connect_retry(struct agent *a, oag_client **c)
{
    uint64_t end = h_now_ms() + 30000;
    while (!atomic_load(&stop) && h_now_ms() < end) {
        int rc = oag_connect(c, sock_path);
        if (rc == 0)
            return 0;
        CHECK(rc < 0, "agent %d: oag_connect returned %d", a->id, rc);
        h_sleep_ms(2);
    }
    return -1;
}

static void *agent_main(void *arg)
{
    struct agent *a = arg;
    oag_client *c = NULL;
    if (connect_retry(a, &c))
        return NULL;
    uint8_t in[PAYLOAD], want[PAYLOAD];
    while (!atomic_load(&stop)) {
        int reset = 0;
        /* Fill the window. */
        for (int k = 0; k < W; k++) {
            if (a->fl[k].used)
                continue;
            fill(in, a->id, a->seq);
            uint64_t t;
            int rc = oag_submit(c, in, sizeof in, &t);
            if (rc == 0) {
                a->fl[k] = (struct slot){ t, a->seq++, 1 };
                a->submitted++;
            } else {
                a->rejected++;
                CHECK(rc == -EAGAIN || rc == -EBUSY || rc == -ECONNRESET,
                      "agent %d: oag_submit returned %d", a->id, rc);
                if (rc == -ECONNRESET)
                    reset = 1;
                break;
            }
        }
        oag_completion done[W];
        int n = reset ? -ECONNRESET : oag_poll(c, done, W, 10);
        for (int i = 0; i < n; i++) {
            int k;
            for (k = 0; k < W; k++)
                if (a->fl[k].used && a->fl[k].ticket == done[i].ticket)
                    break;
            if (k == W) {
                a->unknown++;
                continue;
            }
            a->fl[k].used = 0;
            if (done[i].status != 0) {
                a->failed++; /* an explicit error for this task */
                continue;
            }
            fill(want, a->id, a->fl[k].seq);
            if (done[i].len != PAYLOAD || memcmp(done[i].data, want, PAYLOAD))
                a->wrong++;
            a->completed++;
            atomic_fetch_add(&a->done_now, 1);
        }
        if (n < 0) {
            CHECK(n == -ECONNRESET, "agent %d: oag_poll returned %d", a->id, n);
            uint64_t now = rel_now_us(), k0 = atomic_load(&kill_us);
            if (a->nnotice < 64 && k0)
                a->notice_us[a->nnotice++] = now - k0;
            for (int k = 0; k < W; k++)
                if (a->fl[k].used) {
                    a->fl[k].used = 0;
                    a->failed++; /* in flight at the reset: reported failed to the agent */
                }
            oag_close(c);
            c = NULL;
            if (connect_retry(a, &c))
                return NULL;
            if (a->nreconn < 64 && k0)
                a->reconn_us[a->nreconn++] = rel_now_us() - k0;
            atomic_store(&a->round_seen, atomic_load(&round_no));
        }
    }
    /* Drain what is still in flight. */
    uint64_t end = h_now_ms() + 5000;
    for (;;) {
        int left = 0;
        for (int k = 0; k < W; k++)
            left += a->fl[k].used;
        if (!left || h_now_ms() > end)
            break;
        oag_completion done[W];
        int n = oag_poll(c, done, W, 50);
        if (n < 0) {
            for (int k = 0; k < W; k++)
                if (a->fl[k].used) {
                    a->fl[k].used = 0;
                    a->failed++;
                }
            break;
        }
        for (int i = 0; i < n; i++)
            for (int k = 0; k < W; k++)
                if (a->fl[k].used && a->fl[k].ticket == done[i].ticket) {
                    a->fl[k].used = 0;
                    if (done[i].status == 0)
                        a->completed++;
                    else
                        a->failed++;
                }
    }
    oag_close(c);
    return NULL;
}

int main(void)
{
    int lng = rel_long();
    int rounds = lng ? 30 : 3;
    h_init(lng ? 1200 : 110);
    struct rel_sup s;
    rel_sup_init(&s, "supkill");
    sock_path = s.sock;
    const char *args[] = { "--backend", "identity", "--max-payload", "256", "--ring-slots", "64",
                           NULL };
    if (rel_sup_start(&s, args)) {
        CHECK(0, "first start failed");
        rel_sup_cleanup(&s);
        return 1;
    }
    static struct agent ag[K];
    for (int i = 0; i < K; i++) {
        ag[i].id = i;
        pthread_create(&ag[i].th, NULL, agent_main, &ag[i]);
    }
    uint64_t ready_us[64];
    int nready = 0;
    char shm[256], shm_path[300];
    h_shm_name(shm, sizeof shm, s.name);
    snprintf(shm_path, sizeof shm_path, "/dev/shm/%s", shm);
    for (int r = 1; r <= rounds; r++) {
        /* Load: every agent makes progress first. */
        uint64_t base[K];
        for (int i = 0; i < K; i++)
            base[i] = atomic_load(&ag[i].done_now);
        uint64_t end = h_now_ms() + 10000;
        for (int i = 0; i < K; i++)
            while (atomic_load(&ag[i].done_now) < base[i] + 200 && h_now_ms() < end)
                h_sleep_ms(5);
        for (int i = 0; i < K; i++)
            CHECK(atomic_load(&ag[i].done_now) >= base[i] + 200,
                  "round %d: agent %d made no progress before the kill", r, i);
        atomic_store(&round_no, r);
        atomic_store(&kill_us, rel_now_us());
        rel_sup_kill9(&s);
        CHECK(access(shm_path, F_OK) == 0, "round %d: the killed supervisor's segment is gone "
              "(nothing stale to take over?)", r);
        CHECK(access(s.sock, F_OK) == 0, "round %d: the killed supervisor's socket is gone", r);
        /* Started again at once, nobody cleaning up. */
        if (rel_sup_start(&s, args)) {
            CHECK(0, "round %d: restart after SIGKILL failed", r);
            break;
        }
        if (nready < 64)
            ready_us[nready++] = rel_now_us() - atomic_load(&kill_us);
        end = h_now_ms() + 15000;
        for (int i = 0; i < K; i++)
            while (atomic_load(&ag[i].round_seen) < r && h_now_ms() < end)
                h_sleep_ms(2);
        for (int i = 0; i < K; i++)
            CHECK(atomic_load(&ag[i].round_seen) >= r,
                  "round %d: agent %d did not notice and reconnect within 15 s", r, i);
    }
    /* A last stretch of load on the final incarnation, then stop. */
    h_sleep_ms(200);
    atomic_store(&stop, 1);
    for (int i = 0; i < K; i++)
        pthread_join(ag[i].th, NULL);

    uint64_t notice[K * 64], reconn[K * 64];
    size_t nn = 0, nr = 0;
    uint64_t sub = 0, comp = 0, fail = 0, rej = 0;
    for (int i = 0; i < K; i++) {
        struct agent *a = &ag[i];
        printf("agent %d: submitted %llu completed %llu failed %llu rejected %llu\n", i,
               (unsigned long long)a->submitted, (unsigned long long)a->completed,
               (unsigned long long)a->failed, (unsigned long long)a->rejected);
        CHECK(a->submitted == a->completed + a->failed,
              "agent %d: unaccounted tasks: submitted %llu != completed %llu + failed %llu", i,
              (unsigned long long)a->submitted, (unsigned long long)a->completed,
              (unsigned long long)a->failed);
        CHECK_EQ(a->wrong, 0);
        CHECK_EQ(a->unknown, 0);
        for (int k = 0; k < a->nnotice; k++)
            notice[nn++] = a->notice_us[k];
        for (int k = 0; k < a->nreconn; k++)
            reconn[nr++] = a->reconn_us[k];
        sub += a->submitted;
        comp += a->completed;
        fail += a->failed;
        rej += a->rejected;
    }
    printf("tasks: submitted %llu = completed %llu + failed %llu (+ rejected at submit %llu); "
           "unaccounted %lld\n", (unsigned long long)sub, (unsigned long long)comp,
           (unsigned long long)fail, (unsigned long long)rej,
           (long long)(sub - comp - fail));
    uint64_t n_p99 = rel_pct(notice, nn, 99), n_p50 = rel_pct(notice, nn, 50);
    printf("recovery over %d kills, %d agents: agent notices p50 %.1f ms p99 %.1f ms; "
           "supervisor ready p50 %.1f ms p99 %.1f ms; agent reconnected p50 %.1f ms p99 %.1f ms\n",
           rounds, K, n_p50 / 1e3, n_p99 / 1e3, rel_pct(ready_us, (size_t)nready, 50) / 1e3,
           rel_pct(ready_us, (size_t)nready, 99) / 1e3, rel_pct(reconn, nr, 50) / 1e3,
           rel_pct(reconn, nr, 99) / 1e3);
    CHECK(nn >= (size_t)(rounds * K), "only %zu of %d outages noticed", nn, rounds * K);
    CHECK(n_p99 < 2000000, "an agent took %.1f ms to notice the supervisor's death", n_p99 / 1e3);
    int st = rel_sup_stop(&s);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "final SIGTERM: status 0x%x", st);
    CHECK(h_shm_leftovers(s.name) == 0, "segment left after the final stop");
    rel_sup_cleanup(&s);
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
