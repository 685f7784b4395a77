#include "bench.h"

/* ==== model mode ===========================================================================
 *
 * oag-bench --model DIR [--model DIR2 ...] | --gen-models   [--backend auto|cpu|cuda] ...
 *
 * Per model, in one run:
 *  1. offline   the engine created directly through its ops table (engine_lookup()->create with
 *               max_batch = --max-batch, max_payload = the model's widest row rounded up to 64
 *               bytes, device --device), batch buffers from host_alloc (pinned for cuda), strides
 *               as the supervisor's batch slots have them. Per batch size: the forward of one
 *               batch alone (submit, poll on event_fd, reap; median and p99), then the engine
 *               kept full (max_inflight batches in flight for async engines, back to back for
 *               synchronous ones): median time per batch over groups of completions, rows/s.
 *               This runs in a child process, so that this process never touches the GPU and
 *               its hundreds of agent forks stay cheap; the child also computes the results of
 *               MM_CHECK_ROWS input rows, which every agent later checks its results against.
 *  2. e2e       a real supervisor (--model DIR --backend B --max-batch --e2e-batch
 *               --max-delay-us --e2e-delay-us, ring slots and lanes sized for the agents), N
 *               agent processes each keeping a window of tasks outstanding (oag_submit /
 *               oag_poll): tasks/s over --model-duration, and its ratio to the offline rows/s
 *               at the same batch size (target >= 0.8).
 *  3. latency   one agent, oag_infer() one task at a time (max delay 0): p50/p99 against the
 *               offline forward of batch 1 (target: p50 within +15 us).
 *  4. sync vs pipelined   --cmp-agents agents against one supervisor (the e2e settings): each
 *               calling oag_infer() in a loop, then each keeping a window outstanding: tasks/s,
 *               mean/p50/p99 latency (submit to result), engine busy % (the supervisor's
 *               status --json engines[].busy_s over the measured window) and the mean batch.
 *  5. batching  --cmp-agents synchronous agents against --max-batch 1 (no batching) and against
 *               --max-batch --dyn-batch --max-delay-us --dyn-delay-us (dynamic batching).
 * Latencies are sampled per agent (reservoir sampling, --model-samples in all per row).
 */

/* ---- one model --------------------------------------------------------------------------- */

const struct off_row *off_at(const struct model_res *mr, unsigned batch)
{
    if (!mr->off_ok)
        return NULL;
    for (int i = 0; i < mr->off.nrows; i++)
        if (mr->off.rows[i].batch == batch && mr->off.rows[i].ok)
            return &mr->off.rows[i];
    return NULL;
}

/* Loads mr->dir once to fill mr's description (name, dtype, dims, layers, payload). Returns 0
 * or the loader's negative errno (logged). */
int model_describe(struct model_res *mr)
{
    char err[512] = "";
    struct oag_model *m = NULL;
    int rc = oag_model_load(&m, mr->dir, err, sizeof err);
    if (rc) {
        warn("model %s: %s", mr->dir, err);
        return rc;
    }
    snprintf(mr->name, sizeof mr->name, "%s", m->name);
    snprintf(mr->dtype, sizeof mr->dtype, "%s", oag_dtype_name(m->dtype));
    mr->in_dim = m->input_dim;
    mr->out_dim = m->output_dim;
    mr->param_bytes = m->param_bytes;
    mr->nlinear = 0;
    for (uint32_t i = 0; i < m->nlayers; i++)
        mr->nlinear += m->layers[i].kind == OAG_L_LINEAR;
    oag_model_free(m);
    mr->loaded = 1;
    uint32_t widest = mr->in_dim > mr->out_dim ? mr->in_dim : mr->out_dim;
    mr->payload = round64(widest * 4u);
    return 0;
}

static int bench_model(const struct opts *o, struct model_res *mr)
{
    int failures = 0, rc;
    if (model_describe(mr))
        return 1;

    /* the check rows (inputs) and their results, shared with the children */
    size_t hdr = (sizeof(struct off_shared) + 63) & ~(size_t)63;
    size_t size = hdr + (size_t)MM_CHECK_ROWS * (mr->in_dim + mr->out_dim) * sizeof(float);
    struct off_shared *sh = shared_alloc(size);
    if (!sh)
        return 1;
    float *rows = (float *)((char *)sh + hdr);
    float *expect = rows + (size_t)MM_CHECK_ROWS * mr->in_dim;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < (size_t)MM_CHECK_ROWS * mr->in_dim; i++)
        rows[i] = (float)((double)(xorshift64(&rng) >> 11) / (double)(1ull << 53) * 2.0 - 1.0);

    /* 1. offline */
    const char *backend = o->backend;
    if (!o->skip_offline || !strcmp(o->backend, "auto")) {
        fprintf(stderr, "oag-bench: %s: offline engine (%s) ...\n", mr->label, o->backend);
        rc = bench_offline(o, mr->dir, sh, rows, expect, mr->payload);
        memcpy(&mr->off, sh, sizeof mr->off);
        if (rc) {
            warn("%s: offline part failed", mr->label);
            failures++;
            if (!mr->off.backend[0]) {
                warn("%s: no engine could be created: the supervisor parts are skipped",
                     mr->label);
                goto out;
            }
        } else {
            mr->off_ok = 1;
            backend = mr->off.backend;
        }
    } else {
        snprintf(mr->off.backend, sizeof mr->off.backend, "%s", o->backend);
    }
    const float *exp_rows = mr->off_ok && sh->have_expect ? expect : NULL;
    unsigned cap = o->m_samples;

    /* 2. end to end, async agents */
    if (!o->skip_e2e) {
        for (int i = 0; i < o->ne2e && !g_stop; i++) {
            unsigned na = o->e2e_agents[i], w = auto_window(o, mr, o->e2e_batch, na);
            struct mrun_res *r = &mr->e2e[mr->ne2e++];
            snprintf(r->name, sizeof r->name, "%s e2e, %u agents", mr->label, na);
            r->agents = na;
            r->window = w;
            struct mrun_cfg c = {
                .nagents = na, .window = w, .duration_s = o->m_duration_s, .warm_s = o->m_warm_s,
                .in_dim = mr->in_dim, .out_dim = mr->out_dim, .rows = rows, .expect = exp_rows,
                .samples_cap = cap / na ? cap / na : 1, .spin_us = o->tput_spin_us,
            };
            struct msup_cfg sc = msup_for(o, o->e2e_batch, o->e2e_delay_us, na, w);
            struct mrun_cfg *cs[] = { &c };
            struct mrun_res *rs[] = { r };
            if (mrow_group(o, mr, backend, &sc, cs, rs, 1))
                failures++;
        }
    }

    /* 2b. the ceiling once more, after the e2e rows: a slow spell of the machine during the
     * first measurement would make every ratio look better than it is (seen once on the H100
     * kind: 5.93 M rows/s for the 768 model at batch 512, against 11.7 M in every other run).
     * The ratios use the higher of the two. */
    if (!o->skip_e2e && mr->ne2e && mr->off_ok && !g_stop) {
        struct off_row *ce = (struct off_row *)off_at(mr, o->e2e_batch);
        struct off_shared *sh2 = ce ? shared_alloc(size) : NULL;
        if (sh2) {
            struct opts o2 = *o;
            o2.batches[0] = o->e2e_batch;
            o2.nbatches = 1;
            float *rows2 = (float *)((char *)sh2 + hdr);
            memcpy(rows2, rows, (size_t)MM_CHECK_ROWS * mr->in_dim * sizeof(float));
            fprintf(stderr, "oag-bench: %s: offline batch %u again ...\n", mr->label,
                    o->e2e_batch);
            if (bench_offline(&o2, mr->dir, sh2, rows2, rows2 + (size_t)MM_CHECK_ROWS * mr->in_dim,
                              mr->payload) == 0 && sh2->nrows == 1 && sh2->rows[0].ok) {
                mr->ceil_first = ce->rows_s;
                mr->ceil_again = sh2->rows[0].rows_s;
                if (mr->ceil_again > ce->rows_s) {
                    ce->rows_s = mr->ceil_again;
                    ce->pipe_us = sh2->rows[0].pipe_us;
                }
            }
            munmap(sh2, size);
        }
    }

    /* 3. single-agent latency, batch 1 */
    if (!o->skip_mlat && !g_stop) {
        struct mrun_res *r = &mr->lat;
        snprintf(r->name, sizeof r->name, "%s latency, 1 agent", mr->label);
        mr->ran_lat = 1;
        struct mrun_cfg c = {
            .sync = 1, .nagents = 1, .window = 1, .iters = o->m_lat_iters,
            .warmup = o->m_lat_warmup ? o->m_lat_warmup
                                      : o->m_lat_iters / 10 < 100 ? 100 : o->m_lat_iters / 10,
            .in_dim = mr->in_dim, .out_dim = mr->out_dim, .rows = rows, .expect = exp_rows,
            .samples_cap = o->m_lat_iters, .spin_us = NULL,
        };
        struct msup_cfg sc = msup_for(o, o->e2e_batch, 0, 1, 1);
        struct mrun_cfg *cs[] = { &c };
        struct mrun_res *rs[] = { r };
        if (mrow_group(o, mr, backend, &sc, cs, rs, 1))
            failures++;
    }

    /* 4. one task at a time vs pipelined, one supervisor */
    if (!o->skip_sync && !g_stop) {
        unsigned na = o->cmp_agents, w = auto_window(o, mr, o->e2e_batch, na);
        snprintf(mr->sync.name, sizeof mr->sync.name, "%s sync, %u agents", mr->label, na);
        snprintf(mr->pipe.name, sizeof mr->pipe.name, "%s pipelined, %u agents", mr->label, na);
        mr->ran_cmp = 1;
        mr->pipe.window = w;
        struct mrun_cfg cs_ = {
            .sync = 1, .nagents = na, .window = 1, .duration_s = o->m_duration_s,
            .warm_s = o->m_warm_s, .in_dim = mr->in_dim, .out_dim = mr->out_dim, .rows = rows,
            .expect = exp_rows, .samples_cap = cap / na ? cap / na : 1, .spin_us = o->tput_spin_us,
        };
        struct mrun_cfg cp = cs_;
        cp.sync = 0;
        cp.window = w;
        struct msup_cfg sc = msup_for(o, o->e2e_batch, o->e2e_delay_us, na, w);
        struct mrun_cfg *cs[] = { &cs_, &cp };
        struct mrun_res *rs[] = { &mr->sync, &mr->pipe };
        if (mrow_group(o, mr, backend, &sc, cs, rs, 2))
            failures++;
    }

    /* 5. no batching vs dynamic batching, sync agents */
    if (!o->skip_batching && !g_stop) {
        unsigned na = o->cmp_agents;
        struct mrun_res *rr[2] = { &mr->nobatch, &mr->dyn };
        unsigned mb[2] = { 1, o->dyn_batch }, dl[2] = { 0, o->dyn_delay_us };
        mr->ran_batching = 1;
        for (int k = 0; k < 2 && !g_stop; k++) {
            snprintf(rr[k]->name, sizeof rr[k]->name, "%s %s, %u sync agents", mr->label,
                     k ? "dynamic batching" : "no batching", na);
            struct mrun_cfg c = {
                .sync = 1, .nagents = na, .window = 1, .duration_s = o->m_duration_s,
                .warm_s = o->m_warm_s, .in_dim = mr->in_dim, .out_dim = mr->out_dim,
                .rows = rows, .expect = exp_rows, .samples_cap = cap / na ? cap / na : 1,
                .spin_us = o->tput_spin_us,
            };
            struct msup_cfg sc = msup_for(o, mb[k], dl[k], na, 1);
            struct mrun_cfg *cs[] = { &c };
            struct mrun_res *rs[] = { rr[k] };
            if (mrow_group(o, mr, backend, &sc, cs, rs, 1))
                failures++;
        }
    }
out:
    munmap(sh, size);
    return failures;
}

/* ---- generated models -------------------------------------------------------------------- */

struct gen_spec {
    const char *label;
    const char *args[16];
};

static const struct gen_spec g_gen[] = {
    { "mlp768x2-fp16", { "--input", "768", "--hidden", "768", "--output", "768", "--layers", "2",
                         "--dtype", "float16", "--act", "relu", NULL } },
    { "mlp4096x4-fp16", { "--input", "4096", "--hidden", "4096", "--output", "4096", "--layers",
                          "4", "--dtype", "float16", "--act", "relu", NULL } },
};

static int gen_model(const struct opts *o, const struct gen_spec *g, char *dir, size_t cap)
{
    const char *base = o->models_dir ? o->models_dir : g_tmpdir;
    snprintf(dir, cap, "%s/%s", base, g->label);
    char cfg[PATH_MAX + 32];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    if (o->models_dir && access(cfg, R_OK) == 0) {
        fprintf(stderr, "oag-bench: using %s (already generated)\n", dir);
        return 0;
    }
    if (o->models_dir)
        mkdir(o->models_dir, 0755);
    const char *argv[24];
    int n = 0;
    argv[n++] = o->gen_model;
    argv[n++] = "--out";
    argv[n++] = dir;
    argv[n++] = "--name";
    argv[n++] = g->label;
    for (int i = 0; g->args[i]; i++)
        argv[n++] = g->args[i];
    argv[n] = NULL;
    fprintf(stderr, "oag-bench: generating %s with %s ...\n", dir, o->gen_model);
    uint64_t t0 = now_ns();
    int rc = run_cmd(argv, o->table ? 2 : -1, "oag-gen-model"); /* tables: stdout is the table */
    if (rc)
        warn("oag-gen-model %s failed (--gen-model PATH to pick the binary)", dir);
    else
        fprintf(stderr, "oag-bench: generated %s in %.1f s\n", dir, (double)(now_ns() - t0) / 1e9);
    return rc;
}

/* Generates (or reuses, with --models-dir) standard model k (0: mlp768x2-fp16, 1:
 * mlp4096x4-fp16) into dir; *label gets its name. Returns 0 or a negative errno. */
int model_gen_std(const struct opts *o, int k, char *dir, size_t cap, const char **label)
{
    if (k < 0 || k >= (int)(sizeof g_gen / sizeof g_gen[0]))
        return -EINVAL;
    *label = g_gen[k].label;
    return gen_model(o, &g_gen[k], dir, cap);
}

/* ---- the model report ---------------------------------------------------------------------- */

static void print_mrow(const struct mrun_res *r, const char *label, const struct off_row *ceil_row)
{
    char a[32], b[32], c[32], d[32], e[32], f[32];
    if (!r->ok) {
        printf("  %-26s %10s   (failed or skipped)\n", label, "n/a");
        return;
    }
    char g[32] = "n/a", h[32] = "n/a";
    if (r->host_cpus >= 0) {
        snprintf(g, sizeof g, "%.1f", r->host_cpus);
        snprintf(h, sizeof h, "%.2f us", r->cpu_us_task);
    }
    printf("  %-26s %10s %9s %9s %9s %7s %8.1f %6s %9s", label, fmt_rate(a, sizeof a, r->tasks_s),
           fmt_us(b, sizeof b, r->mean_us), fmt_us(c, sizeof c, r->p50_us),
           fmt_us(d, sizeof d, r->p99_us), fmt_pct(e, sizeof e, r->busy_frac), r->avg_batch, g, h);
    if (ceil_row)
        printf("  %6.2fx of %s/s", r->tasks_s / ceil_row->rows_s,
               fmt_rate(f, sizeof f, ceil_row->rows_s));
    if (r->stream_rows == 1)
        printf("  (streaming stores)");
    if (r->data_threads > 1)
        printf("  (%d data threads)", r->data_threads);
    if (r->thr_busy_max >= 0)
        printf("  (busiest data thread %s)", fmt_pct(f, sizeof f, r->thr_busy_max));
    printf("\n");
}

void print_model_report(const struct opts *o, const struct model_res *mres, int nm)
{
    struct utsname u;
    uname(&u);
    char a[32], b[32], c[32], d[32];
    char hc[192];
    printf("\noag-bench model mode (liboag %s): %s, %s %s %s\n", oag_version(),
           fmt_host_cpus(hc, sizeof hc), u.sysname, u.release, u.machine);
    printf("targets: e2e tasks/s >= 0.8x the offline engine at the same max batch; oag_infer p50 "
           "at batch 1 <= offline forward + 15 us (informative)\n");
    for (int i = 0; i < nm; i++) {
        const struct model_res *mr = &mres[i];
        printf("\n== %s: %s", mr->label, mr->dir);
        if (!mr->loaded) {
            printf("  (could not be loaded)\n");
            continue;
        }
        char devs[32] = "";
        if (!strcmp(mr->off.backend, "cuda"))
            snprintf(devs, sizeof devs, " (device %u)", o->device);
        printf("\n   %s, %u -> %u, %u linear layers, %.1f MB of weights; backend %s%s; "
               "row payload %u bytes\n", mr->dtype, mr->in_dim, mr->out_dim, mr->nlinear,
               (double)mr->param_bytes / 1e6, mr->off.backend[0] ? mr->off.backend : o->backend,
               devs, mr->payload);

        printf("\n 1. Offline engine (created directly, max_batch %u; %u in flight when kept "
               "full%s)\n", o->max_batch, mr->off.max_inflight,
               mr->off_ok ? "" : "; FAILED");
        if (mr->off_ok) {
            printf("  %7s %14s %14s %16s %12s %7s\n", "batch", "one batch p50", "p99",
                   "kept full /batch", "rows/s", "runs");
            for (int k = 0; k < mr->off.nrows; k++) {
                const struct off_row *r = &mr->off.rows[k];
                if (!r->ok) {
                    printf("  %7u %14s\n", r->batch, "failed");
                    continue;
                }
                printf("  %7u %11s us %11s us %13s us %12s %3u/%-3u\n", r->batch,
                       fmt_us(a, sizeof a, r->lat_p50_us), fmt_us(b, sizeof b, r->lat_p99_us),
                       fmt_us(c, sizeof c, r->pipe_us), fmt_rate(d, sizeof d, r->rows_s),
                       r->lat_runs, r->pipe_runs);
            }
        } else if (mr->off.msg[0]) {
            printf("  %s\n", mr->off.msg);
        }
        const struct off_row *ce = off_at(mr, o->e2e_batch);
        const char *hdr = "  %-26s %10s %9s %9s %9s %7s %8s %6s %9s\n";
        if (mr->ceil_again > 0) {
            char a[32], b[32];
            printf("  batch %u kept full, measured again after the e2e rows: %s rows/s (first "
                   "%s); the ratios below use the higher%s\n", o->e2e_batch,
                   fmt_rate(a, sizeof a, mr->ceil_again), fmt_rate(b, sizeof b, mr->ceil_first),
                   mr->ceil_again > mr->ceil_first * 1.15 || mr->ceil_first > mr->ceil_again * 1.15
                       ? " (they differ by more than 15 %: the machine was not steady)" : "");
        }

        printf("\n 2. End to end, async agents (max batch %u, max delay %u us; ratio to the "
               "offline rows/s at batch %u)\n", o->e2e_batch, o->e2e_delay_us, o->e2e_batch);
        if (mr->ne2e)
            printf(hdr, "agents (window)", "tasks/s", "mean us", "p50 us", "p99 us", "busy",
                   "avg batch", "CPUs", "CPU/task");
        else
            printf("  (skipped)\n");
        for (int k = 0; k < mr->ne2e; k++) {
            char lab[64];
            snprintf(lab, sizeof lab, "%u agents (window %u)", mr->e2e[k].agents,
                     mr->e2e[k].window);
            print_mrow(&mr->e2e[k], lab, ce);
        }

        printf("\n 3. Single agent, oag_infer one task at a time (batch 1, max delay 0; %u calls)\n",
               o->m_lat_iters);
        const struct off_row *c1 = off_at(mr, 1);
        if (mr->lat.ok) {
            printf("  oag_infer p50 %s us, p99 %s us, p99.9 %s us", fmt_us(a, sizeof a,
                   mr->lat.p50_us), fmt_us(b, sizeof b, mr->lat.p99_us),
                   fmt_us(c, sizeof c, mr->lat.p999_us));
            if (c1)
                printf("; offline forward of batch 1: p50 %s us -> overhead %+.1f us",
                       fmt_us(d, sizeof d, c1->lat_p50_us), mr->lat.p50_us - c1->lat_p50_us);
            printf("\n");
        } else {
            printf("  %s\n", mr->ran_lat ? "(failed)" : "(skipped)");
        }

        printf("\n 4. One task at a time vs pipelined, %u agents (max batch %u, max delay %u us)\n",
               o->cmp_agents, o->e2e_batch, o->e2e_delay_us);
        if (mr->ran_cmp) {
            printf(hdr, "mode", "tasks/s", "mean us", "p50 us", "p99 us", "busy", "avg batch",
                   "CPUs", "CPU/task");
            print_mrow(&mr->sync, "sync (oag_infer loop)", NULL);
            char lab[64];
            snprintf(lab, sizeof lab, "pipelined (window %u)", mr->pipe.window);
            print_mrow(&mr->pipe, lab, ce);
        } else {
            printf("  (skipped)\n");
        }
        if (mr->sync.ok && mr->pipe.ok)
            printf("  pipelined / sync: %.2fx tasks/s\n", mr->pipe.tasks_s / mr->sync.tasks_s);

        printf("\n 5. No batching vs dynamic batching, %u sync agents\n", o->cmp_agents);
        if (mr->ran_batching) {
            printf(hdr, "config", "tasks/s", "mean us", "p50 us", "p99 us", "busy", "avg batch",
                   "CPUs", "CPU/task");
            print_mrow(&mr->nobatch, "--max-batch 1", off_at(mr, 1));
            char lab[64];
            snprintf(lab, sizeof lab, "--max-batch %u --delay %u", o->dyn_batch, o->dyn_delay_us);
            print_mrow(&mr->dyn, lab, off_at(mr, o->dyn_batch));
        } else {
            printf("  (skipped)\n");
        }
        if (mr->nobatch.ok && mr->dyn.ok)
            printf("  dynamic / none: %.2fx tasks/s\n", mr->dyn.tasks_s / mr->nobatch.tasks_s);

        printf("\n Targets (%s, informative)\n", mr->label);
        for (int k = 0; k < mr->ne2e; k++) {
            char t[96];
            snprintf(t, sizeof t, "e2e %u agents >= 0.8x offline (batch %u)", mr->e2e[k].agents,
                     o->e2e_batch);
            if (mr->e2e[k].ok && ce)
                printf("  %-58s %7.2fx  %s\n", t, mr->e2e[k].tasks_s / ce->rows_s,
                       mr->e2e[k].tasks_s >= 0.8 * ce->rows_s ? "PASS" : "MISS");
            else
                printf("  %-58s %8s  -\n", t, "n/a");
        }
        if (mr->lat.ok && c1)
            printf("  %-58s %+6.1fus  %s\n", "oag_infer p50 (batch 1) <= offline forward + 15 us",
                   mr->lat.p50_us - c1->lat_p50_us,
                   mr->lat.p50_us <= c1->lat_p50_us + 15.0 ? "PASS" : "MISS");
        else
            printf("  %-58s %8s  -\n", "oag_infer p50 (batch 1) <= offline forward + 15 us",
                   "n/a");
        /* every agent compared a sample of its results with the offline engine's */
        uint64_t chk = 0, bad = 0, errs = 0;
        const struct mrun_res *all[] = { &mr->lat, &mr->sync, &mr->pipe, &mr->nobatch, &mr->dyn };
        for (int k = 0; k < mr->ne2e; k++) {
            chk += mr->e2e[k].checked;
            bad += mr->e2e[k].mismatches;
            errs += mr->e2e[k].errors;
        }
        for (size_t k = 0; k < sizeof all / sizeof all[0]; k++) {
            chk += all[k]->checked;
            bad += all[k]->mismatches;
            errs += all[k]->errors;
        }
        char t[96];
        snprintf(t, sizeof t, "results = offline engine's (%" PRIu64 " checked), no errors", chk);
        if (chk)
            printf("  %-58s %8" PRIu64 "  %s\n", t, bad + errs, bad + errs ? "MISS" : "PASS");
        else
            printf("  %-58s %8s  -\n", t, "n/a");
    }
    printf("\n(busy: the engine's busy time over wall time, from status --json, summed over its "
           "instances (with --data-threads K, K share each GPU); avg batch: rows/batches in the "
           "window; CPUs: the host's CPUs busy on average over the window (/proc/stat: the "
           "agents, the supervisor, the driver, everything); CPU/task: that CPU time per task "
           "completed; latencies are submit to result, sampled; (streaming stores), (K data "
           "threads): the supervisor advised the one, ran the other, by default or as set; "
           "busiest data thread: its time working (not spinning idle, asleep or polling in "
           "vain) over the window, the most of the supervisor's data threads: near 100 %% it bounds the row)\n");
    fflush(stdout);
}

int model_main(struct opts *o)
{
    int nm = 0, failures = 0;
    struct model_res *mres = calloc(MM_MAX_MODELS + 2, sizeof *mres);
    char gen_dirs[2][PATH_MAX];
    int ngen = 0;
    if (!mres)
        return 1;
    /* the batch list: capped, with the batch sizes the other parts compare against */
    {
        unsigned extra[3] = { 1, o->e2e_batch, o->dyn_batch };
        for (int k = 0; k < 3; k++) {
            int have = 0;
            for (int i = 0; i < o->nbatches; i++)
                have |= o->batches[i] == extra[k];
            if (!have && o->nbatches < MM_MAX_BATCHES)
                o->batches[o->nbatches++] = extra[k];
        }
        qsort(o->batches, (size_t)o->nbatches, sizeof o->batches[0], cmp_u32);
        int n = 0;
        for (int i = 0; i < o->nbatches; i++)
            if (o->batches[i] <= o->max_batch && (n == 0 || o->batches[n - 1] != o->batches[i]))
                o->batches[n++] = o->batches[i];
        o->nbatches = n;
        if (o->e2e_batch > o->max_batch || o->dyn_batch > o->max_batch)
            warn("--e2e-batch %u / --dyn-batch %u above --max-batch %u: no offline ceiling for "
                 "them", o->e2e_batch, o->dyn_batch, o->max_batch);
    }
    if (o->gen_models) {
        for (size_t i = 0; i < sizeof g_gen / sizeof g_gen[0] && !g_stop; i++) {
            struct model_res *mr = &mres[nm];
            if (gen_model(o, &g_gen[i], mr->dir, sizeof mr->dir)) {
                failures++;
                continue;
            }
            snprintf(mr->label, sizeof mr->label, "%s", g_gen[i].label);
            if (!o->models_dir)
                snprintf(gen_dirs[ngen++], PATH_MAX, "%s", mr->dir);
            nm++;
        }
    }
    for (int i = 0; i < o->nmodels; i++) {
        struct model_res *mr = &mres[nm++];
        snprintf(mr->dir, sizeof mr->dir, "%s", o->models[i]);
        const char *slash = strrchr(o->models[i], '/');
        const char *base = slash && slash[1] ? slash + 1 : o->models[i];
        snprintf(mr->label, sizeof mr->label, "%s", base);
    }
    fprintf(stderr, "oag-bench: model mode: %d model(s), backend %s, supervisor %s\n", nm,
            o->backend, o->supervisor);
    for (int i = 0; i < nm && !g_stop; i++)
        failures += bench_model(o, &mres[i]);
    if (g_sup)
        sup_stop(g_sup);
    kill_all_kids();
    if (!g_stop)
        print_model_report(o, mres, nm);
    for (int i = 0; i < ngen; i++)
        rm_model_dir(gen_dirs[i]);
    free(mres);
    if (failures)
        warn("%d part%s failed (see above)", failures, failures == 1 ? "" : "s");
    return g_stop ? 130 : failures ? 1 : 0;
}
