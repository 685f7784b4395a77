/*
 * oag-ctl - talks to a running oag-supervisor: status [--json], scale N, stop.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "shm/endpoint.h"
#include "shm/layout.h"
#include "shm/proto.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: oag-ctl [-n NAME | -s SOCKET] COMMAND\n"
               "  status [--json]   supervisor and per-agent pid, state, restarts, tasks\n"
               "  scale N           grow or shrink the fleet to N agents\n"
               "  stop              graceful shutdown\n"
               "The endpoint defaults to $OAG_ENDPOINT, then the instance named \"default\".\n");
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
    struct oag_hello h = { .magic = OAG_PROTO_MAGIC, .abi = OAG_ABI_VERSION,
                           .kind = OAG_HELLO_CTL, .agent_id = -1, .pid = (uint32_t)getpid() };
    size_t len = 0;
    for (int i = optind; i < argc; i++) {
        int n = snprintf(h.cmd + len, sizeof h.cmd - len, "%s%s", i > optind ? " " : "", argv[i]);
        if (n < 0 || (size_t)n >= sizeof h.cmd - len) {
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
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    memcpy(sa.sun_path, path, strlen(path) + 1);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "oag-ctl: cannot reach a supervisor at %s: %s\n", path, strerror(errno));
        return 1;
    }
    struct timeval tv = { .tv_sec = 10 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (send(fd, &h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h) {
        fprintf(stderr, "oag-ctl: send: %s\n", strerror(errno));
        return 1;
    }
    static union {
        struct oag_ctl_msg m;
        struct oag_welcome w;
    } u;
    for (;;) {
        ssize_t n = recv(fd, &u, sizeof u, 0);
        if (n <= 0) {
            fprintf(stderr, "oag-ctl: connection closed before the reply ended%s%s\n",
                    n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
            return 1;
        }
        if ((size_t)n < offsetof(struct oag_ctl_msg, text) || u.m.magic != OAG_PROTO_MAGIC) {
            fprintf(stderr, "oag-ctl: malformed reply\n");
            return 1;
        }
        if (u.m.type == OAG_MSG_WELCOME) { /* a refusal */
            u.w.reason[sizeof u.w.reason - 1] = '\0';
            fprintf(stderr, "oag-ctl: refused: %s\n", u.w.reason);
            return 1;
        }
        if (u.m.type == OAG_MSG_CTL_END)
            return u.m.status == 0 ? 0 : 1;
        if (u.m.type == OAG_MSG_CTL_TEXT && u.m.len <= OAG_CTL_CHUNK &&
            (size_t)n >= offsetof(struct oag_ctl_msg, text) + u.m.len)
            fwrite(u.m.text, 1, u.m.len, stdout);
    }
}
