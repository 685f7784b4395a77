/*
 * test_forward.c - a supervisor without an engine of its own (--backend remote --forward URL)
 * serves a fleet over shared memory and runs every batch on another supervisor through the
 * network: the agents (agent_worker, mixed modes) get every result right, none lost or
 * duplicated, the fleet exits 0, and the serving supervisor counts the tasks.
 */
#include "nethelp.h"

int main(void)
{
    h_init(60);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", n_free_port());
    const char *xa[] = { "--listen", ep, NULL };
    struct h_sup a, f;
    memset(&f, 0, sizeof f);
    if (h_sup_start(&a, "fwda", 0700, xa, NULL))
        goto out;
    long long before = -1;
    struct h_status st;
    if (h_status(&a, &st) == 0)
        before = st.tasks_done;
    const char *w = h_env_bin("OAG_AGENT_WORKER");
    const char *xf[] = { "--backend", "remote", "--forward", ep, "--agents", "3",
                         "--exit-with-fleet", NULL };
    const char *cmd[] = { w, "--tasks", "5000", "--mix", "--vary", "--size", "512", NULL };
    uint64_t t0 = h_now_ms();
    if (h_sup_start(&f, "fwdf", 0700, xf, cmd))
        goto out;
    int rc = h_sup_wait(&f, 40000);
    CHECK(rc >= 0 && WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "forwarding supervisor: wait status "
          "0x%x (its agents failed, or it did not finish)", rc);
    long long after = h_status(&a, &st) == 0 ? st.tasks_done : -1;
    fprintf(stderr, "forward: 3 agents x 5000 tasks through the remote engine in %llu ms; the "
                    "serving supervisor ran %lld tasks\n",
            (unsigned long long)(h_now_ms() - t0), after - before);
    CHECK(after - before >= 15000, "the serving supervisor ran %lld tasks, want >= 15000",
          after - before);
out:
    if (f.pid)
        h_cleanup(&f);
    h_cleanup(&a);
    if (h_failures) {
        fprintf(stderr, "%d failure(s)\n", h_failures);
        return 1;
    }
    printf("net_forward: ok\n");
    return 0;
}
