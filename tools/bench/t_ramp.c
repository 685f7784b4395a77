/*
 * t_ramp.c - table 6: a load ramp in steps of tasks in flight (--ramp, default 100, 500, 1000):
 * per step p50, p99, tasks/s and the error rate, and the knee. In flight = agents x window with
 * agents = min(step, --ramp-agents). oag's supervisor has a bounded queue (--ramp-queue): a
 * refused submission (-EBUSY) is an error, and so is a task not done within --ramp-timeout-ms
 * (submitted with that deadline). The RPC baseline (rpc.c) runs the same steps; it has no queue
 * bound, so its errors are late tasks only. Knee: the first step whose tasks/s grew less than
 * 10% over the previous step while its p99 grew more than 50%, or whose error rate passed 1%.
 */
#include "bench.h"

#include <cjson/cJSON.h>

/* Index of the knee step in r[0..n), or -1. */
static int knee(const struct mrun_res *r, int n)
{
    for (int i = 0; i < n; i++) {
        if (!r[i].ok)
            continue;
        if (err_rate(&r[i]) > 0.01)
            return i;
        if (i > 0 && r[i - 1].ok && r[i].tasks_s < 1.1 * r[i - 1].tasks_s &&
            r[i].p99_us > 1.5 * r[i - 1].p99_us)
            return i;
    }
    return -1;
}

static void shape(const struct opts *o, unsigned step, unsigned *na, unsigned *w)
{
    *na = step < o->ramp_agents ? step : o->ramp_agents;
    *w = (step + *na - 1) / *na;
}

int t_ramp(struct tctx *c)
{
    const struct opts *o = c->o;
    unsigned ceil_b[] = { o->e2e_batch };
    if (tctx_offline(c, ceil_b, 1, o->off_iters, o->off_max_s))
        c->failures++;
    int n = o->nramp;
    struct mrun_res *ro = calloc((size_t)n, sizeof *ro), *rr = calloc((size_t)n, sizeof *rr);
    struct mrun_cfg *co = calloc((size_t)n, sizeof *co);
    struct mrun_cfg **cp = calloc((size_t)n, sizeof *cp);
    struct mrun_res **rp = calloc((size_t)n, sizeof *rp);
    if (!ro || !rr || !co || !cp || !rp) {
        free(ro), free(rr), free(co), free(cp), free(rp);
        return -ENOMEM;
    }
    unsigned maxa = 1, maxw = 1;
    for (int i = 0; i < n; i++) {
        unsigned na, w;
        shape(o, o->ramp[i], &na, &w);
        maxa = na > maxa ? na : maxa;
        maxw = w > maxw ? w : maxw;
        co[i] = (struct mrun_cfg){
            .sync = 0, .nagents = na, .window = w, .duration_s = o->m_duration_s,
            .warm_s = o->m_warm_s, .in_dim = c->mr.in_dim, .out_dim = c->mr.out_dim,
            .rows = c->rows, .expect = c->exp_rows,
            .samples_cap = o->m_samples / na ? o->m_samples / na : 1, .spin_us = o->tput_spin_us,
            .timeout_us = o->ramp_timeout_ms * 1000u, .busy_us = 1000,
        };
        cp[i] = &co[i];
        rp[i] = &ro[i];
        snprintf(ro[i].name, sizeof ro[i].name, "oag ramp, %u in flight", na * w);
    }
    struct msup_cfg sc = msup_for(o, o->e2e_batch, 0, maxa, maxw); /* as the RPC server */
    sc.max_queue = o->ramp_queue;
    if (mrow_group(o, &c->mr, c->backend, &sc, cp, rp, n))
        c->failures++;
    trpc_rows(c, co, rr, n, "ramp");
    tprint_head(c, "Load ramp in steps of tasks in flight: p50, p99, error rate, the knee");
    printf("  both servers batch what is queued (up to %u, no delay); oag --max-queue %u; error = "
           "refused (busy) or later than %u ms\n", o->e2e_batch, o->ramp_queue, o->ramp_timeout_ms);
    printf("  %9s | %10s %9s %9s %7s | %10s %9s %9s %7s\n", "in flight", "oag tasks/s",
           "p50 ms", "p99 ms", "errors", "RPC tasks/s", "p50 ms", "p99 ms", "errors");
    for (int i = 0; i < n; i++) {
        char a[32], b[32], lab[64];
        unsigned inflight = co[i].nagents * co[i].window;
        printf("  %9u | %10s %9.2f %9.2f %6.2f%% | %10s %9.2f %9.2f %6.2f%%\n", inflight,
               ro[i].ok ? fmt_rate(a, sizeof a, ro[i].tasks_s) : "n/a", ro[i].p50_us / 1e3,
               ro[i].p99_us / 1e3, err_rate(&ro[i]) * 100,
               rr[i].ok ? fmt_rate(b, sizeof b, rr[i].tasks_s) : "n/a", rr[i].p50_us / 1e3,
               rr[i].p99_us / 1e3, err_rate(&rr[i]) * 100);
        snprintf(lab, sizeof lab, "%u in flight", inflight);
        cJSON *j = trow(c, "oag", lab);
        jrow_mrun(j, &ro[i]);
        jnum(j, "step", o->ramp[i]);
        if (!o->no_rpc) {
            j = trow(c, "rpc", lab);
            jrow_mrun(j, &rr[i]);
            jnum(j, "step", o->ramp[i]);
        }
    }
    int ko = knee(ro, n), kr = o->no_rpc ? -1 : knee(rr, n);
    cJSON *s = cJSON_AddObjectToObject(c->root, "summary");
    printf("  knee: oag %s", ko < 0 ? "none in these steps" : "");
    if (ko >= 0) {
        printf("at %u in flight", co[ko].nagents * co[ko].window);
        jnum(s, "oag_knee_in_flight", co[ko].nagents * co[ko].window);
    }
    printf("; RPC %s", o->no_rpc ? "not run" : kr < 0 ? "none in these steps" : "");
    if (kr >= 0) {
        printf("at %u in flight", co[kr].nagents * co[kr].window);
        jnum(s, "rpc_knee_in_flight", co[kr].nagents * co[kr].window);
    }
    printf("\n");
    tprint_guide("p50/p99 from 45 ms to 380 ms and errors up to 8.7%% at 1000 in flight");
    cJSON *g = cJSON_AddObjectToObject(c->root, "guide");
    jnum(g, "latency_low_ms", 45);
    jnum(g, "latency_high_ms", 380);
    jnum(g, "error_pct_at_1000", 8.7);
    int ok = n > 0 && ro[0].ok;
    free(ro), free(rr), free(co), free(cp), free(rp);
    return ok ? 0 : -EIO;
}
