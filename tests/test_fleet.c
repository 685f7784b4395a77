/*
 * test_fleet.c - a fleet end to end: the supervisor launches 8 agent_worker processes that each
 * submit 100k tasks through their lanes and verify every result (identity backend: equal to the
 * input, none lost, none twice). With --exit-with-fleet the supervisor exits 0 only if every
 * agent exited 0, so its exit code is the verdict; afterwards nothing named /oag-UID-NAME may be
 * left in /dev/shm and the control socket must be gone.
 *
 * Environment: OAG_SUPERVISOR, OAG_AGENT_WORKER; OAG_FLEET_TASKS overrides 100000.
 */
#include "harness.h"

int main(void)
{
    h_init(170);
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    const char *tasks = getenv("OAG_FLEET_TASKS");
    if (!tasks || !*tasks)
        tasks = "100000";

    /* --mix: by agent id, windows of 32, 1 and the whole lane (-EAGAIN when full), and
     * synchronous oag_infer(); --vary: lengths 16..96 bytes. */
    /* Two waker threads (bursts alternate between them), also under TSan. */
    const char *const extra[] = { "--agents", "8", "--exit-with-fleet", "--waker-threads", "2",
                                  NULL };
    const char *const cmd[] = { worker, "--tasks", tasks, "--window", "32", "--size", "96",
                                "--vary", "--mix", "--quiet", NULL };
    printf("fleet: 8 agents x %s tasks, each verified by the agent\n", tasks);
    struct h_sup s;
    uint64_t t0 = h_now_ms();
    if (h_sup_start(&s, "fleet", 0700, extra, cmd) != 0) {
        h_cleanup(&s);
        return 1;
    }
    int st = h_sup_wait(&s, 150000);
    double secs = (double)(h_now_ms() - t0) / 1000.0;
    if (st < 0) {
        CHECK(0, "supervisor did not exit within 150 s (fleet still running or exit-with-fleet broken)");
    } else {
        h_describe_status("supervisor", st);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "supervisor with --exit-with-fleet must exit 0 when all agents verified their "
              "results (status 0x%x)", st);
        printf("fleet: done in %.1f s\n", secs);
    }

    /* Nothing may outlive the supervisor: no agents, no shm, no socket file. */
    int kids[64];
    int nk = h_children(kids, 64, 0);
    CHECK_EQ(nk, 0);
    char shm[256];
    h_shm_name(shm, sizeof shm, s.name);
    printf("fleet: checking /dev/shm/%s* and %s are gone\n", shm, s.sock);
    CHECK(h_shm_leftovers(s.name) == 0, "shared memory of instance %s left in /dev/shm", s.name);
    CHECK(access(s.sock, F_OK) != 0, "socket %s still exists after exit", s.sock);

    h_cleanup(&s);
    if (h_failures) {
        printf("test_fleet: %d check(s) FAILED\n", h_failures);
        return 1;
    }
    printf("test_fleet: passed\n");
    return 0;
}
