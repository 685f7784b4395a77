/*
 * test_stop.c - scenario 2: an agent stopped (SIGSTOP) for a long time, then continued; and
 * fencing by lane generation when an agent's connection ends while it still holds its lane.
 *
 * oag has no heartbeat timeout by design: an agent is dead when its process exits (pidfd) or
 * its control connection ends, never because it has been quiet (heartbeats declared busy
 * processes dead under load in iceoryx, which switched them off). So:
 *   (a) a fleet agent stopped for 3 s (OAG_LONG=1: 15 s), far longer than its heartbeat stays
 *       "now" in oag-ctl status, is NOT declared dead: same pid, same lane generation, no
 *       restart, still attached; the other agents keep progressing meanwhile; once continued it
 *       progresses again and has seen no wrong, lost or duplicated result (agent_worker checks);
 *   (b) a raw agent whose connection ends (it shuts its socket down) is fenced: its lane is
 *       reclaimed, tasks it writes into the old lane afterwards (doorbell rung) are never taken
 *       (no completion appears, the supervisor's task count does not move), and it reconnects
 *       under the same lane id with a larger generation and is served again.
 */
#include "rel.h"

#define NAG 3

static long long progress_done(const char *dir, int id, long long *errors)
{
    char p[400], buf[128];
    snprintf(p, sizeof p, "%s/agent-%d.progress", dir, id);
    if (!rel_read_file(p, buf, sizeof buf))
        return -1;
    long long pid = 0, done = -1, err = 0;
    if (sscanf(buf, "%lld %lld %lld", &pid, &done, &err) != 3)
        return -1;
    if (errors)
        *errors = err;
    return done;
}

static void part_a(int lng)
{
    char pdir[256];
    h_tmpdir(pdir, sizeof pdir, "stopprog", 0700);
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    const char *extra[] = { "--backend", "identity", "--agents", "3", NULL };
    const char *cmd[] = { worker, "--forever", "--window", "8", "--progress-dir", pdir, "--quiet",
                          NULL };
    struct h_sup s;
    if (h_sup_start(&s, "stop", 0700, extra, cmd)) {
        h_cleanup(&s);
        h_rmtree(pdir);
        return;
    }
    struct h_status st0, st1;
    if (h_wait_running(&s, NAG, 50, 10000, &st0)) {
        CHECK(0, "fleet not running");
        h_cleanup(&s);
        h_rmtree(pdir);
        return;
    }
    const struct h_agent *v0 = h_find_agent(&st0, 1);
    int victim = v0 ? v0->pid : -1;
    long long gen0 = v0 ? v0->generation : -1;
    long long others0[NAG];
    for (int i = 0; i < NAG; i++)
        others0[i] = progress_done(pdir, i, NULL);
    unsigned stop_ms = lng ? 15000 : 3000;
    printf("(a) SIGSTOP agent 1 (pid %d) for %u ms\n", victim, stop_ms);
    kill(victim, SIGSTOP);
    uint64_t end = h_now_ms() + stop_ms;
    int checks = 0;
    while (h_now_ms() < end) {
        h_sleep_ms(500);
        if (h_status(&s, &st1) == 0) {
            const struct h_agent *v = h_find_agent(&st1, 1);
            CHECK(v && v->pid == victim && !strcmp(v->state, "running") && v->restarts == 0 &&
                  v->generation == gen0,
                  "stopped agent declared dead: pid %d state %s restarts %d generation %lld",
                  v ? v->pid : -1, v ? v->state : "?", v ? v->restarts : -1,
                  v ? v->generation : -1);
            checks++;
        }
    }
    long long mid[NAG];
    for (int i = 0; i < NAG; i++)
        mid[i] = progress_done(pdir, i, NULL);
    for (int i = 0; i < NAG; i++)
        if (i != 1)
            CHECK(mid[i] > others0[i] + 100, "agent %d made no progress while agent 1 was "
                  "stopped (%lld -> %lld)", i, others0[i], mid[i]);
    kill(victim, SIGCONT);
    end = h_now_ms() + 5000;
    long long after = -1, err = 0;
    while (h_now_ms() < end && (after = progress_done(pdir, 1, &err)) <= mid[1] + 100)
        h_sleep_ms(20);
    CHECK(after > mid[1] + 100, "agent 1 did not progress after SIGCONT (%lld -> %lld)", mid[1],
          after);
    CHECK_EQ(err, 0);
    if (h_status(&s, &st1) == 0) {
        const struct h_agent *v = h_find_agent(&st1, 1);
        CHECK(v && v->pid == victim && v->restarts == 0 && v->generation == gen0,
              "agent 1 was restarted or re-attached across the stop");
    }
    printf("    %d status checks while stopped: never declared dead; others progressed "
           "(%lld, %lld tasks); agent 1 resumed (%lld -> %lld), errors %lld\n", checks,
           mid[0] - others0[0], mid[2] - others0[2], mid[1], after, err);
    h_cleanup(&s);
    h_rmtree(pdir);
}

static void part_b(void)
{
    struct rel_sup s;
    rel_sup_init(&s, "fence");
    const char *args[] = { "--backend", "identity", "--max-payload", "256", "--ring-slots", "16",
                           NULL };
    if (rel_sup_start(&s, args)) {
        CHECK(0, "start failed");
        rel_sup_cleanup(&s);
        return;
    }
    struct rel_raw r;
    int rc = rel_raw_connect(&r, s.sock, -1);
    CHECK_EQ(rc, 0);
    if (rc) {
        rel_sup_cleanup(&s);
        return;
    }
    uint32_t lane_id = r.hdr.lane_id, gen = r.generation;
    /* Served normally first. */
    for (int i = 0; i < 4; i++)
        rel_raw_submit(&r, 100 + (uint64_t)i, 32, 1);
    int got = 0;
    uint64_t end = h_now_ms() + 2000, t;
    int32_t stc;
    while (got < 4 && h_now_ms() < end)
        got += rel_raw_take(&r, &t, &stc);
    CHECK_EQ(got, 4);
    long long done0 = rel_status_num(s.sock, "tasks_done");
    /* The connection ends; the agent keeps its lane mapping and writes late. */
    shutdown(r.sock, SHUT_RDWR);
    for (int k = 0; k < 200 && rel_status_num(s.sock, "lanes") != 0; k++)
        h_sleep_ms(5);
    CHECK_EQ(rel_status_num(s.sock, "lanes"), 0);
    for (int i = 0; i < 8; i++)
        rel_raw_submit(&r, 200 + (uint64_t)i, 32, 1);
    h_sleep_ms(300); /* several backstop intervals */
    int late = 0;
    while (rel_raw_take(&r, &t, &stc))
        late++;
    long long done1 = rel_status_num(s.sock, "tasks_done");
    CHECK(late == 0, "%d late tasks were answered after the lane was reclaimed", late);
    CHECK(done1 == done0, "supervisor took late tasks (tasks_done %lld -> %lld)", done0, done1);
    rel_raw_close(&r);
    /* Reconnect: same lane id, next generation, served. */
    rc = rel_raw_connect(&r, s.sock, -1);
    CHECK_EQ(rc, 0);
    if (rc == 0) {
        CHECK(r.hdr.lane_id == lane_id && r.generation > gen,
              "reconnect got lane %u generation %u (before: lane %u generation %u)",
              r.hdr.lane_id, r.generation, lane_id, gen);
        rel_raw_submit(&r, 300, 32, 1);
        got = 0;
        end = h_now_ms() + 2000;
        while (!got && h_now_ms() < end)
            got = rel_raw_take(&r, &t, &stc);
        CHECK(got && t == 300 && stc == 0, "reconnected agent not served");
        printf("(b) connection ended: lane %u generation %u reclaimed, 8 late tasks ignored "
               "(tasks_done %lld -> %lld); reconnected as lane %u generation %u and served\n",
               lane_id, gen, done0, done1, r.hdr.lane_id, r.generation);
        rel_raw_close(&r);
    }
    CHECK(h_sup_alive_pid(s.pid), "supervisor died");
    int st = rel_sup_stop(&s);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: status 0x%x", st);
    rel_sup_cleanup(&s);
}

int main(void)
{
    int lng = rel_long();
    h_init(lng ? 200 : 80);
    part_a(lng);
    part_b();
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
