/*
 * agent_worker.c - a fleet agent for the system tests (not a test by itself).
 *
 * Connects with oag_connect(NULL) ($OAG_ENDPOINT), submits tasks whose payload encodes (agent id,
 * sequence number, length, a pattern derived from both) and checks, against the identity backend,
 * that every result equals its input, that no ticket completes twice, that no completion arrives
 * for a ticket never issued, and that none is lost.
 *
 *   agent_worker [--tasks N | --forever] [--size BYTES] [--vary] [--window W] [--sync] [--mix]
 *                [--progress-dir DIR] [--endpoint PATH] [--quiet]
 *
 *   --tasks N         submit N tasks, then exit 0 if all came back correct, 1 otherwise
 *   --forever         loop until killed; a supervisor going away (-ECONNRESET, -ECANCELED) ends it
 *                     with exit 0, a wrong result with exit 1
 *   --size BYTES      payload bytes per task (>= 16; default 64); --vary: lengths 16..BYTES
 *   --window W        tasks kept in flight (default 32; capped to the lane's ring slots)
 *   --sync            one task at a time with oag_infer() instead of oag_submit()/oag_poll()
 *   --mix             vary the mode by agent id (id % 4): 0 as given, 1 --sync, 2 window 1,
 *                     3 window = the lane's ring slots (keeps the lane full, hits -EAGAIN)
 *   --progress-dir D  every ~100 ms write D/agent-ID.progress: "pid done errors\n" (atomic rename)
 *
 * The agent id is $OAG_AGENT_ID (or -1). Prints one summary line on stdout at the end.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "oag/oag.h"

#define HDR_BYTES 16
#define STALL_MS 20000 /* no completion for this long with tasks in flight: they are lost */

struct opts {
    uint64_t tasks;
    int forever, sync, vary, quiet, mix;
    uint32_t size, window;
    const char *progress_dir, *endpoint;
};

struct inflight {
    uint64_t ticket, seq;
    uint32_t len;
    int used;
};

static uint32_t agent_id;
static uint64_t done, errors, dups, bad_status;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint32_t task_len(const struct opts *o, uint64_t seq)
{
    if (!o->vary)
        return o->size;
    return HDR_BYTES + (uint32_t)(mix(seq ^ 0x5555) % (o->size - HDR_BYTES + 1));
}

/* Payload: u32 agent id, u32 length, u64 sequence, then pattern bytes from (agent, seq). */
static void fill(uint8_t *p, uint32_t len, uint64_t seq)
{
    memcpy(p, &agent_id, 4);
    memcpy(p + 4, &len, 4);
    memcpy(p + 8, &seq, 8);
    uint64_t x = mix(((uint64_t)agent_id << 40) ^ seq);
    for (uint32_t i = HDR_BYTES; i < len; i++) {
        if ((i & 7) == 0)
            x = mix(x);
        p[i] = (uint8_t)(x >> ((i & 7) * 8));
    }
}

static int matches(const uint8_t *got, uint32_t got_len, uint64_t seq, uint32_t len, uint8_t *tmp)
{
    if (got_len != len)
        return 0;
    fill(tmp, len, seq);
    return memcmp(got, tmp, len) == 0;
}

static void report_bad(const char *what, uint64_t seq, uint64_t ticket, uint32_t len,
                       uint32_t got_len, const uint8_t *got)
{
    if (errors > 10)
        return;
    uint32_t a = 0;
    uint64_t s = 0;
    if (got && got_len >= HDR_BYTES) {
        memcpy(&a, got, 4);
        memcpy(&s, got + 8, 8);
    }
    fprintf(stderr,
            "agent_worker[%d]: %s: seq %llu ticket %llu len %u; got len %u (agent %u seq %llu)\n",
            (int)agent_id, what, (unsigned long long)seq, (unsigned long long)ticket, len,
            got_len, a, (unsigned long long)s);
}

static void write_progress(const struct opts *o)
{
    if (!o->progress_dir)
        return;
    char tmp[4096], dst[4096];
    snprintf(tmp, sizeof tmp, "%s/.agent-%d.%d.tmp", o->progress_dir, (int)agent_id, (int)getpid());
    snprintf(dst, sizeof dst, "%s/agent-%d.progress", o->progress_dir, (int)agent_id);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%d %llu %llu\n", (int)getpid(), (unsigned long long)done,
            (unsigned long long)errors);
    if (fclose(f) == 0)
        rename(tmp, dst);
}

static int usage(void)
{
    fprintf(stderr, "usage: agent_worker [--tasks N | --forever] [--size BYTES] [--vary] "
                    "[--window W] [--sync] [--mix] [--progress-dir DIR] [--endpoint PATH] "
                    "[--quiet]\n");
    return 2;
}

/* Returns 1 if the error means the supervisor went away (a normal end in --forever mode). */
static int gone(int rc) { return rc == -ECONNRESET || rc == -ECANCELED || rc == -EPIPE; }

static int run_sync(oag_client *c, const struct opts *o)
{
    uint8_t *in = malloc(o->size), *out = malloc(o->size), *tmp = malloc(o->size);
    if (!in || !out || !tmp)
        return -ENOMEM;
    uint64_t last_beat = now_ms();
    int rc = 0;
    for (uint64_t seq = 0; o->forever || seq < o->tasks; seq++) {
        uint32_t len = task_len(o, seq);
        fill(in, len, seq);
        size_t out_len = 0;
        rc = oag_infer(c, in, len, out, o->size, &out_len, STALL_MS);
        if (rc != 0) {
            if (o->forever && gone(rc))
                break;
            fprintf(stderr, "agent_worker[%d]: oag_infer(seq %llu): %s (%d) %s\n", (int)agent_id,
                    (unsigned long long)seq, oag_strerror(rc), rc, oag_last_error());
            errors++;
            break;
        }
        if (!matches(out, (uint32_t)out_len, seq, len, tmp)) {
            report_bad("wrong result", seq, 0, len, (uint32_t)out_len, out);
            errors++;
            if (!o->forever)
                continue;
            break;
        }
        done++;
        if (o->progress_dir && now_ms() - last_beat >= 100) {
            write_progress(o);
            last_beat = now_ms();
        }
    }
    free(in);
    free(out);
    free(tmp);
    return (o->forever && gone(rc)) ? rc : 0;
}

static int run_async(oag_client *c, const struct opts *o, uint32_t window)
{
    struct inflight *fl = calloc(window, sizeof *fl);
    oag_completion *cmp = calloc(window, sizeof *cmp);
    uint8_t *in = malloc(o->size), *tmp = malloc(o->size);
    if (!fl || !cmp || !in || !tmp)
        return -ENOMEM;
    uint64_t next_seq = 0, last_ticket = 0, last_done_ms = now_ms(), last_beat = now_ms();
    uint32_t nfl = 0;
    int rc = 0, ended = 0;
    while (!ended && (o->forever || next_seq < o->tasks || nfl > 0)) {
        /* Fill the window. */
        while (nfl < window && (o->forever || next_seq < o->tasks)) {
            uint32_t len = task_len(o, next_seq);
            uint64_t ticket = 0;
            fill(in, len, next_seq);
            rc = oag_submit(c, in, len, &ticket);
            /* lane full, or the supervisor's queue full (or, remote, every connection at its
             * high-water mark or reconnecting): an explicit refusal, not a lost task; retry
             * after taking results (or after a moment when none are in flight) */
            if (rc == -EAGAIN || rc == -EBUSY)
                break;
            if (rc != 0) {
                if (!(o->forever && gone(rc))) {
                    fprintf(stderr, "agent_worker[%d]: oag_submit(seq %llu): %s (%d) %s\n",
                            (int)agent_id, (unsigned long long)next_seq, oag_strerror(rc), rc,
                            oag_last_error());
                    errors++;
                }
                ended = 1;
                break;
            }
            if (ticket <= last_ticket && last_ticket != 0) {
                fprintf(stderr, "agent_worker[%d]: ticket %llu not increasing (last %llu)\n",
                        (int)agent_id, (unsigned long long)ticket, (unsigned long long)last_ticket);
                errors++;
            }
            last_ticket = ticket;
            uint32_t k = 0;
            while (fl[k].used)
                k++;
            fl[k] = (struct inflight){ .ticket = ticket, .seq = next_seq, .len = len, .used = 1 };
            nfl++;
            next_seq++;
        }
        if (!ended && nfl == 0 && rc == -EBUSY)
            usleep(1000);
        if (!ended && nfl == 0 && rc == -EAGAIN) {
            /* Nothing in flight and still "full": the completions already polled must not
             * count against the window (the library's contract), a moment's lag at most. */
            if (now_ms() - last_done_ms > STALL_MS) {
                fprintf(stderr, "agent_worker[%d]: oag_submit says full (-EAGAIN) with no task "
                                "in flight for %d ms (oag_outstanding %u)\n", (int)agent_id,
                        STALL_MS, oag_outstanding(c));
                errors++;
                break;
            }
            usleep(100);
        }
        if (ended || nfl == 0)
            continue;
        int n = oag_poll(c, cmp, (int)window, 1000);
        if (n < 0) {
            rc = n;
            if (!(o->forever && gone(rc))) {
                fprintf(stderr, "agent_worker[%d]: oag_poll: %s (%d) %s\n", (int)agent_id,
                        oag_strerror(rc), rc, oag_last_error());
                errors++;
            }
            break;
        }
        if (n == 0) {
            if (now_ms() - last_done_ms > STALL_MS) {
                fprintf(stderr, "agent_worker[%d]: %u tasks lost: no completion for %d ms "
                                "(oag_outstanding %u)\n", (int)agent_id, nfl, STALL_MS,
                        oag_outstanding(c));
                errors += nfl;
                break;
            }
            continue;
        }
        last_done_ms = now_ms();
        for (int i = 0; i < n; i++) {
            uint32_t k;
            for (k = 0; k < window; k++)
                if (fl[k].used && fl[k].ticket == cmp[i].ticket)
                    break;
            if (k == window) {
                dups++;
                errors++;
                report_bad("completion for a ticket not in flight (duplicate or bogus)", 0,
                           cmp[i].ticket, 0, cmp[i].len, cmp[i].data);
                continue;
            }
            fl[k].used = 0;
            nfl--;
            if (cmp[i].status != 0) {
                if (o->forever && cmp[i].status == -ECANCELED) {
                    ended = 1;
                    rc = -ECANCELED;
                    continue;
                }
                bad_status++;
                errors++;
                if (errors <= 10)
                    fprintf(stderr, "agent_worker[%d]: seq %llu ticket %llu: status %d (%s)\n",
                            (int)agent_id, (unsigned long long)fl[k].seq,
                            (unsigned long long)fl[k].ticket, cmp[i].status,
                            oag_strerror(cmp[i].status));
                continue;
            }
            if (!matches(cmp[i].data, cmp[i].len, fl[k].seq, fl[k].len, tmp)) {
                errors++;
                report_bad("wrong result", fl[k].seq, fl[k].ticket, fl[k].len, cmp[i].len,
                           cmp[i].data);
                continue;
            }
            done++;
        }
        if (o->forever && errors)
            break;
        if (o->progress_dir && now_ms() - last_beat >= 100) {
            write_progress(o);
            last_beat = now_ms();
        }
    }
    if (!o->forever && nfl > 0 && !errors) {
        fprintf(stderr, "agent_worker[%d]: %u tasks never completed\n", (int)agent_id, nfl);
        errors += nfl;
    }
    free(fl);
    free(cmp);
    free(in);
    free(tmp);
    return (o->forever && gone(rc)) ? rc : 0;
}

int main(int argc, char **argv)
{
    struct opts o = { .size = 64, .window = 32 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tasks") && v) {
            o.tasks = strtoull(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--forever")) {
            o.forever = 1;
        } else if (!strcmp(a, "--size") && v) {
            o.size = (uint32_t)strtoul(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--window") && v) {
            o.window = (uint32_t)strtoul(v, NULL, 10);
            i++;
        } else if (!strcmp(a, "--progress-dir") && v) {
            o.progress_dir = v;
            i++;
        } else if (!strcmp(a, "--endpoint") && v) {
            o.endpoint = v;
            i++;
        } else if (!strcmp(a, "--sync")) {
            o.sync = 1;
        } else if (!strcmp(a, "--mix")) {
            o.mix = 1;
        } else if (!strcmp(a, "--vary")) {
            o.vary = 1;
        } else if (!strcmp(a, "--quiet")) {
            o.quiet = 1;
        } else {
            return usage();
        }
    }
    if ((!o.forever && o.tasks == 0) || o.size < HDR_BYTES || o.window == 0)
        return usage();
    const char *id = getenv("OAG_AGENT_ID");
    agent_id = id && *id ? (uint32_t)strtoul(id, NULL, 10) : UINT32_MAX;
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    oag_client *c = NULL;
    int rc = oag_connect(&c, o.endpoint);
    if (rc != 0) {
        fprintf(stderr, "agent_worker[%d]: oag_connect: %s (%d): %s\n", (int)agent_id,
                oag_strerror(rc), rc, oag_last_error());
        return 1;
    }
    oag_info info;
    rc = oag_get_info(c, &info);
    if (rc != 0) {
        fprintf(stderr, "agent_worker[%d]: oag_get_info: %s\n", (int)agent_id, oag_strerror(rc));
        oag_close(c);
        return 1;
    }
    if (info.max_payload < o.size) {
        fprintf(stderr, "agent_worker[%d]: --size %u exceeds the supervisor's max payload %u\n",
                (int)agent_id, o.size, info.max_payload);
        oag_close(c);
        return 1;
    }
    uint32_t window = o.window;
    if (o.mix && agent_id != UINT32_MAX) {
        switch (agent_id % 4) {
        case 1: o.sync = 1; break;
        case 2: window = 1; break;
        case 3: window = info.ring_slots ? info.ring_slots : window; break;
        default: break;
        }
    }
    if (info.ring_slots && window > info.ring_slots)
        window = info.ring_slots;
    if (!o.quiet)
        fprintf(stderr, "agent_worker[%d]: pid %d lane %u gen %u, %s, size %u%s, window %u\n",
                (int)agent_id, (int)getpid(), info.agent_id, info.lane_generation,
                o.forever ? "forever" : "counted", o.size, o.vary ? " (vary)" : "",
                o.sync ? 1 : window);
    write_progress(&o);

    rc = o.sync ? run_sync(c, &o) : run_async(c, &o, window);
    write_progress(&o);
    oag_close(c);
    if (rc == -ENOMEM) {
        fprintf(stderr, "agent_worker: out of memory\n");
        return 1;
    }
    int ok = errors == 0 && (o.forever || done == o.tasks);
    char mode[32];
    if (o.sync)
        snprintf(mode, sizeof mode, "sync");
    else
        snprintf(mode, sizeof mode, "window %u", window);
    printf("agent_worker[%d]: %s (%s): %llu done, %llu errors (%llu duplicate/bogus, "
           "%llu bad status)%s\n", (int)agent_id, ok ? "ok" : "FAILED", mode, (unsigned long long)done,
           (unsigned long long)errors, (unsigned long long)dups, (unsigned long long)bad_status,
           rc ? " (supervisor went away)" : "");
    return ok ? 0 : 1;
}
