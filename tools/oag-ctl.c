/*
 * oag-ctl - talks to a running oag-supervisor: status [--json], scale N, reload [DIR], stop, and
 * top (a live view, oag-ctl-top.c).
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "oag-ctl.h"
#include "shm/endpoint.h"
#include "shm/layout.h"
#include "shm/proto.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: oag-ctl [-n NAME | -s SOCKET] COMMAND\n"
               "  status [--json]   supervisor and per-agent pid, state, restarts, tasks\n"
               "  top [--interval MS] [--once]\n"
               "                    live view: throughput, batching, engine load, agents\n"
               "  scale N           grow or shrink the fleet to N agents\n"
               "  reload [DIR]      load a new model version (DIR, or the same folder again)\n"
               "  stop              graceful shutdown\n"
               "The endpoint defaults to $OAG_ENDPOINT, then the instance named \"default\".\n");
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int fail(struct ctl_reply *r, int err, const char *fmt, const char *detail)
{
    snprintf(r->msg, sizeof r->msg, fmt, detail);
    return err;
}

static int keep_text(struct ctl_reply *r, const char *p, size_t n)
{
    if (r->sink) {
        fwrite(p, 1, n, r->sink);
        return 0;
    }
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 16384;
        while (r->len + n + 1 > cap)
            cap *= 2;
        char *t = realloc(r->text, cap);
        if (!t)
            return -ENOMEM;
        r->text = t;
        r->cap = cap;
    }
    memcpy(r->text + r->len, p, n);
    r->len += n;
    r->text[r->len] = '\0';
    return 0;
}

/* Waits until fd is readable. 0, -ETIMEDOUT, or -EINTR when *r->stop was set meanwhile. */
static int wait_readable(int fd, struct ctl_reply *r)
{
    int64_t end = r->timeout_ms < 0 ? 0 : mono_ms() + r->timeout_ms;
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        struct timespec ts, *tp = NULL;
        if (r->timeout_ms >= 0) {
            int64_t left = end - mono_ms();
            if (left < 0)
                left = 0;
            ts.tv_sec = (time_t)(left / 1000);
            ts.tv_nsec = (long)(left % 1000) * 1000000L;
            tp = &ts;
        }
        int n = ppoll(&p, 1, tp, r->mask);
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
        if (r->stop && *r->stop)
            return -EINTR;
    }
}

static int call_on(int fd, const char *path, const char *cmd, struct ctl_reply *r)
{
    struct oag_hello h = { .magic = OAG_PROTO_MAGIC, .abi = OAG_ABI_VERSION,
                           .kind = OAG_HELLO_CTL, .agent_id = -1, .pid = (uint32_t)getpid() };
    if (strlen(cmd) >= sizeof h.cmd)
        return fail(r, -EINVAL, "command too long%s", "");
    memcpy(h.cmd, cmd, strlen(cmd) + 1);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path)
        return fail(r, -ENAMETOOLONG, "endpoint path too long%s", "");
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        snprintf(r->msg, sizeof r->msg, "cannot reach a supervisor at %s: %s", path, strerror(e));
        return -e;
    }
    /* A fresh SOCK_SEQPACKET connection takes one small message without blocking. */
    if (send(fd, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h)
        return fail(r, -EPIPE, "send: %s", strerror(errno));
    static union {
        struct oag_ctl_msg m;
        struct oag_welcome w;
    } u;
    for (;;) {
        int rc = wait_readable(fd, r);
        if (rc == -ETIMEDOUT)
            return fail(r, rc, "no reply from the supervisor%s", "");
        if (rc)
            return fail(r, rc, "interrupted%s", "");
        ssize_t n = recv(fd, &u, sizeof u, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0) {
            snprintf(r->msg, sizeof r->msg, "connection closed before the reply ended%s%s",
                     n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
            return -EPIPE;
        }
        if ((size_t)n < offsetof(struct oag_ctl_msg, text) || u.m.magic != OAG_PROTO_MAGIC)
            return fail(r, -EPROTO, "malformed reply%s", "");
        if (u.m.type == OAG_MSG_WELCOME) { /* a refusal */
            u.w.reason[sizeof u.w.reason - 1] = '\0';
            return fail(r, -ECONNABORTED, "refused: %s", u.w.reason);
        }
        if (u.m.type == OAG_MSG_CTL_END) {
            r->status = u.m.status;
            return 0;
        }
        if (u.m.type == OAG_MSG_CTL_TEXT && u.m.len <= OAG_CTL_CHUNK &&
            (size_t)n >= offsetof(struct oag_ctl_msg, text) + u.m.len &&
            keep_text(r, u.m.text, u.m.len))
            return fail(r, -ENOMEM, "out of memory%s", "");
    }
}

int ctl_call(const char *path, const char *cmd, struct ctl_reply *r)
{
    r->msg[0] = '\0';
    r->status = 0;
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return fail(r, -errno, "socket: %s", strerror(errno));
    int rc = call_on(fd, path, cmd, r);
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = { { "name", required_argument, 0, 'n' },
                                          { "socket", required_argument, 0, 's' },
                                          { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
    const char *name = NULL, *sock = NULL;
    int o;
    while ((o = getopt_long(argc, argv, "+n:s:h", opts, NULL)) != -1) {
        switch (o) {
        case 'n': name = optarg; break;
        case 's': sock = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }
    char cmd[OAG_CTL_CMD_MAX];
    size_t len = 0;
    for (int i = optind; i < argc; i++) {
        int n = snprintf(cmd + len, sizeof cmd - len, "%s%s", i > optind ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= sizeof cmd - len) {
            fprintf(stderr, "oag-ctl: command too long\n");
            return 2;
        }
        len += (size_t)n;
    }
    char path[108];
    int rc;
    if (name) {
        if (!oag_name_valid(name)) {
            fprintf(stderr, "oag-ctl: invalid instance name '%s'\n", name);
            return 2;
        }
        rc = oag_default_socket(path, sizeof path, name);
    } else {
        rc = oag_resolve_endpoint(path, sizeof path, sock);
    }
    if (rc) {
        fprintf(stderr, "oag-ctl: endpoint path too long\n");
        return 2;
    }
    if (!strcmp(argv[optind], "top"))
        return ctl_top(path, argc - optind, argv + optind);
    /* 10 s per message; a reload answers only once the new model is loaded, uploaded and warm,
     * which for a large model takes longer: wait up to 10 minutes for it. */
    struct ctl_reply r = { .sink = stdout,
                           .timeout_ms = strncmp(cmd, "reload", 6) ? 10000 : 600000 };
    rc = ctl_call(path, cmd, &r);
    if (rc) {
        fprintf(stderr, "oag-ctl: %s\n", r.msg);
        return 1;
    }
    return r.status == 0 ? 0 : 1;
}
