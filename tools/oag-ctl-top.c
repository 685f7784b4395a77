/*
 * oag-ctl-top.c - `oag-ctl top [--interval MS] [--once]`: a live view of one supervisor, polled
 * from `status --json` every interval. Rates (tasks/s, batch size, engine busy %, queue and
 * compute time) are deltas between two samples over the supervisor's own clock (uptime_s).
 *
 * In place (stdout a terminal, no --once): each frame homes the cursor, writes its lines each
 * followed by erase-to-end-of-line, then erases below: no full-screen clear (so no flicker)
 * except on start and after a resize. Lines are clipped to the terminal width and a frame never
 * uses the last row, so nothing wraps or scrolls and on exit the cursor is left on a blank line
 * under the last frame. While it runs the cursor is hidden and stdin is in non-canonical mode
 * without echo, to read `q`; every way out restores both: q, Ctrl-C (exit 0), SIGTERM, SIGHUP,
 * SIGQUIT (restored, then re-raised), the supervisor going away (exit 1). Ctrl-Z restores the
 * terminal while stopped and takes it back on SIGCONT.
 *
 * Trap: the loop's signals stay blocked except inside ppoll() (here and in ctl_call), so a flag a
 * handler sets is always seen before the next wait; nothing is lost between check and sleep.
 *
 * Plain (--once, or stdout not a terminal): two samples an interval apart (rates need two; with
 * --interval 0 one sample and no rates), then one unclipped frame without escape sequences.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "oag-ctl.h"

#define TOP_DEFAULT_INTERVAL_MS 1000
#define TOP_MIN_INTERVAL_MS 50
#define TOP_MAX_ENGINES 64
#define TOP_REPLY_TIMEOUT_MS 5000

/* ---- one sample of `status --json` ------------------------------------------------------ */

struct top_agent {
    long long id, pid, restarts, gen, hb_ms; /* hb_ms < 0: no heartbeat known */
    double tasks;
    double submitted, completed;             /* < 0: unknown (older supervisor, no lane) */
    char state[12];
    int detached;
};

struct top_engine {
    char backend[16];
    long long device, version;
    int retired;
    double batches, rows, busy_s, errors;
};

struct top_snap {
    double uptime_s;                         /* the supervisor's clock */
    long long pid, model_version, ninst, queued, max_queue, fleet_size, lanes;
    char name[64], engine[32], model[64];
    int ready, draining, reloading;
    double tasks_done, batches, failed, timed_out, engine_errors, busy_events, dropped, queue_s,
        compute_s;
    struct top_engine eng[TOP_MAX_ENGINES];
    int neng;
    struct top_agent *agents;                /* sorted by (id, detached) */
    int nagents, cap;
};

static double jnum(const cJSON *o, const char *key, double dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static int jbool(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* Copies a string field, printable ASCII only: the frame's width is its byte count. */
static void jstr(const cJSON *o, const char *key, char *dst, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    const char *s = cJSON_IsString(v) ? v->valuestring : "";
    size_t i = 0;
    for (; s[i] && i + 1 < cap; i++)
        dst[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    dst[i] = '\0';
}

static int agent_cmp(const void *a, const void *b)
{
    const struct top_agent *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->detached - y->detached;
}

static void snap_free(struct top_snap *s)
{
    free(s->agents);
    s->agents = NULL;
    s->nagents = s->cap = 0;
}

/* Parses a status --json reply into s (its agents array is reused). 0, -EPROTO or -ENOMEM.
 * Missing fields read as 0 / unknown, so an older or newer supervisor still shows. */
static int snap_parse(const char *text, struct top_snap *s)
{
    cJSON *j = cJSON_Parse(text);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return -EPROTO;
    }
    struct top_agent *keep = s->agents;
    int cap = s->cap;
    memset(s, 0, sizeof *s);
    s->agents = keep;
    s->cap = cap;
    s->uptime_s = jnum(j, "uptime_s", 0);
    s->pid = (long long)jnum(j, "pid", 0);
    jstr(j, "name", s->name, sizeof s->name);
    jstr(j, "engine", s->engine, sizeof s->engine);
    jstr(j, "model", s->model, sizeof s->model);
    s->model_version = (long long)jnum(j, "model_version", 0);
    s->ninst = (long long)jnum(j, "engine_instances", 0);
    s->queued = (long long)jnum(j, "queued", 0);
    s->max_queue = (long long)jnum(j, "max_queue", 0);
    s->fleet_size = (long long)jnum(j, "fleet_size", 0);
    s->lanes = (long long)jnum(j, "lanes", 0);
    s->ready = jbool(j, "ready");
    s->draining = jbool(j, "draining");
    s->reloading = jbool(j, "reloading");
    s->tasks_done = jnum(j, "tasks_done", 0);
    s->batches = jnum(j, "batches", 0);
    s->failed = jnum(j, "tasks_failed", 0);
    s->timed_out = jnum(j, "timed_out", 0);
    s->engine_errors = jnum(j, "engine_errors", 0);
    s->busy_events = jnum(j, "busy_events", 0);
    s->dropped = jnum(j, "dropped", 0);
    s->queue_s = jnum(j, "queue_s", 0);
    s->compute_s = jnum(j, "compute_s", 0);

    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "engines"))
    {
        if (s->neng == TOP_MAX_ENGINES)
            break;
        struct top_engine *g = &s->eng[s->neng++];
        jstr(e, "backend", g->backend, sizeof g->backend);
        g->device = (long long)jnum(e, "device", -1);
        g->version = (long long)jnum(e, "model_version", 0);
        g->retired = jbool(e, "retired");
        g->batches = jnum(e, "batches", 0);
        g->rows = jnum(e, "rows", 0);
        g->busy_s = jnum(e, "busy_s", 0);
        g->errors = jnum(e, "errors", 0);
    }
    const cJSON *agents = cJSON_GetObjectItemCaseSensitive(j, "agents");
    int n = cJSON_GetArraySize(agents);
    if (n > s->cap) {
        struct top_agent *a = realloc(s->agents, (size_t)n * sizeof *a);
        if (!a) {
            cJSON_Delete(j);
            return -ENOMEM;
        }
        s->agents = a;
        s->cap = n;
    }
    cJSON_ArrayForEach(e, agents)
    {
        if (s->nagents == n)
            break;
        struct top_agent *a = &s->agents[s->nagents++];
        a->id = (long long)jnum(e, "id", -1);
        a->pid = (long long)jnum(e, "pid", 0);
        a->restarts = (long long)jnum(e, "restarts", 0);
        a->gen = (long long)jnum(e, "generation", 0);
        a->hb_ms = (long long)jnum(e, "heartbeat_age_ms", -1);
        a->tasks = jnum(e, "tasks", 0);
        jstr(e, "state", a->state, sizeof a->state);
        a->detached = !strcmp(a->state, "detached");
        /* Only a heartbeat read back consistently says anything about the agent's counters. */
        a->submitted = a->hb_ms >= 0 ? jnum(e, "agent_submitted", -1) : -1;
        a->completed = a->hb_ms >= 0 ? jnum(e, "agent_completed", -1) : -1;
    }
    cJSON_Delete(j);
    if (s->nagents > 1)
        qsort(s->agents, (size_t)s->nagents, sizeof *s->agents, agent_cmp);
    return 0;
}

/* ---- formatting -------------------------------------------------------------------------- */

/* A growing text buffer; on allocation failure it stops growing and says so in oom. */
struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Rates: "-" when unknown (negative), else 3 significant-ish digits with k/M. */
static const char *fmt_rate(char *buf, size_t cap, double v)
{
    if (v < 0)
        snprintf(buf, cap, "-");
    else if (v < 100)
        snprintf(buf, cap, "%.1f", v);
    else if (v < 1e4)
        snprintf(buf, cap, "%.0f", v);
    else if (v < 1e6)
        snprintf(buf, cap, "%.1fk", v / 1e3);
    else
        snprintf(buf, cap, "%.2fM", v / 1e6);
    return buf;
}

static const char *fmt_secs(char *buf, size_t cap, double s)
{
    if (s < 0)
        snprintf(buf, cap, "-");
    else if (s < 1e-3)
        snprintf(buf, cap, "%.1fus", s * 1e6);
    else if (s < 1)
        snprintf(buf, cap, "%.2fms", s * 1e3);
    else
        snprintf(buf, cap, "%.2fs", s);
    return buf;
}

static const char *fmt_age(char *buf, size_t cap, long long ms)
{
    if (ms < 0)
        snprintf(buf, cap, "-");
    else if (ms < 1000)
        snprintf(buf, cap, "%lldms", ms);
    else if (ms < 100000)
        snprintf(buf, cap, "%.1fs", (double)ms / 1e3);
    else
        snprintf(buf, cap, "%llds", ms / 1000);
    return buf;
}

static const char *fmt_uptime(char *buf, size_t cap, double s)
{
    unsigned long long t = s > 0 ? (unsigned long long)s : 0;
    if (t < 60)
        snprintf(buf, cap, "%.1fs", s > 0 ? s : 0.0);
    else if (t < 86400)
        snprintf(buf, cap, "%llu:%02llu:%02llu", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, cap, "%llud %02llu:%02llu:%02llu", t / 86400, t / 3600 % 24, t / 60 % 60,
                 t % 60);
    return buf;
}

/* A counter's total, and "(+N)" when it grew since the previous sample. */
static const char *fmt_total(char *buf, size_t cap, double cur, double prev)
{
    if (cur > prev)
        snprintf(buf, cap, "%.0f (+%.0f)", cur, cur - prev);
    else
        snprintf(buf, cap, "%.0f", cur);
    return buf;
}

static const struct top_engine *engine_match(const struct top_snap *s, const struct top_engine *g)
{
    for (int i = 0; i < s->neng; i++)
        if (s->eng[i].device == g->device && s->eng[i].version == g->version &&
            !strcmp(s->eng[i].backend, g->backend))
            return &s->eng[i];
    return NULL;
}

/* What happened between two samples. A field is < 0 where it cannot be told (no previous
 * sample, no time passed, a counter went backwards). */
struct top_rates {
    double dt;
    double tasks_s, batch_rows, busy, queue_per_task, compute_per_batch;
    double eng_busy[TOP_MAX_ENGINES];
};

static void rates(const struct top_snap *cur, const struct top_snap *prev, struct top_rates *r)
{
    r->dt = prev ? cur->uptime_s - prev->uptime_s : 0;
    r->tasks_s = r->batch_rows = r->busy = r->queue_per_task = r->compute_per_batch = -1;
    for (int i = 0; i < TOP_MAX_ENGINES; i++)
        r->eng_busy[i] = -1;
    if (!prev || r->dt <= 0)
        return;
    double dtasks = cur->tasks_done - prev->tasks_done;
    if (dtasks >= 0)
        r->tasks_s = dtasks / r->dt;
    /* Engine instances matched by (backend, device, model version): one that appeared since
     * the previous sample was created within the interval and counts from zero; retired ones
     * still count while they finish their batches. */
    double rows = 0, batches = 0, busy = 0;
    int live = 0, sane = 1;
    for (int i = 0; i < cur->neng; i++) {
        const struct top_engine *g = &cur->eng[i];
        const struct top_engine *p = engine_match(prev, g);
        double db = g->batches - (p ? p->batches : 0), dr = g->rows - (p ? p->rows : 0);
        double dbusy = g->busy_s - (p ? p->busy_s : 0);
        if (db < 0 || dr < 0 || dbusy < 0) {
            sane = 0;
            continue;
        }
        batches += db;
        rows += dr;
        busy += dbusy;
        live += !g->retired;
        /* An asynchronous engine adds its busy time when it goes idle: clamp the overshoot. */
        r->eng_busy[i] = dbusy / r->dt > 1 ? 1 : dbusy / r->dt;
    }
    if (!sane)
        return;
    if (batches > 0)
        r->batch_rows = rows / batches;
    if (live > 0)
        r->busy = busy / (r->dt * live) > 1 ? 1 : busy / (r->dt * live);
    double dq = cur->queue_s - prev->queue_s, dc = cur->compute_s - prev->compute_s;
    if (rows > 0 && dq >= 0)
        r->queue_per_task = dq / rows;
    double dbat = cur->batches - prev->batches;
    if (dbat > 0 && dc >= 0)
        r->compute_per_batch = dc / dbat;
}

/* The agent with the same (id, detached) in a sorted sample, or NULL. */
static const struct top_agent *agent_find(const struct top_snap *s, const struct top_agent *a)
{
    if (!s || !s->nagents)
        return NULL;
    return bsearch(a, s->agents, (size_t)s->nagents, sizeof *a, agent_cmp);
}

/*
 * Builds one frame: '\n'-separated lines, at most max_lines of them (INT_MAX: all). note, when
 * not NULL, is shown on its own line (a transient trouble: no answer, refused). prev may be NULL
 * (no rates yet).
 */
static void frame_build(struct sbuf *f, const struct top_snap *cur, const struct top_snap *prev,
                        const char *note, int max_lines)
{
    char b1[48], b2[48], b3[48], b4[48], b5[48];
    struct top_rates r;
    rates(cur, prev, &r);
    int lines = 0;
#define LINE(...)                                                                          \
    do {                                                                                   \
        if (lines < max_lines) {                                                           \
            sb_printf(f, __VA_ARGS__);                                                     \
            sb_put(f, "\n", 1);                                                            \
            lines++;                                                                       \
        }                                                                                  \
    } while (0)

    int running = 0;
    for (int i = 0; i < cur->nagents; i++)
        running += !strcmp(cur->agents[i].state, "running");
    LINE("oag-supervisor pid %lld  name %s  up %s  %s", cur->pid, cur->name,
         fmt_uptime(b1, sizeof b1, cur->uptime_s),
         cur->draining ? "draining"
         : !cur->ready ? "warming up"
         : cur->reloading ? "ready, reloading" : "ready");
    LINE("engine %s x%lld  model %s v%lld  agents %d running, %lld wanted  lanes %lld",
         cur->engine, cur->ninst, cur->model[0] ? cur->model : "-", cur->model_version, running,
         cur->fleet_size, cur->lanes);
    LINE("tasks/s %s  batch %s  busy %s  queued %lld/%lld  queue %s/task  compute %s/batch",
         fmt_rate(b1, sizeof b1, r.tasks_s),
         r.batch_rows < 0 ? "-" : (snprintf(b2, sizeof b2, "%.1f", r.batch_rows), b2),
         r.busy < 0 ? "-" : (snprintf(b3, sizeof b3, "%.0f%%", r.busy * 100), b3), cur->queued,
         cur->max_queue, fmt_secs(b4, sizeof b4, r.queue_per_task),
         fmt_secs(b5, sizeof b5, r.compute_per_batch));
    {
        char e1[48], e2[48], e3[48], e4[48], e5[48];
        const struct top_snap *p = prev ? prev : cur;
        LINE("errors %s  failed %s  timeouts %s  busy events %s  dropped %s",
             fmt_total(e1, sizeof e1, cur->engine_errors, p->engine_errors),
             fmt_total(e2, sizeof e2, cur->failed, p->failed),
             fmt_total(e3, sizeof e3, cur->timed_out, p->timed_out),
             fmt_total(e4, sizeof e4, cur->busy_events, p->busy_events),
             fmt_total(e5, sizeof e5, cur->dropped, p->dropped));
    }
    if (cur->neng > 1) {
        struct sbuf l = { 0 };
        sb_printf(&l, "instances");
        for (int i = 0; i < cur->neng; i++) {
            const struct top_engine *g = &cur->eng[i];
            sb_printf(&l, "  %s:%lld v%lld%s %s", g->backend, g->device, g->version,
                      g->retired ? " (retired)" : "",
                      r.eng_busy[i] < 0 ? "-"
                                        : (snprintf(b1, sizeof b1, "%.0f%%", r.eng_busy[i] * 100),
                                           b1));
        }
        LINE("%s", l.p ? l.p : "");
        free(l.p);
    }
    LINE("%s", note ? note : "");

    /* The agents table: what fits, then a line saying how many did not. */
    int room = max_lines - lines - 1, shown = cur->nagents;
    if (room < 0)
        return;
    if (shown > room)
        shown = room > 0 ? room - 1 : 0;
    LINE("%5s %8s %-9s %8s %9s %12s %7s %5s %5s", "ID", "PID", "STATE", "RESTARTS", "TASKS/S",
         "TASKS", "HB", "GEN", "INFL");
    for (int i = 0; i < shown; i++) {
        const struct top_agent *a = &cur->agents[i];
        const struct top_agent *p = r.dt > 0 ? agent_find(prev, a) : NULL;
        double rate = p && a->tasks >= p->tasks ? (a->tasks - p->tasks) / r.dt : -1;
        /* In flight by the agent's own counts, as of its last heartbeat. */
        double infl = a->submitted >= a->completed && a->completed >= 0
                          ? a->submitted - a->completed
                          : -1;
        LINE("%5lld %8lld %-9s %8lld %9s %12.0f %7s %5lld %5s", a->id, a->pid, a->state,
             a->restarts, fmt_rate(b1, sizeof b1, rate), a->tasks,
             fmt_age(b2, sizeof b2, a->hb_ms), a->gen,
             infl < 0 ? "-" : (snprintf(b3, sizeof b3, "%.0f", infl), b3));
    }
    if (shown < cur->nagents)
        LINE("... %d more agent%s", cur->nagents - shown, cur->nagents - shown == 1 ? "" : "s");
#undef LINE
}

/* ---- the terminal ------------------------------------------------------------------------ */

static volatile sig_atomic_t top_quit, top_winch, top_tstp, top_cont;

static void on_signal(int sig)
{
    switch (sig) {
    case SIGWINCH: top_winch = 1; break;
    case SIGTSTP: top_tstp = 1; break;
    case SIGCONT: top_cont = 1; break;
    default: top_quit = sig; break;
    }
}

static const int top_signals[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH, SIGTSTP, SIGCONT };

struct term {
    int tty_in;                /* stdin is a terminal: its modes are saved in saved */
    struct termios saved;
    int rows, cols;
    sigset_t wait_mask;        /* the mask inside ppoll: ours unblocked */
};

static int write_all(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(1, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void term_size(struct term *t)
{
    struct winsize ws;
    t->rows = 24;
    t->cols = 80;
    if (ioctl(1, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
        t->rows = ws.ws_row;
        t->cols = ws.ws_col;
    }
}

/* Non-canonical input without echo (signals from the keyboard still work), cursor hidden. */
static void term_enter(struct term *t)
{
    if (t->tty_in) {
        struct termios raw = t->saved;
        raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(0, TCSANOW, &raw);
    }
    write_all("\x1b[?25l", 6);
}

/* Undoes term_enter. The show-cursor sequence is the last thing written. */
static void term_leave(struct term *t)
{
    if (t->tty_in)
        tcsetattr(0, TCSANOW, &t->saved);
    write_all("\x1b[?25h", 6);
}

/* Draws a frame in place: lines clipped to the width, at most rows - 1 of them. */
static int term_draw(struct term *t, const char *frame, int clear)
{
    struct sbuf o = { 0 };
    sb_put(&o, clear ? "\x1b[H\x1b[2J" : "\x1b[H", clear ? 7 : 3);
    int max = t->rows > 1 ? t->rows - 1 : 1, n = 0;
    for (const char *p = frame; *p && n < max; n++) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        size_t w = len < (size_t)t->cols ? len : (size_t)t->cols;
        sb_put(&o, p, w);
        /* Not after a full line: in the pending-wrap state the terminal would erase its last
         * column. */
        if (w < (size_t)t->cols)
            sb_put(&o, "\x1b[K", 3);
        if (n + 1 < t->rows)
            sb_put(&o, "\r\n", 2);
        p += len + (nl != NULL);
    }
    if (n < t->rows)
        sb_put(&o, "\x1b[J", 3);
    int rc = o.oom ? -ENOMEM : write_all(o.p, o.len);
    free(o.p);
    return rc;
}

/* Stops the process the way Ctrl-Z would, with the terminal given back meanwhile. */
static void term_suspend(struct term *t)
{
    term_leave(t);
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, SIGTSTP);
    signal(SIGTSTP, SIG_DFL);
    raise(SIGTSTP);                        /* pending: blocked */
    sigprocmask(SIG_UNBLOCK, &s, NULL);    /* stops here until SIGCONT */
    sigprocmask(SIG_BLOCK, &s, NULL);
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTSTP, &sa, NULL);
    term_size(t);
    term_enter(t);
}

/* ---- polling ----------------------------------------------------------------------------- */

/* Takes one sample into s. 0, or a negative errno with msg set (see ctl_call). */
static int sample(const char *path, struct top_snap *s, const sigset_t *mask, char *msg,
                  size_t cap)
{
    struct ctl_reply r = { .timeout_ms = TOP_REPLY_TIMEOUT_MS, .mask = mask, .stop = &top_quit };
    int rc = ctl_call(path, "status --json", &r);
    if (rc == 0 && r.status != 0) {
        snprintf(r.msg, sizeof r.msg, "status failed: %s", r.text ? r.text : "");
        rc = -EPROTO;
    } else if (rc == 0) {
        rc = snap_parse(r.text ? r.text : "", s);
        if (rc)
            snprintf(r.msg, sizeof r.msg, "%s", rc == -ENOMEM ? "out of memory"
                                                             : "status --json is not JSON");
    }
    snprintf(msg, cap, "%s", r.msg);
    free(r.text);
    return rc;
}

/* Failures after which the supervisor may still answer the next poll. */
static int transient(int rc)
{
    return rc == -ETIMEDOUT || rc == -EAGAIN || rc == -ECONNABORTED || rc == -EPROTO ||
           rc == -ENOMEM;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int top_plain(const char *path, int interval)
{
    struct top_snap a = { 0 }, b = { 0 };
    char msg[256];
    int rc = sample(path, &a, NULL, msg, sizeof msg), have_prev = 0;
    if (rc) {
        fprintf(stderr, "oag-ctl: %s\n", msg);
        return 1;
    }
    if (interval > 0) {
        sleep_ms(interval);
        rc = sample(path, &b, NULL, msg, sizeof msg);
        if (rc && !transient(rc)) {
            fprintf(stderr, "oag-ctl: supervisor gone (%s)\n", msg);
            snap_free(&a);
            return 1;
        }
        if (rc) {
            fprintf(stderr, "oag-ctl: %s\n", msg);
            snap_free(&a);
            snap_free(&b);
            return 1;
        }
        have_prev = b.pid == a.pid;
    }
    struct sbuf f = { 0 };
    const struct top_snap *cur = interval > 0 ? &b : &a;
    frame_build(&f, cur, have_prev ? &a : NULL, NULL, INT_MAX);
    rc = f.oom ? -ENOMEM : write_all(f.p, f.len);
    free(f.p);
    snap_free(&a);
    snap_free(&b);
    return rc ? 1 : 0;
}

static int top_live(const char *path, int interval)
{
    struct term t;
    memset(&t, 0, sizeof t);
    t.tty_in = isatty(0) && tcgetattr(0, &t.saved) == 0;
    sigset_t block;
    sigemptyset(&block);
    for (size_t i = 0; i < sizeof top_signals / sizeof top_signals[0]; i++)
        sigaddset(&block, top_signals[i]);
    sigprocmask(SIG_BLOCK, &block, &t.wait_mask);
    struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: waits end at once */
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < sizeof top_signals / sizeof top_signals[0]; i++) {
        sigdelset(&t.wait_mask, top_signals[i]);
        sigaction(top_signals[i], &sa, NULL);
    }

    struct top_snap snaps[2];
    memset(snaps, 0, sizeof snaps);
    struct top_snap *cur = &snaps[0], *prev = &snaps[1];
    int have_prev = 0, code = 0;
    char msg[256], note[300] = "";
    int rc = sample(path, cur, &t.wait_mask, msg, sizeof msg);
    if (rc) {
        if (!top_quit)
            fprintf(stderr, "oag-ctl: %s\n", msg);
        snap_free(cur);
        return top_quit ? 0 : 1;
    }
    term_size(&t);
    term_enter(&t);
    struct sbuf f = { 0 };
    int redraw = 2; /* 0 nothing, 1 in place, 2 with a clear */
    int64_t next = mono_ms() + interval;
    for (;;) {
        if (redraw) {
            f.len = 0;
            frame_build(&f, cur, have_prev ? prev : NULL, note[0] ? note : NULL, t.rows - 1);
            if (f.oom || term_draw(&t, f.p ? f.p : "", redraw == 2)) {
                code = 1; /* the terminal went away, or no memory for a frame */
                break;
            }
            redraw = 0;
        }
        int64_t left = next - mono_ms();
        if (left < 0)
            left = 0;
        struct timespec ts = { .tv_sec = (time_t)(left / 1000),
                               .tv_nsec = (long)(left % 1000) * 1000000L };
        struct pollfd in = { .fd = 0, .events = POLLIN };
        int n = ppoll(&in, t.tty_in ? 1 : 0, &ts, &t.wait_mask);
        if (top_quit)
            break;
        if (top_tstp) {
            top_tstp = top_cont = 0;
            term_suspend(&t);
            redraw = 2;
        }
        if (top_cont) { /* stopped and continued behind our back (SIGSTOP) */
            top_cont = 0;
            term_size(&t);
            term_enter(&t);
            redraw = 2;
        }
        if (top_winch) {
            top_winch = 0;
            term_size(&t);
            redraw = 2;
        }
        if (n > 0 && (in.revents & POLLIN)) {
            char keys[64];
            ssize_t k = read(0, keys, sizeof keys);
            if (k > 0 && (memchr(keys, 'q', (size_t)k) || memchr(keys, 'Q', (size_t)k)))
                break;
        } else if (n > 0 && (in.revents & (POLLHUP | POLLERR | POLLNVAL))) {
            break; /* no terminal to read q from any more */
        }
        if (mono_ms() < next)
            continue;
        struct top_snap *tmp = prev;
        prev = cur;
        cur = tmp;
        rc = sample(path, cur, &t.wait_mask, msg, sizeof msg);
        if (rc == -EINTR && top_quit)
            break;
        if (rc && !transient(rc)) {
            term_leave(&t);
            fprintf(stderr, "oag-ctl: supervisor gone (%s)\n", msg);
            code = 1;
            goto out;
        }
        if (rc) { /* keep showing the last sample, with the trouble */
            tmp = prev;
            prev = cur;
            cur = tmp;
            /* The frame keeps the last good sample and its rates, unless the failed parse
             * had already overwritten the one before it. */
            if (rc == -ENOMEM)
                have_prev = 0;
            snprintf(note, sizeof note, "(%s)", msg);
        } else {
            /* No rates across two supervisors (one restarted on the same socket). */
            have_prev = cur->pid == prev->pid;
            if (have_prev)
                note[0] = '\0';
            else
                snprintf(note, sizeof note, "(supervisor restarted: pid %lld, was %lld)",
                         cur->pid, prev->pid);
        }
        redraw = redraw ? redraw : 1;
        next += interval;
        if (next <= mono_ms())
            next = mono_ms() + interval;
    }
    term_leave(&t);
out:
    free(f.p);
    snap_free(&snaps[0]);
    snap_free(&snaps[1]);
    if (top_quit && top_quit != SIGINT) {
        /* Die of the signal, as if it had not been caught. */
        int sig = top_quit;
        signal(sig, SIG_DFL);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, sig);
        raise(sig);
        sigprocmask(SIG_UNBLOCK, &s, NULL);
    }
    return code;
}

static void top_usage(FILE *f)
{
    fprintf(f, "usage: oag-ctl [-n NAME | -s SOCKET] top [--interval MS] [--once]\n"
               "  --interval MS  time between samples (default %d, at least %d)\n"
               "  --once         print one frame as plain text and exit (also when stdout is\n"
               "                 not a terminal); rates then come from two samples MS apart\n"
               "Keys: q quits (so does Ctrl-C).\n",
            TOP_DEFAULT_INTERVAL_MS, TOP_MIN_INTERVAL_MS);
}

int ctl_top(const char *path, int argc, char **argv)
{
    int interval = TOP_DEFAULT_INTERVAL_MS, once = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (!strcmp(argv[i], "--once")) {
            once = 1;
            continue;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            top_usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--interval") || !strcmp(argv[i], "-i")) {
            v = i + 1 < argc ? argv[++i] : NULL;
        } else if (!strncmp(argv[i], "--interval=", 11)) {
            v = argv[i] + 11;
        } else {
            fprintf(stderr, "oag-ctl top: unknown argument '%s'\n", argv[i]);
            top_usage(stderr);
            return 2;
        }
        char *end;
        long ms = v ? strtol(v, &end, 10) : -1;
        if (!v || *end || end == v || ms < 0 || ms > 3600000) {
            fprintf(stderr, "oag-ctl top: --interval wants milliseconds (0 to 3600000)\n");
            return 2;
        }
        interval = (int)ms;
    }
    if (once || !isatty(1))
        return top_plain(path, interval);
    if (interval < TOP_MIN_INTERVAL_MS)
        interval = TOP_MIN_INTERVAL_MS;
    return top_live(path, interval);
}
