/*
 * test_kill.c - kill -9 fleet agents at random moments under load, 200 times.
 *
 * The supervisor runs 8 agent_worker --forever agents with immediate restarts. The test picks an
 * agent from `oag-ctl status --json` (agents 2..7; 0 and 1 are bystanders never killed), waits a
 * random few milliseconds, and SIGKILLs it; a fifth of the kills hit an agent that was just
 * restarted and may still be connecting. It checks:
 *   - the supervisor survives throughout;
 *   - agents that were not killed keep making progress (their task counts grow between
 *     snapshots) and never die on their own (restarts == kills for every agent: a worker that
 *     saw a wrong or lost result exits 1 and would show up as an extra restart);
 *   - killed agents restart and reattach: state "running" again with a new pid and a larger lane
 *     generation, within 10 s;
 *   - after the 200 kills, /dev/shm entries, the supervisor's open fds and its mappings are back
 *     to the baseline taken after start-up (within 2), so nothing leaks per agent death;
 *   - SIGTERM then stops it cleanly (exit 0) and nothing of the instance is left in /dev/shm.
 *
 * Three waker threads write the agents' wake-ups (--waker-threads 3; each burst starts at the next
 * one), so a killed agent's eventfd is closed while wake-ups for it may sit in any of them: the
 * check is that none reaches a reused fd (a bystander woken wrongly or never would stall) and
 * that the wakers did write wake-ups (status: waker_threads 3, wakes_by_thread > 0).
 *
 * Environment: OAG_SUPERVISOR, OAG_CTL, OAG_AGENT_WORKER; OAG_KILLS overrides 200.
 * The kill_inflight variant runs the engine on a worker thread with 2 ms batches
 * (OAG_FAULT_ENGINE_THREADED, OAG_FAULT_ENGINE_DELAY_US; test builds) so that agents die while
 * the engine reads and writes their lanes by pointer, and requires (OAG_KILL_EXPECT_DROPPED=1)
 * that results were indeed dropped for lanes gone mid-batch: the lanes' memory must outlive
 * them until the batch is back, then go (the mapping count above).
 */
#include "harness.h"

#define NAGENTS 8
#define BYSTANDERS 2 /* agents 0 and 1 are never killed: their progress is checked throughout */
#define PROGRESS_EVERY_MS 1000
#define REATTACH_MS 10000
#define LEAK_SLACK 2

struct track {
    int kills;              /* SIGKILLs sent to this agent id */
    int pending;            /* killed, new incarnation not yet seen running */
    int old_pid;            /* the pid killed last */
    long long old_gen;      /* lane generation of the last incarnation seen running */
    uint64_t killed_ms;
    int restarts0;
    long long gen0;
};

static unsigned rnd_state = 12345;
static unsigned rnd(unsigned n)
{
    rnd_state = rnd_state * 1103515245u + 12345u;
    return (rnd_state >> 8) % n;
}

/* 1 if pid is an agent_worker process that is a child of sup (not reused, not a pre-exec fork). */
static int is_our_agent(int pid, int sup)
{
    char path[64], buf[512];
    if (h_proc_ppid(pid, NULL) != sup)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strstr(buf, "agent_worker") != NULL;
}

struct usage {
    int shm_all, shm_inst, fds, maps;
};

static void measure(const struct h_sup *s, struct usage *u)
{
    char pre[256];
    h_shm_name(pre, sizeof pre, s->name);
    u->shm_all = h_shm_count("");
    u->shm_inst = h_shm_count(pre);
    u->fds = h_count_fds(s->pid);
    u->maps = h_count_maps(s->pid);
}

static int running(const struct h_agent *a) { return !strcmp(a->state, "running") && a->pid > 0; }

int main(void)
{
    h_init(110);
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    h_env_bin("OAG_CTL");
    int total_kills = 200;
    const char *e = getenv("OAG_KILLS");
    if (e && *e)
        total_kills = atoi(e);
    rnd_state ^= (unsigned)getpid();

    const char *const extra[] = { "--agents", "8", "--restart-delay-ms", "1", "--restart-max-ms",
                                  "20", "--restart-burst", "1000000", "--stop-timeout-ms", "2000",
                                  "--waker-threads", "3", NULL };
    const char *const cmd[] = { worker, "--forever", "--window", "16", "--size", "64", "--vary",
                                "--quiet", NULL };
    struct h_sup s;
    if (h_sup_start(&s, "kill", 0700, extra, cmd) != 0)
        goto out;

    struct h_status st, prev;
    printf("kill: waiting for %d agents to run\n", NAGENTS);
    if (h_wait_running(&s, NAGENTS, 100, 20000, &st) != 0) {
        CHECK(0, "fleet did not start");
        goto out;
    }
    h_sleep_ms(300);
    if (h_wait_running(&s, NAGENTS, 100, 5000, &st) != 0) {
        CHECK(0, "fleet not stable after start");
        goto out;
    }
    struct usage base, u;
    measure(&s, &base);
    printf("kill: baseline: /dev/shm %d entries (%d of this instance), supervisor %d fds, "
           "%d mappings\n", base.shm_all, base.shm_inst, base.fds, base.maps);

    struct track tr[H_MAX_AGENTS];
    memset(tr, 0, sizeof tr);
    for (int i = 0; i < st.nagents; i++) {
        int id = st.a[i].id;
        if (id < 0 || id >= H_MAX_AGENTS) {
            CHECK(0, "agent id %d out of range", id);
            goto out;
        }
        tr[id].restarts0 = st.a[i].restarts;
        tr[id].gen0 = tr[id].old_gen = st.a[i].generation;
    }
    prev = st;
    uint64_t prev_ms = h_now_ms(), t0 = h_now_ms();
    int kills = 0, status_fail = 0, handshake_kills = 0, stalls = 0, max_fds = base.fds;
    long long last_total = st.tasks_done;
    uint64_t reattach_sum = 0;
    int reattaches = 0;

    printf("kill: %d SIGKILLs at random moments\n", total_kills);
    while (kills < total_kills) {
        if (!h_sup_alive(&s)) {
            h_describe_status("supervisor", s.status);
            CHECK(0, "supervisor died after %d kills", kills);
            goto out;
        }
        if (h_status(&s, &st) != 0) {
            CHECK(++status_fail < 10, "oag-ctl status keeps failing");
            if (status_fail >= 10)
                goto out;
            h_sleep_ms(20);
            continue;
        }
        status_fail = 0;
        uint64_t now = h_now_ms();
        int fds = h_count_fds(s.pid);
        if (fds > max_fds)
            max_fds = fds;

        /* Reattach: a killed agent is back with a new pid, running, on a newer lane generation. */
        for (int i = 0; i < st.nagents; i++) {
            const struct h_agent *a = &st.a[i];
            struct track *t = &tr[a->id];
            if (t->pending && running(a) && a->pid != t->old_pid && a->generation > t->old_gen &&
                is_our_agent(a->pid, s.pid)) {
                t->pending = 0;
                t->old_gen = a->generation;
                reattach_sum += now - t->killed_ms;
                reattaches++;
            } else if (t->pending && now - t->killed_ms > REATTACH_MS) {
                CHECK(0, "agent %d killed (pid %d) did not come back within %d ms: pid %d state "
                         "%s generation %lld (was %lld)", a->id, t->old_pid, REATTACH_MS, a->pid,
                      a->state, a->generation, t->old_gen);
                goto out;
            } else if (!t->pending && running(a)) {
                t->old_gen = a->generation;
            }
        }

        /* Progress: every agent running with the same pid in both snapshots did work between. */
        if (now - prev_ms >= PROGRESS_EVERY_MS) {
            for (int i = 0; i < st.nagents; i++) {
                const struct h_agent *a = &st.a[i];
                const struct h_agent *p = h_find_agent(&prev, a->id);
                if (!p || !running(a) || !running(p) || p->pid != a->pid) {
                    CHECK(a->id >= BYSTANDERS, "bystander agent %d changed: pid %d -> %d, state "
                          "%s -> %s", a->id, p ? p->pid : -1, a->pid, p ? p->state : "?",
                          a->state);
                    continue;
                }
                if (a->tasks <= p->tasks) {
                    stalls++;
                    CHECK(0, "agent %d (pid %d, not killed) made no progress in %llu ms: tasks "
                             "%lld -> %lld", a->id, a->pid, (unsigned long long)(now - prev_ms),
                          p->tasks, a->tasks);
                }
            }
            CHECK(st.tasks_done > last_total, "supervisor tasks_done stuck at %lld",
                  st.tasks_done);
            last_total = st.tasks_done;
            prev = st;
            prev_ms = now;
        }

        /* Pick a victim: usually a settled running agent; sometimes one just restarted. */
        int cand[H_MAX_AGENTS], nc = 0, fresh = rnd(5) == 0;
        for (int i = 0; i < st.nagents; i++) {
            const struct h_agent *a = &st.a[i];
            const struct track *t = &tr[a->id];
            if (a->id < BYSTANDERS || a->pid <= 0 || a->pid == t->old_pid)
                continue;
            if (fresh ? t->pending : (!t->pending && running(a)))
                cand[nc++] = i;
        }
        if (nc == 0) {
            h_sleep_ms(5);
            continue;
        }
        const struct h_agent *v = &st.a[cand[rnd((unsigned)nc)]];
        if (!is_our_agent(v->pid, s.pid)) {
            h_sleep_ms(2);
            continue;
        }
        h_sleep_ms(rnd(80)); /* a random moment in its submit/poll loop */
        if (kill(v->pid, SIGKILL) != 0) {
            CHECK(errno == ESRCH, "kill(%d): %s", v->pid, strerror(errno));
            continue;
        }
        struct track *t = &tr[v->id];
        if (fresh)
            handshake_kills++;
        else
            t->old_gen = v->generation;
        t->kills++;
        t->pending = 1;
        t->old_pid = v->pid;
        t->killed_ms = h_now_ms();
        kills++;
    }
    printf("kill: %d kills in %.1f s (%d right after a restart), mean reattach %.1f ms\n", kills,
           (double)(h_now_ms() - t0) / 1000.0, handshake_kills,
           reattaches ? (double)reattach_sum / reattaches : 0.0);

    /* Everyone back: running, new generation, then all progressing together. */
    uint64_t end = h_now_ms() + REATTACH_MS;
    int waiting;
    do {
        waiting = 0;
        if (h_status(&s, &st) != 0) {
            waiting = 1;
        } else {
            for (int i = 0; i < st.nagents; i++) {
                const struct h_agent *a = &st.a[i];
                struct track *t = &tr[a->id];
                if (t->pending && running(a) && a->pid != t->old_pid && a->generation > t->old_gen)
                    t->pending = 0;
                if (t->pending || !running(a))
                    waiting++;
            }
            if (st.nagents != NAGENTS)
                waiting++;
        }
        if (waiting)
            h_sleep_ms(50);
    } while (waiting && h_now_ms() < end);
    CHECK(waiting == 0, "%d agent(s) not back and running %d ms after the last kill", waiting,
          REATTACH_MS);
    prev = st;
    h_sleep_ms(1000);
    if (h_status(&s, &st) == 0) {
        for (int i = 0; i < st.nagents; i++) {
            const struct h_agent *a = &st.a[i];
            const struct h_agent *p = h_find_agent(&prev, a->id);
            const struct track *t = &tr[a->id];
            CHECK(p && a->tasks > p->tasks, "agent %d made no progress after the kills", a->id);
            CHECK(a->restarts - t->restarts0 == t->kills,
                  "agent %d: %d restarts for %d kills (an agent died or restarted on its own)",
                  a->id, a->restarts - t->restarts0, t->kills);
            CHECK(a->generation > t->gen0 || t->kills == 0,
                  "agent %d: lane generation %lld not above %lld after %d kills", a->id,
                  a->generation, t->gen0, t->kills);
        }
    }
    CHECK_EQ(stalls, 0);
    if (h_status(&s, &st) == 0) {
        printf("kill: %lld wake-ups, %lld of them by %d waker threads\n", st.wakes,
               st.wakes_by_thread, st.waker_threads);
        CHECK(st.waker_threads == 3 && st.wakes_by_thread > 0,
              "waker threads %d (want 3), %lld wake-ups written by them", st.waker_threads,
              st.wakes_by_thread);
    }
    const char *xd = getenv("OAG_KILL_EXPECT_DROPPED");
    if (xd && *xd == '1' && h_status(&s, &st) == 0) {
        printf("kill: %lld results dropped for agents killed while their rows were in a batch\n",
               st.dropped);
        CHECK(st.dropped > 0, "no result was dropped: no agent died with rows in flight");
    }

    /* Nothing leaked per death: shm, fds, mappings back to baseline (allow a moment to settle). */
    end = h_now_ms() + 5000;
    do {
        measure(&s, &u);
        if (u.shm_inst == base.shm_inst && u.shm_all <= base.shm_all + LEAK_SLACK &&
            u.fds <= base.fds + LEAK_SLACK && u.maps <= base.maps + LEAK_SLACK)
            break;
        h_sleep_ms(100);
    } while (h_now_ms() < end);
    printf("kill: after: /dev/shm %d entries (%d of this instance), supervisor %d fds (peak %d), "
           "%d mappings\n", u.shm_all, u.shm_inst, u.fds, max_fds, u.maps);
    CHECK_EQ(u.shm_inst, base.shm_inst);
    CHECK(u.shm_all <= base.shm_all + LEAK_SLACK, "/dev/shm grew from %d to %d entries",
          base.shm_all, u.shm_all);
    CHECK(u.fds <= base.fds + LEAK_SLACK, "supervisor fds grew from %d to %d", base.fds, u.fds);
    CHECK(u.maps <= base.maps + LEAK_SLACK, "supervisor mappings grew from %d to %d", base.maps,
          u.maps);
    if (u.fds > base.fds + LEAK_SLACK)
        h_dump_fds(s.pid);

    /* Clean stop. */
    kill(s.pid, SIGTERM);
    int ws = h_sup_wait(&s, 10000);
    CHECK(ws >= 0, "supervisor did not exit within 10 s of SIGTERM");
    if (ws >= 0) {
        h_describe_status("supervisor", ws);
        CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "SIGTERM exit status 0x%x", ws);
    }
    CHECK(h_shm_leftovers(s.name) == 0, "shared memory of %s left after exit", s.name);

out:
    h_cleanup(&s);
    if (h_failures) {
        printf("test_kill: %d check(s) FAILED\n", h_failures);
        return 1;
    }
    printf("test_kill: passed\n");
    return 0;
}
