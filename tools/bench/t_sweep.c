/*
 * t_sweep.c - table 7: a concurrency sweep like Triton's perf_analyzer, over oag's shared-memory
 * path: for each level of tasks in flight (--sweep; agents = min(level, --sweep-agents), window =
 * level / agents) measurement windows of --sweep-window seconds follow each other until three in
 * a row agree within 10% (tasks/s and mean latency) or --sweep-max-windows pass; the figures
 * (tasks/s, p50, p90, p99) are those three windows'. The RPC baseline runs the same levels.
 */
#include "bench.h"

#include <cjson/cJSON.h>

int t_sweep(struct tctx *c)
{
    const struct opts *o = c->o;
    unsigned ceil_b[] = { o->e2e_batch };
    if (tctx_offline(c, ceil_b, 1, o->off_iters, o->off_max_s))
        c->failures++;
    int n = o->nsweep;
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
        unsigned lv = o->sweep[i], na = lv < o->sweep_agents ? lv : o->sweep_agents;
        unsigned w = (lv + na - 1) / na;
        maxa = na > maxa ? na : maxa;
        maxw = w > maxw ? w : maxw;
        unsigned cap = 200000 / na;
        co[i] = (struct mrun_cfg){
            .sync = 0, .nagents = na, .window = w, .warm_s = o->m_warm_s,
            .in_dim = c->mr.in_dim, .out_dim = c->mr.out_dim, .rows = c->rows,
            .expect = c->exp_rows, .samples_cap = cap ? cap : 1, .spin_us = o->tput_spin_us,
            .win_s = o->sweep_win_s, .max_win = o->sweep_max_win,
        };
        cp[i] = &co[i];
        rp[i] = &ro[i];
        snprintf(ro[i].name, sizeof ro[i].name, "oag sweep, %u in flight", na * w);
    }
    struct msup_cfg sc = msup_for(o, o->e2e_batch, 0, maxa, maxw); /* as the RPC server */
    if (mrow_group(o, &c->mr, c->backend, &sc, cp, rp, n))
        c->failures++;
    trpc_rows(c, co, rr, n, "sweep");
    tprint_head(c, "Concurrency sweep over shared memory (perf_analyzer-like), stable windows");
    printf("  both servers batch what is queued (up to %u, no delay); windows of %.2f s until "
           "three agree within 10%% (at most %u)\n", o->e2e_batch, o->sweep_win_s, o->sweep_max_win);
    printf("  %9s | %10s %8s %8s %8s %6s | %10s %8s %8s %8s %6s\n", "in flight", "oag tasks/s",
           "p50 us", "p90 us", "p99 us", "stable", "RPC tasks/s", "p50 us", "p90 us", "p99 us",
           "stable");
    for (int i = 0; i < n; i++) {
        char a[32], b[32], lab[64], s1[16], s2[16];
        unsigned inflight = co[i].nagents * co[i].window;
        snprintf(s1, sizeof s1, "%s/%u", ro[i].stable ? "yes" : "no", ro[i].nwin);
        snprintf(s2, sizeof s2, "%s/%u", rr[i].stable ? "yes" : "no", rr[i].nwin);
        printf("  %9u | %10s %8.1f %8.1f %8.1f %6s | %10s %8.1f %8.1f %8.1f %6s\n", inflight,
               ro[i].ok ? fmt_rate(a, sizeof a, ro[i].tasks_s) : "n/a", ro[i].p50_us,
               ro[i].p90_us, ro[i].p99_us, s1,
               rr[i].ok ? fmt_rate(b, sizeof b, rr[i].tasks_s) : "n/a", rr[i].p50_us,
               rr[i].p90_us, rr[i].p99_us, o->no_rpc ? "-" : s2);
        snprintf(lab, sizeof lab, "%u in flight", inflight);
        jrow_mrun(trow(c, "oag", lab), &ro[i]);
        if (!o->no_rpc)
            jrow_mrun(trow(c, "rpc", lab), &rr[i]);
    }
    const struct off_row *ce = off_at(&c->mr, o->e2e_batch);
    double best = 0;
    for (int i = 0; i < n; i++)
        best = ro[i].ok && ro[i].tasks_s > best ? ro[i].tasks_s : best;
    cJSON *s = cJSON_AddObjectToObject(c->root, "summary");
    jnum(s, "oag_best_tasks_s", best);
    if (ce) {
        printf("  oag's best: %.2fx of the offline engine's %.0f rows/s at batch %u (stable/windows: "
               "yes/N = three windows within 10%% after N)\n", best / ce->rows_s, ce->rows_s,
               o->e2e_batch);
        jnum(s, "offline_rows_s", ce->rows_s);
    }
    tprint_guide("perf_analyzer reports throughput and p50/p90/p99 per concurrency once three "
                 "windows are stable (no figures in the issue)");
    cJSON *g = cJSON_AddObjectToObject(c->root, "guide");
    cJSON_AddStringToObject(g, "note", "perf_analyzer-style sweep: throughput and p50/p90/p99 vs "
                            "concurrency, three stable windows within 10%; no figures");
    int ok = n > 0 && ro[0].ok;
    free(ro), free(rr), free(co), free(cp), free(rp);
    return ok ? 0 : -EIO;
}
