/*
 * fleet.c - launches and supervises N agent processes running the same command.
 *
 * Each agent runs in its own process group with OAG_ENDPOINT and OAG_AGENT_ID set; its death
 * is seen at once through a pidfd. An abnormal exit (non-zero status, or a signal we did not
 * send) restarts it after an exponential backoff; too many abnormal exits within the window and
 * the supervisor gives up on it (state "failed"). Stopping sends SIGTERM to the group, then
 * SIGKILL after the stop timeout.
 *
 * An agent's stdout and stderr are pipes the loop reads: each line goes to the supervisor's
 * stdout/stderr prefixed with "[agent ID]", or with --log-dir to DIR/agent-ID.log, which is
 * rotated by size (--log-max-bytes, --log-keep) between lines, so no line is ever split
 * across two files.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cpus.h"
#include "log.h"
#include "sup.h"

extern char **environ;

const char *agent_state_name(enum agent_state st)
{
    static const char *const names[] = { "starting", "running", "backoff", "exited", "failed",
                                         "stopping" };
    return names[st];
}

struct agent *fleet_agent(struct sup *s, int id)
{
    if (id < 0 || id >= s->nagents)
        return NULL;
    return &s->agents[id];
}

int fleet_init(struct sup *s)
{
    s->nagents = 0;
    s->agents = NULL;
    return 0;
}

static int grow(struct sup *s, int n)
{
    if (n <= s->nagents)
        return 0;
    struct agent *a = realloc(s->agents, (size_t)n * sizeof *a);
    if (!a)
        return -ENOMEM;
    for (int i = s->nagents; i < n; i++) {
        memset(&a[i], 0, sizeof a[i]);
        a[i].id = i;
        a[i].state = AG_EXITED;
        a[i].pid = 0;
        a[i].pidfd = a[i].out_fd = a[i].err_fd = a[i].log_fd = -1;
    }
    s->agents = a;
    s->nagents = n;
    return 0;
}

/* DIR/agent-ID.log, or with gen > 0 its rotated copy DIR/agent-ID.log.GEN. */
static int log_path(struct sup *s, struct agent *a, uint32_t gen, char *buf, size_t cap)
{
    int n = gen ? snprintf(buf, cap, "%s/agent-%d.log.%u", s->cfg.log_dir, a->id, gen)
                : snprintf(buf, cap, "%s/agent-%d.log", s->cfg.log_dir, a->id);
    return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

/* Opens the agent's log for appending and learns its size. Returns 0 or a negative errno. */
static int log_open(struct sup *s, struct agent *a)
{
    char path[PATH_MAX];
    struct stat st;
    int rc = log_path(s, a, 0, path, sizeof path);
    if (rc)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0) {
        rc = -errno;
        log_err("agent %d: cannot open %s: %s", a->id, path, strerror(errno));
        return rc;
    }
    a->log_fd = fd;
    a->log_bytes = fstat(fd, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

static void log_warn_once(struct agent *a, const char *what, int err)
{
    if (!a->log_failed)
        log_warn("agent %d: log %s: %s (further errors not shown)", a->id, what, strerror(err));
    a->log_failed = 1;
}

/*
 * Rotation: agent-ID.log.(K-1) -> .K (the oldest .K goes), ..., .1 -> .2, the live file -> .1,
 * then a new live file. With --log-keep 0 the live file is emptied instead. On failure the
 * current file goes on growing (warned once) and the next rotation is tried N bytes later.
 */
static void log_rotate(struct sup *s, struct agent *a)
{
    char from[PATH_MAX], to[PATH_MAX];
    a->log_bytes = 0;
    if (s->cfg.log_keep == 0) {
        if (ftruncate(a->log_fd, 0) < 0)
            log_warn_once(a, "truncate", errno);
        return;
    }
    for (uint32_t g = s->cfg.log_keep; g >= 1; g--) {
        if (log_path(s, a, g - 1, from, sizeof from) || log_path(s, a, g, to, sizeof to))
            return;
        if (rename(from, to) < 0 && errno != ENOENT) {
            log_warn_once(a, "rotation", errno);
            return;
        }
    }
    int old = a->log_fd;
    if (log_open(s, a) < 0) {
        a->log_fd = old; /* now agent-ID.log.1: better there than nowhere */
        a->log_failed = 1;
        return;
    }
    close(old);
}

/* Appends bytes (whole lines) to the log; extra ("\n" or "") is written right after them. */
static void log_append(struct agent *a, const char *p, size_t n, const char *extra)
{
    struct iovec iov[2] = { { (void *)p, n }, { (void *)extra, strlen(extra) } };
    size_t total = n + iov[1].iov_len;
    a->log_bytes += total;
    int i = 0;
    while (total > 0) {
        ssize_t w = writev(a->log_fd, iov + i, 2 - i);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            log_warn_once(a, "write", w < 0 ? errno : EIO);
            return;
        }
        total -= (size_t)w;
        while (i < 2 && (size_t)w >= iov[i].iov_len) {
            w -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (i < 2) {
            iov[i].iov_base = (char *)iov[i].iov_base + w;
            iov[i].iov_len -= (size_t)w;
        }
    }
}

/*
 * Writes the complete lines of lb (and with final, or a full buffer, the rest as one line) to
 * the agent's log, rotating first whenever the next line would take the file past
 * --log-max-bytes (a longer line alone in a file is written whole). Returns the bytes of lb
 * consumed.
 */
static size_t log_lines(struct sup *s, struct agent *a, struct linebuf *lb, int final)
{
    size_t span = 0, pos = 0; /* lb->buf[span, pos): lines not yet written */
    uint64_t max = s->cfg.log_max_bytes;
    while (pos < lb->len) {
        char *nl = memchr(lb->buf + pos, '\n', lb->len - pos);
        size_t end;
        const char *extra = "";
        if (nl) {
            end = (size_t)(nl - lb->buf) + 1;
        } else if (final || (pos == 0 && lb->len == sizeof lb->buf)) {
            end = lb->len;
            extra = "\n";
        } else {
            break;
        }
        uint64_t line = end - pos + strlen(extra);
        if (a->log_bytes + (pos - span) + line > max && a->log_bytes + (pos - span) > 0) {
            log_append(a, lb->buf + span, pos - span, "");
            log_rotate(s, a);
            span = pos;
        }
        pos = end;
        if (*extra) {
            log_append(a, lb->buf + span, pos - span, extra);
            span = pos;
        }
    }
    if (pos > span)
        log_append(a, lb->buf + span, pos - span, "");
    return pos;
}

static int spawn(struct sup *s, struct agent *a)
{
    int out[2] = { -1, -1 }, err[2] = { -1, -1 };
    if (s->cfg.log_dir && a->log_fd < 0) {
        int rc = log_open(s, a);
        if (rc)
            return rc;
    }
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        int rc = -errno;
        if (out[0] >= 0) {
            close(out[0]);
            close(out[1]);
        }
        return rc;
    }
    char idbuf[32], epbuf[160];
    snprintf(idbuf, sizeof idbuf, "OAG_AGENT_ID=%d", a->id);
    snprintf(epbuf, sizeof epbuf, "OAG_ENDPOINT=%s", s->cfg.socket_path);
    pid_t pid = fork();
    if (pid < 0) {
        int rc = -errno;
        close(out[0]); close(out[1]); close(err[0]); close(err[1]);
        return rc;
    }
    if (pid == 0) {
        /* Child: own process group, default signals, stdio to the pipes, our env additions. */
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        putenv(idbuf);
        putenv(epbuf);
        /* Below the supervisor (lowering one's own priority needs no privilege; the result
         * is capped at 19 by the kernel). Under a unit with Nice=-10 and the default 10,
         * agents run at 0 like the rest of the host. */
        if (s->cfg.agent_nice > 0) {
            errno = 0;
            int cur = getpriority(PRIO_PROCESS, 0);
            if (errno == 0 && setpriority(PRIO_PROCESS, 0, cur + s->cfg.agent_nice) != 0)
                fprintf(stderr, "oag-supervisor: agent %d: setpriority: %s\n", a->id,
                        strerror(errno));
        }
        cpus_agent(s); /* --cpus: the CPUs the supervisor left them */
        /* systemd's notification socket is the supervisor's (notify.c), not the agents'. */
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        execvp(s->cfg.cmd[0], s->cfg.cmd);
        fprintf(stderr, "oag-supervisor: cannot run %s: %s\n", s->cfg.cmd[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* also here, so that the group exists before we ever signal it */
    a->spawn_gen++;
    close(out[1]);
    close(err[1]);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);
    a->out_fd = out[0];
    a->err_fd = err[0];
    a->out_lb.len = a->err_lb.len = 0;
    loop_arm_poll(s, a->out_fd, ud_make(UD_OUT, a->spawn_gen, (uint32_t)a->id), POLLIN);
    loop_arm_poll(s, a->err_fd, ud_make(UD_ERR, a->spawn_gen, (uint32_t)a->id), POLLIN);
    a->pid = pid;
    a->pidfd = (int)pidfd_open(pid, 0);
    if (a->pidfd < 0) {
        log_err("pidfd_open(%d): %s", (int)pid, strerror(errno));
        kill(-pid, SIGKILL);
    } else {
        fcntl(a->pidfd, F_SETFD, FD_CLOEXEC);
        loop_arm_poll(s, a->pidfd, ud_make(UD_PIDFD, a->spawn_gen, (uint32_t)a->id), POLLIN);
    }
    a->state = AG_STARTING;
    a->started_ns = now_ns();
    log_debug("agent %d started, pid %d", a->id, (int)pid);
    return 0;
}

void fleet_scale(struct sup *s, int n)
{
    if (n < 0)
        n = 0;
    if (grow(s, n) < 0) {
        log_err("scale to %d: out of memory", n);
        return;
    }
    s->fleet_size = n;
    uint64_t now = now_ns();
    for (int i = 0; i < s->nagents; i++) {
        struct agent *a = &s->agents[i];
        a->wanted = i < n;
        if (a->wanted && (a->state == AG_EXITED || a->state == AG_FAILED) && !s->draining) {
            a->consecutive = 0;
            a->nfail = 0;
            a->state = AG_BACKOFF;
            a->next_start_ns = now; /* fleet_tick starts it */
        } else if (!a->wanted && (a->state == AG_STARTING || a->state == AG_RUNNING)) {
            a->state = AG_STOPPING;
            a->stop_deadline_ns = now + (uint64_t)s->cfg.stop_timeout_ms * 1000000ull;
            kill(-a->pid, SIGTERM);
        } else if (!a->wanted && a->state == AG_BACKOFF) {
            a->state = AG_EXITED;
        }
    }
}

static void flush_line(struct sup *s, struct agent *a, struct linebuf *lb, int which, int final)
{
    if (a->log_fd >= 0) {
        size_t used = log_lines(s, a, lb, final);
        memmove(lb->buf, lb->buf + used, lb->len - used);
        lb->len -= used;
        return;
    }
    size_t start = 0;
    for (size_t i = 0; i < lb->len; i++) {
        if (lb->buf[i] == '\n') {
            fprintf(which ? stderr : stdout, "[agent %d] %.*s\n", a->id, (int)(i - start),
                    lb->buf + start);
            start = i + 1;
        }
    }
    if (start < lb->len && (final || (start == 0 && lb->len == sizeof lb->buf))) {
        fprintf(which ? stderr : stdout, "[agent %d] %.*s\n", a->id, (int)(lb->len - start),
                lb->buf + start);
        start = lb->len;
    }
    memmove(lb->buf, lb->buf + start, lb->len - start);
    lb->len -= start;
    fflush(which ? stderr : stdout);
}

static void close_output(struct sup *s, struct agent *a, int which)
{
    int *fd = which ? &a->err_fd : &a->out_fd;
    if (*fd < 0)
        return;
    flush_line(s, a, which ? &a->err_lb : &a->out_lb, which, 1);
    loop_cancel(s, ud_make(which ? UD_ERR : UD_OUT, a->spawn_gen, (uint32_t)a->id));
    close(*fd);
    *fd = -1;
}

void fleet_output_event(struct sup *s, int id, int which)
{
    struct agent *a = fleet_agent(s, id);
    if (!a)
        return;
    int fd = which ? a->err_fd : a->out_fd;
    if (fd < 0)
        return;
    struct linebuf *lb = which ? &a->err_lb : &a->out_lb;
    for (;;) {
        ssize_t n = read(fd, lb->buf + lb->len, sizeof lb->buf - lb->len);
        if (n > 0) {
            lb->len += (size_t)n;
            flush_line(s, a, lb, which, 0);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            break;
        close_output(s, a, which); /* EOF: the agent (and its children) closed it */
        return;
    }
    loop_arm_poll(s, fd, ud_make(which ? UD_ERR : UD_OUT, a->spawn_gen, (uint32_t)a->id), POLLIN);
}

/* Detaches the lane of a dead fleet agent right away, so that its restart can attach. */
static void reclaim_lane(struct sup *s, struct agent *a)
{
    for (uint32_t i = 0; i < s->nactive; i++) {
        struct lane *l = &s->lanes[s->active[i]];
        if (l->agent_id == a->id) {
            lane_cut(s, l, NULL);
            return;
        }
    }
}

void fleet_child_event(struct sup *s, int id)
{
    struct agent *a = fleet_agent(s, id);
    if (!a || a->pid <= 0)
        return;
    int st = 0;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)a->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0) {
        loop_arm_poll(s, a->pidfd, ud_make(UD_PIDFD, a->spawn_gen, (uint32_t)a->id), POLLIN);
        return;
    }
    /* Kill whatever the agent left in its group while its pid (the group id) is still ours,
     * then reap. */
    kill(-a->pid, SIGKILL);
    if (waitpid(a->pid, &st, 0) < 0)
        st = 0;
    loop_cancel(s, ud_make(UD_PIDFD, a->spawn_gen, (uint32_t)a->id));
    close(a->pidfd);
    a->pidfd = -1;
    close_output(s, a, 0);
    close_output(s, a, 1);
    reclaim_lane(s, a);
    a->last_status = st;
    pid_t pid = a->pid;
    a->pid = 0;
    uint64_t now = now_ns();
    int clean = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (a->state == AG_STOPPING || !a->wanted || s->draining) {
        a->state = AG_EXITED;
        log_debug("agent %d (pid %d) stopped", a->id, (int)pid);
        return;
    }
    if (clean) {
        a->state = AG_EXITED;
        log_info("agent %d (pid %d) exited normally", a->id, (int)pid);
        return;
    }
    if (WIFSIGNALED(st))
        log_warn("agent %d (pid %d) killed by signal %d", a->id, (int)pid, WTERMSIG(st));
    else
        log_warn("agent %d (pid %d) exited with status %d", a->id, (int)pid, WEXITSTATUS(st));
    /* A run long enough resets the backoff. */
    uint64_t up_ms = (now - a->started_ns) / 1000000ull;
    if (up_ms >= 1000 || up_ms >= s->cfg.restart_max_ms)
        a->consecutive = 0;
    a->fail_ns[a->nfail++ % 64] = now;
    uint32_t window = s->cfg.restart_burst < 64 ? s->cfg.restart_burst : 64;
    uint64_t window_ns = (uint64_t)s->cfg.restart_window_s * 1000000000ull;
    if (s->cfg.restart_burst <= 64 && a->nfail >= window) {
        uint64_t oldest = a->fail_ns[(a->nfail - window) % 64];
        if (now - oldest <= window_ns) {
            a->state = AG_FAILED;
            log_err("agent %d failed %u times within %u s: giving up on it", a->id, window,
                    s->cfg.restart_window_s);
            return;
        }
    }
    uint64_t delay = (uint64_t)s->cfg.restart_delay_ms << (a->consecutive < 20 ? a->consecutive : 20);
    if (delay > s->cfg.restart_max_ms)
        delay = s->cfg.restart_max_ms;
    a->consecutive++;
    a->restarts++;
    a->state = AG_BACKOFF;
    a->next_start_ns = now + delay * 1000000ull;
}

void fleet_tick(struct sup *s, uint64_t now, uint64_t *next_ns)
{
    for (int i = 0; i < s->nagents; i++) {
        struct agent *a = &s->agents[i];
        if (a->state == AG_BACKOFF && !s->draining) {
            if (now >= a->next_start_ns) {
                int rc = spawn(s, a);
                if (rc) {
                    log_err("agent %d: cannot start: %s", a->id, strerror(-rc));
                    a->next_start_ns = now + 1000000000ull;
                    if (a->next_start_ns < *next_ns)
                        *next_ns = a->next_start_ns;
                }
            } else if (a->next_start_ns < *next_ns) {
                *next_ns = a->next_start_ns;
            }
        } else if (a->state == AG_STOPPING && a->pid > 0) {
            if (now >= a->stop_deadline_ns) {
                log_warn("agent %d (pid %d) did not stop in %u ms: SIGKILL", a->id, (int)a->pid,
                         s->cfg.stop_timeout_ms);
                kill(-a->pid, SIGKILL);
                a->stop_deadline_ns = UINT64_MAX;
            } else if (a->stop_deadline_ns < *next_ns) {
                *next_ns = a->stop_deadline_ns;
            }
        }
    }
}

void fleet_stop_all(struct sup *s)
{
    uint64_t now = now_ns();
    for (int i = 0; i < s->nagents; i++) {
        struct agent *a = &s->agents[i];
        if (a->state == AG_BACKOFF)
            a->state = AG_EXITED;
        if ((a->state == AG_STARTING || a->state == AG_RUNNING) && a->pid > 0) {
            a->state = AG_STOPPING;
            a->stop_deadline_ns = now + (uint64_t)s->cfg.stop_timeout_ms * 1000000ull;
            kill(-a->pid, SIGTERM);
        }
    }
}

int fleet_all_down(struct sup *s)
{
    for (int i = 0; i < s->nagents; i++)
        if (s->agents[i].pid > 0)
            return 0;
    return 1;
}

int fleet_done(struct sup *s, int *all_ok)
{
    *all_ok = 1;
    for (int i = 0; i < s->nagents; i++) {
        struct agent *a = &s->agents[i];
        if (a->state != AG_EXITED && a->state != AG_FAILED)
            return 0;
        if (a->state == AG_FAILED || !WIFEXITED(a->last_status) || WEXITSTATUS(a->last_status))
            *all_ok = 0;
    }
    return 1;
}

void fleet_fini(struct sup *s)
{
    for (int i = 0; i < s->nagents; i++) {
        struct agent *a = &s->agents[i];
        if (a->pid > 0) {
            kill(-a->pid, SIGKILL);
            waitpid(a->pid, NULL, 0);
        }
        if (a->pidfd >= 0)
            close(a->pidfd);
        if (a->out_fd >= 0)
            close(a->out_fd);
        if (a->err_fd >= 0)
            close(a->err_fd);
        if (a->log_fd >= 0)
            close(a->log_fd);
    }
    free(s->agents);
    s->agents = NULL;
}
