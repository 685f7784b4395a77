/*
 * tables.c - `oag-bench table N`: one command per table of the classic agent-deployment tuning
 * guide (docs/BENCHMARKS.md). This file holds what the tables share: the model they run (--model
 * DIR, else the generated mlp768x2-fp16), the offline engine run that resolves the backend and
 * computes the reference results every agent checks, the table header, the JSON document
 * (--json FILE: {"table", "title", "machine", "model", "guide", "rows": [...], "summary"}) and the
 * dispatch. Each table is one file t_*.c; each prints a human table with the baseline measured in
 * the same run, oag's figure and the guide's published numbers.
 */
#include "bench.h"

#include <cjson/cJSON.h>
#include <math.h>

/* Adds a number; NaN and infinities (not JSON) become null. */
void jnum(cJSON *obj, const char *key, double v)
{
    if (isfinite(v))
        cJSON_AddNumberToObject(obj, key, v);
    else
        cJSON_AddNullToObject(obj, key);
}

/* A new row of the JSON document: {"system": system, "label": label}. Owned by the document. */
cJSON *trow(struct tctx *c, const char *system, const char *label)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "system", system);
    cJSON_AddStringToObject(r, "label", label);
    cJSON_AddItemToArray(c->jrows, r);
    return r;
}

/* Errors per attempt: (refused + late + failed) / (done + refused + late + failed). */
double err_rate(const struct mrun_res *r)
{
    double bad = (double)(r->busy_retries + r->timeouts + r->errors);
    double all = bad + (double)r->done;
    return all > 0 ? bad / all : 0;
}

/* The figures of an agent run (mrun_res) into a row. */
void jrow_mrun(cJSON *row, const struct mrun_res *r)
{
    cJSON_AddBoolToObject(row, "ok", r->ok);
    jnum(row, "agents", r->agents);
    jnum(row, "window", r->window);
    jnum(row, "in_flight", (double)r->agents * r->window);
    jnum(row, "max_batch", r->max_batch);
    jnum(row, "delay_us", r->delay_us);
    jnum(row, "tasks_s", r->tasks_s);
    jnum(row, "mean_us", r->mean_us);
    jnum(row, "p50_us", r->p50_us);
    jnum(row, "p90_us", r->p90_us);
    jnum(row, "p99_us", r->p99_us);
    jnum(row, "busy_pct", r->busy_frac >= 0 ? r->busy_frac * 100 : NAN);
    jnum(row, "avg_batch", r->avg_batch);
    if (r->host_cpus >= 0) {
        jnum(row, "host_cpus", r->host_cpus);
        jnum(row, "cpu_us_per_task", r->cpu_us_task);
    }
    if (r->stream_rows >= 0)
        cJSON_AddBoolToObject(row, "stream_rows", r->stream_rows);
    if (r->data_threads > 0)
        jnum(row, "data_threads", r->data_threads);
    if (r->thr_busy_max >= 0)
        jnum(row, "data_thread_busy_max_pct", r->thr_busy_max * 100);
    jnum(row, "done", (double)r->done);
    jnum(row, "errors", (double)r->errors);
    jnum(row, "timeouts", (double)r->timeouts);
    jnum(row, "busy_refusals", (double)r->busy_retries);
    jnum(row, "error_rate", err_rate(r));
    jnum(row, "mismatches", (double)r->mismatches);
    jnum(row, "checked", (double)r->checked);
    if (r->nwin) {
        cJSON *w = cJSON_AddArrayToObject(row, "windows");
        for (unsigned k = 0; k < r->nwin; k++) {
            cJSON *x = cJSON_CreateObject();
            jnum(x, "tasks_s", r->win_tasks_s[k]);
            jnum(x, "mean_us", r->win_mean_us[k]);
            cJSON_AddItemToArray(w, x);
        }
        cJSON_AddBoolToObject(row, "stable", r->stable);
    }
}

void tprint_guide(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("  guide: ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
}

/* The table's title line and the machine/model it ran on (stdout and the JSON document). */
void tprint_head(struct tctx *c, const char *title)
{
    struct utsname u;
    char host[128] = "";
    uname(&u);
    gethostname(host, sizeof host - 1);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("\nTable %d. %s\n", c->o->table, title);
    char hc[192];
    printf("  machine: %s, %s, %s %s %s; liboag %s; backend %s\n", host,
           fmt_host_cpus(hc, sizeof hc), u.sysname, u.release, u.machine, oag_version(),
           c->backend);
    cJSON_AddStringToObject(c->root, "title", title);
    cJSON *m = cJSON_AddObjectToObject(c->root, "machine");
    cJSON_AddStringToObject(m, "host", host);
    jnum(m, "cpus", (double)cpus);
    cJSON_AddStringToObject(m, "kernel", u.release);
    cJSON_AddStringToObject(m, "arch", u.machine);
    cJSON_AddStringToObject(c->root, "backend", c->backend);
    if (c->mr.loaded) {
        printf("  model: %s (%s), %s, %u -> %u, %u linear layers, %.1f MB of weights\n",
               c->mr.label, c->mr.dir, c->mr.dtype, c->mr.in_dim, c->mr.out_dim, c->mr.nlinear,
               (double)c->mr.param_bytes / 1e6);
        cJSON *j = cJSON_AddObjectToObject(c->root, "model");
        cJSON_AddStringToObject(j, "name", c->mr.label);
        cJSON_AddStringToObject(j, "dir", c->mr.dir);
        cJSON_AddStringToObject(j, "dtype", c->mr.dtype);
        jnum(j, "input_dim", c->mr.in_dim);
        jnum(j, "output_dim", c->mr.out_dim);
        jnum(j, "linear_layers", c->mr.nlinear);
        jnum(j, "param_bytes", (double)c->mr.param_bytes);
    }
}

/* The model of tables 2-7: --model DIR (the first), else the generated mlp768x2-fp16 (kept in
 * --models-dir, else in the temp dir). Fills c->mr and the shared check rows. */
int tctx_model(struct tctx *c)
{
    struct opts *o = c->o;
    struct model_res *mr = &c->mr;
    if (o->nmodels) {
        snprintf(mr->dir, sizeof mr->dir, "%s", o->models[0]);
        const char *slash = strrchr(o->models[0], '/');
        snprintf(mr->label, sizeof mr->label, "%s", slash && slash[1] ? slash + 1 : o->models[0]);
    } else {
        const char *label = "";
        int rc = model_gen_std(o, 0, mr->dir, sizeof mr->dir, &label);
        if (rc)
            return rc;
        snprintf(mr->label, sizeof mr->label, "%s", label);
        if (!o->models_dir)
            snprintf(c->gen_dir, sizeof c->gen_dir, "%s", mr->dir);
    }
    int rc = model_describe(mr);
    if (rc)
        return rc;
    size_t hdr = (sizeof(struct off_shared) + 63) & ~(size_t)63;
    c->sh_size = hdr + (size_t)MM_CHECK_ROWS * (mr->in_dim + mr->out_dim) * sizeof(float);
    c->sh = shared_alloc(c->sh_size);
    if (!c->sh)
        return -ENOMEM;
    c->rows = (float *)((char *)c->sh + hdr);
    c->expect = c->rows + (size_t)MM_CHECK_ROWS * mr->in_dim;
    uint64_t rng = 0x2545f4914f6cdd1dull;
    for (size_t i = 0; i < (size_t)MM_CHECK_ROWS * mr->in_dim; i++)
        c->rows[i] = (float)((double)(xorshift64(&rng) >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    return 0;
}

/* Runs the offline engine (a child) over batch sizes batches[0..n) (each capped at --max-batch),
 * iters timed batches and max_s seconds per size at most; resolves c->backend and the reference
 * results. Returns 0 or a negative errno (logged). */
int tctx_offline(struct tctx *c, const unsigned *batches, int n, unsigned iters, double max_s)
{
    struct opts oo = *c->o;
    oo.nbatches = 0;
    for (int i = 0; i < n && oo.nbatches < MM_MAX_BATCHES; i++)
        if (batches[i] <= oo.max_batch)
            oo.batches[oo.nbatches++] = batches[i];
    oo.off_iters = iters;
    oo.off_max_s = max_s;
    fprintf(stderr, "oag-bench: %s: offline engine (%s) ...\n", c->mr.label, oo.backend);
    int rc = bench_offline(&oo, c->mr.dir, c->sh, c->rows, c->expect, c->mr.payload);
    memcpy(&c->mr.off, c->sh, sizeof c->mr.off);
    if (c->mr.off.backend[0])
        c->backend = c->mr.off.backend;
    if (rc)
        return rc;
    c->mr.off_ok = 1;
    c->exp_rows = c->sh->have_expect ? c->expect : NULL;
    return 0;
}

typedef int (*table_fn)(struct tctx *c);

/* Runs table o->table. Exit status: 0, 1 (a part failed) or 130 (interrupted). */
int tables_main(struct opts *o)
{
    static const table_fn fns[8] = { NULL, t_load, t_batch, t_sync, t_batching, t_rpc, t_ramp,
                                     t_sweep };
    struct tctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.backend = o->backend;
    c.root = cJSON_CreateObject();
    if (!c.root)
        return 1;
    cJSON_AddNumberToObject(c.root, "table", o->table);
    cJSON_AddStringToObject(c.root, "oag_version", oag_version());
    c.jrows = cJSON_AddArrayToObject(c.root, "rows");
    int rc = 0;
    if (o->table != 1) {
        rc = tctx_model(&c);
        if (rc)
            warn("table %d: no model: %s", o->table, strerror(-rc));
    }
    if (!rc)
        rc = fns[o->table](&c);
    if (g_sup)
        sup_stop(g_sup);
    kill_all_kids();
    if (rc && !c.failures)
        c.failures = 1;
    cJSON_AddNumberToObject(c.root, "failures", c.failures);
    if (o->json) {
        char *txt = cJSON_Print(c.root);
        FILE *f = txt ? fopen(o->json, "w") : NULL;
        if (!f || fputs(txt, f) < 0 || fputc('\n', f) < 0 || fclose(f) != 0) {
            warn("cannot write %s: %s", o->json, strerror(errno));
            c.failures++;
        } else {
            fprintf(stderr, "oag-bench: wrote %s\n", o->json);
        }
        free(txt);
    }
    cJSON_Delete(c.root);
    if (c.sh)
        munmap(c.sh, c.sh_size);
    if (c.gen_dir[0])
        rm_model_dir(c.gen_dir);
    fflush(stdout);
    if (c.failures)
        warn("table %d: %d part%s failed (see above)", o->table, c.failures,
             c.failures == 1 ? "" : "s");
    return g_stop ? 130 : c.failures ? 1 : 0;
}

/* The same rows (agents x window each) against the RPC server of the same engine, unless
 * --no-rpc; results into rr[i], named "RPC <what>, N in flight". A failed row counts in
 * c->failures. */
void trpc_rows(struct tctx *c, const struct mrun_cfg *co, struct mrun_res *rr, int n,
               const char *what)
{
    const struct opts *o = c->o;
    if (o->no_rpc || g_stop)
        return;
    struct rpc_srv srv;
    if (rpc_start(o, &c->mr, c->backend, o->e2e_batch, &srv)) {
        c->failures++;
        return;
    }
    for (int i = 0; i < n && !g_stop; i++) {
        struct mrun_cfg cfg = co[i];
        cfg.rpc = &srv;
        snprintf(rr[i].name, sizeof rr[i].name, "RPC %s, %u in flight", what,
                 cfg.nagents * cfg.window);
        rr[i].max_batch = o->e2e_batch;
        fprintf(stderr, "oag-bench:   %s ...\n", rr[i].name);
        if (mrun(o, NULL, &cfg, &rr[i]))
            c->failures++;
    }
    rpc_stop(&srv);
}
