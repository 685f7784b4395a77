/*
 * t_batching.c - table 4: no batching vs dynamic batching. --cmp-agents synchronous agents
 * (oag_infer loops) against a supervisor with --max-batch 1 (the baseline, same run) and against
 * one with --max-batch --dyn-batch (32) --max-delay-us --dyn-delay-us (1000): tasks/s and
 * latency (mean, p50, p99).
 */
#include "bench.h"

#include <cjson/cJSON.h>

int t_batching(struct tctx *c)
{
    const struct opts *o = c->o;
    unsigned ceil_b[] = { 1, o->dyn_batch };
    if (tctx_offline(c, ceil_b, 2, o->off_iters, o->off_max_s))
        c->failures++;
    unsigned na = o->cmp_agents, cap = o->m_samples;
    struct mrun_res r[2];
    memset(r, 0, sizeof r);
    unsigned mb[2] = { 1, o->dyn_batch }, dl[2] = { 0, o->dyn_delay_us };
    for (int k = 0; k < 2 && !g_stop; k++) {
        snprintf(r[k].name, sizeof r[k].name, "%s, %u sync agents",
                 k ? "dynamic batching" : "no batching", na);
        struct mrun_cfg cfg = {
            .sync = 1, .nagents = na, .window = 1, .duration_s = o->m_duration_s,
            .warm_s = o->m_warm_s, .in_dim = c->mr.in_dim, .out_dim = c->mr.out_dim,
            .rows = c->rows, .expect = c->exp_rows, .samples_cap = cap / na ? cap / na : 1,
            .spin_us = o->tput_spin_us,
        };
        struct msup_cfg sc = msup_for(o, mb[k], dl[k], na, 1);
        struct mrun_cfg *cfgs[] = { &cfg };
        struct mrun_res *res[] = { &r[k] };
        if (mrow_group(o, &c->mr, c->backend, &sc, cfgs, res, 1))
            c->failures++;
    }
    tprint_head(c, "No batching vs dynamic batching");
    printf("  %u synchronous agents (oag_infer loops)\n", na);
    printf("  %-34s %10s %9s %9s %9s %7s %6s   %s\n", "config", "tasks/s", "mean ms", "p50 ms",
           "p99 ms", "busy", "batch", "guide");
    const char *gd[2] = { "120 req/s, 15 ms", "380 req/s, 22 ms" };
    for (int k = 0; k < 2; k++) {
        char lab[64], a[32];
        snprintf(lab, sizeof lab, k ? "--max-batch %u --max-delay-us %u" : "--max-batch 1",
                 mb[k], dl[k]);
        jrow_mrun(trow(c, k ? "dynamic" : "none", lab), &r[k]);
        if (!r[k].ok) {
            printf("  %-34s %10s   (failed)\n", lab, "n/a");
            continue;
        }
        printf("  %-34s %10s %9.3f %9.3f %9.3f %6.0f%% %6.1f   %s\n", lab,
               fmt_rate(a, sizeof a, r[k].tasks_s), r[k].mean_us / 1e3, r[k].p50_us / 1e3,
               r[k].p99_us / 1e3, r[k].busy_frac >= 0 ? r[k].busy_frac * 100 : -1,
               r[k].avg_batch, gd[k]);
    }
    if (r[0].ok && r[1].ok)
        printf("  dynamic / none: %.2fx tasks/s, %.2fx mean latency (guide: 3.17x, 1.47x)\n",
               r[1].tasks_s / r[0].tasks_s, r[1].mean_us / r[0].mean_us);
    cJSON *g = cJSON_AddObjectToObject(c->root, "guide");
    jnum(g, "none_req_s", 120);
    jnum(g, "none_latency_ms", 15);
    jnum(g, "dynamic_req_s", 380);
    jnum(g, "dynamic_latency_ms", 22);
    if (r[0].ok && r[1].ok) {
        cJSON *s = cJSON_AddObjectToObject(c->root, "summary");
        jnum(s, "tasks_s_ratio", r[1].tasks_s / r[0].tasks_s);
        jnum(s, "mean_latency_ratio", r[1].mean_us / r[0].mean_us);
    }
    return r[0].ok && r[1].ok ? 0 : -EIO;
}
