#include "bench.h"

#include <math.h>
#include <string.h>

/* ---- agents against a model supervisor ------------------------------------------------------ */


#define MM_CHECK_EVERY 16     /* one result in this many is compared with the reference */

/* Four floats at a time, no early exit (the agents of a throughput row check 1 result in 16;
 * a scalar compare per element took ~8 % of the GPU host's CPUs at 6-7 M results/s). */
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));

int out_matches(const float *got, const float *want, uint32_t n)
{
    const f4 tol = { 2e-2f, 2e-2f, 2e-2f, 2e-2f };
    i4 ok = { -1, -1, -1, -1 };
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        f4 g, w;
        memcpy(&g, got + i, sizeof g);
        memcpy(&w, want + i, sizeof w);
        i4 d, a; /* |g - w| and |w|: the sign bits cleared */
        f4 diff = g - w;
        memcpy(&d, &diff, sizeof d);
        memcpy(&a, &w, sizeof a);
        d &= 0x7fffffff;
        a &= 0x7fffffff;
        f4 fd, fa;
        memcpy(&fd, &d, sizeof fd);
        memcpy(&fa, &a, sizeof fa);
        ok &= fd <= tol + tol * fa; /* NaN fails too */
    }
    int good = ok[0] & ok[1] & ok[2] & ok[3];
    for (; i < n; i++) {
        float d = got[i] - want[i], w = want[i] < 0 ? -want[i] : want[i];
        d = d < 0 ? -d : d;
        good &= d <= 2e-2f + 2e-2f * w;
    }
    return good != 0;
}

void samp_add(uint32_t *s, struct mrun_agent *r, uint32_t cap, uint64_t *rng, uint64_t ns)
{
    uint32_t v = clamp_ns(ns);
    r->seen++;
    if (r->nsamp < cap) {
        s[r->nsamp++] = v;
    } else if (cap) {
        uint64_t j = xorshift64(rng) % r->seen;
        if (j < cap)
            s[j] = v;
    }
}

/* The host's CPU time so far, in clock ticks: busy (user, nice, system, irq, softirq, steal)
 * and in all. Zeros when /proc/stat cannot be read. */
struct cpu_snap {
    uint64_t busy, total;
};

static void cpu_snap(struct cpu_snap *cs)
{
    unsigned long long v[8] = { 0 };
    FILE *f = fopen("/proc/stat", "r");
    cs->busy = cs->total = 0;
    if (!f)
        return;
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
               &v[5], &v[6], &v[7]) == 8) {
        cs->busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
        cs->total = cs->busy + v[3] + v[4];
    }
    fclose(f);
}

/* Window mode: counts a completion at t1 (latency ns) in its window and samples it there. */
void win_add(const struct mrun_cfg *cfg, struct mrun_agent *r, uint32_t *samp, uint64_t *rng,
             uint64_t t_start, uint64_t t1, uint64_t ns)
{
    if (!(cfg->win_s > 0) || t1 < t_start)
        return;
    uint64_t w = (t1 - t_start) / (uint64_t)(cfg->win_s * 1e9);
    if (w >= MM_MAX_WIN)
        return;
    /* one writer (this agent); the parent reads these live: relaxed is enough for a rate */
    oag_store_relaxed_u64(&r->wok[w], oag_load_relaxed_u64(&r->wok[w]) + 1);
    oag_store_relaxed_u64(&r->wlat[w], oag_load_relaxed_u64(&r->wlat[w]) + ns);
    uint32_t *s = samp + (size_t)w * cfg->samples_cap, v = clamp_ns(ns);
    r->wseen[w]++;
    if (r->wn[w] < cfg->samples_cap) {
        s[r->wn[w]++] = v;
    } else {
        uint64_t j = xorshift64(rng) % r->wseen[w];
        if (j < cfg->samples_cap)
            s[j] = v;
    }
}

static int fatal_rc(int rc)
{
    return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN || rc == -EPROTO ||
           rc == -EBADF || rc == -ENOMEM || rc == -EINVAL || rc == -EMSGSIZE;
}

struct tk_ent {
    uint64_t ticket, t0;
    uint32_t row;
};

static void magent_main(const struct mrun_cfg *cfg, struct mrun_shared *sh, uint32_t *samp,
                        unsigned idx, int start_fd, int ready_fd)
{
    struct mrun_agent *r = &sh->a[idx];
    uint64_t rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)idx << 32 | 1);
    oag_client *c = NULL;
    char ch = 'E';
    const uint32_t in_bytes = cfg->in_dim * 4u, out_bytes = cfg->out_dim * 4u;
    int rc = oag_connect(&c, cfg->sock);
    if (rc) {
        snprintf(r->msg, sizeof r->msg, "oag_connect: %s (%s)", oag_strerror(rc),
                 oag_last_error());
        goto fail;
    }
    oag_info info;
    rc = oag_get_info(c, &info);
    if (!rc && (info.input_dim != cfg->in_dim || info.output_dim != cfg->out_dim)) {
        snprintf(r->msg, sizeof r->msg, "the supervisor serves %u -> %u, expected %u -> %u",
                 info.input_dim, info.output_dim, cfg->in_dim, cfg->out_dim);
        rc = -EPROTO;
    }
    if (rc)
        goto fail;
    float *out = malloc(out_bytes);
    unsigned T = next_pow2(4 * (cfg->window > info.ring_slots ? cfg->window : info.ring_slots));
    struct tk_ent *tab = cfg->sync ? NULL : calloc(T, sizeof *tab);
    oag_completion *cmp = cfg->sync ? NULL : calloc(cfg->window, sizeof *cmp);
    if (!out || (!cfg->sync && (!tab || !cmp))) {
        snprintf(r->msg, sizeof r->msg, "out of memory");
        rc = -ENOMEM;
        goto fail;
    }
    ch = 'R';
    if (write(ready_fd, &ch, 1) != 1)
        _exit(1);
    ssize_t n;
    do
        n = read(start_fd, &ch, 1);
    while (n < 0 && errno == EINTR);
    if (n != 0)
        _exit(1); /* the parent died or aborted */

    const int count_mode = cfg->iters > 0;
    const uint64_t t_start = oag_load_relaxed_u64(&sh->t_start); /* ordered by the pipe */
    uint64_t t_end = count_mode ? UINT64_MAX : oag_load_relaxed_u64(&sh->t_end);
    const int win_mode = cfg->win_s > 0;
    const unsigned busy_us = cfg->busy_us ? cfg->busy_us : 20;
    uint32_t k = idx % MM_CHECK_ROWS;
    rc = 0;
    if (cfg->sync) {
        for (uint64_t i = 0;; i++) {
            if (count_mode && i >= (uint64_t)cfg->warmup + cfg->iters)
                break;
            uint64_t t0 = now_ns();
            if (win_mode)
                t_end = oag_load_relaxed_u64(&sh->t_end);
            if (t0 >= t_end)
                break;
            size_t len = 0;
            rc = oag_infer(c, cfg->rows + (size_t)k * cfg->in_dim, in_bytes, out, out_bytes,
                           &len, 30000);
            uint64_t t1 = now_ns();
            if (rc == -EBUSY) {
                r->busy++;
                sleep_us(busy_us);
                rc = 0;
                continue;
            }
            int in_window = count_mode ? i >= cfg->warmup : (t1 >= t_start && t1 < t_end);
            if (rc) {
                if (in_window || fatal_rc(rc))
                    r->err++;
                if (!r->msg[0])
                    snprintf(r->msg, sizeof r->msg, "oag_infer: %s (%s)", oag_strerror(rc),
                             oag_last_error());
                if (fatal_rc(rc))
                    break;
                rc = 0;
                continue;
            }
            if (len != out_bytes) {
                r->err++;
            } else if (in_window && cfg->timeout_us && t1 - t0 > cfg->timeout_us * 1000ull) {
                r->tmo++;
            } else if (in_window) {
                r->ok++;
                r->lat_sum_ns += t1 - t0;
                r->lat_n++;
                if (win_mode)
                    win_add(cfg, r, samp, &rng, t_start, t1, t1 - t0);
                else
                    samp_add(samp, r, cfg->samples_cap, &rng, t1 - t0);
            }
            if (cfg->expect && len == out_bytes && (i % MM_CHECK_EVERY) == 0) {
                r->checked++;
                if (!out_matches(out, cfg->expect + (size_t)k * cfg->out_dim, cfg->out_dim))
                    r->mismatch++;
            }
            k = (k + 1) % MM_CHECK_ROWS;
        }
    } else {
        unsigned outstanding = 0;
        uint64_t nrecv = 0, drain_deadline = 0;
        for (;;) {
            uint64_t t = now_ns();
            if (win_mode)
                t_end = oag_load_relaxed_u64(&sh->t_end);
            int draining, end = run_end(t, t_end, outstanding, &drain_deadline, &draining,
                                        r->msg, sizeof r->msg, "results");
            if (end) {
                rc = end < 0 ? end : rc;
                break;
            }
            int busy = 0;
            while (!draining && outstanding < cfg->window) {
                uint64_t ticket, t0 = now_ns();
                oag_submit_opts so = { .timeout_us = cfg->timeout_us };
                rc = oag_submit_ex(c, cfg->rows + (size_t)k * cfg->in_dim, in_bytes, &so,
                                   &ticket);
                if (rc == -EAGAIN) {
                    rc = 0;
                    break;
                }
                if (rc == -EBUSY) {
                    r->busy++;
                    busy = 1;
                    rc = 0;
                    break;
                }
                if (rc) {
                    snprintf(r->msg, sizeof r->msg, "oag_submit: %s (%s)", oag_strerror(rc),
                             oag_last_error());
                    break;
                }
                struct tk_ent *e = &tab[ticket & (T - 1)];
                if (e->ticket == 0)
                    *e = (struct tk_ent){ .ticket = ticket, .t0 = t0, .row = k };
                else
                    r->untracked++;
                outstanding++;
                k = (k + 1) % MM_CHECK_ROWS;
            }
            if (rc)
                break;
            if (outstanding == 0) {
                if (busy)
                    sleep_us(busy_us);
                continue;
            }
            int got = oag_poll(c, cmp, (int)cfg->window, 100);
            if (got < 0) {
                rc = got;
                snprintf(r->msg, sizeof r->msg, "oag_poll: %s (%s)", oag_strerror(rc),
                         oag_last_error());
                break;
            }
            uint64_t t1 = now_ns();
            int in_window = t1 >= t_start && t1 < t_end;
            for (int i = 0; i < got; i++) {
                const oag_completion *d = &cmp[i];
                struct tk_ent *e = &tab[d->ticket & (T - 1)];
                int tracked = e->ticket == d->ticket;
                if (outstanding)
                    outstanding--;
                nrecv++;
                if (d->status == -ETIMEDOUT ||
                    (!d->status && tracked && cfg->timeout_us &&
                     t1 - e->t0 > cfg->timeout_us * 1000ull)) {
                    if (in_window)
                        r->tmo++;
                } else if (d->status || d->len != out_bytes) {
                    if (in_window || !draining)
                        r->err++;
                    if (!r->msg[0])
                        snprintf(r->msg, sizeof r->msg, "completion: status %s, %u bytes",
                                 oag_strerror(d->status), d->len);
                } else {
                    if (in_window) {
                        r->ok++;
                        if (tracked) {
                            r->lat_sum_ns += t1 - e->t0;
                            r->lat_n++;
                            if (win_mode)
                                win_add(cfg, r, samp, &rng, t_start, t1, t1 - e->t0);
                            else
                                samp_add(samp, r, cfg->samples_cap, &rng, t1 - e->t0);
                        }
                    }
                    if (cfg->expect && tracked && (nrecv % MM_CHECK_EVERY) == 0) {
                        r->checked++;
                        if (!out_matches(d->data, cfg->expect + (size_t)e->row * cfg->out_dim,
                                         cfg->out_dim))
                            r->mismatch++;
                    }
                }
                if (tracked)
                    e->ticket = 0;
            }
        }
    }
    oag_close(c);
    free(out);
    free(tab);
    free(cmp);
    r->rc = rc;
    _exit(rc ? 1 : 0);

fail:
    r->rc = rc ? rc : -EIO;
    if (write(ready_fd, &ch, 1) != 1) {
        /* the parent notices the exit */
    }
    oag_close(c);
    _exit(1);
}

/* Engine figures of the run's server: the supervisor's status --json, or the RPC server's
 * shared counters. */
static int run_stats(const struct opts *o, const struct sup *s, const struct mrun_cfg *cfg,
                     struct eng_stats *st)
{
    if (cfg->rpc) {
        rpc_read_stats(cfg->rpc, st);
        return 0;
    }
    return sup_stats(o, s, st);
}

/* Window mode: 1 if windows k-2..k agree within 10% of their mean (tasks/s and mean latency),
 * perf_analyzer's stability rule. */
static int win_stable(const double *rate, const double *mean, unsigned k)
{
    if (k < 2)
        return 0;
    double ra = (rate[k] + rate[k - 1] + rate[k - 2]) / 3, ma = (mean[k] + mean[k - 1] + mean[k - 2]) / 3;
    for (unsigned i = k - 2; i <= k; i++)
        if (!(ra > 0) || fabs(rate[i] - ra) > 0.1 * ra || fabs(mean[i] - ma) > 0.1 * ma)
            return 0;
    return 1;
}

/* Window k's tasks/s and mean latency (us) from the agents' counters. */
static void win_figures(const struct mrun_shared *sh, unsigned na, unsigned k, double win_s,
                        double *rate, double *mean)
{
    uint64_t n = 0, lat = 0;
    for (unsigned i = 0; i < na; i++) {
        n += oag_load_relaxed_u64(&sh->a[i].wok[k]);
        lat += oag_load_relaxed_u64(&sh->a[i].wlat[k]);
    }
    *rate = (double)n / win_s;
    *mean = n ? (double)lat / (double)n / 1e3 : 0;
}

/* Runs one row: cfg->nagents agent processes against the supervisor s (or cfg->rpc). In window
 * mode the figures (tasks/s, percentiles) are those of the last three windows. */
int mrun(const struct opts *o, const struct sup *s, const struct mrun_cfg *cfg,
                struct mrun_res *res)
{
    unsigned na = cfg->nagents, cap = cfg->samples_cap;
    size_t hdr = sizeof(struct mrun_shared) + (size_t)na * sizeof(struct mrun_agent);
    hdr = (hdr + 63) & ~(size_t)63;
    const int win_mode = cfg->win_s > 0;
    unsigned max_win = cfg->max_win < 3 ? 3 : cfg->max_win > MM_MAX_WIN ? MM_MAX_WIN : cfg->max_win;
    size_t per_agent = (size_t)cap * (win_mode ? MM_MAX_WIN : 1);
    size_t size = hdr + (size_t)na * per_agent * sizeof(uint32_t);
    struct mrun_shared *sh = shared_alloc(size);
    pid_t *pids = calloc(na, sizeof *pids);
    int start_pipe[2] = { -1, -1 }, rdy[2] = { -1, -1 }, rc = 0;
    unsigned forked = 0, ready = 0;
    uint32_t *samples = NULL;
    res->agents = na;
    res->window = cfg->window;
    res->sync = cfg->sync;
    res->busy_frac = -1;
    res->thr_busy_max = -1;
    res->host_cpus = res->cpu_us_task = -1;
    res->stream_rows = -1;
    if (!sh || !pids) {
        rc = -ENOMEM;
        goto out;
    }
    if (pipe2(start_pipe, O_CLOEXEC) || pipe2(rdy, O_CLOEXEC)) {
        rc = -errno;
        goto out;
    }
    uint32_t *samp_base = (uint32_t *)((char *)sh + hdr);
    for (; forked < na; forked++) {
        pid_t pid = spawn_agent();
        if (pid < 0) {
            rc = -errno;
            warn("fork agent %u: %s", forked, strerror(errno));
            goto out;
        }
        if (pid == 0) {
            close(start_pipe[1]);
            close(rdy[0]);
            agent_env(cfg->spin_us);
            if (cfg->rpc)
                rpc_agent_main(cfg, sh, samp_base + (size_t)forked * per_agent, forked,
                               start_pipe[0], rdy[1]);
            magent_main(cfg, sh, samp_base + (size_t)forked * per_agent, forked, start_pipe[0],
                        rdy[1]);
        }
        pids[forked] = pid;
    }
    close(start_pipe[0]);
    start_pipe[0] = -1;
    close(rdy[1]);
    rdy[1] = -1;

    uint64_t deadline = now_ns() + 120000000000ull;
    while (ready < na) {
        if (g_stop) {
            rc = -EINTR;
            goto out;
        }
        struct pollfd pf = { .fd = rdy[0], .events = POLLIN };
        int r = poll(&pf, 1, 200);
        if (r < 0 && errno != EINTR) {
            rc = -errno;
            goto out;
        }
        if (now_ns() > deadline) {
            warn("%s: %u/%u agents connected in 120 s", res->name, ready, na);
            rc = -ETIMEDOUT;
            goto out;
        }
        if (r <= 0)
            continue;
        char buf[256];
        ssize_t n = read(rdy[0], buf, sizeof buf);
        if (n <= 0) {
            warn("%s: agents exited before they were ready", res->name);
            rc = -ECHILD;
            goto out;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != 'R') {
                for (unsigned a = 0; a < na; a++)
                    if (sh->a[a].rc) {
                        warn("%s: agent %u: %s", res->name, a, sh->a[a].msg);
                        break;
                    }
                rc = -ECHILD;
                goto out;
            }
            ready++;
        }
    }
    /* go */
    uint64_t t = now_ns();
    const uint64_t t_start = t + (uint64_t)(cfg->warm_s * 1e9);
    const uint64_t win_ns = (uint64_t)(cfg->win_s * 1e9);
    uint64_t t_end = win_mode ? UINT64_MAX : t_start + (uint64_t)(cfg->duration_s * 1e9);
    oag_store_relaxed_u64(&sh->t_start, t_start); /* the agents read them after the pipe's EOF */
    oag_store_relaxed_u64(&sh->t_end, t_end);
    struct eng_stats st0 = { 0 }, st1 = { 0 };
    struct cpu_snap cs0 = { 0 }, cs1 = { 0 };
    uint64_t q0 = 0, q1 = 0;
    unsigned last_win = 0;
    close(start_pipe[1]);
    start_pipe[1] = -1;
    if (!cfg->iters) {
        sleep_until(t_start);
        q0 = now_ns();
        cpu_snap(&cs0);
        run_stats(o, s, cfg, &st0);
        q0 = (q0 + now_ns()) / 2;
        if (win_mode) {
            /* perf_analyzer-like: window after window until three agree (or max_win) */
            for (unsigned k = 0; k < max_win && !g_stop; k++) {
                sleep_until(t_start + (k + 1) * win_ns + 20000000ull);
                win_figures(sh, na, k, cfg->win_s, &res->win_tasks_s[k], &res->win_mean_us[k]);
                last_win = k;
                if (win_stable(res->win_tasks_s, res->win_mean_us, k))
                    break;
            }
            t_end = t_start + (last_win + 1) * win_ns;
            oag_store_relaxed_u64(&sh->t_end, t_end);
        } else {
            sleep_until(t_end);
        }
        q1 = now_ns();
        cpu_snap(&cs1);
        run_stats(o, s, cfg, &st1);
        q1 = (q1 + now_ns()) / 2;
    }
    /* the agents drain and exit */
    for (unsigned i = 0; i < forked; i++) {
        int st;
        int r;
        while ((r = reap(pids[i], 1000, &st)) == -ETIMEDOUT && !g_stop &&
               now_ns() < (cfg->iters ? UINT64_MAX : t_end + 60000000000ull))
            ;
        if (r == -ETIMEDOUT) {
            warn("%s: agent %u did not finish: killed", res->name, i);
            kill(pids[i], SIGKILL);
            reap(pids[i], -1, &st);
            rc = g_stop ? -EINTR : -ETIMEDOUT;
        } else if (r == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0) && !rc) {
            warn("%s: agent %u failed: %s", res->name, i,
                 sh->a[i].msg[0] ? sh->a[i].msg
                                 : (WIFSIGNALED(st) ? strsignal(WTERMSIG(st)) : "exit status"));
            rc = sh->a[i].rc ? sh->a[i].rc : -ECHILD;
        }
        pids[i] = 0;
    }
    forked = 0;
    if (rc)
        goto out;

    /* aggregate */
    uint64_t ok = 0, lat_sum = 0, lat_n = 0, nsamp = 0;
    for (unsigned i = 0; i < na; i++) {
        struct mrun_agent *a = &sh->a[i];
        ok += a->ok;
        lat_sum += a->lat_sum_ns;
        lat_n += a->lat_n;
        nsamp += a->nsamp;
        res->errors += a->err;
        res->mismatches += a->mismatch;
        res->busy_retries += a->busy;
        res->checked += a->checked;
        res->timeouts += a->tmo;
        if (a->err && a->msg[0] && res->errors == a->err)
            warn("%s: agent %u: %" PRIu64 " errors, first: %s", res->name, i, a->err, a->msg);
    }
    double win_s = cfg->iters ? 0 : (double)(t_end - t_start) / 1e9;
    res->done = ok;
    res->tasks_s = win_s > 0 ? (double)ok / win_s : 0;
    res->mean_us = lat_n ? (double)lat_sum / (double)lat_n / 1e3 : 0;
    if (win_mode) {
        /* final per-window figures; the row's figures are the last three windows' */
        unsigned k0 = last_win >= 2 ? last_win - 2 : 0;
        uint64_t n3 = 0, l3 = 0;
        res->nwin = last_win + 1;
        for (unsigned k = 0; k <= last_win; k++)
            win_figures(sh, na, k, cfg->win_s, &res->win_tasks_s[k], &res->win_mean_us[k]);
        res->stable = win_stable(res->win_tasks_s, res->win_mean_us, last_win);
        nsamp = 0;
        for (unsigned i = 0; i < na; i++)
            for (unsigned k = k0; k <= last_win; k++) {
                n3 += oag_load_relaxed_u64(&sh->a[i].wok[k]);
                l3 += oag_load_relaxed_u64(&sh->a[i].wlat[k]);
                nsamp += sh->a[i].wn[k];
            }
        res->tasks_s = (double)n3 / ((last_win + 1 - k0) * cfg->win_s);
        res->mean_us = n3 ? (double)l3 / (double)n3 / 1e3 : 0;
        if (nsamp) {
            samples = malloc(nsamp * sizeof *samples);
            if (!samples) {
                rc = -ENOMEM;
                goto out;
            }
            size_t m = 0;
            for (unsigned i = 0; i < na; i++)
                for (unsigned k = k0; k <= last_win; k++) {
                    memcpy(samples + m, samp_base + (size_t)i * per_agent + (size_t)k * cap,
                           sh->a[i].wn[k] * sizeof *samples);
                    m += sh->a[i].wn[k];
                }
            qsort(samples, m, sizeof *samples, cmp_u32);
            res->p50_us = pct_us(samples, m, 0.50);
            res->p90_us = pct_us(samples, m, 0.90);
            res->p99_us = pct_us(samples, m, 0.99);
            res->p999_us = pct_us(samples, m, 0.999);
        }
    } else if (nsamp) {
        samples = malloc(nsamp * sizeof *samples);
        if (!samples) {
            rc = -ENOMEM;
            goto out;
        }
        size_t m = 0;
        for (unsigned i = 0; i < na; i++) {
            memcpy(samples + m, samp_base + (size_t)i * cap, sh->a[i].nsamp * sizeof *samples);
            m += sh->a[i].nsamp;
        }
        qsort(samples, m, sizeof *samples, cmp_u32);
        res->p50_us = pct_us(samples, m, 0.50);
        res->p90_us = pct_us(samples, m, 0.90);
        res->p99_us = pct_us(samples, m, 0.99);
        res->p999_us = pct_us(samples, m, 0.999);
    }
    if (st1.ok) {
        res->stream_rows = st1.stream_rows;
        res->data_threads = st1.data_threads;
    }
    for (int k = 0; st0.ok && st1.ok && k < st0.nthr && k < st1.nthr; k++) {
        double wall = st1.thr_wall_s[k] - st0.thr_wall_s[k];
        if (wall > 0 && st1.thr_busy_s[k] >= st0.thr_busy_s[k]) {
            double f = (st1.thr_busy_s[k] - st0.thr_busy_s[k]) / wall;
            if (f > res->thr_busy_max)
                res->thr_busy_max = f;
        }
    }
    if (cs0.total && cs1.total >= cs0.total + 20 && cs1.busy >= cs0.busy && res->done > 0) {
        /* every process on the host: the agents, the supervisor, the driver's threads; ticks
         * of 1/CLK_TCK s, so only over 20 or more of them in all (else unknown) */
        double busy_s = (double)(cs1.busy - cs0.busy) / (double)sysconf(_SC_CLK_TCK);
        double cpus = (double)sysconf(_SC_NPROCESSORS_ONLN);
        res->host_cpus = cpus * (double)(cs1.busy - cs0.busy) / (double)(cs1.total - cs0.total);
        res->cpu_us_task = busy_s * 1e6 / (double)res->done;
    }
    if (st0.ok && st1.ok && q1 > q0) {
        res->busy_frac = (st1.busy_s - st0.busy_s) / ((double)(q1 - q0) / 1e9);
        if (st1.batches > st0.batches)
            res->avg_batch = (double)(st1.rows - st0.rows) / (double)(st1.batches - st0.batches);
    }
    if (res->busy_retries)
        warn("%s: %" PRIu64 " submits refused with -EBUSY (the supervisor's queue was full; "
             "--max-queue)", res->name, res->busy_retries);
    if (res->mismatches)
        warn("%s: %" PRIu64 " of %" PRIu64 " checked results differ from the offline engine's "
             "beyond 2e-2 + 2e-2*|ref|", res->name, res->mismatches, res->checked);
    if (!ok) {
        warn("%s: no task completed inside the measured window", res->name);
        rc = -EIO;
        goto out;
    }
    res->ok = 1;

out:
    if (start_pipe[0] >= 0)
        close(start_pipe[0]);
    if (start_pipe[1] >= 0)
        close(start_pipe[1]);
    if (rdy[0] >= 0)
        close(rdy[0]);
    if (rdy[1] >= 0)
        close(rdy[1]);
    for (unsigned i = 0; i < forked; i++) {
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            reap(pids[i], -1, NULL);
        }
    }
    free(samples);
    free(pids);
    if (sh)
        munmap(sh, size);
    return rc;
}

/* ---- a model supervisor ---------------------------------------------------------------------- */


int msup_start(const struct opts *o, const struct model_res *mr, const char *backend,
                      const struct msup_cfg *c, struct sup *s)
{
    char mb[16], dl[16], pl[16], rs[16], ln[16], mq[16], dev[16], th[16];
    snprintf(mb, sizeof mb, "%u", c->max_batch);
    snprintf(dl, sizeof dl, "%u", c->delay_us);
    snprintf(pl, sizeof pl, "%u", mr->payload);
    snprintf(rs, sizeof rs, "%u", c->ring_slots);
    snprintf(ln, sizeof ln, "%u", c->lanes);
    snprintf(mq, sizeof mq, "%u", c->max_queue);
    snprintf(dev, sizeof dev, "%u", o->device);
    snprintf(th, sizeof th, "%u", o->threads);
    const char *args[32];
    int n = 0;
    args[n++] = "--backend";
    args[n++] = backend;
    args[n++] = "--model";
    args[n++] = mr->dir;
    args[n++] = "--max-batch";
    args[n++] = mb;
    args[n++] = "--max-delay-us";
    args[n++] = dl;
    args[n++] = "--max-payload";
    args[n++] = pl;
    args[n++] = "--ring-slots";
    args[n++] = rs;
    args[n++] = "--max-lanes";
    args[n++] = ln;
    args[n++] = "--max-queue";
    args[n++] = mq;
    if (c->no_spin) {
        args[n++] = "--spin-us";
        args[n++] = "0";
    }
    char ni[16];
    if (!strcmp(backend, "cuda")) {
        args[n++] = "--gpus";
        args[n++] = o->gpus ? o->gpus : dev;
    } else if (o->instances) {
        snprintf(ni, sizeof ni, "%u", o->instances);
        args[n++] = "--instances";
        args[n++] = ni;
    }
    if (o->threads) {
        args[n++] = "--threads";
        args[n++] = th;
    }
    args[n] = NULL;
    fprintf(stderr, "oag-bench:   supervisor --max-batch %u --max-delay-us %u --ring-slots %u "
            "--max-lanes %u --max-queue %u ...\n", c->max_batch, c->delay_us, c->ring_slots,
            c->lanes, c->max_queue);
    return sup_start_argv(o->supervisor, s, args, NULL, o->sup_ready_s * 1000u);
}

/* The engine's work a sleeping agent's wake-up should carry, in seconds: the wake-up costs ~10
 * us of the GPU host's CPU, both sides together (session 10's profiles). */
#define WAKE_WORK_S 2e-6

unsigned auto_window(const struct opts *o, const struct model_res *mr, unsigned max_batch,
                     unsigned agents)
{
    if (o->m_window)
        return o->m_window;
    /* Enough outstanding overall that the device never waits (Little's law): each engine
     * instance holds 4 batches in flight, and the supervisor on a GPU host with batches this
     * large runs two or three (a data thread each: 8-12 batches inside the engines), and about
     * as many again are on their way between the engines and the agents (results being
     * returned, tasks being resubmitted, the next batch forming): 16 batches' worth. With 8
     * (the rule from the days of one instance) the 768 model's rows left the engines' slots
     * half empty: on the H200 machine (session 11, two data threads) 64 agents 9.9 / 10.5 M
     * with window 128 against 9.0 / 8.9 M with 64 (runs by copy engine from 32 KB); 512 agents
     * 8.4 / 8.6 M with window 16 against 6.0 / 5.6 M with 8.
     *
     * And an agent that waits sleeps: its wake-up should carry WAKE_WORK_S of the engine's
     * work at the offline ceiling (when it was measured), or the host's CPUs go to wake-ups
     * before the engine is busy. On the H100 machine (session 11), 512 agents: the 768 model
     * (14.7 M rows/s: 32 tasks) 11.0 / 11.0 M with window 32 against 9.2 / 8.7 M with 16; the
     * 4096 model (2.96 M: 8 tasks, and 16 from the batches) 2.56 / 2.71 M with 16 against
     * 2.44 / 2.39 with 8 and 2.25 / 2.23 M with 32 (its 16 KB rows: more in flight only costs
     * the host). */
    unsigned w = next_pow2((16 * max_batch + agents - 1) / agents);
    const struct off_row *ce = mr ? off_at(mr, max_batch) : NULL;
    if (ce && ce->rows_s > 0) {
        double t = ce->rows_s * WAKE_WORK_S;
        unsigned wake = t >= 1024 ? 1024 : next_pow2((unsigned)t + (t > (unsigned)t));
        if (w < wake)
            w = wake;
    }
    if (w < 8)
        w = 8;
    if (w > 1024)
        w = 1024;
    return w;
}

struct msup_cfg msup_for(const struct opts *o, unsigned max_batch, unsigned delay_us,
                                unsigned agents, unsigned window)
{
    struct msup_cfg c = { .max_batch = max_batch, .delay_us = delay_us };
    c.ring_slots = next_pow2(window < 2 ? 2 : window);
    c.lanes = agents + 16;
    uint64_t q = (uint64_t)agents * window;
    if (q < 4ull * max_batch)
        q = 4ull * max_batch;
    if (q < 4096)
        q = 4096;
    if (q > (1u << 24))
        q = 1u << 24;
    c.max_queue = o->m_max_queue ? o->m_max_queue : (unsigned)q;
    return c;
}

/* Starts a supervisor for cfgs, runs each row on it, stops it. */
int mrow_group(const struct opts *o, const struct model_res *mr, const char *backend,
                      const struct msup_cfg *sc, struct mrun_cfg *const cfgs[],
                      struct mrun_res *const res[], int n)
{
    struct sup s;
    int rc = msup_start(o, mr, backend, sc, &s);
    if (rc) {
        warn("%s: supervisor: %s", res[0]->name, oag_strerror(rc));
        return rc;
    }
    int failed = 0;
    for (int i = 0; i < n && !g_stop; i++) {
        cfgs[i]->sock = s.sock;
        res[i]->max_batch = sc->max_batch;
        res[i]->delay_us = sc->delay_us;
        fprintf(stderr, "oag-bench:   %s ...\n", res[i]->name);
        rc = mrun(o, &s, cfgs[i], res[i]);
        if (rc) {
            warn("%s: %s", res[i]->name, oag_strerror(rc));
            failed++;
        }
    }
    if (sup_stop(&s))
        failed++;
    return failed ? -EIO : 0;
}
