/*
 * ctl.c - commands from oag-ctl over the control socket: status, status --json, scale N, stop.
 * Replies are text chunks (OAG_MSG_CTL_TEXT) and a final OAG_MSG_CTL_END with a status.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cpus.h"
#include "inst.h"
#include "log.h"
#include "shm/latch.h"
#include "shm/proto.h"
#include "sup.h"

struct out {
    int fd;
    struct oag_ctl_msg m;
    int failed;
};

static void out_flush(struct out *o)
{
    if (o->m.len == 0 || o->failed)
        return;
    o->m.magic = OAG_PROTO_MAGIC;
    o->m.type = OAG_MSG_CTL_TEXT;
    size_t sz = offsetof(struct oag_ctl_msg, text) + o->m.len;
    /* Blocking send: a control client is short-lived and the reply is bounded. */
    if (send(o->fd, &o->m, sz, MSG_NOSIGNAL) < 0)
        o->failed = 1;
    o->m.len = 0;
}

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void outf(struct out *o, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line)
        n = sizeof line - 1;
    if (o->m.len + (uint32_t)n > OAG_CTL_CHUNK)
        out_flush(o);
    memcpy(o->m.text + o->m.len, line, (size_t)n);
    o->m.len += (uint32_t)n;
}

static void out_end(struct out *o, int status)
{
    out_flush(o);
    struct oag_ctl_msg end = { .magic = OAG_PROTO_MAGIC, .type = OAG_MSG_CTL_END,
                               .status = status, .len = 0 };
    if (!o->failed)
        send(o->fd, &end, offsetof(struct oag_ctl_msg, text), MSG_NOSIGNAL);
}

/* Tasks done by fleet agent a: its finished lanes plus the live one. */
static uint64_t agent_tasks(struct sup *s, struct agent *a, struct lane **live)
{
    uint64_t t = a->tasks_done;
    *live = NULL;
    if (a->id < (int)s->cfg.max_lanes && s->lanes[a->id].in_use &&
        s->lanes[a->id].agent_id == a->id) {
        *live = &s->lanes[a->id];
        t += (*live)->tasks_done;
    }
    return t;
}

/* Age in ms of the agent's own heartbeat (its double-buffered state record), or -1 if the
 * record cannot be read consistently (never written, or garbage). Also the agent's own counts
 * of tasks submitted and completed (0 when -1; untrusted: for display only). */
static long heartbeat_age_ms(struct lane *l, uint64_t now, uint64_t *submitted,
                             uint64_t *completed)
{
    struct oag_agent_state st;
    struct oag_latch_agent *la = (struct oag_latch_agent *)(l->map + l->hdr.state_off);
    *submitted = *completed = 0;
    if (latch_read(&la->seq, la->rec[0], sizeof st / 8, &st, 8) != 0 || st.heartbeat_ns > now)
        return -1;
    *submitted = st.submitted;
    *completed = st.completed;
    return (long)((now - st.heartbeat_ns) / 1000000u);
}

static const char *auto_switch(int v)
{
    return v < 0 ? "auto" : v ? "on" : "off";
}

static const char *stream_mode(const struct sup *s) { return auto_switch(s->cfg.stream_rows); }
static const char *settle_mode(const struct sup *s) { return auto_switch(s->cfg.intake_settle); }

static void status(struct sup *s, struct out *o, int json)
{
    struct shard_totals T;
    shards_totals(s, &T);
    uint64_t now = now_ns();
    double up = (double)(now - s->start_ns) / 1e9;
    char cpus[256] = "", agent_cpus[256] = "";
    if (s->cfg.cpus_set) {
        cpus_format(&s->cfg.cpus, cpus, sizeof cpus);
        cpus_format(&s->agent_cpus, agent_cpus, sizeof agent_cpus);
    }
    if (json) {
        outf(o, "{\"pid\":%d,\"name\":\"%s\",\"engine\":\"%s\",\"uptime_s\":%.3f,"
                "\"tasks_done\":%llu,\"batches\":%llu,\"dropped\":%llu,\"timed_out\":%llu,"
                "\"cut_offs\":%llu,"
                "\"refused\":%llu,\"lanes\":%u,\"fleet_size\":%d,\"max_batch\":%u,"
                "\"max_delay_us\":%u,\"max_payload\":%u,\"ring_slots\":%u,\"draining\":%s,"
                "\"engine_instances\":%u,\"model\":\"%s\",\"model_version\":%u,\"ready\":%s,"
                "\"reloading\":%s,"
                "\"max_queue\":%u,\"queued\":%u,\"in_order\":%s,\"tasks_ok\":%llu,"
                "\"tasks_failed\":%llu,\"engine_errors\":%llu,\"busy_events\":%llu,"
                "\"copy_rows\":%s,\"wakes\":%llu,\"wakes_by_thread\":%llu,"
                "\"batches_retried\":%llu,\"waker_threads\":%d,\"agent_nice\":%d,"
                "\"intake_quantum\":%u,\"intake_settle\":{\"mode\":\"%s\",\"on\":%s,"
                "\"rows\":%u,\"waits\":%llu},\"shared_results\":%u,\"shared_result_batches\":%llu,"
                "\"shared_result_fallbacks\":%llu,\"data_threads\":%u,"
                "\"data_threads_auto\":%s,\"data_threads_why\":\"%s\","
                "\"cpus\":\"%s\",\"agent_cpus\":\"%s\","
                "\"stream_rows\":{\"mode\":\"%s\",\"on\":%s,\"why\":\"%s\","
                "\"kb_in_flight_per_core\":%llu,\"l2_kb\":%llu},\"agents\":[",
             (int)getpid(), s->cfg.name, s->engine_ops->name, up, (unsigned long long)T.tasks_done,
             (unsigned long long)T.batches, (unsigned long long)T.dropped,
             (unsigned long long)T.timed_out, (unsigned long long)s->cut_offs,
             (unsigned long long)s->refused, s->nactive,
             s->fleet_size, s->cfg.max_batch, s->cfg.max_delay_us, s->cfg.max_payload,
             s->cfg.ring_slots, s->draining ? "true" : "false", s->ninst, s->model_name,
             s->model_version, s->ready ? "true" : "false", s->reloading ? "true" : "false",
             s->cfg.max_queue, T.npend,
             s->cfg.in_order ? "true" : "false", (unsigned long long)T.ok,
             (unsigned long long)T.failed, (unsigned long long)T.engine_errors,
             (unsigned long long)T.busy_events, s->cfg.copy_rows ? "true" : "false",
             (unsigned long long)T.wakes, (unsigned long long)T.wakes_handed,
             (unsigned long long)T.retried, T.wakers, s->cfg.agent_nice,
             s->cfg.intake_quantum, settle_mode(s), s->settle_rows ? "true" : "false",
             s->settle_rows, (unsigned long long)T.settle_waits, s->res.n,
             (unsigned long long)T.res_batches,
             (unsigned long long)T.res_fallbacks, s->nsh, s->data_auto ? "true" : "false",
             s->data_auto ? s->data_auto : "", cpus, agent_cpus, stream_mode(s),
             s->hints.on ? "true" : "false", hints_why(s->hints.why),
             (unsigned long long)(s->hints.per_cpu >> 10), (unsigned long long)(s->hints.l2 >> 10));
    } else {
        outf(o, "supervisor pid %d name %s engine %s up %.1fs tasks %llu batches %llu "
                "(avg %.1f) lanes %u fleet %d\n",
             (int)getpid(), s->cfg.name, s->engine_ops->name, up, (unsigned long long)T.tasks_done,
             (unsigned long long)T.batches,
             T.batches ? (double)T.tasks_total / (double)T.batches : 0.0,
             s->nactive, s->fleet_size);
        outf(o, "engine %s x%u, model %s (version %u), %s; lanes: max-payload %u ring-slots %u\n",
             s->engine_ops->name, s->ninst, s->model_name[0] ? s->model_name : "-",
             s->model_version,
             s->ready ? (s->reloading ? "ready, reloading" : "ready") : "warming up",
             s->cfg.max_payload, s->cfg.ring_slots);
        outf(o, "wake-ups %llu (%llu by %d waker threads); agents at nice +%d\n",
             (unsigned long long)T.wakes, (unsigned long long)T.wakes_handed,
             T.wakers, s->cfg.agent_nice);
        if (s->cfg.cpus_set)
            outf(o, "CPUs: supervisor %s, agents it launches %s\n", cpus, agent_cpus);
        else
            outf(o, "CPUs: no placement (--cpus)\n");
        outf(o, "streaming stores for rows: %s (%s: %s; %llu KB in flight per core, L2 %llu KB)\n",
             s->hints.on ? "advised" : "not advised", stream_mode(s), hints_why(s->hints.why),
             (unsigned long long)(s->hints.per_cpu >> 10), (unsigned long long)(s->hints.l2 >> 10));
        if (s->res.n)
            outf(o, "shared results: %u chunks of %llu KB; batches %llu there, %llu found every "
                    "chunk still read (results into the lanes)\n", s->res.n,
                 (unsigned long long)(s->res.chunk_bytes >> 10),
                 (unsigned long long)T.res_batches, (unsigned long long)T.res_fallbacks);
        else
            outf(o, "shared results: off\n");
        char quantum[16] = "auto";
        if (s->cfg.intake_quantum)
            snprintf(quantum, sizeof quantum, "%u", s->cfg.intake_quantum);
        outf(o, "batcher max-batch %u max-delay-us %u max-queue %u intake-quantum %s "
                "intake-settle %s (%s, runs below %u tasks, %llu waits)%s; "
                "queued %u; avg queue %.1f us, avg compute %.1f us per batch\n",
             s->cfg.max_batch, s->cfg.max_delay_us, s->cfg.max_queue, quantum,
             s->settle_rows ? "on" : "off", settle_mode(s), s->settle_rows,
             (unsigned long long)T.settle_waits,
             s->cfg.in_order ? " in-order" : "", T.npend,
             T.tasks_total ? (double)T.queue_ns / 1e3 / (double)T.tasks_total : 0.0,
             T.batches ? (double)T.compute_ns / 1e3 / (double)T.batches : 0.0);
        char dmode[96] = "set";
        if (s->data_auto)
            snprintf(dmode, sizeof dmode, "auto: %s", s->data_auto);
        if (s->nsh == 1)
            outf(o, "data threads 1 (%s)\n", dmode);
        else {
            outf(o, "data threads %u (%s):", s->nsh, dmode);
            for (uint32_t k = 0; k < s->nsh; k++) {
                const struct shard *sh = &s->sh[k];
                double wall = sh->prof.start_ns ? (double)(now - sh->prof.start_ns) : 0.0;
                outf(o, "%s %u lanes, %llu tasks, %u queued%s, thread %.0f%% busy", k ? ";" : "",
                     sh->nactive, (unsigned long long)sh->tasks_done, sh->bat.npend,
                     oag_load_relaxed_u32(&sh->ctl->busy) ? " (busy)" : "",
                     wall > 0 ? 100.0 * (double)shard_busy_ns(sh) / wall : 0.0);
            }
            outf(o, "\n");
        }
        outf(o, "tasks ok %llu, failed %llu (timed out %llu), engine errors %llu, busy events %llu; "
                "lanes cut off %llu, connections refused %llu, results dropped %llu\n",
             (unsigned long long)T.ok, (unsigned long long)T.failed,
             (unsigned long long)T.timed_out, (unsigned long long)T.engine_errors,
             (unsigned long long)T.busy_events, (unsigned long long)s->cut_offs,
             (unsigned long long)s->refused, (unsigned long long)T.dropped);
        outf(o, "%-6s %-8s %-9s %-8s %-12s %-5s %s\n", "ID", "PID", "STATE", "RESTARTS", "TASKS",
             "GEN", "SEEN");
    }
    int first = 1;
    for (int i = 0; i < s->nagents; i++) {
        struct agent *a = &s->agents[i];
        if (!a->wanted && a->state == AG_EXITED && a->spawn_gen == 0)
            continue;
        struct lane *l;
        uint64_t tasks = agent_tasks(s, a, &l);
        const char *st = agent_state_name(a->state);
        unsigned gen = l ? l->generation : (a->id < (int)s->cfg.max_lanes
                                                ? s->lanes[a->id].generation : 0);
        uint64_t sub = 0, cmpl = 0;
        long seen = l ? heartbeat_age_ms(l, now, &sub, &cmpl) : -1;
        if (json)
            outf(o, "%s{\"id\":%d,\"pid\":%d,\"state\":\"%s\",\"restarts\":%u,\"tasks\":%llu,"
                    "\"generation\":%u,\"attached\":%s,\"heartbeat_age_ms\":%ld,"
                    "\"agent_submitted\":%llu,\"agent_completed\":%llu,\"shard\":%d}",
                 first ? "" : ",", a->id, (int)a->pid, st, a->restarts,
                 (unsigned long long)tasks, gen, l ? "true" : "false", seen,
                 (unsigned long long)sub, (unsigned long long)cmpl, l ? (int)l->shard : -1);
        else
            outf(o, "%-6d %-8d %-9s %-8u %-12llu %-5u %s\n", a->id, (int)a->pid, st, a->restarts,
                 (unsigned long long)tasks, gen, seen < 0 ? "-" : seen < 1000 ? "now" : "stale");
        first = 0;
    }
    /* Agents the supervisor did not launch. */
    for (uint32_t k = 0; k < s->nactive; k++) {
        struct lane *l = &s->lanes[s->active[k]];
        if (l->agent_id >= 0 && fleet_agent(s, l->agent_id))
            continue;
        if (json)
            outf(o, "%s{\"id\":%u,\"pid\":%d,\"state\":\"detached\",\"restarts\":0,"
                    "\"tasks\":%llu,\"generation\":%u,\"attached\":true,\"shard\":%u}",
                 first ? "" : ",", l->id, (int)l->peer_pid, (unsigned long long)l->tasks_done,
                 l->generation, l->shard);
        else
            outf(o, "%-6u %-8d %-9s %-8u %-12llu %u\n", l->id, (int)l->peer_pid, "detached", 0u,
                 (unsigned long long)l->tasks_done, l->generation);
        first = 0;
    }
    if (json) {
        outf(o, "],\"shards\":[");
        for (uint32_t k = 0; k < s->nsh; k++) {
            const struct shard *sh = &s->sh[k];
            outf(o, "%s{\"id\":%u,\"lanes\":%u,\"tasks_done\":%llu,\"batches\":%llu,"
                    "\"queued\":%u,\"queue_cap\":%u,\"busy\":%s,\"shared_result_batches\":%llu,"
                    "\"thread_busy_s\":%.6f,\"thread_wall_s\":%.6f}",
                 k ? "," : "", k, sh->nactive, (unsigned long long)sh->tasks_done,
                 (unsigned long long)sh->bat.batches, sh->bat.npend, sh->bat.pool_cap,
                 oag_load_relaxed_u32(&sh->ctl->busy) ? "true" : "false",
                 (unsigned long long)sh->res_batches, shard_busy_ns(sh) / 1e9,
                 sh->prof.start_ns ? (double)(now - sh->prof.start_ns) / 1e9 : 0.0);
        }
        outf(o, "],\"engines\":[");
        for (uint32_t i = 0; i < s->ninst; i++) {
            struct inst *in = s->inst[i];
            uint64_t busy;
            if (in->threaded) {
                pthread_mutex_lock(&in->mu); /* the worker adds to busy_ns under it */
                busy = in->busy_ns;
                pthread_mutex_unlock(&in->mu);
            } else {
                busy = in->busy_ns;
            }
            outf(o, "%s{\"backend\":\"%s\",\"device\":%d,\"model_version\":%u,"
                    "\"retired\":%s,\"inflight\":%u,\"batches\":%llu,\"rows\":%llu,"
                    "\"busy_s\":%.6f,\"errors\":%llu,\"instance\":%d,\"failed\":%s,"
                    "\"shard\":%u}",
                 i ? "," : "", in->ops->name, in->device, in->model_version,
                 in->retired ? "true" : "false", in->inflight, (unsigned long long)in->batches,
                 (unsigned long long)in->rows, (double)busy / 1e9,
                 (unsigned long long)in->errors, in->ordinal, in->failed ? "true" : "false",
                 in->shard);
        }
        outf(o, "],\"preferred_batch\":[");
        for (uint32_t i = 0; i < s->cfg.npreferred; i++)
            outf(o, "%s%u", i ? "," : "", s->cfg.preferred[i]);
        outf(o, "],\"queue_s\":%.6f,\"compute_s\":%.6f}\n", (double)T.queue_ns / 1e9,
             (double)T.compute_ns / 1e9);
    }
}

/* A short name for a task status (negative errno). */
static const char *oag__status_name(int st)
{
    switch (-st) {
    case ETIMEDOUT: return "timed-out";
    case EIO: return "engine-error";
    case EINVAL: return "bad-input";
    case ENOMEM: return "no-memory";
    case ECANCELED: return "cancelled";
    default: return "error";
    }
}

static uint64_t trace_total(const struct trace_rec *r) { return r->pub_ns - r->submit_ns; }

static int cmp_slowest(const void *a, const void *b)
{
    uint64_t x = trace_total(a), y = trace_total(b);
    return x < y ? 1 : x > y ? -1 : 0;
}

/* The n slowest of the last TRACE_CAP finished tasks, with where their time went:
 * submit -> taken into the queue -> batch started -> engine done -> result published. */
static void trace_cmd(struct sup *s, struct out *o, int n, int json)
{
    /* Each shard keeps its own last TRACE_CAP (the world is stopped: ctl runs on main). */
    struct trace_rec *v = malloc((size_t)s->nsh * TRACE_CAP * sizeof *v);
    if (!v) {
        outf(o, "trace: out of memory\n");
        return;
    }
    uint32_t k = 0;
    for (uint32_t j = 0; j < s->nsh; j++) {
        const struct batcher *bt = &s->sh[j].bat;
        uint64_t have = bt->trace_unpub < TRACE_CAP ? bt->trace_unpub : TRACE_CAP;
        for (uint64_t i = bt->trace_unpub - have; i < bt->trace_unpub; i++) {
            const struct trace_rec *r = &bt->trace[i % TRACE_CAP];
            if (r->pub_ns >= r->submit_ns)
                v[k++] = *r;
        }
    }
    qsort(v, k, sizeof *v, cmp_slowest);
    if ((uint32_t)n > k)
        n = (int)k;
#define US(a, b) ((a) && (b) >= (a) ? (double)((b) - (a)) / 1e3 : 0.0)
    if (json) {
        outf(o, "{\"recorded\":%u,\"tasks\":[", k);
        for (int i = 0; i < n; i++) {
            const struct trace_rec *r = &v[i];
            uint64_t stage = r->start_ns ? r->done_ns : r->pub_ns;
            outf(o, "%s{\"trace_id\":\"%u:%u:%llu\",\"agent\":%u,\"ticket\":%llu,"
                    "\"status\":%d,\"batch\":%u,\"total_us\":%.3f,\"to_queue_us\":%.3f,"
                    "\"queued_us\":%.3f,\"engine_us\":%.3f,\"return_us\":%.3f,"
                    "\"submit_ns\":%llu,\"enqueue_ns\":%llu,\"batch_start_ns\":%llu,"
                    "\"engine_done_ns\":%llu,\"completion_ns\":%llu}",
                 i ? "," : "", r->lane, r->gen, (unsigned long long)r->ticket, r->lane,
                 (unsigned long long)r->ticket, r->status, r->batch,
                 US(r->submit_ns, r->pub_ns), US(r->submit_ns, r->enq_ns),
                 US(r->enq_ns, r->start_ns ? r->start_ns : r->pub_ns),
                 US(r->start_ns, r->done_ns), US(stage, r->pub_ns),
                 (unsigned long long)r->submit_ns, (unsigned long long)r->enq_ns,
                 (unsigned long long)r->start_ns, (unsigned long long)r->done_ns,
                 (unsigned long long)r->pub_ns);
        }
        outf(o, "]}\n");
    } else {
        outf(o, "slowest %d of the last %u tasks (microseconds): submit -> queue -> batch start "
                "-> engine done -> result published\n", n, k);
        outf(o, "%-24s %10s %9s %9s %9s %9s %6s %s\n", "TRACE (agent:gen:ticket)", "TOTAL",
             "TO-QUEUE", "QUEUED", "ENGINE", "RETURN", "BATCH", "STATUS");
        for (int i = 0; i < n; i++) {
            const struct trace_rec *r = &v[i];
            char id[64];
            snprintf(id, sizeof id, "%u:%u:%llu", r->lane, r->gen, (unsigned long long)r->ticket);
            uint64_t stage = r->start_ns ? r->done_ns : r->pub_ns;
            outf(o, "%-24s %10.1f %9.1f %9.1f %9.1f %9.1f %6u %s\n", id,
                 US(r->submit_ns, r->pub_ns), US(r->submit_ns, r->enq_ns),
                 US(r->enq_ns, r->start_ns ? r->start_ns : r->pub_ns),
                 US(r->start_ns, r->done_ns), US(stage, r->pub_ns), r->batch,
                 r->status ? oag__status_name(r->status) : "ok");
        }
    }
#undef US
    free(v);
}

void ctl_reply_and_close(struct sup *s, int fd, const char *text, int status)
{
    (void)s;
    struct out o = { .fd = fd };
    outf(&o, "%s\n", text);
    out_end(&o, status);
    close(fd);
}

void ctl_handle(struct sup *s, int fd, const char *cmd)
{
    struct out o = { .fd = fd };
    /* The connection is non-blocking for the event loop; replies are small and bounded, and a
     * client that stops reading only loses its own reply. */
    struct timeval tv = { .tv_sec = 1 };
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (!strcmp(cmd, "status") || !strcmp(cmd, "status --json")) {
        status(s, &o, !strcmp(cmd, "status --json"));
        out_end(&o, 0);
    } else if (!strncmp(cmd, "scale ", 6)) {
        char *end;
        long n = strtol(cmd + 6, &end, 10);
        if (*end != '\0' || end == cmd + 6 || n < 0 || n > (long)s->cfg.max_lanes) {
            outf(&o, "scale: expected a number of agents from 0 to %u\n", s->cfg.max_lanes);
            out_end(&o, -EINVAL);
        } else if (!s->cfg.cmd) {
            outf(&o, "scale: this supervisor was started without an agent command\n");
            out_end(&o, -EINVAL);
        } else if (s->draining) {
            outf(&o, "scale: supervisor is shutting down\n");
            out_end(&o, -ECANCELED);
        } else {
            int before = s->fleet_size;
            fleet_scale(s, (int)n);
            log_info("fleet scaled from %d to %ld agents", before, n);
            outf(&o, "fleet scaled from %d to %ld agents\n", before, n);
            out_end(&o, 0);
        }
    } else if (!strcmp(cmd, "trace") || !strncmp(cmd, "trace ", 6)) {
        int n = 20, json = 0, bad = 0;
        char buf[OAG_CTL_CMD_MAX];
        snprintf(buf, sizeof buf, "%s", cmd);
        for (char *save, *w = strtok_r(buf + 5, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
            char *end;
            long v = strtol(w, &end, 10);
            if (!strcmp(w, "--json"))
                json = 1;
            else if (*end == '\0' && v > 0 && v <= (long)TRACE_CAP)
                n = (int)v;
            else
                bad = 1;
        }
        if (bad) {
            outf(&o, "trace: usage: trace [N (1..%u)] [--json]\n", TRACE_CAP);
            out_end(&o, -EINVAL);
        } else {
            trace_cmd(s, &o, n, json);
            out_end(&o, 0);
        }
    } else if (!strcmp(cmd, "reload") || !strncmp(cmd, "reload ", 7)) {
        char msg[600];
        int rc = engines_reload(s, cmd[6] ? cmd + 7 : NULL, msg, sizeof msg);
        if (rc) {
            outf(&o, "reload: %s\n", msg);
            out_end(&o, rc);
        } else {
            /* The answer comes when the new model serves (or failed to load). */
            int keep = dup(fd);
            if (keep < 0) {
                outf(&o, "reload started\n");
                out_end(&o, 0);
            } else {
                engines_reload_wait_fd(keep);
            }
        }
    } else if (!strcmp(cmd, "stop")) {
        outf(&o, "stopping\n");
        out_end(&o, 0);
        kill(getpid(), SIGTERM);
    } else {
        outf(&o, "unknown command '%s' (status, status --json, scale N, reload [DIR], trace [N] [--json], stop)\n",
             cmd);
        out_end(&o, -EINVAL);
    }
}
