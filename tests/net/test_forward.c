/*
 * test_forward.c - a supervisor without an engine of its own (--backend remote --forward URL)
 * serves a fleet over shared memory and runs every batch on another supervisor through the
 * network: the agents (agent_worker, mixed modes) get every result right, none lost or
 * duplicated, the fleet exits 0, and the serving supervisor counts the tasks. Then overflow:
 * a supervisor with its own engine and a full queue sends its agents' tasks to the other one
 * (--forward) instead of refusing them; every task completes exactly once.
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

    /* Overflow: a supervisor with an engine of its own and a tiny queue (--max-queue 4),
     * --forward to a: while its queue is full, oag_submit sends tasks to a instead of -EBUSY.
     * (The supervisor hands OAG_FORWARD to the agents it launches; this test's own process is
     * the agent here, so it sets it itself.) */
    {
        struct h_sup o;
        /* Batches wait 200 ms for 8 tasks a queue of 4 never holds: the queue stays full. */
        const char *xo[] = { "--backend", "identity", "--forward", ep, "--max-queue", "4",
                             "--max-batch", "8", "--max-delay-us", "200000", NULL };
        if (h_sup_start(&o, "fwdo", 0700, xo, NULL) == 0) {
            setenv("OAG_FORWARD", ep, 1);
            oag_client *c = NULL;
            int r = oag_connect(&c, o.sock);
            unsetenv("OAG_FORWARD");
            CHECK(r == 0, "connect: %s (%s)", oag_strerror(r), oag_last_error());
            if (r == 0) {
                struct n_load l;
                n_load_init(&l, c, 20000, 128, 64);
                uint64_t end = h_now_ms() + 30000;
                while (l.completed < l.total && h_now_ms() < end && n_load_step(&l, 100) >= 0)
                    ;
                uint32_t fwd = 0;
                for (uint32_t i = 0; i < l.submitted; i++)
                    fwd += (l.ticket_of[i] >> 63) != 0;
                fprintf(stderr, "overflow: %u of %u tasks went to the other supervisor; %u done, "
                                "bad %u dup %u errors %u missing %u\n", fwd, l.submitted,
                        l.completed, l.bad, l.dup, l.errs, n_load_missing(&l));
                CHECK(fwd > 0, "no task overflowed");
                CHECK(fwd < l.submitted, "every task overflowed");
                CHECK(l.completed == l.total && !n_load_missing(&l) && !l.bad && !l.dup &&
                      !l.errs, "overflow: %u of %u done, bad %u dup %u errors %u", l.completed,
                      l.total, l.bad, l.dup, l.errs);
                CHECK(oag_outstanding(c) == 0, "%u outstanding", oag_outstanding(c));
                n_load_fini(&l);
                oag_close(c);
            }
        }
        kill(o.pid, SIGTERM);
        h_sup_wait(&o, 5000);
        h_cleanup(&o);
    }
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
