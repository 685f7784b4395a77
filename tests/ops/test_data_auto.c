/*
 * test_data_auto.c - --data-threads auto|K: how many threads serve the lanes
 * (src/scheduler/shard_auto.h, data_threads_decide).
 *  1. the decision: for a GPU engine (rows read across the bus) with batches of 256 or more,
 *     8 CPUs or more and a queue of two batches, two threads, three where rows are 4 KB or
 *     less with 12 CPUs or more and a queue of three batches; one otherwise, each case with
 *     its reason;
 *  2. a real supervisor by default (auto) on an engine that reads rows with the CPU: one
 *     thread, status (JSON and text) says auto and why, and tasks are served;
 *  3. --data-threads 2: two threads, status says they were set, lanes spread over both and
 *     tasks served by each;
 *  4. a bad value is refused at start naming the option and the value.
 *
 * Environment: OAG_SUPERVISOR, OAG_CTL.
 */
#include <cjson/cJSON.h>

#include <oag/oag.h>

#include "ops.h"
#include "scheduler/shard_auto.h"

static void decide_cases(void)
{
    const char *why = NULL;
    /* the 768-wide model on the GPU host: 3 KB rows, 16 CPUs, queue 8192, batch 512 */
    CHECK(data_threads_decide(1, 3072, 16, 16, 8192, 512, &why) == 3 && strstr(why, "GPU"),
          "GPU, 3 KB rows, 16 CPUs: not 3 threads (%s)", why);
    CHECK(data_threads_decide(1, 4096, 12, 12, 1536, 512, &why) == 3, "4 KB rows, 12 CPUs: not 3");
    CHECK(data_threads_decide(1, 4096, 11, 11, 8192, 512, &why) == 2, "11 CPUs: not 2");
    CHECK(data_threads_decide(1, 4096, 8, 8, 1024, 512, &why) == 2, "4 KB rows, 8 CPUs: not 2");
    CHECK(data_threads_decide(1, 3072, 16, 16, 1535, 512, &why) == 2 && strstr(why, "three"),
          "a queue of less than three batches: not 2 threads (%s)", why);
    CHECK(data_threads_decide(1, 3072, 16, 2, 8192, 512, &why) == 2, "--cpus with 2 CPUs: not 2");
    CHECK(data_threads_decide(1, 3072, 16, 3, 8192, 512, &why) == 3, "--cpus with 3 CPUs: not 3");
    CHECK(data_threads_decide(1, 3072, 16, 16, 4096, 256, &why) == 3, "batch 256: not 3 threads");
    /* small batches: the 64 synchronous agents of the bench's dynamic-batching row */
    CHECK(data_threads_decide(1, 3072, 16, 16, 4096, 32, &why) == 1 && strstr(why, "256"),
          "max batch 32: not 1 thread (%s)", why);
    /* the 4096-wide model: 16 KB rows, two threads */
    CHECK(data_threads_decide(1, 16384, 16, 16, 8192, 512, &why) == 2 && strstr(why, "over 4 KB"),
          "16 KB rows: not 2 threads (%s)", why);
    CHECK(data_threads_decide(1, 4100, 16, 16, 4096, 512, &why) == 2, "rows just over 4 KB: not 2");
    CHECK(data_threads_decide(1, 16384, 7, 7, 8192, 512, &why) == 1, "16 KB rows, 7 CPUs: not 1");
    CHECK(data_threads_decide(0, 3072, 16, 16, 4096, 512, &why) == 1 &&
              strstr(why, "no rows across"),
          "engine reading rows with the CPU: not 1 thread (%s)", why);
    CHECK(data_threads_decide(1, 0, 16, 16, 4096, 512, &why) == 1 && strstr(why, "no model"),
          "no model: not 1 thread (%s)", why);
    CHECK(data_threads_decide(1, 3072, 7, 7, 4096, 512, &why) == 1 && strstr(why, "8 CPUs"),
          "7 CPUs: not 1 thread (%s)", why);
    CHECK(data_threads_decide(1, 3072, 16, 1, 4096, 512, &why) == 1 && strstr(why, "one CPU"),
          "--cpus with one CPU: not 1 thread (%s)", why);
    CHECK(data_threads_decide(1, 3072, 16, 16, 1023, 512, &why) == 1 && strstr(why, "max-queue"),
          "a queue of less than two batches: not 1 thread (%s)", why);
}

/* status --json: data_threads, data_threads_auto, data_threads_why. */
static void expect_json(const struct h_sup *s, long long k, int is_auto, const char *want_why)
{
    cJSON *j = h_status_json(s);
    CHECK(j != NULL, "no status");
    if (!j)
        return;
    int ok = 1;
    long long got = h_json_ll(j, "data_threads", &ok);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "data_threads_auto");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "data_threads_why");
    CHECK(ok && got == k, "status: %lld data threads, want %lld", got, k);
    CHECK(cJSON_IsBool(a) && cJSON_IsTrue(a) == is_auto, "status: data_threads_auto is not %d",
          is_auto);
    CHECK(cJSON_IsString(w) && strstr(w->valuestring, want_why), "status: why '%s', want '%s'",
          cJSON_IsString(w) ? w->valuestring : "?", want_why);
    cJSON_Delete(j);
}

/* n agents (clients of this process), each with 20 tasks answered exact; then, while they are
 * still attached, the text status into text. */
static void serve(const struct h_sup *s, int n, char *text, size_t cap)
{
    oag_client *c[4] = { 0 };
    for (int i = 0; i < n; i++) {
        int rc = oag_connect(&c[i], s->sock);
        CHECK(rc == 0, "oag_connect %d: %s (%s)", i, oag_strerror(rc), oag_last_error());
    }
    for (int i = 0; i < n; i++) {
        for (int t = 0; c[i] && t < 20; t++) {
            char in[32], out[64];
            size_t len = (size_t)snprintf(in, sizeof in, "agent %d task %d", i, t);
            size_t got = 0;
            int rc = oag_infer(c[i], in, len, out, sizeof out, &got, 5000);
            CHECK(rc == 0 && got == len && !memcmp(in, out, len), "agent %d task %d: %s", i, t,
                  rc ? oag_strerror(rc) : "wrong result");
        }
    }
    int rc = h_ctl(s, text, cap, "status", (const char *)NULL);
    CHECK(rc == 0, "oag-ctl status: %d", rc);
    for (int i = 0; i < n; i++)
        if (c[i])
            oag_close(c[i]);
}

int main(void)
{
    h_init(60);
    /* this test chooses the data threads itself (tools/test's second pass sets 2 for all) */
    unsetenv("OAG_TEST_DATA_THREADS");
    decide_cases();
    char text[1 << 14];

    struct h_sup s;
    const char *base[] = { "--backend", "identity", NULL };
    if (h_sup_start(&s, "data-auto", 0700, base, NULL) == 0) {
        expect_json(&s, 1, 1, "no rows across a bus");
        serve(&s, 2, text, sizeof text);
        CHECK(strstr(text, "data threads 1 (auto: the engine reads no rows"),
              "status text does not say auto and why:\n%s", text);
    }
    h_cleanup(&s);

    const char *two[] = { "--backend", "identity", "--data-threads", "2", NULL };
    if (h_sup_start(&s, "data-two", 0700, two, NULL) == 0) {
        expect_json(&s, 2, 0, "");
        serve(&s, 4, text, sizeof text);
        CHECK(strstr(text, "data threads 2 (set):"), "status text:\n%s", text);
        /* 4 agents attached one after another, spread 2 and 2, each shard served 40 tasks */
        CHECK(strstr(text, " 2 lanes, 40 tasks") && strstr(text, "; 2 lanes, 40 tasks"),
              "lanes not spread over both threads, or tasks missing:\n%s", text);
    }
    h_cleanup(&s);

    const char *want[] = { "--data-threads", "'many'", "auto", NULL };
    ops_expect_refused("--data-threads", "many", want);

    if (h_failures)
        return 1;
    printf("data-threads: decision cases, auto (identity: 1 thread, why), 2 set (lanes spread, "
           "tasks served by both), bad value refused\n");
    return 0;
}
