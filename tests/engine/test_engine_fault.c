/*
 * test_engine_fault.c - an engine that fails batches (injected: OAG_FAULT_ENGINE_BATCHES in a
 * -Dfault_injection=true build): every task of a failed batch completes with -EIO (none hangs,
 * none is lost), the instance leaves the rotation after 3 failures in a row and is re-created,
 * and the supervisor serves correct results again. Skips (77) in builds without the hook.
 */
#include <errno.h>
#include <string.h>

#include "../harness.h"
#include "oag/oag.h"

int main(void)
{
    h_init(60);
    const char *gen = getenv("OAG_GEN_MODEL");
    if (!getenv("OAG_SUPERVISOR") || !gen || !getenv("OAG_FAULT_BUILD"))
        return H_SKIP;
    char tmp[256], cmd[700];
    h_tmpdir(tmp, sizeof tmp, "efault", 0700);
    snprintf(cmd, sizeof cmd, "%s --out %s/m --input 16 --hidden 32 --output 8 >/dev/null", gen,
             tmp);
    CHECK_EQ(system(cmd), 0);
    char model[300];
    snprintf(model, sizeof model, "%s/m", tmp);
    setenv("OAG_FAULT_ENGINE_BATCHES", "5", 1);
    struct h_sup s;
    const char *extra[] = { "--backend", "cpu", "--model", model, "--threads", "1", NULL };
    if (h_sup_start(&s, "efault", 0700, extra, NULL) == 0) {
        oag_client *c;
        int rc = oag_connect(&c, s.sock);
        CHECK_EQ(rc, 0);
        if (rc == 0) {
            float in[16] = { 1.0f }, out[8];
            int eio = 0, ok = 0, other = 0;
            uint64_t end = h_now_ms() + 10000, first_ok = 0, t0 = h_now_ms();
            while (h_now_ms() < end && ok < 50) {
                size_t len = 0;
                rc = oag_infer(c, in, sizeof in, out, sizeof out, &len, 3000);
                if (rc == -EIO)
                    eio++;
                else if (rc == 0 && len == sizeof out) {
                    if (!ok++)
                        first_ok = h_now_ms() - t0;
                } else {
                    other++;
                    fprintf(stderr, "    unexpected: %d (%s)\n", rc, oag_strerror(rc));
                }
            }
            fprintf(stderr, "    -EIO %d, ok %d (first after %llu ms), other %d\n", eio, ok,
                    (unsigned long long)first_ok, other);
            CHECK(eio >= 3, "only %d tasks failed with -EIO", eio);
            CHECK_EQ(other, 0);
            CHECK_EQ(ok, 50);
            char out_json[65536];
            CHECK_EQ(h_ctl(&s, out_json, sizeof out_json, "status", "--json", NULL), 0);
            cJSON *j = cJSON_Parse(out_json);
            CHECK(j != NULL, "status is not JSON");
            if (j) {
                cJSON *e = cJSON_GetObjectItem(j, "engine_errors");
                CHECK(cJSON_IsNumber(e) && e->valuedouble >= 3, "engine_errors < 3");
                cJSON_Delete(j);
            }
            oag_close(c);
        }
        CHECK(h_sup_alive(&s), "supervisor died");
    }
    h_cleanup(&s);
    h_rmtree(tmp);
    fprintf(stderr, h_failures ? "FAILED (%d)\n" : "engine fault checks passed\n", h_failures);
    return h_failures ? 1 : 0;
}
