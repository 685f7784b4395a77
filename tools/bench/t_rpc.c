/*
 * t_rpc.c - table 5: shared memory + eventfd (oag) vs RPC between agents and the server doing
 * the same work. The RPC baseline (rpc.c) runs the same engine behind a ZeroMQ ROUTER socket and
 * batches whatever requests are queued (up to the same max batch), so that only the transport
 * differs; oag's supervisor runs with --max-delay-us 0 likewise. Synchronous agents (one task at
 * a time) at each count of --scale-agents (1, 8, 64, 512): tasks/s, p50, p99. The 1-agent rows
 * are the latency comparison; "no spin" is oag with the supervisor at --spin-us 0 and the agent
 * at OAG_SPIN_US=0 (pure shared memory + eventfd wake-ups). A last section compares the
 * transports alone (64-byte round trips, no model): ZeroMQ PAIR, bare ring + eventfd, oag_infer
 * asleep and awake against an identity supervisor (--iters, at most 20000).
 */
#include "bench.h"

#include <cjson/cJSON.h>

static struct mrun_cfg cfg_for(struct tctx *c, unsigned na)
{
    const struct opts *o = c->o;
    struct mrun_cfg cfg = {
        .sync = 1, .nagents = na, .window = 1, .duration_s = o->m_duration_s,
        .warm_s = o->m_warm_s, .in_dim = c->mr.in_dim, .out_dim = c->mr.out_dim, .rows = c->rows,
        .expect = c->exp_rows, .samples_cap = o->m_samples / na ? o->m_samples / na : 1,
        .spin_us = o->tput_spin_us,
    };
    return cfg;
}

/* Transport only (64-byte messages, no model): ZeroMQ PAIR ping-pong (the RPC transport), the
 * bare ring + eventfd ping-pong, and oag_infer against an identity supervisor asleep (no
 * spinning: shared memory + eventfd) and awake (default spin). --iters round trips each. */
static void transport(struct tctx *c)
{
    struct opts oo = *c->o;
    if (oo.iters > 20000)
        oo.iters = 20000;
    oo.warmup = oo.iters / 10 < 100 ? 100 : oo.iters / 10;
    uint32_t *samples = malloc((size_t)oo.iters * sizeof *samples);
    struct lat_res lat[4] = {
        { .name = "ZeroMQ PAIR ipc:// (RPC transport)" },
        { .name = "shm ring + eventfd, blocking read()" },
        { .name = "oag_infer, asleep (shm + eventfd)" },
        { .name = "oag_infer, awake (default spin)" },
    };
    static const char *const sys[4] = { "transport-zmq", "transport-eventfd",
                                        "transport-oag-asleep", "transport-oag-awake" };
    for (int k = 0; k < 4 && samples && !g_stop; k++) {
        fprintf(stderr, "oag-bench:   transport: %s ...\n", lat[k].name);
        int rc = k == 0 ? bench_zmq_pair(&oo, samples)
                 : k == 1 ? bench_pingpong(&oo, 1, samples)
                          : bench_oag_latency(&oo, k == 2, samples);
        if (rc) {
            warn("transport: %s: %s", lat[k].name, oag_strerror(rc));
            c->failures++;
        } else {
            summarize(&lat[k], samples, oo.iters);
        }
    }
    free(samples);
    printf("  transport only (64-byte round trips, identity engine, %u each): p50 / p99 us\n",
           oo.iters);
    for (int k = 0; k < 4; k++) {
        cJSON *j = trow(c, sys[k], lat[k].name);
        cJSON_AddBoolToObject(j, "ok", lat[k].ok);
        if (!lat[k].ok) {
            printf("    %-40s %9s\n", lat[k].name, "n/a");
            continue;
        }
        jnum(j, "p50_us", lat[k].p50);
        jnum(j, "p99_us", lat[k].p99);
        printf("    %-40s %9.2f %9.2f", lat[k].name, lat[k].p50, lat[k].p99);
        if (k >= 2 && lat[0].ok)
            printf("   %.2fx ZeroMQ", lat[k].p50 / lat[0].p50);
        printf("\n");
    }
    if (lat[0].ok && lat[2].ok) {
        cJSON *s = cJSON_GetObjectItem(c->root, "summary");
        if (!s)
            s = cJSON_AddObjectToObject(c->root, "summary");
        jnum(s, "transport_latency_ratio_asleep", lat[2].p50 / lat[0].p50);
    }
}

int t_rpc(struct tctx *c)
{
    const struct opts *o = c->o;
    unsigned ceil_b[] = { 1, o->e2e_batch };
    if (tctx_offline(c, ceil_b, 2, o->off_iters, o->off_max_s))
        c->failures++;
    int n = o->nscale;
    unsigned maxa = 1;
    for (int i = 0; i < n; i++)
        maxa = o->scale_agents[i] > maxa ? o->scale_agents[i] : maxa;
    struct mrun_res *ro = calloc((size_t)n, sizeof *ro), *rr = calloc((size_t)n, sizeof *rr);
    struct mrun_cfg *co = calloc((size_t)n, sizeof *co);
    struct mrun_cfg **cp = calloc((size_t)n, sizeof *cp);
    struct mrun_res **rp = calloc((size_t)n, sizeof *rp);
    struct mrun_res quiet = { .name = "" };
    if (!ro || !rr || !co || !cp || !rp) {
        free(ro), free(rr), free(co), free(cp), free(rp);
        return -ENOMEM;
    }
    /* oag: one supervisor for every agent count */
    for (int i = 0; i < n; i++) {
        co[i] = cfg_for(c, o->scale_agents[i]);
        cp[i] = &co[i];
        rp[i] = &ro[i];
        snprintf(ro[i].name, sizeof ro[i].name, "oag shm, %u sync agents", o->scale_agents[i]);
    }
    struct msup_cfg sc = msup_for(o, o->e2e_batch, 0, maxa, 1);
    if (mrow_group(o, &c->mr, c->backend, &sc, cp, rp, n))
        c->failures++;
    /* oag without spinning, 1 agent */
    if (!g_stop) {
        struct mrun_cfg q = cfg_for(c, 1);
        q.spin_us = "0";
        struct mrun_cfg *qc[] = { &q };
        struct mrun_res *qr[] = { &quiet };
        snprintf(quiet.name, sizeof quiet.name, "oag shm + eventfd, no spin, 1 agent");
        struct msup_cfg qs = msup_for(o, o->e2e_batch, 0, 1, 1);
        qs.no_spin = 1;
        if (mrow_group(o, &c->mr, c->backend, &qs, qc, qr, 1))
            c->failures++;
    }
    /* the RPC baseline */
    if (!o->no_rpc && !g_stop) {
        struct rpc_srv srv;
        int rc = rpc_start(o, &c->mr, c->backend, o->e2e_batch, &srv);
        if (rc) {
            c->failures++;
        } else {
            for (int i = 0; i < n && !g_stop; i++) {
                struct mrun_cfg cfg = cfg_for(c, o->scale_agents[i]);
                cfg.rpc = &srv;
                snprintf(rr[i].name, sizeof rr[i].name, "RPC (ZeroMQ), %u sync agents",
                         o->scale_agents[i]);
                rr[i].max_batch = o->e2e_batch;
                fprintf(stderr, "oag-bench:   %s ...\n", rr[i].name);
                if (mrun(o, NULL, &cfg, &rr[i])) {
                    warn("%s: failed", rr[i].name);
                    c->failures++;
                }
            }
            rpc_stop(&srv);
        }
    }

    tprint_head(c, "Shared memory + eventfd (oag) vs RPC (ZeroMQ ROUTER/DEALER, same engine)");
    printf("  synchronous agents (one task at a time); both servers batch what is queued, up to "
           "%u, no delay\n", o->e2e_batch);
    printf("  %7s | %10s %9s %9s | %10s %9s %9s | %8s %8s\n", "agents", "oag tasks/s", "p50 us",
           "p99 us", "RPC tasks/s", "p50 us", "p99 us", "tasks/s", "p50");
    printf("  %7s | %30s | %30s | %17s\n", "", "oag (shm + eventfd)", "RPC baseline",
           "oag / RPC");
    for (int i = 0; i < n; i++) {
        char a[32], b[32];
        printf("  %7u | %10s %9.1f %9.1f | %10s %9.1f %9.1f |", o->scale_agents[i],
               ro[i].ok ? fmt_rate(a, sizeof a, ro[i].tasks_s) : "n/a", ro[i].p50_us,
               ro[i].p99_us, rr[i].ok ? fmt_rate(b, sizeof b, rr[i].tasks_s) : "n/a",
               rr[i].p50_us, rr[i].p99_us);
        if (ro[i].ok && rr[i].ok)
            printf(" %7.2fx %7.2fx", ro[i].tasks_s / rr[i].tasks_s, ro[i].p50_us / rr[i].p50_us);
        printf("\n");
        char lab[64];
        snprintf(lab, sizeof lab, "%u agents", o->scale_agents[i]);
        jrow_mrun(trow(c, "oag", lab), &ro[i]);
        if (!o->no_rpc)
            jrow_mrun(trow(c, "rpc", lab), &rr[i]);
    }
    if (quiet.ok) {
        printf("  oag with no spinning (--spin-us 0, OAG_SPIN_US=0), 1 agent: p50 %.1f us, p99 %.1f "
               "us, %.1f k tasks/s\n", quiet.p50_us, quiet.p99_us, quiet.tasks_s / 1e3);
        jrow_mrun(trow(c, "oag-nospin", "1 agents"), &quiet);
    }
    cJSON *s = cJSON_AddObjectToObject(c->root, "summary");
    if (n && ro[0].ok && rr[0].ok) {
        printf("  latency, 1 agent: oag p50 %.3f ms vs RPC %.3f ms = %.2fx (guide: 1.8 ms -> 0.6 ms "
               "= 0.33x)\n", ro[0].p50_us / 1e3, rr[0].p50_us / 1e3, ro[0].p50_us / rr[0].p50_us);
        jnum(s, "latency_ratio_1_agent", ro[0].p50_us / rr[0].p50_us);
    }
    if (n > 1 && ro[0].ok && ro[n - 1].ok && rr[0].ok && rr[n - 1].ok) {
        double so = ro[n - 1].tasks_s / ro[0].tasks_s, sr = rr[n - 1].tasks_s / rr[0].tasks_s;
        printf("  scaling 1 -> %u agents: oag %.1fx, RPC %.1fx tasks/s; at %u agents oag = %.2fx "
               "RPC (guide: 3x scalability)\n", o->scale_agents[n - 1], so, sr,
               o->scale_agents[n - 1], ro[n - 1].tasks_s / rr[n - 1].tasks_s);
        jnum(s, "oag_scaling", so);
        jnum(s, "rpc_scaling", sr);
        jnum(s, "tasks_s_ratio_max_agents", ro[n - 1].tasks_s / rr[n - 1].tasks_s);
    }
    transport(c);
    tprint_guide("RPC 1.8 ms -> shared memory + event notification 0.6 ms; 3x scalability "
                 "from 1 to 512 agents");
    cJSON *g = cJSON_AddObjectToObject(c->root, "guide");
    jnum(g, "rpc_latency_ms", 1.8);
    jnum(g, "shm_latency_ms", 0.6);
    jnum(g, "scalability_x", 3);
    int ok = n > 0 && ro[0].ok && (o->no_rpc || rr[0].ok);
    free(ro), free(rr), free(co), free(cp), free(rp);
    return ok ? 0 : -EIO;
}
