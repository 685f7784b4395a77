/*
 * test_shutdown.c - graceful stop under load. The supervisor runs 3 agent_worker --forever agents
 * and the test's own liboag client, all submitting; then it is stopped (round 1: SIGTERM,
 * round 2: `oag-ctl stop`). It must exit 0 within 4 s; its agents must be gone (none left
 * running, none orphaned to us); nothing named /oag-UID-NAME may remain in /dev/shm and the
 * socket file must be removed. The in-process client must see every task it submitted either
 * completed correctly or cancelled, then -ECONNRESET, never a hang or a wrong result.
 *
 * Environment: OAG_SUPERVISOR, OAG_CTL, OAG_AGENT_WORKER.
 */
#include "harness.h"

#include "oag/oag.h"

#define NAGENTS 3
#define STOP_LIMIT_MS 4000

struct client {
    oag_client *c;
    atomic_int quiesce;   /* main: stop submitting */
    atomic_int quiesced;  /* client: no more submissions will be made */
    atomic_int finished;
    unsigned outstanding_at_quiesce;
    atomic_ullong done;
    unsigned long long cancelled, wrong, lost;
    int end_rc;
};

static void *client_main(void *arg)
{
    struct client *k = arg;
    enum { W = 16, LEN = 48 };
    uint8_t in[W][LEN];
    uint64_t tickets[W] = { 0 };
    uint64_t seq = 0;
    int rc = 0;
    for (;;) {
        for (int i = 0; i < W && !atomic_load(&k->quiesced); i++) {
            if (tickets[i])
                continue;
            for (int b = 0; b < LEN; b++)
                in[i][b] = (uint8_t)(seq * 13 + (uint64_t)b);
            seq++;
            rc = oag_submit(k->c, in[i], LEN, &tickets[i]);
            if (rc == -EAGAIN) {
                tickets[i] = 0;
                rc = 0;
                break;
            }
            if (rc) {
                tickets[i] = 0;
                goto end;
            }
        }
        /* Asked to stop: the window was just refilled, so up to W tasks are in flight now. */
        if (atomic_load(&k->quiesce) && !atomic_load(&k->quiesced)) {
            k->outstanding_at_quiesce = oag_outstanding(k->c);
            atomic_store(&k->quiesced, 1);
        }
        oag_completion d[W];
        int n = oag_poll(k->c, d, W, 10000);
        if (n < 0) {
            rc = n;
            goto end;
        }
        if (n == 0) {
            rc = -ETIMEDOUT; /* 10 s without a completion or a hang-up: a hang */
            goto end;
        }
        for (int j = 0; j < n; j++) {
            int i;
            for (i = 0; i < W; i++)
                if (tickets[i] && tickets[i] == d[j].ticket)
                    break;
            if (i == W) {
                k->wrong++;
                continue;
            }
            tickets[i] = 0;
            if (d[j].status == -ECANCELED)
                k->cancelled++;
            else if (d[j].status != 0 || d[j].len != LEN || memcmp(d[j].data, in[i], LEN))
                k->wrong++;
            else
                atomic_fetch_add(&k->done, 1);
        }
    }
end:
    for (int i = 0; i < W; i++)
        if (tickets[i])
            k->lost++; /* submitted before the stop, never answered */
    k->end_rc = rc;
    atomic_store(&k->finished, 1);
    return NULL;
}

static void round_(const char *how, const char *max_delay_us)
{
    printf("shutdown (%s, max-delay-us %s): %d agents + an in-process client submitting\n", how,
           max_delay_us, NAGENTS);
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    const char *const extra[] = { "--agents", "3", "--max-batch", "1024", "--max-delay-us",
                                  max_delay_us, NULL };
    const char *const cmd[] = { worker, "--forever", "--window", "16", "--vary", "--size", "200",
                                "--quiet", NULL };
    struct h_sup s;
    struct h_status st;
    struct client k;
    memset(&k, 0, sizeof k);
    pthread_t th;
    int th_started = 0;
    if (h_sup_start(&s, "stop", 0700, extra, cmd) != 0)
        goto out;
    if (h_wait_running(&s, NAGENTS, 100, 20000, &st) != 0) {
        CHECK(0, "agents did not start");
        goto out;
    }
    int rc = oag_connect(&k.c, s.sock);
    CHECK(rc == 0, "oag_connect: %d %s", rc, oag_last_error());
    if (rc)
        goto out;
    th_started = pthread_create(&th, NULL, client_main, &k) == 0;
    uint64_t end = h_now_ms() + 5000;
    unsigned long long want = strcmp(max_delay_us, "0") ? 16 : 1000;
    while (atomic_load(&k.done) < want && h_now_ms() < end)
        h_sleep_ms(10);
    CHECK(atomic_load(&k.done) >= want, "in-process client got only %llu results",
          (unsigned long long)atomic_load(&k.done));
    if (h_status(&s, &st) != 0) {
        CHECK(0, "status failed");
        goto out;
    }
    /* Fleet agents only: the in-process client is listed too, as "detached". */
    int pids[H_MAX_AGENTS], np = 0;
    for (int i = 0; i < st.nagents; i++)
        if (st.a[i].pid > 0 && strcmp(st.a[i].state, "detached") != 0)
            pids[np++] = st.a[i].pid;
    CHECK_EQ(np, NAGENTS);

    /* The in-process client stops submitting before the stop request, so that every task it
     * still has out was in the lane when the stop came: each must come back (done or
     * -ECANCELED) before the hang-up. */
    atomic_store(&k.quiesce, 1);
    end = h_now_ms() + 5000;
    while (!atomic_load(&k.quiesced) && !atomic_load(&k.finished) && h_now_ms() < end)
        h_sleep_ms(1);
    CHECK(atomic_load(&k.quiesced), "client did not quiesce");

    uint64_t t0 = h_now_ms();
    if (!strcmp(how, "SIGTERM")) {
        kill(s.pid, SIGTERM);
    } else {
        char out[4096];
        int crc = h_ctl(&s, out, sizeof out, "stop", (const char *)NULL);
        CHECK(crc == 0, "oag-ctl stop exited %d: %s", crc, out);
    }
    int ws = h_sup_wait(&s, 15000);
    uint64_t took = h_now_ms() - t0;
    CHECK(ws >= 0, "supervisor still running 15 s after %s", how);
    if (ws >= 0) {
        h_describe_status("supervisor", ws);
        printf("shutdown (%s): exited after %llu ms\n", how, (unsigned long long)took);
        CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "%s: exit status 0x%x, expected 0", how, ws);
        CHECK(took <= STOP_LIMIT_MS, "%s: took %llu ms (limit %d)", how, (unsigned long long)took,
              STOP_LIMIT_MS);
    }

    /* Its agents are gone: none alive under any parent, none orphaned to us. */
    h_sleep_ms(100);
    for (int i = 0; i < np; i++) {
        char state = 0;
        int ppid = h_proc_ppid(pids[i], &state);
        CHECK(ppid < 0 || state == 'Z', "agent pid %d still alive (state %c, parent %d)", pids[i],
              state, ppid);
    }
    int kids[64];
    CHECK_EQ(h_children(kids, 64, 0), 0);
    CHECK(h_shm_leftovers(s.name) == 0, "%s: shared memory of %s left in /dev/shm", how, s.name);
    CHECK(access(s.sock, F_OK) != 0, "%s: socket %s not removed", how, s.sock);

    /* The in-process client saw the end as a hang-up, not a hang or a wrong result. */
    end = h_now_ms() + 5000;
    while (th_started && !atomic_load(&k.finished) && h_now_ms() < end)
        h_sleep_ms(10);
    CHECK(atomic_load(&k.finished), "in-process client still blocked 5 s after the exit");
    if (atomic_load(&k.finished)) {
        pthread_join(th, NULL);
        th_started = 0;
        printf("shutdown (%s): client: %llu ok, %llu cancelled, %llu never answered (%u out at "
               "the stop), %llu wrong; ended with %d (%s)\n", how,
               (unsigned long long)atomic_load(&k.done), k.cancelled, k.lost,
               k.outstanding_at_quiesce, k.wrong, k.end_rc, oag_strerror(k.end_rc));
        CHECK_EQ(k.wrong, 0);
        CHECK(k.lost == 0, "%s: %llu task(s) in flight at the stop were dropped without a result "
              "or -ECANCELED (\"finish tasks in flight\")", how, k.lost);
        CHECK(k.end_rc == -ECONNRESET, "client ended with %d (%s), expected -ECONNRESET",
              k.end_rc, oag_strerror(k.end_rc));
    }

out:
    h_cleanup(&s);
    if (th_started) {
        /* The client is stuck (already reported); do not touch it again. */
        pthread_detach(th);
    } else {
        oag_close(k.c);
    }
}

int main(void)
{
    h_init(80);
    h_env_bin("OAG_CTL");
    round_("SIGTERM", "0");
    round_("oag-ctl stop", "0");
    /* Tasks wait up to 300 ms for a batch to fill: the stop lands while they are queued. */
    round_("SIGTERM", "300000");
    if (h_failures) {
        printf("test_shutdown: %d check(s) FAILED\n", h_failures);
        return 1;
    }
    printf("test_shutdown: passed\n");
    return 0;
}
