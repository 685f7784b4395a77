/*
 * bench.h - what the files of oag-bench share: options, result records, process bookkeeping,
 * statistics, the supervisor launcher, the identity and model measurements, the table runner.
 *
 * oag-bench is one program built from the files of this folder (a component; a file is one idea):
 *   main.c, opts.c          entry point, options (--help), the table/legacy dispatch
 *   proc.c                  signals, fork bookkeeping (every child killed and reaped on exit),
 *                           the temp dir, clocks, tool paths
 *   stats.c                 percentiles (nearest rank), sorting, small integer helpers
 *   format.c                numbers for the human tables (rates, microseconds, percentages)
 *   sup.c                   starting/stopping a real oag-supervisor, its status --json
 *   ident_latency.c         identity mode: ring / eventfd / ZeroMQ ping-pong, oag_infer latency
 *   ident_throughput.c      identity mode: N agents with a window, ZeroMQ pipeline
 *   identity.c              identity mode's report
 *   offline.c               a model engine through its ops table, in a child (the ceiling)
 *   mrun.c                  agent processes against a model supervisor (sync or windowed)
 *   rpc.c                   the RPC baseline: a ZeroMQ ROUTER server running the same engine
 *   model.c                 model mode (--model / --gen-models) and its report
 *   tables.c                `oag-bench table N`: the model, header, JSON document (cJSON)
 *   t_*.c                   one file per table of the tuning guide (t_load.c ... t_sweep.c)
 *
 * Not a test: figures, ratios, informative targets; exit 0 unless a part broke.
 */
#ifndef OAG_BENCH_H
#define OAG_BENCH_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <zmq.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "engine/engine.h"
#include "model/model.h"
#include "scheduler/cpus.h"
#include "oag/oag.h"
#include "shm/atomic.h"
#include "shm/endpoint.h"
#include "shm/layout.h"
#include "shm/proto.h"
#include "shm/ring.h"

#ifndef OAG_SUPERVISOR_PATH
#define OAG_SUPERVISOR_PATH "oag-supervisor"
#endif
#ifndef OAG_GEN_MODEL_PATH
#define OAG_GEN_MODEL_PATH "oag-gen-model"
#endif

#define MSG 64                  /* bytes per message / task, everywhere */
#define PP_SLOTS 64             /* ring slots of the bare ping-pong rings (one in flight) */
#define MAX_KIDS 4096
#define MAX_ROWS 16
#define SPIN_GIVE_UP_NS (10ull * 1000000000ull) /* a busy-poll wait this long means a dead peer */
#define SUP_READY_MS 10000
/* model mode */
#define MM_MAX_MODELS 8
#define MM_MAX_BATCHES 24
#define MM_MAX_WIN 12          /* measurement windows per run (table 7) */
#define MM_CHECK_ROWS 16        /* distinct input rows; results are checked against the engine's */

struct opts {
    unsigned iters;           /* measured round trips per latency path */
    unsigned warmup;          /* unmeasured round trips before them */
    double duration_s;        /* measured seconds per throughput row */
    unsigned window;          /* tasks outstanding per agent */
    unsigned agents[MAX_ROWS];
    int nrows;
    unsigned zmq_agents;
    unsigned ring_slots;
    const char *supervisor;
    const char *tput_spin_us; /* OAG_SPIN_US of throughput agents; NULL: library default */
    int no_oag, no_latency, no_throughput;

    /* model mode (--model / --gen-models): see the model section */
    const char *models[MM_MAX_MODELS];
    int nmodels;
    int gen_models;
    const char *models_dir;   /* --gen-models writes (and keeps) its models here; NULL: temp */
    const char *backend;      /* auto | cpu | cuda */
    const char *ctl;          /* oag-ctl binary for status --json; NULL: speak the protocol */
    const char *gen_model;    /* oag-gen-model binary */
    unsigned max_batch;       /* cap of every batch size in the run */
    unsigned batches[MM_MAX_BATCHES];
    int nbatches;
    unsigned off_iters;       /* offline: timed batches per point */
    double off_max_s;         /* offline: time budget per batch size */
    unsigned e2e_batch;       /* --max-batch of the end-to-end supervisors */
    unsigned e2e_agents[MAX_ROWS];
    int ne2e;
    unsigned e2e_delay_us;
    unsigned m_window;        /* async window per agent; 0: from the batch and agent count */
    double m_duration_s, m_warm_s;
    unsigned m_lat_iters;
    unsigned m_lat_warmup;    /* 0: iters / 10, at least 100 */
    unsigned off_warmup;      /* untimed batches per offline point */
    unsigned cmp_agents;      /* agents of the sync/pipelined and batching comparisons */
    unsigned dyn_batch, dyn_delay_us;
    unsigned m_max_queue;     /* 0: from the agents' windows */
    unsigned m_samples;       /* latency samples kept per row, all agents together */
    unsigned threads;         /* --threads for the cpu engine; 0: OpenBLAS's default */
    unsigned device;
    const char *gpus;         /* --gpus LIST for the model supervisors (default: --device) */
    unsigned instances;       /* --instances N for cpu model supervisors (0: theirs) */
    unsigned sup_ready_s;
    int skip_offline, skip_e2e, skip_mlat, skip_sync, skip_batching;
    int supervisor_set;

    /* tables (`oag-bench table N`, t_*.c) */
    int table;                /* 1..7; 0: identity or model mode */
    const char *json;         /* --json FILE: the table's figures for machines (and bench-plots) */
    double load_mb;           /* table 1: size of the generated model, MB (1e6 bytes) */
    const char *load_dtype;   /* table 1: its dtype */
    unsigned load_reps;       /* table 1: runs per path (the fastest counts) */
    unsigned scale_agents[MAX_ROWS];  /* table 5: agent counts */
    int nscale;
    unsigned ramp[MAX_ROWS];  /* table 6: tasks in flight per step */
    int nramp;
    unsigned ramp_agents;     /* table 6: agent processes (in flight = agents x window) */
    unsigned ramp_timeout_ms; /* table 6: a task not done in this long is an error */
    unsigned ramp_queue;      /* table 6: the supervisor's --max-queue (busy beyond it) */
    unsigned sweep[MAX_ROWS]; /* table 7: tasks in flight per level */
    int nsweep;
    unsigned sweep_agents;    /* table 7: agent processes */
    double sweep_win_s;       /* table 7: measurement window */
    unsigned sweep_max_win;   /* table 7: windows per level at most */
    int no_rpc;               /* tables 5-7: skip the RPC baseline */
};

struct lat_res {
    const char *name;
    int ok;
    double p50, p99, p999, max; /* microseconds */
};

struct tput_res {
    char name[64];
    int ok;
    unsigned agents;
    double rate;              /* round trips per second */
    uint64_t errors;          /* completions with a non-zero status */
};

struct sup {
    pid_t pid;
    char name[OAG_NAME_MAX + 1];
    char sock[PATH_MAX];
    char log[PATH_MAX];
};

struct off_row {
    unsigned batch;
    int ok;
    unsigned lat_runs, pipe_runs;
    double lat_p50_us, lat_p99_us;   /* one batch alone: submit .. reaped */
    double pipe_us;                  /* engine kept full: time per batch (median of groups) */
    double rows_s;                   /* batch / pipe_us */
};

struct off_shared {
    int32_t rc;
    char msg[512];
    char backend[16];
    uint32_t max_inflight;
    uint32_t out_bytes;
    double create_ms;
    int nrows;
    int have_expect;
    struct off_row rows[MM_MAX_BATCHES];
    /* then MM_CHECK_ROWS input rows (in_dim floats each), then their results (out_dim each) */
};

struct eng_stats {
    int ok;
    int stream_rows;         /* the supervisor advises streaming stores: 1, 0, -1 unknown */
    int data_threads;        /* its data threads (0: unknown) */
    int nthr;                /* shards whose thread times were read */
    double thr_busy_s[16], thr_wall_s[16]; /* each data thread working, and its lifetime */
    double busy_s, compute_s, queue_s;
    uint64_t rows, batches;
};

struct mrun_res {
    char name[64];
    int ok;
    unsigned agents, window, max_batch, delay_us;
    int sync;
    double tasks_s;
    double mean_us, p50_us, p99_us, p999_us;
    double busy_frac;        /* engine busy time / wall time over the window; < 0: unknown */
    double avg_batch;        /* rows / batches over the window; 0: unknown */
    int stream_rows;         /* the supervisor advised streaming stores at the end (-1: ?) */
    int data_threads;        /* the supervisor's data threads (0: unknown) */
    double thr_busy_max;     /* the busiest data thread's working share of the window (< 0: ?) */
    uint64_t errors, mismatches, busy_retries, checked;
    uint64_t done, timeouts; /* completed in the window; late or -ETIMEDOUT */
    double p90_us;
    double host_cpus;        /* the host's CPUs busy over the window, on average; < 0: unknown */
    double cpu_us_task;      /* host CPU time (every process) per completed task; < 0: unknown */
    /* window mode */
    unsigned nwin;           /* windows measured */
    int stable;              /* the last three within 10% */
    double win_tasks_s[MM_MAX_WIN], win_mean_us[MM_MAX_WIN];
};

struct model_res {
    char dir[PATH_MAX];
    char label[64];
    char name[64];
    char dtype[16];
    uint32_t in_dim, out_dim, nlinear, payload;
    uint64_t param_bytes;
    int loaded;
    struct off_shared off;       /* a copy of the child's header */
    int off_ok;
    double ceil_first, ceil_again; /* rows/s at the e2e batch: measured first, and again after
                                      the e2e rows (0: not measured again) */
    struct mrun_res e2e[MAX_ROWS];
    int ne2e;
    struct mrun_res lat;
    struct mrun_res sync, pipe;
    struct mrun_res nobatch, dyn;
    int ran_lat, ran_cmp, ran_batching; /* attempted (not skipped) */
};

struct mrun_cfg {
    const char *sock;
    int sync;                 /* oag_infer loop; else a window of oag_submit/oag_poll */
    unsigned nagents, window;
    unsigned iters, warmup;   /* count mode (iters > 0, one agent): warmup + iters calls */
    double duration_s, warm_s;
    uint32_t in_dim, out_dim;
    const float *rows;        /* MM_CHECK_ROWS rows of in_dim */
    const float *expect;      /* their results (out_dim each), or NULL */
    unsigned samples_cap;     /* per agent (per window in window mode) */
    const char *spin_us;      /* OAG_SPIN_US of the agents; NULL: library default */
    /* window mode (win_s > 0; async agents): the run lasts until max_win windows of win_s or
     * until the last three windows are stable (tasks/s and mean latency within 10%) */
    double win_s;
    unsigned max_win;
    uint32_t timeout_us;      /* > 0: submitted with this deadline; a later result is an error */
    unsigned busy_us;         /* back-off after -EBUSY (default 20) */
    const struct rpc_srv *rpc;/* non-NULL: the agents talk to this RPC server, not oag */
};

struct msup_cfg {
    unsigned max_batch, delay_us, ring_slots, lanes, max_queue;
    int no_spin;              /* --spin-us 0 (the supervisor sleeps at once) */
};

/* What one agent process of mrun() reports (shared memory, one writer each). */
struct mrun_agent {
    int32_t rc;
    uint32_t nsamp;
    uint64_t ok, err, mismatch, busy, checked, untracked, lat_sum_ns, lat_n, seen, tmo;
    char msg[200];
    /* window mode: completions and latency sums per window (read live by the parent) */
    oag_atomic_u64 wok[MM_MAX_WIN], wlat[MM_MAX_WIN];
    uint32_t wn[MM_MAX_WIN];
    uint64_t wseen[MM_MAX_WIN];
};

struct mrun_shared {
    oag_atomic_u64 t_start, t_end; /* written by the parent before the start pipe closes; t_end
                                      again in window mode (the agents poll it) */
    struct mrun_agent a[];
};

/* The RPC baseline (rpc.c): a ZeroMQ ROUTER server in a child process running the same engine. */
struct rpc_stats {
    oag_atomic_u64 busy_ns, rows, batches; /* written by the server, read by the parent */
};
struct rpc_srv {
    pid_t pid;
    char ep[PATH_MAX];
    struct rpc_stats *st;     /* shared memory */
};

enum { REC_READY = 1, REC_DONE = 2 };

struct tput_rec {
    uint32_t type;
    uint32_t idx;
    int32_t rc;
    uint32_t pad;
    uint64_t done;     /* ok completions inside the window */
    uint64_t errors;   /* completions with a non-zero status */
};
_Static_assert(sizeof(struct tput_rec) <= PIPE_BUF, "pipe records must be atomic");

struct tput_window {
    uint64_t t_start, t_end;
};

struct tput_agent {
    int (*setup)(struct tput_agent *a);
    int (*fill)(struct tput_agent *a, unsigned *outstanding);      /* submit up to the window */
    int (*reap)(struct tput_agent *a, unsigned *outstanding, uint64_t *ok, uint64_t *err,
                int timeout_ms);                                    /* returns count or -errno */
    void (*teardown)(struct tput_agent *a);
    unsigned idx, window;
    const char *endpoint;  /* oag socket / zmq dir */
    oag_client *c;
    oag_completion *cmp;
    void *ctx, *push, *pull;
    uint8_t payload[MSG];
};

/* ---- globals (proc.c, sup.c) ---- */
extern volatile sig_atomic_t g_stop; /* set by SIGINT/SIGTERM/SIGHUP: every loop ends early */
extern char g_tmpdir[128];           /* this run's temp dir (short: Unix sockets live in it) */
extern struct sup *g_sup;            /* the running supervisor, stopped on every exit path */

void warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* proc.c */
void on_signal(int sig);
void kid_forget(pid_t pid); /* drops pid from the cleanup registry (reaped elsewhere) */
uint64_t now_ns(void);
void sleep_ms(unsigned ms);
pid_t spawn(void);
extern unsigned g_agent_nice; /* --agent-nice */
#define MAX_SUP_ARGS 16
extern const char *g_sup_args[MAX_SUP_ARGS]; /* --sup-arg: appended to every supervisor's */
extern int g_nsup_args;
extern int g_agent_cpus_set;  /* --sup-cpus: agents on the bench's other CPUs */
extern cpu_set_t g_agent_cpus;
pid_t spawn_agent(void);      /* spawn() for an agent process: g_agent_nice levels below us */
int reap(pid_t pid, int timeout_ms, int *status);
int reap_ok(pid_t pid, int timeout_ms, const char *what);
void kill_all_kids(void);
void rm_tmpdir(void);
void *shared_alloc(size_t size);
void sleep_until(uint64_t t_ns);
void sleep_us(unsigned us);
const char *self_dir(void);
void resolve_tools(struct opts *o);
int run_cmd(const char *const argv[], int out_fd, const char *what);
void rm_model_dir(const char *dir);

/* stats.c */
int cmp_u32(const void *a, const void *b);
size_t rank_index(size_t n, double q);
double pct_us(const uint32_t *s, size_t n, double q);
void summarize(struct lat_res *r, uint32_t *s, size_t n);
uint32_t clamp_ns(uint64_t ns);
uint64_t xorshift64(uint64_t *s);
uint32_t round64(uint32_t v);
unsigned next_pow2(unsigned v);
int cmp_double(const void *a, const void *b);
double pct_d(const double *s, size_t n, double q);

/* ident_latency.c */
int bench_pingpong(const struct opts *o, int use_efd, uint32_t *samples);
void zmq_setint(void *s, int opt, int v);
int bench_zmq_pair(const struct opts *o, uint32_t *samples);
void agent_env(const char *spin_us);
int bench_oag_latency(const struct opts *o, int sleeping, uint32_t *samples);

/* format.c */
const char *fmt_rate(char *buf, size_t cap, double r);
const char *fmt_us(char *buf, size_t cap, double us);
const char *fmt_pct(char *buf, size_t cap, double f);
const char *fmt_host_cpus(char *buf, size_t cap);

/* sup.c */
int sup_stop(struct sup *s);
int sup_start_argv(const char *exe, struct sup *s, const char *const base[],
                          const char *const extra[], unsigned ready_ms);
int sup_start(const struct opts *o, struct sup *s, const char *const extra[]);
int ctl_query_proto(const char *sock, const char *cmd, char *buf, size_t cap);
int sup_stats(const struct opts *o, const struct sup *s, struct eng_stats *st);

/* ident_throughput.c */
int ag_oag_setup(struct tput_agent *a);
int ag_oag_fill(struct tput_agent *a, unsigned *outstanding);
int ag_oag_reap(struct tput_agent *a, unsigned *outstanding, uint64_t *ok, uint64_t *err,
                    int timeout_ms);
void ag_oag_teardown(struct tput_agent *a);
int ag_zmq_setup(struct tput_agent *a);
int ag_zmq_fill(struct tput_agent *a, unsigned *outstanding);
int ag_zmq_reap(struct tput_agent *a, unsigned *outstanding, uint64_t *ok,
                          uint64_t *err, int timeout_ms);
void ag_zmq_teardown(struct tput_agent *a);
int bench_throughput(const struct opts *o, const struct tput_agent *proto,
                            unsigned nagents, struct tput_res *res);
int bench_zmq_pipeline(const struct opts *o, struct tput_res *res);

/* identity.c */
void print_report(const struct opts *o, const struct lat_res lat[5],
                         const struct tput_res *tp, int ntp, const struct tput_res *zp);

/* offline.c */
int off_child(const struct opts *o, const char *dir, struct off_shared *sh,
                     float *rows, float *expect, uint32_t payload);
int bench_offline(const struct opts *o, const char *dir, struct off_shared *sh,
                         float *rows, float *expect, uint32_t payload);

/* mrun.c */
int out_matches(const float *got, const float *want, uint32_t n);
void samp_add(uint32_t *s, struct mrun_agent *r, uint32_t cap, uint64_t *rng, uint64_t ns);
void win_add(const struct mrun_cfg *cfg, struct mrun_agent *r, uint32_t *samp, uint64_t *rng,
             uint64_t t_start, uint64_t t1, uint64_t ns);
/* The end of an agent's measured run, checked each turn of its loop: *draining = t is past
 * t_end (submit nothing more). Returns 1 when the agent may stop (past the end, nothing
 * outstanding), -ETIMEDOUT with a message in msg when `what` are still missing 30 s after the
 * end (*deadline keeps that time), 0 to go on. */
static inline int run_end(uint64_t t, uint64_t t_end, unsigned outstanding, uint64_t *deadline,
                          int *draining, char *msg, size_t cap, const char *what)
{
    *draining = t >= t_end;
    if (!*draining)
        return 0;
    if (!*deadline)
        *deadline = t + 30000000000ull;
    if (outstanding == 0)
        return 1;
    if (t > *deadline) {
        snprintf(msg, cap, "%u %s missing 30 s after the end", outstanding, what);
        return -ETIMEDOUT;
    }
    return 0;
}

int mrun(const struct opts *o, const struct sup *s, const struct mrun_cfg *cfg,
                struct mrun_res *res);
int msup_start(const struct opts *o, const struct model_res *mr, const char *backend,
                      const struct msup_cfg *c, struct sup *s);
unsigned auto_window(const struct opts *o, const struct model_res *mr, unsigned max_batch,
                     unsigned agents);
struct msup_cfg msup_for(const struct opts *o, unsigned max_batch, unsigned delay_us,
                                unsigned agents, unsigned window);
int mrow_group(const struct opts *o, const struct model_res *mr, const char *backend,
                      const struct msup_cfg *sc, struct mrun_cfg *const cfgs[],
                      struct mrun_res *const res[], int n);

/* model.c */
const struct off_row *off_at(const struct model_res *mr, unsigned batch);
int model_describe(struct model_res *mr);
int model_gen_std(const struct opts *o, int k, char *dir, size_t cap, const char **label);
void print_model_report(const struct opts *o, const struct model_res *mres, int nm);
int model_main(struct opts *o);

/* opts.c */
void usage(FILE *f);
int parse_args(struct opts *o, int argc, char **argv);

/* main.c */

int identity_main(struct opts *o);

/* tables.c: what every table shares */
struct cJSON;
struct tctx {
    struct opts *o;
    struct model_res mr;      /* the model of tables 2-7 (table 1 generates its own) */
    const char *backend;      /* resolved by the offline run: cpu | cuda (or o->backend) */
    struct off_shared *sh;    /* offline results + check rows (shared with children) */
    size_t sh_size;
    float *rows, *expect;
    const float *exp_rows;    /* expect when the offline run produced it, else NULL */
    struct cJSON *root;       /* the JSON document: table, machine, model, guide, rows */
    struct cJSON *jrows;
    int failures;
    char gen_dir[PATH_MAX];   /* a model generated into the temp dir, removed at the end */
};
int tables_main(struct opts *o);
int tctx_model(struct tctx *c);
int tctx_offline(struct tctx *c, const unsigned *batches, int n, unsigned iters, double max_s);
struct cJSON *trow(struct tctx *c, const char *system, const char *label);
void jrow_mrun(struct cJSON *row, const struct mrun_res *r);
void jnum(struct cJSON *obj, const char *key, double v);
void tprint_head(struct tctx *c, const char *title);
void trpc_rows(struct tctx *c, const struct mrun_cfg *co, struct mrun_res *rr, int n,
               const char *what);
void tprint_guide(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double err_rate(const struct mrun_res *r);
int t_load(struct tctx *c);
int t_batch(struct tctx *c);
int t_sync(struct tctx *c);
int t_batching(struct tctx *c);
int t_rpc(struct tctx *c);
int t_ramp(struct tctx *c);
int t_sweep(struct tctx *c);

/* rpc.c */
int rpc_start(const struct opts *o, const struct model_res *mr, const char *backend,
              unsigned max_batch, struct rpc_srv *s);
void rpc_stop(struct rpc_srv *s);
void rpc_read_stats(const struct rpc_srv *s, struct eng_stats *st);
void rpc_agent_main(const struct mrun_cfg *cfg, struct mrun_shared *sh, uint32_t *samp,
                    unsigned idx, int start_fd, int ready_fd) __attribute__((noreturn));

#endif
