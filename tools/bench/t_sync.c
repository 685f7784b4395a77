/*
 * t_sync.c - table 3: synchronous one-at-a-time agents vs asynchronous pipelined agents.
 * --cmp-agents agent processes against one supervisor (--e2e-batch, --e2e-delay-us): first each
 * calling oag_infer() in a loop (the baseline, in the same run), then each keeping a window of
 * tasks outstanding with oag_submit/oag_poll: 2 (double buffering: the next task is submitted
 * while one is in flight, the guide's "async pipelined" agent), then the deep window that fills
 * the engine (--model-window, else from the batch and agent count). Mean latency (submit to
 * result), tasks/s and the engine's busy % (status --json busy_s over the window's wall time).
 */
#include "bench.h"

#include <cjson/cJSON.h>

static void row(const char *label, const struct mrun_res *r, const char *guide)
{
    char a[32];
    if (!r->ok) {
        printf("  %-28s %10s   (failed)\n", label, "n/a");
        return;
    }
    printf("  %-28s %10.3f %10s %7.0f%% %8.1f   %s\n", label, r->mean_us / 1e3,
           fmt_rate(a, sizeof a, r->tasks_s), r->busy_frac >= 0 ? r->busy_frac * 100 : -1,
           r->avg_batch, guide);
}

int t_sync(struct tctx *c)
{
    const struct opts *o = c->o;
    unsigned ceil_b[] = { o->e2e_batch };
    if (tctx_offline(c, ceil_b, 1, o->off_iters, o->off_max_s))
        c->failures++;
    unsigned na = o->cmp_agents, w = auto_window(o, &c->mr, o->e2e_batch, na), cap = o->m_samples;
    struct mrun_res rs = { .name = "" }, rp = { .name = "" }, rd = { .name = "" };
    snprintf(rs.name, sizeof rs.name, "sync, %u agents", na);
    snprintf(rp.name, sizeof rp.name, "pipelined (window 2), %u agents", na);
    snprintf(rd.name, sizeof rd.name, "pipelined (window %u), %u agents", w, na);
    struct mrun_cfg cs = {
        .sync = 1, .nagents = na, .window = 1, .duration_s = o->m_duration_s,
        .warm_s = o->m_warm_s, .in_dim = c->mr.in_dim, .out_dim = c->mr.out_dim, .rows = c->rows,
        .expect = c->exp_rows, .samples_cap = cap / na ? cap / na : 1, .spin_us = o->tput_spin_us,
    };
    struct mrun_cfg cp = cs, cd = cs;
    cp.sync = 0;
    cp.window = 2;
    cd.sync = 0;
    cd.window = w;
    struct msup_cfg sc = msup_for(o, o->e2e_batch, o->e2e_delay_us, na, w);
    struct mrun_cfg *cfgs[] = { &cs, &cp, &cd };
    struct mrun_res *res[] = { &rs, &rp, &rd };
    if (mrow_group(o, &c->mr, c->backend, &sc, cfgs, res, 3))
        c->failures++;

    tprint_head(c, "Synchronous vs asynchronous pipelined agents");
    printf("  %u agents, supervisor --max-batch %u --max-delay-us %u\n", na, o->e2e_batch,
           o->e2e_delay_us);
    printf("  %-28s %10s %10s %8s %8s   %s\n", "mode", "mean ms", "tasks/s", "busy", "batch",
           "guide (mean, QPS, GPU busy)");
    row("sync (oag_infer loop)", &rs, "142 ms, 7.1, 58%");
    row("pipelined, window 2", &rp, "68 ms, 14.7, 89%");
    char lab[64];
    snprintf(lab, sizeof lab, "pipelined, window %u", w);
    row(lab, &rd, "");
    if (rs.ok && rp.ok)
        printf("  window 2 / sync: %.2fx tasks/s, %.2fx mean latency, busy %+.0f points "
               "(guide: 2.07x, 0.48x, +31)\n", rp.tasks_s / rs.tasks_s, rp.mean_us / rs.mean_us,
               (rp.busy_frac - rs.busy_frac) * 100);
    if (rs.ok && rd.ok)
        printf("  window %u / sync: %.2fx tasks/s, %.2fx mean latency (the latency of a deep "
               "window is mostly queueing: Little's law)\n", w, rd.tasks_s / rs.tasks_s,
               rd.mean_us / rs.mean_us);
    cJSON *g = cJSON_AddObjectToObject(c->root, "guide");
    jnum(g, "sync_mean_ms", 142);
    jnum(g, "sync_qps", 7.1);
    jnum(g, "sync_busy_pct", 58);
    jnum(g, "async_mean_ms", 68);
    jnum(g, "async_qps", 14.7);
    jnum(g, "async_busy_pct", 89);
    jrow_mrun(trow(c, "sync", "sync (oag_infer loop)"), &rs);
    jrow_mrun(trow(c, "pipelined", "pipelined, window 2"), &rp);
    jrow_mrun(trow(c, "pipelined-deep", lab), &rd);
    if (rs.ok && rp.ok) {
        cJSON *s = cJSON_AddObjectToObject(c->root, "summary");
        jnum(s, "tasks_s_ratio", rp.tasks_s / rs.tasks_s);
        jnum(s, "mean_latency_ratio", rp.mean_us / rs.mean_us);
    }
    return rs.ok && rp.ok && rd.ok ? 0 : -EIO;
}
