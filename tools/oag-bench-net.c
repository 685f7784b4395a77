/*
 * oag-bench-net - remote agents over tcp://127.0.0.1, measured against a per-task ZeroMQ
 * REQ/REP baseline in the same run, and the balancing policies on uneven supervisors.
 *
 *   oag-bench-net [--agents N] [--tasks N] [--size BYTES] [--window W] [--skip-policies]
 *
 * Part 1 (one supervisor, identity engine, --listen on a loopback port): N agent threads, each
 * its own oag_client, run the same workload three ways:
 *   - REQ/REP per task: each agent's REQ socket talks to its own relay thread (REP) that passes
 *     the task to the same supervisor through liboag's shared memory (oag_infer) and replies:
 *     one ZeroMQ message each way per task, the classic RPC pattern;
 *   - oag tcp://, one task at a time (the same synchronous pattern, through the gateway);
 *   - oag tcp://, one task per frame (OAG_NET_BATCH_MAX=1), W tasks in flight;
 *   - oag tcp://, batched frames (defaults: up to 256 tasks per frame, 100 us delay), W in flight.
 * Tasks/s over the whole run, and per-task latency (submit to result, from a timestamp the
 * identity engine echoes back) p50 / p99.
 *
 * Part 2 (two supervisors: one as above, one slowed with --max-batch 16 --max-delay-us 2000 and
 * one lane): the agents connect to both (tcp://A,tcp://B?policy=...) with round-robin, least
 * outstanding and latency-weighted placement; tasks/s, p50 / p99 and the share the fast one
 * served.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "oag/oag.h"

#ifndef OAG_SUPERVISOR_PATH
#define OAG_SUPERVISOR_PATH "oag-supervisor"
#endif

static unsigned n_agents = 4, n_tasks = 50000, size = 64, window = 256;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        perror("port");
        exit(1);
    }
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- supervisors ------------------------------------------------------------------------ */

struct sup {
    pid_t pid;
    char sock[128], ep[64], name[64];
};

static int sup_start(struct sup *s, const char *tag, const char *const *extra)
{
    snprintf(s->name, sizeof s->name, "bnet-%s-%d", tag, (int)getpid());
    snprintf(s->sock, sizeof s->sock, "/tmp/%s.sock", s->name);
    snprintf(s->ep, sizeof s->ep, "tcp://127.0.0.1:%d", free_port());
    const char *argv[40] = { OAG_SUPERVISOR_PATH, "--name", s->name, "--socket", s->sock,
                             "--listen", s->ep, "--quiet" };
    int n = 8;
    for (int i = 0; extra && extra[i] && n < 38; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s->pid = fork();
    if (s->pid == 0) {
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    /* Ready when a remote client is welcomed (the gateway's lanes are connected). */
    for (int k = 0; k < 100; k++) {
        oag_client *c;
        if (oag_connect(&c, s->ep) == 0) {
            oag_close(c);
            return 0;
        }
        usleep(100000);
    }
    fprintf(stderr, "oag-bench-net: supervisor %s not serving %s\n", s->name, s->ep);
    return -1;
}

static void sup_stop(struct sup *s)
{
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
}

static long sup_tasks(const struct sup *s)
{
    oag_client *c;
    oag_info info;
    if (oag_connect(&c, s->sock))
        return -1;
    long n = oag_get_info(c, &info) == 0 ? (long)info.tasks_done : -1;
    oag_close(c);
    return n;
}

/* ---- agents ------------------------------------------------------------------------------ */

struct agent {
    pthread_t th;
    const char *ep;
    int id;
    uint64_t *lat;             /* per task, ns */
    unsigned done, errors;
    int rc;
    /* REQ/REP */
    char req_ep[64];
};

static pthread_barrier_t start_bar;

static void stamp(uint8_t *p, uint64_t t)
{
    memcpy(p, &t, 8);
    memset(p + 8, 0x5a, size - 8);
}

static void *agent_oag(void *arg)
{
    struct agent *a = arg;
    oag_client *c;
    a->rc = oag_connect(&c, a->ep);
    pthread_barrier_wait(&start_bar);
    if (a->rc)
        return NULL;
    uint8_t in[65536];
    unsigned sub = 0;
    oag_completion d[256];
    while (a->done + a->errors < n_tasks) {
        while (sub < n_tasks && sub - a->done - a->errors < window) {
            stamp(in, now_ns());
            int rc = oag_submit(c, in, size, NULL);
            if (rc == -EAGAIN || rc == -EBUSY)
                break;
            if (rc) {
                a->rc = rc;
                goto out;
            }
            sub++;
        }
        int n = oag_poll(c, d, 256, 1000);
        if (n < 0) {
            a->rc = n;
            break;
        }
        uint64_t t = now_ns();
        for (int k = 0; k < n; k++) {
            uint64_t t0;
            if (d[k].status || d[k].len != size) {
                a->errors++;
                continue;
            }
            memcpy(&t0, d[k].data, 8);
            a->lat[a->done++] = t - t0;
        }
    }
out:
    oag_close(c);
    return NULL;
}

/* The REQ side: one task per message, waits for each reply. */
static void *agent_req(void *arg)
{
    struct agent *a = arg;
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_REQ);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    a->rc = zmq_connect(s, a->req_ep) ? -EINVAL : 0;
    pthread_barrier_wait(&start_bar);
    uint8_t in[65536], out[65536];
    while (!a->rc && a->done + a->errors < n_tasks) {
        stamp(in, now_ns());
        if (zmq_send(s, in, size, 0) < 0 || zmq_recv(s, out, sizeof out, 0) != (int)size) {
            a->errors++;
            a->rc = -EIO;
            break;
        }
        uint64_t t0;
        memcpy(&t0, out, 8);
        a->lat[a->done++] = now_ns() - t0;
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

/* The REP relay: each request to the supervisor through shared memory, the result back. */
struct relay {
    pthread_t th;
    char ep[64];
    const char *sock;
    void *ctx, *s;
    int ready;
};

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    oag_client *c;
    if (oag_connect(&c, r->sock))
        return NULL;
    uint8_t buf[65536], out[65536];
    for (;;) {
        int n = zmq_recv(r->s, buf, sizeof buf, 0);
        if (n < 0)
            break;
        size_t ol = 0;
        int rc = oag_infer(c, buf, (size_t)n, out, sizeof out, &ol, 5000);
        if (zmq_send(r->s, out, rc ? 0 : ol, 0) < 0)
            break;
    }
    oag_close(c);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

struct result {
    double tps, p50_us, p99_us;
    unsigned errors;
    int rc;
};

/* Runs n_agents agents (fn) and gathers throughput and the latency percentiles. */
static struct result run(void *(*fn)(void *), const char *ep, struct relay *relays)
{
    struct agent *ag = calloc(n_agents, sizeof *ag);
    struct result res = { 0 };
    pthread_barrier_init(&start_bar, NULL, n_agents + 1);
    for (unsigned i = 0; i < n_agents; i++) {
        ag[i].ep = ep;
        ag[i].id = (int)i;
        ag[i].lat = malloc(n_tasks * sizeof *ag[i].lat);
        if (relays)
            snprintf(ag[i].req_ep, sizeof ag[i].req_ep, "%s", relays[i].ep);
        pthread_create(&ag[i].th, NULL, fn, &ag[i]);
    }
    pthread_barrier_wait(&start_bar);
    uint64_t t0 = now_ns();
    for (unsigned i = 0; i < n_agents; i++)
        pthread_join(ag[i].th, NULL);
    double secs = (double)(now_ns() - t0) / 1e9;
    size_t total = 0;
    for (unsigned i = 0; i < n_agents; i++)
        total += ag[i].done;
    uint64_t *all = malloc((total ? total : 1) * sizeof *all);
    size_t k = 0;
    for (unsigned i = 0; i < n_agents; i++) {
        memcpy(all + k, ag[i].lat, ag[i].done * sizeof *all);
        k += ag[i].done;
        res.errors += ag[i].errors;
        if (ag[i].rc && !res.rc)
            res.rc = ag[i].rc;
        free(ag[i].lat);
    }
    qsort(all, total, sizeof *all, cmp_u64);
    res.tps = (double)total / secs;
    if (total) {
        res.p50_us = (double)all[(total - 1) / 2] / 1000.0;
        res.p99_us = (double)all[(total * 99 + 99) / 100 - 1] / 1000.0;
    }
    free(all);
    free(ag);
    pthread_barrier_destroy(&start_bar);
    return res;
}

static void row(const char *name, const struct result *r)
{
    printf("| %-44s | %10.0f | %9.1f | %9.1f |%s\n", name, r->tps, r->p50_us, r->p99_us,
           r->rc ? " (errors)" : "");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int skip_policies = 0;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--agents"))
            n_agents = (unsigned)atoi(v), i++;
        else if (!strcmp(argv[i], "--tasks"))
            n_tasks = (unsigned)atoi(v), i++;
        else if (!strcmp(argv[i], "--size"))
            size = (unsigned)atoi(v), i++;
        else if (!strcmp(argv[i], "--window"))
            window = (unsigned)atoi(v), i++;
        else if (!strcmp(argv[i], "--skip-policies"))
            skip_policies = 1;
        else {
            fprintf(stderr, "usage: oag-bench-net [--agents N] [--tasks N] [--size BYTES] "
                            "[--window W] [--skip-policies]\n");
            return 2;
        }
    }
    if (size < 16 || size > 4096 || n_agents < 1 || n_agents > 64 || n_tasks < 1 || window < 1) {
        fprintf(stderr, "oag-bench-net: --size 16..4096, --agents 1..64\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sup fast = { 0 }, slow = { 0 };
    if (sup_start(&fast, "fast", NULL))
        return 1;
    printf("oag-bench-net: %u agents x %u tasks of %u bytes, identity engine, tcp://127.0.0.1\n\n",
           n_agents, n_tasks, size);
    printf("| %-44s | %10s | %9s | %9s |\n", "mode", "tasks/s", "p50 us", "p99 us");
    printf("|%s|%s|%s|%s|\n", "----------------------------------------------", "------------",
           "-----------", "-----------");

    /* REQ/REP baseline: one relay (REP + shared-memory client) per agent. */
    struct relay *rl = calloc(n_agents, sizeof *rl);
    void *rctx = zmq_ctx_new();
    for (unsigned i = 0; i < n_agents; i++) {
        rl[i].sock = fast.sock;
        snprintf(rl[i].ep, sizeof rl[i].ep, "tcp://127.0.0.1:%d", free_port());
        rl[i].s = zmq_socket(rctx, ZMQ_REP);
        int zero = 0;
        zmq_setsockopt(rl[i].s, ZMQ_LINGER, &zero, sizeof zero);
        if (zmq_bind(rl[i].s, rl[i].ep)) {
            fprintf(stderr, "bind %s failed\n", rl[i].ep);
            return 1;
        }
        pthread_create(&rl[i].th, NULL, relay_main, &rl[i]);
    }
    unsigned saved = n_tasks;
    n_tasks = n_tasks / 5 ? n_tasks / 5 : 1; /* synchronous: fewer tasks, same rates */
    struct result rr = run(agent_req, NULL, rl);
    n_tasks = saved;
    row("ZeroMQ REQ/REP, one message per task", &rr);
    zmq_ctx_shutdown(rctx); /* ends the relays' recv */
    for (unsigned i = 0; i < n_agents; i++) {
        pthread_join(rl[i].th, NULL);
        zmq_close(rl[i].s);
    }
    zmq_ctx_term(rctx);
    free(rl);

    unsigned saved_w = window;
    window = 1;
    n_tasks = n_tasks / 5 ? n_tasks / 5 : 1;
    struct result rs = run(agent_oag, fast.ep, NULL);
    window = saved_w;
    n_tasks = saved;
    row("oag tcp://, one task at a time (window 1)", &rs);
    setenv("OAG_NET_BATCH_MAX", "1", 1);
    struct result r1 = run(agent_oag, fast.ep, NULL);
    char name[96];
    snprintf(name, sizeof name, "oag tcp://, 1 task per frame, window %u", window);
    row(name, &r1);
    unsetenv("OAG_NET_BATCH_MAX");
    struct result rb = run(agent_oag, fast.ep, NULL);
    snprintf(name, sizeof name, "oag tcp://, batched frames, window %u", window);
    row(name, &rb);
    printf("\nbatched frames vs REQ/REP: %.1fx tasks/s (target >= 5x); vs 1 task per frame: "
           "%.1fx\n", rb.tps / (rr.tps > 0 ? rr.tps : 1), rb.tps / (r1.tps > 0 ? r1.tps : 1));

    if (!skip_policies) {
        const char *sx[] = { "--max-batch", "16", "--max-delay-us", "2000", "--net-lanes", "1",
                             "--ring-slots", "64", NULL };
        if (sup_start(&slow, "slow", sx))
            goto out;
        printf("\nbalancing over two supervisors, one slowed (--max-batch 16 --max-delay-us 2000 "
               "--net-lanes 1 --ring-slots 64), window %u per agent:\n\n", window);
        printf("| %-44s | %10s | %9s | %9s | fast share |\n", "policy", "tasks/s", "p50 us",
               "p99 us");
        printf("|%s|%s|%s|%s|%s|\n", "----------------------------------------------",
               "------------", "-----------", "-----------", "------------");
        const char *pol[] = { "rr", "least", "latency" };
        for (int p = 0; p < 3; p++) {
            char ep[200];
            snprintf(ep, sizeof ep, "%s,%s?policy=%s", fast.ep, slow.ep, pol[p]);
            long f0 = sup_tasks(&fast), s0 = sup_tasks(&slow);
            struct result r = run(agent_oag, ep, NULL);
            long f1 = sup_tasks(&fast), s1 = sup_tasks(&slow);
            double share = (double)(f1 - f0) / (double)((f1 - f0) + (s1 - s0) + 1);
            printf("| %-44s | %10.0f | %9.1f | %9.1f | %9.0f %% |%s\n", pol[p], r.tps, r.p50_us,
                   r.p99_us, share * 100.0, r.rc ? " (errors)" : "");
            fflush(stdout);
        }
    }
out:
    sup_stop(&slow);
    sup_stop(&fast);
    return 0;
}
