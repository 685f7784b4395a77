/*
 * test_shards.c - the data plane over two threads (--data-threads 2), against a real identity
 * supervisor:
 *
 *   (a) spread: four agents attach, two land on each data thread (oag-ctl status --json: each
 *       agent's "shard", each shard's lanes and tasks); four threads each run 3000 tasks of
 *       varied sizes (1..4000 bytes; two of the agents with $OAG_NT_STORES=1) through both
 *       shards at once, every result checked byte for byte; each
 *       shard did its own agents' tasks and the sums agree; each shard has its own engine
 *       instance;
 *   (b) a lane cut by a shard thread: a raw agent served by shard 1 publishes a submission index
 *       far past its ring; shard 1's thread finds it and the main thread cuts it (the agent is
 *       hung up on, cut_offs 1) while an agent on shard 0 keeps getting results; a new raw agent
 *       then gets shard 1 again and is served;
 *   (c) a full queue is a shard's own: with --max-queue 16 (8 per shard) and a long batch delay,
 *       the agent of shard 0 that fills its share gets -EBUSY at once while the agent of shard 1
 *       still submits; every task then completes;
 *   (d) the world stops under load: status requests, attaches and detaches while four agents
 *       keep both shards busy; nothing lost, nothing wrong.
 */
#include "rel.h"

static cJSON *status_json(const char *sock)
{
    struct h_sup tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.sock, sizeof tmp.sock, "%s", sock);
    static char out[1 << 17];
    if (h_ctl(&tmp, out, sizeof out, "status", "--json", (char *)NULL) != 0)
        return NULL;
    return cJSON_Parse(out);
}

static long long jnum(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;
}

struct worker {
    pthread_t th;
    oag_client *c;
    int id, n;
    uint64_t ok, wrong;
};

/* n tasks, 16 in flight, sizes 1..4000 (payloads from 1 KB go into the lane by streaming
 * stores, tails unaligned), every result compared with its input. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    enum { WIN = 16 };
    static _Thread_local uint8_t in[WIN][4096];
    uint32_t len[WIN] = { 0 };
    uint64_t tk[WIN];
    int sent = 0, done = 0, out = 0;
    oag_completion d[WIN];
    uint64_t end = h_now_ms() + 30000;
    while (done < w->n && h_now_ms() < end) {
        while (sent < w->n && out < WIN) {
            int slot = -1;
            for (int k = 0; k < WIN; k++)
                if (!len[k]) {
                    slot = k;
                    break;
                }
            uint32_t l = 1 + (uint32_t)((sent * 37 + w->id * 11) % 4000);
            for (uint32_t i = 0; i < l; i++)
                in[slot][i] = (uint8_t)(sent * 7 + (int)i + w->id * 13);
            int rc = oag_submit(w->c, in[slot], l, &tk[slot]);
            if (rc == -EAGAIN || rc == -EBUSY)
                break;
            if (rc) {
                w->wrong++;
                return NULL;
            }
            len[slot] = l;
            sent++;
            out++;
        }
        int n = oag_poll(w->c, d, WIN, 10);
        for (int i = 0; i < n; i++) {
            int slot = -1;
            for (int k = 0; k < WIN; k++)
                if (len[k] && tk[k] == d[i].ticket)
                    slot = k;
            if (slot < 0 || d[i].status != 0 || d[i].len != len[slot] ||
                memcmp(d[i].data, in[slot], len[slot]))
                w->wrong++;
            else
                w->ok++;
            if (slot >= 0)
                len[slot] = 0;
            done++;
            out--;
        }
    }
    return NULL;
}

/* Connects four workers (ids id0.., n tasks each); the first nt_stores of them with
 * $OAG_NT_STORES=1 (liboag reads it at connect). */
static void connect_workers(struct worker *w, const char *sock, int id0, int n, int nt_stores)
{
    memset(w, 0, 4 * sizeof *w);
    for (int i = 0; i < 4; i++) {
        w[i].id = id0 + i;
        w[i].n = n;
        setenv("OAG_NT_STORES", i < nt_stores ? "1" : "0", 1);
        CHECK_EQ(oag_connect(&w[i].c, sock), 0);
    }
    unsetenv("OAG_NT_STORES");
}

static void close_workers(struct worker *w)
{
    for (int i = 0; i < 4; i++)
        if (w[i].c)
            oag_close(w[i].c);
}

static void run_workers(struct worker *w, int n)
{
    for (int i = 0; i < n; i++)
        pthread_create(&w[i].th, NULL, worker_main, &w[i]);
    for (int i = 0; i < n; i++)
        pthread_join(w[i].th, NULL);
}

static void test_spread(void)
{
    fprintf(stderr, "== (a) four agents over two data threads\n");
    struct rel_sup s;
    rel_sup_init(&s, "shs");
    const char *args[] = { "--backend", "identity", "--data-threads", "2", "--max-batch", "32",
                           NULL };
    if (rel_sup_start(&s, args))
        return;
    struct worker w[4];
    connect_workers(w, s.sock, 0, 3000, 2); /* two by streaming stores */
    cJSON *st = status_json(s.sock);
    CHECK(st != NULL, "no status");
    if (st) {
        CHECK_EQ(jnum(st, "data_threads"), 2);
        int lanes[2] = { 0, 0 }, k = 0;
        const cJSON *sh;
        cJSON_ArrayForEach(sh, cJSON_GetObjectItemCaseSensitive(st, "shards")) {
            if (k < 2)
                lanes[k] = (int)jnum(sh, "lanes");
            k++;
        }
        CHECK_EQ(k, 2);
        CHECK(lanes[0] == 2 && lanes[1] == 2, "lanes per shard %d/%d, want 2/2", lanes[0],
              lanes[1]);
        int inst[2] = { 0, 0 };
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(st, "engines")) {
            long long x = jnum(e, "shard");
            if (x == 0 || x == 1)
                inst[x]++;
        }
        CHECK(inst[0] == 1 && inst[1] == 1, "engine instances per shard %d/%d, want 1/1",
              inst[0], inst[1]);
        cJSON_Delete(st);
    }
    if (w[0].c && w[1].c && w[2].c && w[3].c) {
        run_workers(w, 4);
        uint64_t ok = 0;
        for (int i = 0; i < 4; i++) {
            CHECK(w[i].wrong == 0, "agent %d: %llu wrong results", i,
                  (unsigned long long)w[i].wrong);
            CHECK_EQ(w[i].ok, 3000);
            ok += w[i].ok;
        }
        st = status_json(s.sock);
        if (st) {
            long long t[2] = { -1, -1 };
            int k = 0;
            const cJSON *sh;
            cJSON_ArrayForEach(sh, cJSON_GetObjectItemCaseSensitive(st, "shards")) {
                if (k < 2)
                    t[k] = jnum(sh, "tasks_done");
                /* Each thread worked, and for no longer than it has run. */
                const cJSON *b = cJSON_GetObjectItemCaseSensitive(sh, "thread_busy_s");
                const cJSON *wl = cJSON_GetObjectItemCaseSensitive(sh, "thread_wall_s");
                CHECK(cJSON_IsNumber(b) && cJSON_IsNumber(wl) && b->valuedouble > 0 &&
                          b->valuedouble <= wl->valuedouble,
                      "shard %d: busy %.3f s of %.3f s", k, cJSON_IsNumber(b) ? b->valuedouble : -1,
                      cJSON_IsNumber(wl) ? wl->valuedouble : -1);
                k++;
            }
            fprintf(stderr, "   tasks by shard: %lld / %lld, total %lld\n", t[0], t[1],
                    jnum(st, "tasks_done"));
            CHECK(t[0] == 6000 && t[1] == 6000, "tasks per shard %lld/%lld, want 6000 each", t[0],
                  t[1]);
            CHECK_EQ(jnum(st, "tasks_done"), (long long)ok);
            cJSON_Delete(st);
        }
    }
    close_workers(w);
    CHECK_EQ(rel_sup_stop(&s), 0);
    rel_sup_cleanup(&s);
}

static void test_cut(void)
{
    fprintf(stderr, "== (b) a shard thread finds a broken lane; the main thread cuts it\n");
    struct rel_sup s;
    rel_sup_init(&s, "shc");
    const char *args[] = { "--backend", "identity", "--data-threads", "2", NULL };
    if (rel_sup_start(&s, args))
        return;
    oag_client *a = NULL;
    CHECK_EQ(oag_connect(&a, s.sock), 0);
    struct rel_raw r;
    CHECK_EQ(rel_raw_connect(&r, s.sock, -1), 0);
    CHECK_EQ(r.hdr.shard, 1);
    if (a && r.lane) {
        /* A served task first: shard 1 has this lane in its sweep. */
        rel_raw_submit(&r, 1, 16, 1);
        uint64_t t = 0;
        int32_t stt = -1;
        uint64_t end = h_now_ms() + 3000;
        while (!rel_raw_take(&r, &t, &stt) && h_now_ms() < end)
            h_sleep_ms(1);
        CHECK(t == 1 && stt == 0, "raw agent's first task: ticket %llu status %d",
              (unsigned long long)t, stt);
        /* Then an index far past the ring. */
        r.prod += 10 * r.hdr.sub_slots;
        oag_store_release_u32(&r.ctl->sub_prod, r.prod);
        uint64_t one = 1;
        if (write(r.doorbell, &one, sizeof one) < 0) {
            /* EAGAIN: rung */
        }
        CHECK(rel_raw_hungup(&r, 3000), "the broken lane was not cut");
        CHECK_EQ(rel_status_num(s.sock, "cut_offs"), 1);
        uint8_t in[32] = "shard zero", out[32];
        size_t ol = 0;
        CHECK_EQ(oag_infer(a, in, sizeof in, out, sizeof out, &ol, 3000), 0);
        CHECK(ol == sizeof in && !memcmp(in, out, sizeof in), "agent on shard 0: wrong result");
        rel_raw_close(&r);
        struct rel_raw r2;
        CHECK_EQ(rel_raw_connect(&r2, s.sock, -1), 0);
        if (r2.lane) {
            CHECK_EQ(r2.hdr.shard, 1);
            rel_raw_submit(&r2, 9, 8, 1);
            t = 0;
            stt = -1;
            end = h_now_ms() + 3000;
            while (!rel_raw_take(&r2, &t, &stt) && h_now_ms() < end)
                h_sleep_ms(1);
            CHECK(t == 9 && stt == 0, "new agent on shard 1: ticket %llu status %d",
                  (unsigned long long)t, stt);
        }
        rel_raw_close(&r2);
    }
    if (a)
        oag_close(a);
    CHECK_EQ(rel_sup_stop(&s), 0);
    rel_sup_cleanup(&s);
}

static void test_busy(void)
{
    fprintf(stderr, "== (c) a full queue is one shard's\n");
    struct rel_sup s;
    rel_sup_init(&s, "shb");
    const char *args[] = { "--backend", "identity", "--data-threads", "2", "--max-batch", "64",
                           "--max-queue", "16", "--max-delay-us", "400000", NULL };
    if (rel_sup_start(&s, args))
        return;
    oag_client *a = NULL, *b = NULL;
    CHECK_EQ(oag_connect(&a, s.sock), 0);
    CHECK_EQ(oag_connect(&b, s.sock), 0);
    if (a && b) {
        char in[8] = "busy";
        int sent_a = 0, rc = 0;
        uint64_t t;
        uint64_t end = h_now_ms() + 300;
        while (h_now_ms() < end) {
            rc = oag_submit(a, in, sizeof in, &t);
            if (rc == -EBUSY)
                break;
            if (rc == 0)
                sent_a++;
            h_sleep_ms(1);
        }
        CHECK_EQ(rc, -EBUSY);
        CHECK(sent_a >= 8, "shard 0 refused after %d tasks (its share is 8)", sent_a);
        CHECK_EQ(oag_submit(b, in, sizeof in, &t), 0); /* shard 1's queue is empty */
        oag_completion d[64];
        int got_a = 0, got_b = 0;
        end = h_now_ms() + 5000;
        while ((got_a < sent_a || got_b < 1) && h_now_ms() < end) {
            int n = oag_poll(a, d, 64, 5);
            for (int i = 0; i < n; i++)
                got_a += d[i].status == 0;
            n = oag_poll(b, d, 64, 5);
            for (int i = 0; i < n; i++)
                got_b += d[i].status == 0;
        }
        CHECK_EQ(got_a, sent_a);
        CHECK_EQ(got_b, 1);
    }
    if (a)
        oag_close(a);
    if (b)
        oag_close(b);
    CHECK_EQ(rel_sup_stop(&s), 0);
    rel_sup_cleanup(&s);
}

static void test_churn(void)
{
    fprintf(stderr, "== (d) status, attach and detach while both shards are busy\n");
    struct rel_sup s;
    rel_sup_init(&s, "shd");
    const char *args[] = { "--backend", "identity", "--data-threads", "2", "--max-batch", "16",
                           NULL };
    if (rel_sup_start(&s, args))
        return;
    struct worker w[4];
    connect_workers(w, s.sock, 10, 4000, 0);
    if (w[0].c && w[1].c && w[2].c && w[3].c) {
        for (int i = 0; i < 4; i++)
            pthread_create(&w[i].th, NULL, worker_main, &w[i]);
        int statuses = 0, attaches = 0;
        for (int k = 0; k < 40; k++) {
            cJSON *st = status_json(s.sock);
            statuses += st != NULL;
            cJSON_Delete(st);
            oag_client *c = NULL;
            if (oag_connect(&c, s.sock) == 0) {
                uint8_t in[16] = "churn", out[16];
                size_t ol = 0;
                if (oag_infer(c, in, sizeof in, out, sizeof out, &ol, 3000) == 0 &&
                    ol == sizeof in && !memcmp(in, out, sizeof in))
                    attaches++;
                oag_close(c);
            }
        }
        for (int i = 0; i < 4; i++)
            pthread_join(w[i].th, NULL);
        CHECK_EQ(statuses, 40);
        CHECK_EQ(attaches, 40);
        for (int i = 0; i < 4; i++) {
            CHECK(w[i].wrong == 0, "agent %d: %llu wrong results", i,
                  (unsigned long long)w[i].wrong);
            CHECK_EQ(w[i].ok, 4000);
        }
        CHECK_EQ(rel_status_num(s.sock, "tasks_done"), 4 * 4000 + 40);
    }
    close_workers(w);
    CHECK_EQ(rel_sup_stop(&s), 0);
    rel_sup_cleanup(&s);
}

int main(void)
{
    h_init(150);
    if (!getenv("OAG_SUPERVISOR"))
        return H_SKIP;
    test_spread();
    test_cut();
    test_busy();
    test_churn();
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
