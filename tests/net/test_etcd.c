/*
 * test_etcd.c - discovery and failover through a real etcd (Debian's etcd-server, started here
 * on loopback ports with a temporary data dir; skipped, exit 77, only when the binary is absent):
 *  - two supervisors (identity engine) register under a prefix with a 2 s lease;
 *  - a client connects to etcd://HOST:PORT/PREFIX, spreads its tasks over both (each serves
 *    some), and keeps a window of tasks in flight;
 *  - kill -9 one supervisor under load: every task that was in flight at the kill completes
 *    within the lease TTL + 1 s, the dead one's key vanishes from etcd within TTL + 1 s, and at
 *    the end every task has ended exactly once with its correct result;
 *  - a supervisor started later is found and used without reconnecting the client.
 */
#include "nethelp.h"

#define TTL_S 2

struct reg_count {
    int n;
    char addr[4][128];
};

static void on_kv(const char *key, const char *val, void *arg)
{
    struct reg_count *c = arg;
    (void)key;
    const char *a = strstr(val, "\"addr\":\"");
    if (c->n < 4 && a)
        snprintf(c->addr[c->n], sizeof c->addr[0], "%.*s", (int)strcspn(a + 8, "\""), a + 8);
    c->n++;
}

/* Supervisors registered under prefix (or -1 if etcd does not answer). */
static int registered(const char *url, const char *prefix, struct reg_count *rc)
{
    struct etcd *e = NULL;
    memset(rc, 0, sizeof *rc);
    if (etcd_create(&e, url, 1000))
        return -1;
    char p[256];
    snprintf(p, sizeof p, "%s/", prefix);
    int n = etcd_range_prefix(e, p, on_kv, rc);
    etcd_destroy(e);
    return n;
}

static long long sup_tasks(const struct h_sup *s)
{
    struct h_status st;
    return h_status(s, &st) == 0 ? st.tasks_done : -1;
}

int main(void)
{
    h_init(100);
    if (!n_etcd_bin()) {
        printf("SKIP: no etcd binary (Debian package etcd-server)\n");
        return H_SKIP;
    }
    struct n_etcd e;
    struct h_sup a, b, c;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    if (n_etcd_start(&e))
        goto out;
    char prefix[64], epa[64], epb[64], epc[64], ttl[8], conn[160];
    snprintf(prefix, sizeof prefix, "/oagt-%d", (int)getpid());
    snprintf(epa, sizeof epa, "tcp://127.0.0.1:%d", n_free_port());
    snprintf(epb, sizeof epb, "tcp://127.0.0.1:%d", n_free_port());
    snprintf(epc, sizeof epc, "tcp://127.0.0.1:%d", n_free_port());
    snprintf(ttl, sizeof ttl, "%d", TTL_S);
    const char *xa[] = { "--listen", epa, "--etcd", e.url, "--etcd-prefix", prefix, "--etcd-ttl",
                         ttl, NULL };
    const char *xb[] = { "--listen", epb, "--etcd", e.url, "--etcd-prefix", prefix, "--etcd-ttl",
                         ttl, NULL };
    const char *xc[] = { "--listen", epc, "--etcd", e.url, "--etcd-prefix", prefix, "--etcd-ttl",
                         ttl, NULL };
    if (h_sup_start(&a, "eta", 0700, xa, NULL) || h_sup_start(&b, "etb", 0700, xb, NULL))
        goto out;
    struct reg_count rc;
    uint64_t end = h_now_ms() + 10000;
    while (registered(e.url, prefix, &rc) < 2 && h_now_ms() < end)
        h_sleep_ms(50);
    CHECK(rc.n == 2, "%d supervisors registered, want 2", rc.n);

    snprintf(conn, sizeof conn, "etcd://127.0.0.1:%d%s?policy=rr", e.port, prefix);
    oag_client *cl = NULL;
    int r = oag_connect(&cl, conn);
    CHECK(r == 0, "oag_connect(%s): %s (%s)", conn, oag_strerror(r), oag_last_error());
    if (r)
        goto out;
    /* Give discovery a moment to connect the second supervisor too. */
    end = h_now_ms() + 5000;
    oag_info info;
    while (h_now_ms() < end && oag_get_info(cl, &info) == 0 && info.agents < 2)
        h_sleep_ms(20);
    CHECK(info.agents == 2, "client reaches %u supervisors, want 2", info.agents);

    struct n_load l;
    n_load_init(&l, cl, 60000, 256, 64);
    end = h_now_ms() + 40000;
    while (l.completed < 10000 && h_now_ms() < end && n_load_step(&l, 100) >= 0)
        ;
    long long ta = sup_tasks(&a), tb = sup_tasks(&b);
    fprintf(stderr, "before the kill: %u done; supervisor a %lld tasks, b %lld\n", l.completed,
            ta, tb);
    CHECK(ta > 1000 && tb > 1000, "tasks not spread: a %lld b %lld", ta, tb);

    /* kill -9 b under load */
    uint32_t inflight_before = l.submitted;
    uint64_t t_kill = h_now_ms();
    kill(b.pid, SIGKILL);
    h_sup_wait(&b, 3000);
    uint64_t t_caught_up = 0, t_vanished = 0;
    while (l.completed < l.total && h_now_ms() < end) {
        if (n_load_step(&l, 20) < 0)
            break;
        if (!t_caught_up) {
            int all = 1;
            for (uint32_t i = 0; i < inflight_before && all; i++)
                all = l.done[i] != 0;
            if (all)
                t_caught_up = h_now_ms();
        }
        if (!t_vanished && registered(e.url, prefix, &rc) == 1)
            t_vanished = h_now_ms();
        if (l.completed > 40000 && !c.pid) {
            /* A third supervisor joins: the client finds it without reconnecting. */
            if (h_sup_start(&c, "etc", 0700, xc, NULL))
                break;
        }
    }
    while (!t_vanished && h_now_ms() < t_kill + (TTL_S + 3) * 1000) {
        if (registered(e.url, prefix, &rc) == 1 + (c.pid != 0))
            t_vanished = h_now_ms();
        h_sleep_ms(50);
    }
    for (int k = 0; k < 5; k++)
        n_load_step(&l, 50);
    long long fail_ms = t_caught_up ? (long long)(t_caught_up - t_kill) : -1;
    long long gone_ms = t_vanished ? (long long)(t_vanished - t_kill) : -1;
    long long tc = c.pid ? sup_tasks(&c) : -1;
    fprintf(stderr, "after the kill: tasks in flight at the kill all done after %lld ms; key gone "
                    "after %lld ms; %u/%u done, bad %u dup %u errors %u missing %u; supervisor c "
                    "(joined later) %lld tasks\n", fail_ms, gone_ms, l.completed, l.total, l.bad,
            l.dup, l.errs, n_load_missing(&l), tc);
    CHECK(fail_ms >= 0 && fail_ms <= (TTL_S + 1) * 1000, "failover took %lld ms (TTL %d s + 1 s)",
          fail_ms, TTL_S);
    CHECK(gone_ms >= 0 && gone_ms <= (TTL_S + 1) * 1000 + 500,
          "the dead supervisor's key stayed %lld ms", gone_ms);
    CHECK(l.completed == l.total && n_load_missing(&l) == 0, "%u of %u done", l.completed,
          l.total);
    CHECK(l.bad == 0 && l.dup == 0 && l.errs == 0, "bad %u dup %u errors %u", l.bad, l.dup,
          l.errs);
    CHECK(tc > 0, "the supervisor that joined later got no task (%lld)", tc);
    oag_close(cl);
    n_load_fini(&l);
out:
    if (c.pid)
        h_cleanup(&c);
    if (b.pid)
        h_cleanup(&b);
    h_cleanup(&a);
    n_etcd_stop(&e);
    if (h_failures) {
        fprintf(stderr, "%d failure(s)\n", h_failures);
        return 1;
    }
    printf("net_etcd: ok\n");
    return 0;
}
