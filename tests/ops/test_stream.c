/*
 * test_stream.c - --stream-rows auto|on|off: the supervisor's advice to agents to write rows
 * with streaming stores (OAG_HINT_STREAM_ROWS in the region header; src/scheduler/hints.h).
 *  1. the decision itself (stream_rows_decide): on while the bytes in flight per core stay
 *     under half the L2, off above all of it (hysteresis in between), off with more than 8
 *     agents per CPU or none;
 *  2. auto on an engine that reads rows with the CPU (identity): not advised, status says why,
 *     the region header's hint is clear; an agent's tasks in flight are measured (status: KB
 *     in flight per core);
 *  3. --stream-rows on: advised in status and in the region header; liboag (no $OAG_NT_STORES)
 *     then writes payloads of 1 KB and more with streaming stores: every result (identity:
 *     the task's bytes) comes back exact, sizes 1..6000, unaligned tails included;
 *  4. --stream-rows off: not advised; 5. a bad value is refused at start naming the option.
 *
 * Environment: OAG_SUPERVISOR, OAG_CTL.
 */
#include <cjson/cJSON.h>
#include <sys/mman.h>

#include <oag/oag.h>

#include "ops.h"
#include "scheduler/hints.h"
#include "shm/layout.h"

#define KB 1024ull

static void decide_cases(void)
{
    enum stream_why why;
    uint64_t l2 = 2048 * KB;
    /* 768-wide fp32 rows, 64 agents x 64 tasks on 16 cores: ~0.6 MB a core */
    CHECK(stream_rows_decide(0, 600 * KB, l2, 64, 16, &why) == 1 && why == STREAM_IN_CACHE,
          "0.6 MB a core, 2 MB L2: not advised (why %d)", (int)why);
    /* 4096-wide rows: ~3 MB a core */
    CHECK(stream_rows_decide(0, 3072 * KB, l2, 64, 16, &why) == 0 && why == STREAM_OUT_OF_CACHE,
          "3 MB a core: advised (why %d)", (int)why);
    /* between half the L2 and all of it the advice stands */
    CHECK(stream_rows_decide(0, 1536 * KB, l2, 64, 16, &why) == 0, "1.5 MB, off: turned on");
    CHECK(stream_rows_decide(1, 1536 * KB, l2, 64, 16, &why) == 1, "1.5 MB, on: turned off");
    CHECK(stream_rows_decide(1, 2049 * KB, l2, 64, 16, &why) == 0, "above the L2: stays on");
    /* crowded: 512 agents on 16 CPUs; 128 is still 8 a CPU */
    CHECK(stream_rows_decide(1, 600 * KB, l2, 512, 16, &why) == 0 && why == STREAM_CROWDED,
          "512 agents on 16 CPUs: advised (why %d)", (int)why);
    CHECK(stream_rows_decide(0, 600 * KB, l2, 128, 16, &why) == 1, "128 agents on 16 CPUs: off");
    CHECK(stream_rows_decide(1, 0, l2, 0, 16, &why) == 0 && why == STREAM_NO_AGENTS,
          "no agents: advised");
}

/* The region header's hints word, read from the supervisor's region (read-only). */
static uint32_t region_hints(const struct h_sup *s)
{
    char shm[256];
    h_shm_name(shm, sizeof shm, s->name);
    int fd = shm_open(shm, O_RDONLY, 0);
    CHECK(fd >= 0, "shm_open %s: %s", shm, strerror(errno));
    if (fd < 0)
        return UINT32_MAX;
    void *p = mmap(NULL, sizeof(struct oag_region_hdr), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    CHECK(p != MAP_FAILED, "mmap the region: %s", strerror(errno));
    if (p == MAP_FAILED)
        return UINT32_MAX;
    uint32_t v = oag_load_relaxed_u32(&((const struct oag_region_hdr *)p)->hints);
    munmap(p, sizeof(struct oag_region_hdr));
    return v;
}

/* Status's stream_rows object: checks mode, on and that why contains want_why. */
static void expect_status(const struct h_sup *s, const char *mode, int on, const char *want_why)
{
    cJSON *j = h_status_json(s);
    CHECK(j != NULL, "%s: no status", mode);
    if (!j)
        return;
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "stream_rows");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "mode");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "on");
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(o, "why");
    const cJSON *l2 = cJSON_GetObjectItemCaseSensitive(o, "l2_kb");
    CHECK(cJSON_IsString(m) && !strcmp(m->valuestring, mode), "status: mode is not %s", mode);
    CHECK(cJSON_IsBool(v) && cJSON_IsTrue(v) == on, "%s: status says on=%d, want %d", mode,
          cJSON_IsTrue(v), on);
    CHECK(cJSON_IsString(w) && strstr(w->valuestring, want_why), "%s: why is '%s', want '%s'",
          mode, cJSON_IsString(w) ? w->valuestring : "?", want_why);
    CHECK(cJSON_IsNumber(l2) && l2->valuedouble >= 1, "%s: no L2 size", mode);
    cJSON_Delete(j);
}

/* Submits sizes 1..6000 (a window of 32) and checks every result byte for byte. */
static void roundtrip(const struct h_sup *s)
{
    oag_client *c = NULL;
    int rc = oag_connect(&c, s->sock);
    CHECK(rc == 0, "oag_connect: %s (%s)", oag_strerror(rc), oag_last_error());
    if (rc)
        return;
    enum { N = 3000, W = 32, MAXSZ = 6000 };
    static uint8_t in[W][MAXSZ];
    static uint32_t len_of[W];
    uint64_t ticket_of[W] = { 0 };
    unsigned sent = 0, got = 0, bad = 0, out = 0;
    oag_completion cmp[W];
    while (got < N) {
        while (sent < N && out < W) {
            unsigned k = sent % W;
            uint32_t len = 1 + (sent * 2654435761u) % MAXSZ;
            if (sent % 7 == 0)
                len = 1024 + sent % 3 * 1024; /* exactly at and above NT_MIN */
            for (uint32_t i = 0; i < len; i++)
                in[k][i] = (uint8_t)(sent * 31 + i * 7);
            len_of[k] = len;
            rc = oag_submit(c, in[k], len, &ticket_of[k]);
            if (rc == -EAGAIN || rc == -EBUSY)
                break;
            CHECK(rc == 0, "oag_submit: %s", oag_strerror(rc));
            if (rc)
                goto out;
            sent++;
            out++;
        }
        int n = oag_poll(c, cmp, W, 5000);
        CHECK(n > 0, "oag_poll: %d (%s)", n, n < 0 ? oag_strerror(n) : "timeout");
        if (n <= 0)
            goto out;
        for (int i = 0; i < n; i++) {
            unsigned k = W;
            for (unsigned q = 0; q < W; q++)
                if (ticket_of[q] == cmp[i].ticket) {
                    k = q;
                    break;
                }
            if (k == W || cmp[i].status || cmp[i].len != len_of[k] ||
                memcmp(cmp[i].data, in[k], len_of[k]))
                bad++;
            if (k < W)
                ticket_of[k] = 0;
            got++;
            out--;
        }
    }
out:
    CHECK(got == N && bad == 0, "%u of %u results back, %u wrong", got, N, bad);
    oag_close(c);
}

int main(void)
{
    h_init(90);
    unsetenv("OAG_NT_STORES"); /* liboag follows the supervisor's advice */
    decide_cases();

    struct h_sup s;
    const char *base[] = { "--backend", "identity", "--max-payload", "8192", "--ring-slots", "32",
                           NULL };
    if (h_sup_start(&s, "stream-auto", 0700, base, NULL) == 0) {
        h_sleep_ms(250); /* a few of the 100 ms measurements */
        expect_status(&s, "auto", 0, "reads rows with the CPU");
        CHECK(region_hints(&s) == 0, "auto, identity engine: hint set in the region");
        /* 32 tasks in flight (results not taken back) of 8 KB rows (the identity engine's row
         * is the largest payload) from one agent: 256 KB a core, averaged over 100 ms steps */
        oag_client *c = NULL;
        int rc = oag_connect(&c, s.sock);
        CHECK(rc == 0, "oag_connect: %s", oag_strerror(rc));
        static uint8_t row[4096];
        for (int i = 0; rc == 0 && i < 32; i++)
            rc = oag_submit(c, row, sizeof row, NULL);
        CHECK(rc == 0, "submit: %s", oag_strerror(rc));
        long long kb = -1;
        for (int t = 0; t < 40 && kb < 192; t++) {
            h_sleep_ms(100);
            cJSON *j = h_status_json(&s);
            int ok = 1;
            kb = j ? h_json_ll(cJSON_GetObjectItemCaseSensitive(j, "stream_rows"),
                               "kb_in_flight_per_core", &ok) : -1;
            cJSON_Delete(j);
        }
        CHECK(kb >= 192 && kb <= 256, "32 tasks of 8 KB in flight: %lld KB a core measured", kb);
        if (c)
            oag_close(c);
    }
    h_cleanup(&s);

    const char *on[] = { "--backend", "identity", "--max-payload", "8192", "--ring-slots", "32",
                         "--stream-rows", "on", NULL };
    if (h_sup_start(&s, "stream-on", 0700, on, NULL) == 0) {
        expect_status(&s, "on", 1, "--stream-rows on");
        CHECK(region_hints(&s) == OAG_HINT_STREAM_ROWS, "--stream-rows on: hint not in the region");
        roundtrip(&s);
    }
    h_cleanup(&s);

    const char *off[] = { "--backend", "identity", "--stream-rows", "off", NULL };
    if (h_sup_start(&s, "stream-off", 0700, off, NULL) == 0) {
        expect_status(&s, "off", 0, "--stream-rows off");
        CHECK(region_hints(&s) == 0, "--stream-rows off: hint set in the region");
    }
    h_cleanup(&s);

    const char *want[] = { "stream-rows", "maybe", NULL };
    ops_expect_refused("--stream-rows", "maybe", want);

    if (h_failures)
        return 1;
    printf("stream-rows: decision cases, auto (cpu reads: off), on (hint set, 3000 results "
           "exact), off, bad value refused\n");
    return 0;
}
