#include "bench.h"

/* ---- the supervisor ---------------------------------------------------------------------- */


struct sup *g_sup;

static void sup_dump_log(const struct sup *s)
{
    FILE *f = fopen(s->log, "r");
    if (!f)
        return;
    char line[512];
    fprintf(stderr, "---- %s ----\n", s->log);
    while (fgets(line, sizeof line, f))
        fputs(line, stderr);
    fprintf(stderr, "---- end ----\n");
    fclose(f);
}

/* Stops a supervisor: SIGTERM, wait up to 10 s (it finishes tasks, unlinks its shm and exits 0),
 * else SIGKILL and unlink its region ourselves. Returns 0 if it exited 0. */
int sup_stop(struct sup *s)
{
    if (g_sup == s)
        g_sup = NULL;
    if (s->pid <= 0)
        return 0;
    int st = 0, rc;
    kill(s->pid, SIGTERM);
    rc = reap(s->pid, 10000, &st);
    if (rc == -ETIMEDOUT) {
        warn("supervisor %s did not exit 10 s after SIGTERM: killed", s->name);
        kill(s->pid, SIGKILL);
        reap(s->pid, -1, &st);
        char shm[128];
        if (!oag_region_name(shm, sizeof shm, s->name))
            shm_unlink(shm);
        rc = -ETIMEDOUT;
    } else if (!rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        if (WIFEXITED(st))
            warn("supervisor %s exited with status %d after SIGTERM", s->name, WEXITSTATUS(st));
        else
            warn("supervisor %s killed by signal %d after SIGTERM", s->name,
                 WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        sup_dump_log(s);
        rc = -ECHILD;
    }
    s->pid = 0;
    return rc;
}

/* Starts `supervisor --name bench-PID-K --socket DIR/supK.sock BASE... EXTRA...` with its
 * output in DIR/supK.log, and waits (up to ready_ms) until an agent can connect and the engine
 * says it is ready. Returns 0 or a negative errno. */
int sup_start_argv(const char *exe, struct sup *s, const char *const base[],
                          const char *const extra[], unsigned ready_ms)
{
    static int seq;
    const char *argv[64];
    int n = 0;
    memset(s, 0, sizeof *s);
    seq++;
    snprintf(s->name, sizeof s->name, "bench-%d-%d", (int)getpid(), seq);
    snprintf(s->sock, sizeof s->sock, "%s/sup%d.sock", g_tmpdir, seq);
    snprintf(s->log, sizeof s->log, "%s/sup%d.log", g_tmpdir, seq);
    argv[n++] = exe;
    argv[n++] = "--name";
    argv[n++] = s->name;
    argv[n++] = "--socket";
    argv[n++] = s->sock;
    for (int i = 0; base && base[i] && n < 63; i++)
        argv[n++] = base[i];
    for (int i = 0; extra && extra[i] && n < 63; i++)
        argv[n++] = extra[i];
    for (int i = 0; i < g_nsup_args && n < 63; i++)
        argv[n++] = g_sup_args[i];
    argv[n] = NULL;

    int logfd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (logfd < 0)
        return -errno;
    pid_t pid = spawn();
    if (pid < 0) {
        close(logfd);
        return -errno;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* lets it unlink its shm if we die */
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "oag-bench: cannot exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    s->pid = pid;
    g_sup = s;

    uint64_t deadline = now_ns() + ready_ms * 1000000ull;
    int last = -ENOENT;
    while (!g_stop) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            kid_forget(pid);
            s->pid = 0;
            warn("supervisor exited during start-up (%s %d)",
                 WIFEXITED(st) ? "status" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            sup_dump_log(s);
            return -ECHILD;
        }
        oag_client *c;
        last = oag_connect(&c, s->sock);
        if (last == 0) {
            oag_info info;
            last = oag_get_info(c, &info);
            oag_close(c);
            if (last == 0 && info.ready)
                return 0;
            if (last == 0)
                last = -EAGAIN;
        }
        if (now_ns() > deadline)
            break;
        sleep_ms(20);
    }
    warn("supervisor at %s not ready after %u ms: %s (%s)", s->sock, ready_ms,
         oag_strerror(last), oag_last_error());
    sup_dump_log(s);
    sup_stop(s);
    return g_stop ? -EINTR : -ETIMEDOUT;
}

/* The identity supervisor of the core sections: --backend identity --max-payload 64 EXTRA... */
int sup_start(const struct opts *o, struct sup *s, const char *const extra[])
{
    static const char *const base[] = { "--backend", "identity", "--max-payload", "64", NULL };
    return sup_start_argv(o->supervisor, s, base, extra, SUP_READY_MS);
}
/* ---- the supervisor's status (status --json) ------------------------------------------- */

/* Speaks the control protocol (src/shm/proto.h): HELLO(CTL, cmd), text chunks, CTL_END. */
int ctl_query_proto(const char *sock, const char *cmd, char *buf, size_t cap)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(sock) >= sizeof sa.sun_path)
        return -ENAMETOOLONG;
    memcpy(sa.sun_path, sock, strlen(sock) + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    struct oag_hello h = { .magic = OAG_PROTO_MAGIC, .abi = OAG_ABI_VERSION,
                           .kind = OAG_HELLO_CTL, .agent_id = -1, .pid = (uint32_t)getpid() };
    snprintf(h.cmd, sizeof h.cmd, "%s", cmd);
    if (send(fd, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h) {
        int rc = -errno;
        close(fd);
        return rc;
    }
    static union {
        struct oag_ctl_msg m;
        struct oag_welcome w;
    } u;
    size_t len = 0;
    int rc = -EIO;
    for (;;) {
        ssize_t n = recv(fd, &u, sizeof u, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || (size_t)n < offsetof(struct oag_ctl_msg, text) ||
            u.m.magic != OAG_PROTO_MAGIC)
            break;
        if (u.m.type == OAG_MSG_WELCOME) { /* refused */
            rc = u.w.err ? u.w.err : -EACCES;
            break;
        }
        if (u.m.type == OAG_MSG_CTL_END) {
            rc = u.m.status;
            break;
        }
        if (u.m.type == OAG_MSG_CTL_TEXT && u.m.len <= OAG_CTL_CHUNK &&
            (size_t)n >= offsetof(struct oag_ctl_msg, text) + u.m.len) {
            size_t k = u.m.len < cap - 1 - len ? u.m.len : cap - 1 - len;
            memcpy(buf + len, u.m.text, k);
            len += k;
        }
    }
    buf[len] = '\0';
    close(fd);
    return rc;
}

/* Runs `CTL -s SOCK status --json` and reads its output. */
static int ctl_query_exe(const char *ctl, const char *sock, char *buf, size_t cap)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        return -errno;
    pid_t pid = spawn();
    if (pid < 0) {
        int rc = -errno;
        close(p[0]);
        close(p[1]);
        return rc;
    }
    if (pid == 0) {
        dup2(p[1], 1);
        execl(ctl, ctl, "-s", sock, "status", "--json", (char *)NULL);
        dprintf(2, "oag-bench: cannot exec %s: %s\n", ctl, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    for (;;) {
        ssize_t n = read(p[0], buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    buf[len] = '\0';
    close(p[0]);
    return reap_ok(pid, 10000, "oag-ctl");
}

/* Sums "key":number over the engines array of a status --json reply. */
static double json_sum(const char *from, const char *to, const char *key)
{
    char pat[48];
    double sum = 0;
    snprintf(pat, sizeof pat, "\"%s\":", key);
    for (const char *p = from; (p = strstr(p, pat)) != NULL && p < to;) {
        p += strlen(pat);
        sum += strtod(p, NULL);
    }
    return sum;
}

static int parse_status(const char *json, struct eng_stats *st)
{
    memset(st, 0, sizeof *st);
    const char *e = strstr(json, "\"engines\":[");
    if (!e)
        return -EPROTO;
    e += strlen("\"engines\":[");
    const char *end = strchr(e, ']');
    if (!end)
        return -EPROTO;
    st->busy_s = json_sum(e, end, "busy_s");
    st->rows = (uint64_t)json_sum(e, end, "rows");
    st->batches = (uint64_t)json_sum(e, end, "batches");
    const char *q = strstr(end, "\"queue_s\":");
    if (q)
        st->queue_s = strtod(q + strlen("\"queue_s\":"), NULL);
    q = strstr(end, "\"compute_s\":");
    if (q)
        st->compute_s = strtod(q + strlen("\"compute_s\":"), NULL);
    st->stream_rows = -1;
    q = strstr(json, "\"stream_rows\":{");
    if (q && (q = strstr(q, "\"on\":")) != NULL)
        st->stream_rows = !strncmp(q + strlen("\"on\":"), "true", 4);
    q = strstr(json, "\"data_threads\":");
    st->data_threads = q ? atoi(q + strlen("\"data_threads\":")) : 0;
    /* each shard's thread_busy_s and thread_wall_s, in shard order */
    q = strstr(json, "\"shards\":[");
    const char *qe = q ? strchr(q, ']') : NULL;
    for (const char *p = q; qe && st->nthr < 16 && (p = strstr(p, "\"thread_busy_s\":")) &&
                            p < qe;) {
        p += strlen("\"thread_busy_s\":");
        st->thr_busy_s[st->nthr] = strtod(p, NULL);
        const char *w = strstr(p, "\"thread_wall_s\":");
        if (!w || w > qe)
            break;
        st->thr_wall_s[st->nthr++] = strtod(w + strlen("\"thread_wall_s\":"), NULL);
    }
    st->ok = 1;
    return 0;
}

int sup_stats(const struct opts *o, const struct sup *s, struct eng_stats *st)
{
    static char buf[1 << 20]; /* 512 agents' entries and more */
    int rc = o->ctl ? ctl_query_exe(o->ctl, s->sock, buf, sizeof buf)
                    : ctl_query_proto(s->sock, "status --json", buf, sizeof buf);
    if (rc == 0)
        rc = parse_status(buf, st);
    if (rc) {
        memset(st, 0, sizeof *st);
        warn("status --json from %s: %s", s->sock, strerror(-rc));
    }
    return rc;
}
