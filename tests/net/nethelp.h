/*
 * nethelp.h - helpers for the remote-agent tests (header-only, with harness.h): a free loopback
 * port, remote agent_worker processes, an in-process remote client that checks every result,
 * and a real etcd on loopback ports in a temporary data dir.
 */
#ifndef OAG_TESTS_NETHELP_H
#define OAG_TESTS_NETHELP_H

#include <netinet/in.h>
#include <sys/socket.h>

#include "../harness.h"
#include "net/etcd.h"
#include "oag/oag.h"

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to 0, then closed). */
static inline int n_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        perror("free port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts agent_worker with args (NULL-terminated) and env OAG_AGENT_ID=id. Returns its pid. */
static inline pid_t n_worker(int id, const char *const *args, const char *const *env)
{
    const char *w = h_env_bin("OAG_AGENT_WORKER");
    const char *argv[32];
    int n = 0;
    argv[n++] = w;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        char ids[16];
        snprintf(ids, sizeof ids, "%d", id);
        setenv("OAG_AGENT_ID", ids, 1);
        for (int i = 0; env && env[i]; i += 2)
            setenv(env[i], env[i + 1], 1);
        alarm(0);
        execv(w, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits for pid up to timeout_ms; returns its exit code, or -1 (killed, timed out). */
static inline int n_wait(pid_t pid, unsigned timeout_ms)
{
    uint64_t end = h_now_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        if (h_now_ms() >= end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        h_sleep_ms(10);
    }
}

/* ---- an in-process client that checks every task ---------------------------------------------
 * Task i carries i and a pattern derived from it; the identity engine returns it unchanged.
 * done[i] counts completions: at the end every task must be at exactly 1. */
struct n_load {
    oag_client *c;
    uint32_t total, window, size;
    uint8_t *done;             /* per task: completions seen */
    uint64_t *ticket_of;       /* per task: its ticket */
    uint32_t submitted, completed, bad, dup, errs;
    int last_err;
    uint64_t first_done_after_ms; /* set by the caller's hooks */
};

static inline void n_fill(uint8_t *p, uint32_t size, uint32_t i)
{
    memcpy(p, &i, 4);
    for (uint32_t k = 4; k < size; k++)
        p[k] = (uint8_t)(i * 131u + k * 7u);
}

static inline int n_load_init(struct n_load *l, oag_client *c, uint32_t total, uint32_t window,
                              uint32_t size)
{
    memset(l, 0, sizeof *l);
    l->c = c;
    l->total = total;
    l->window = window;
    l->size = size;
    l->done = calloc(total, 1);
    l->ticket_of = calloc(total, sizeof *l->ticket_of);
    return l->done && l->ticket_of ? 0 : -ENOMEM;
}

/* One step: fill the window, poll up to timeout_ms. Returns completions taken, or < 0. */
static inline int n_load_step(struct n_load *l, int timeout_ms)
{
    uint8_t in[4096];
    while (l->submitted < l->total && l->submitted - l->completed < l->window) {
        n_fill(in, l->size, l->submitted);
        uint64_t t;
        int rc = oag_submit(l->c, in, l->size, &t);
        if (rc == -EAGAIN || rc == -EBUSY)
            break;
        if (rc) {
            l->last_err = rc;
            return rc;
        }
        l->ticket_of[l->submitted++] = t;
    }
    oag_completion d[64];
    int n = oag_poll(l->c, d, 64, timeout_ms);
    if (n < 0) {
        l->last_err = n;
        return n;
    }
    for (int k = 0; k < n; k++) {
        uint32_t i;
        if (d[k].len < 4) {
            l->bad++;
            continue;
        }
        memcpy(&i, d[k].data, 4);
        if (d[k].status != 0) {
            l->errs++;
            continue;
        }
        if (i >= l->submitted || l->ticket_of[i] != d[k].ticket || d[k].len != l->size) {
            l->bad++;
            continue;
        }
        n_fill(in, l->size, i);
        if (memcmp(in, d[k].data, l->size))
            l->bad++;
        if (l->done[i]++)
            l->dup++;
        l->completed++;
    }
    return n;
}

/* Counts tasks that never completed. */
static inline uint32_t n_load_missing(const struct n_load *l)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < l->total; i++)
        m += l->done[i] == 0;
    return m;
}

static inline void n_load_fini(struct n_load *l)
{
    free(l->done);
    free(l->ticket_of);
}

/* ---- etcd -------------------------------------------------------------------------------- */

struct n_etcd {
    pid_t pid;
    int port;
    char dir[256];
    char url[64];
};

static inline const char *n_etcd_bin(void)
{
    static const char *const c[] = { "/usr/bin/etcd", "/usr/local/bin/etcd" };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        if (access(c[i], X_OK) == 0)
            return c[i];
    return NULL;
}

/* Starts etcd on two free loopback ports with a temp data dir; waits until it answers.
 * Returns 0, or -1 (test fails). */
static inline int n_etcd_start(struct n_etcd *e)
{
    const char *bin = n_etcd_bin();
    memset(e, 0, sizeof *e);
    h_tmpdir(e->dir, sizeof e->dir, "etcd", 0700);
    e->port = n_free_port();
    int peer = n_free_port();
    char client[64], peerurl[64], data[300];
    snprintf(client, sizeof client, "http://127.0.0.1:%d", e->port);
    snprintf(peerurl, sizeof peerurl, "http://127.0.0.1:%d", peer);
    snprintf(data, sizeof data, "%s/data", e->dir);
    snprintf(e->url, sizeof e->url, "%s", client);
    char cluster[128];
    snprintf(cluster, sizeof cluster, "oagtest=%s", peerurl);
    fflush(stdout);
    fflush(stderr);
    e->pid = fork();
    if (e->pid == 0) {
        int dn = open("/dev/null", O_WRONLY);
        dup2(dn, 1);
        dup2(dn, 2);
        alarm(0);
        execl(bin, bin, "--name", "oagtest", "--data-dir", data, "--listen-client-urls", client,
              "--advertise-client-urls", client, "--listen-peer-urls", peerurl,
              "--initial-advertise-peer-urls", peerurl, "--initial-cluster", cluster,
              (char *)NULL);
        _exit(127);
    }
    struct etcd *c = NULL;
    if (etcd_create(&c, e->url, 500))
        return -1;
    uint64_t end = h_now_ms() + 15000;
    int rc = -1;
    while (h_now_ms() < end) {
        if (etcd_put(c, "/oagtest-ready", "1", 0) == 0) {
            rc = 0;
            break;
        }
        h_sleep_ms(50);
    }
    etcd_destroy(c);
    if (rc) {
        fprintf(stderr, "FAIL: etcd did not answer on %s within 15 s\n", e->url);
        h_failures++;
    }
    return rc;
}

static inline void n_etcd_stop(struct n_etcd *e)
{
    if (e->pid > 0) {
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
        e->pid = 0;
    }
    if (e->dir[0])
        h_rmtree(e->dir);
}

#endif
