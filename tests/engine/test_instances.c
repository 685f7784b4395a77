/*
 * test_instances.c - several engine instances behind one batcher (the code path of one
 * instance per GPU, run here with the identity engine as --instances 2):
 *
 *   1. no fault: 4 verifying agents x 20000 tasks; batches go to both instances (least loaded
 *      first), every result is right (the supervisor exits 0 with --exit-with-fleet);
 *   2. instance 1 fails every batch (OAG_FAULT_ENGINE_INSTANCE=1): it leaves the rotation after
 *      3 failures in a row, each failed batch runs again on instance 0, and every task still
 *      completes right (no task fails: tasks_failed 0, exit 0), batches_retried > 0.
 *
 * Needs a -Dfault_injection=true build (OAG_FAULT_BUILD): the instances run on worker threads
 * with 300 us batches (OAG_FAULT_ENGINE_THREADED, OAG_FAULT_ENGINE_DELAY_US) so that both are
 * busy at once; skips (77) without it.
 */
#include "../harness.h"

struct snap {
    long long batches[2], errors[2], retried, engine_errors, tasks_failed;
    int failed1, ok;
};

static int snapshot(const struct h_sup *s, struct snap *sn)
{
    cJSON *j = h_status_json(s);
    if (!j)
        return -1;
    int ok = 1;
    struct snap n = { 0 };
    n.retried = h_json_ll(j, "batches_retried", &ok);
    n.engine_errors = h_json_ll(j, "engine_errors", &ok);
    n.tasks_failed = h_json_ll(j, "tasks_failed", &ok);
    const cJSON *e, *arr = cJSON_GetObjectItemCaseSensitive(j, "engines");
    cJSON_ArrayForEach(e, arr)
    {
        int k = (int)h_json_ll(e, "instance", &ok);
        if (k < 0 || k > 1)
            continue;
        n.batches[k] += h_json_ll(e, "batches", &ok);
        n.errors[k] += h_json_ll(e, "errors", &ok);
        if (k == 1 && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "failed")))
            n.failed1 = 1;
    }
    cJSON_Delete(j);
    if (!ok)
        return -1;
    n.ok = 1;
    *sn = n;
    return 0;
}

/* Runs the fleet to its end; returns the supervisor's wait status, the last status snapshot in
 * *last (and whether instance 1 was ever seen out of rotation). */
static int run(const char *tag, struct snap *last, int *saw_failed1)
{
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    const char *const extra[] = { "--backend", "identity", "--instances", "2", "--agents", "4",
                                  "--exit-with-fleet", "--max-batch", "64", NULL };
    const char *const cmd[] = { worker, "--tasks", "20000", "--window", "32", "--size", "256",
                                "--vary", "--quiet", NULL };
    struct h_sup s;
    memset(last, 0, sizeof *last);
    *saw_failed1 = 0;
    if (h_sup_start(&s, tag, 0700, extra, cmd) != 0)
        return -1;
    int st = -1;
    uint64_t end = h_now_ms() + 60000;
    while (h_now_ms() < end) {
        struct snap sn;
        if (h_sup_alive(&s) && snapshot(&s, &sn) == 0) {
            *last = sn;
            *saw_failed1 |= sn.failed1;
        }
        if (!h_sup_alive(&s)) {
            st = s.status;
            break;
        }
        h_sleep_ms(50);
    }
    if (st == -1)
        CHECK(0, "%s: the fleet did not finish within 60 s", tag);
    h_cleanup(&s);
    return st;
}

int main(void)
{
    h_init(110);
    if (!getenv("OAG_FAULT_BUILD"))
        return H_SKIP;
    h_env_bin("OAG_CTL");
    setenv("OAG_FAULT_ENGINE_THREADED", "1", 1);
    setenv("OAG_FAULT_ENGINE_DELAY_US", "300", 1);

    struct snap sn;
    int failed1;
    int st = run("inst-ok", &sn, &failed1);
    printf("instances: no fault: batches %lld + %lld, engine errors %lld, exit 0x%x\n",
           sn.batches[0], sn.batches[1], sn.engine_errors, st);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "no fault: the fleet did not verify every result (status 0x%x)", st);
    CHECK(sn.ok, "no status snapshot");
    CHECK(sn.batches[0] > 0 && sn.batches[1] > 0, "batches not spread: %lld + %lld",
          sn.batches[0], sn.batches[1]);
    CHECK_EQ(sn.engine_errors, 0);

    setenv("OAG_FAULT_ENGINE_INSTANCE", "1", 1);
    st = run("inst-fail", &sn, &failed1);
    printf("instances: instance 1 failing: batches %lld + %lld, engine errors %lld, batches "
           "retried %lld, tasks failed %lld, instance 1 out of rotation seen %d, exit 0x%x\n",
           sn.batches[0], sn.batches[1], sn.engine_errors, sn.retried, sn.tasks_failed, failed1,
           st);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "instance 1 failing: a task failed or came back wrong (status 0x%x)", st);
    CHECK(sn.ok, "no status snapshot");
    CHECK(sn.engine_errors > 0, "the injected failures did not happen");
    CHECK(sn.retried > 0, "no failed batch was run again on instance 0");
    CHECK_EQ(sn.tasks_failed, 0);
    CHECK(failed1, "instance 1 was never seen out of rotation");
    CHECK(sn.batches[0] > 0, "instance 0 ran nothing");
    if (h_failures) {
        fprintf(stderr, "test_instances: %d failure(s)\n", h_failures);
        return 1;
    }
    printf("test_instances: ok\n");
    return 0;
}
