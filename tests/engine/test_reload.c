/*
 * test_reload.c - serving a model on the cpu engine through the supervisor, and reloading it:
 *  1. a supervisor given a malformed model refuses to start (non-zero exit, the loader's message);
 *  2. agents get model rows (oag_info input/output widths) and correct-sized results;
 *  3. `oag-ctl reload DIR` while an agent keeps tasks in flight: every task completes with
 *     status 0 (none lost, none failed), the model version bumps, and results afterwards come
 *     from the new weights (they differ from before for the same input);
 *  4. reloading a malformed model fails with the loader's message and the old model keeps
 *     serving.
 */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "../harness.h"
#include "oag/oag.h"

static const char *gen_bin;

static int gen_model(const char *dir, int seed)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --out %s --input 16 --hidden 32 --output 8 --layers 2 "
                              "--dtype float16 --act relu --seed %d --name m%d >/dev/null",
             gen_bin, dir, seed, seed);
    return system(cmd);
}

/* Runs one task and copies its 8 output floats. Returns the status. */
static int infer_row(oag_client *c, float out[8])
{
    float in[16];
    for (int i = 0; i < 16; i++)
        in[i] = (float)i / 8.0f - 1.0f;
    size_t len = 0;
    int rc = oag_infer(c, in, sizeof in, out, 8 * sizeof(float), &len, 5000);
    if (rc == 0 && len != 8 * sizeof(float))
        return -EBADMSG;
    return rc;
}

int main(void)
{
    h_init(110);
    gen_bin = getenv("OAG_GEN_MODEL");
    if (!getenv("OAG_SUPERVISOR") || !gen_bin)
        return H_SKIP;
    char tmp[256];
    h_tmpdir(tmp, sizeof tmp, "reload", 0700);
    char a[300], b[300], bad[300];
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    snprintf(bad, sizeof bad, "%s/bad", tmp);
    CHECK_EQ(gen_model(a, 1), 0);
    CHECK_EQ(gen_model(b, 2), 0);
    CHECK_EQ(gen_model(bad, 3), 0);
    /* Truncate the bad model's weights: offsets now point past the end of the file. */
    char path[400];
    snprintf(path, sizeof path, "%s/model.safetensors", bad);
    CHECK_EQ(truncate(path, 200), 0);

    fprintf(stderr, "== a malformed model: the supervisor refuses to start\n");
    {
        struct h_sup s;
        const char *extra[] = { "--backend", "cpu", "--model", bad, NULL };
        int saved = h_failures;
        int rc = h_sup_start(&s, "rlbad", 0700, extra, NULL);
        h_failures = saved; /* failing to start is what we expect here */
        CHECK(rc != 0, "the supervisor started with a truncated model");
        if (rc != 0) {
            int st = h_sup_wait(&s, 5000);
            CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) != 0,
                  "expected a non-zero exit, status 0x%x", st);
        }
        h_cleanup(&s);
    }

    fprintf(stderr, "== serving model a, reloading b under load, then a broken model\n");
    struct h_sup s;
    const char *extra[] = { "--backend", "cpu", "--model", a, "--threads", "1", NULL };
    if (h_sup_start(&s, "rl", 0700, extra, NULL) == 0) {
        oag_client *c;
        int rc = oag_connect(&c, s.sock);
        CHECK_EQ(rc, 0);
        if (rc == 0) {
            oag_info info;
            CHECK_EQ(oag_get_info(c, &info), 0);
            CHECK_EQ(info.input_dim, 16);
            CHECK_EQ(info.output_dim, 8);
            CHECK_EQ(info.ready, 1);
            CHECK(!strcmp(info.engine, "cpu"), "engine %s", info.engine);
            uint32_t v0 = info.model_version;
            float before[8], after[8];
            CHECK_EQ(infer_row(c, before), 0);

            /* A wrong-sized row is refused by the engine, not computed. */
            float small[4] = { 0 };
            float o[8];
            size_t len;
            CHECK_EQ(oag_infer(c, small, sizeof small, o, sizeof o, &len, 5000), -EINVAL);

            /* Keep a window of tasks in flight across the reload. */
            pid_t ctl = fork();
            if (ctl == 0) {
                h_sleep_ms(100);
                char out[2048];
                int r = h_ctl(&s, out, sizeof out, "reload", b, NULL);
                fprintf(stderr, "    oag-ctl reload: %s", out);
                _exit(r == 0 ? 0 : 1);
            }
            float in[16] = { 0.5f };
            long done = 0, failed = 0, inflight = 0;
            uint64_t end = h_now_ms() + 1500;
            while (h_now_ms() < end || inflight > 0) {
                while (h_now_ms() < end && oag_submit(c, in, sizeof in, NULL) == 0)
                    inflight++;
                oag_completion d[64];
                int n = oag_poll(c, d, 64, 100);
                CHECK(n >= 0, "poll: %d", n);
                if (n < 0)
                    break;
                for (int i = 0; i < n; i++) {
                    inflight--;
                    if (d[i].status == 0 && d[i].len == 32)
                        done++;
                    else
                        failed++;
                }
            }
            int st;
            waitpid(ctl, &st, 0);
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "oag-ctl reload failed");
            fprintf(stderr, "    %ld tasks completed across the reload, %ld failed\n", done,
                    failed);
            CHECK(done > 100, "only %ld tasks completed", done);
            CHECK_EQ(failed, 0);
            CHECK_EQ(oag_get_info(c, &info), 0);
            CHECK(info.model_version == v0 + 1, "model version %u, expected %u",
                  info.model_version, v0 + 1);
            CHECK(!strcmp(info.model, "m2"), "serving model '%s', expected m2", info.model);
            CHECK_EQ(infer_row(c, after), 0);
            double diff = 0;
            for (int i = 0; i < 8; i++)
                diff += fabs((double)before[i] - (double)after[i]);
            CHECK(diff > 1e-4, "results did not change after the reload (diff %g)", diff);

            /* A broken model: the reload fails and b keeps serving. */
            char out[2048];
            int r = h_ctl(&s, out, sizeof out, "reload", bad, NULL);
            fprintf(stderr, "    oag-ctl reload (broken): %s", out);
            CHECK(r != 0, "reloading a truncated model succeeded");
            CHECK(strstr(out, "safetensors") != NULL, "no loader message in '%s'", out);
            CHECK_EQ(oag_get_info(c, &info), 0);
            CHECK(info.model_version == v0 + 1 && !strcmp(info.model, "m2"),
                  "model changed to '%s' v%u after a failed reload", info.model,
                  info.model_version);
            float again[8];
            CHECK_EQ(infer_row(c, again), 0);
            CHECK(memcmp(again, after, sizeof again) == 0, "results changed after a failed reload");
            oag_close(c);
        }
    }
    h_cleanup(&s);
    h_rmtree(tmp);
    fprintf(stderr, h_failures ? "FAILED (%d)\n" : "reload checks passed\n", h_failures);
    return h_failures ? 1 : 0;
}
