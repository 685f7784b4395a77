/*
 * sup.h - the supervisor's private state. Nothing here lives in memory an agent can write: lanes
 * are mapped here, but every index the supervisor owns is kept privately (struct ring_side) and
 * only published, and everything read from a lane is copied and validated first.
 */
#ifndef OAG_SCHED_SUP_H
#define OAG_SCHED_SUP_H

#include <liburing.h>
#include <sched.h>
#include <stdint.h>
#include <sys/types.h>

#include "copy.h"
#include "hints.h"
#include "results.h"
#include "waker.h"
#include "engine/engine.h"
#include "shm/layout.h"
#include "shm/ring.h"

#define SUP_MAX_ALLOW 16
#define SUP_MAX_PREFERRED 16
#define SUP_MAX_GPUS 16
#define SUP_MAX_INST 64         /* engine instances: GPUs (or --instances) x data threads, current
                                   and retiring together */
#define OAG_PRIORITY_LEVELS 4

struct inst;
struct config_mem;
struct metrics;
struct shard;

/* notify.c: systemd readiness, status and watchdog (all no-ops without $NOTIFY_SOCKET). */
struct sup_notify {
    int on;                    /* $NOTIFY_SOCKET is set */
    int stopping_sent;
    uint64_t wd_ns;            /* watchdog ping interval (half of $WATCHDOG_USEC), 0: none */
    uint64_t wd_next_ns, status_next_ns;
    char status[192];          /* the last STATUS= sent */
};

struct sup_config {
    const char *name;
    char socket_path[108];
    int agents;
    const char *backend;
    uint32_t max_batch, max_delay_us, max_payload, ring_slots, max_lanes;
    uint32_t spin_us;
    uint32_t restart_delay_ms, restart_max_ms, restart_burst, restart_window_s;
    uint32_t stop_timeout_ms;
    uid_t allow_uid[SUP_MAX_ALLOW];
    gid_t allow_gid[SUP_MAX_ALLOW];
    int nallow_uid, nallow_gid;
    int socket_mode;           /* -1: default */
    const char *log_dir;
    int exit_with_fleet;
    char **cmd;                /* NULL-terminated, or NULL */
    uint32_t max_queue;        /* tasks queued in the supervisor, all agents together */
    uint32_t preferred[SUP_MAX_PREFERRED]; /* preferred batch sizes, ascending */
    uint32_t npreferred;
    int in_order;              /* complete each agent's tasks in submission order */
    int copy_rows;             /* never hand the engine pointers into lanes */
    const char *model;         /* model folder, or NULL */
    int gpus[SUP_MAX_GPUS];    /* device list for cuda */
    int ngpus;                 /* 0: all */
    int threads;               /* BLAS threads for cpu */
    int instances;             /* engine instances of a backend without devices (cpu, identity) */
    int copy_threads;          /* row-copy helpers for large batches (-1: by core count) */
    int waker_threads;         /* threads writing agents' wake-ups (-1: by core count) */
    uint32_t intake_quantum;   /* tasks per lane per intake sweep (0: auto, batcher.c) */
    uint32_t shared_results;   /* chunks of the shared result area (0: none; results.h) */
    int data_threads;          /* threads serving lanes (shards; shard.h), 1..OAG_MAX_SHARDS;
                                  0: auto (shards_auto), resolved before the region is made */
    int stream_rows;           /* --stream-rows: -1 auto, 0 off, 1 on (hints.h) */
    int intake_settle;         /* --intake-settle: -1 auto, 0 off, 1 on (batcher.c) */
    int agent_nice;            /* agents run this many nice levels below the supervisor */
    int cpus_set;              /* --cpus given: cpus holds the supervisor's CPUs, which it runs
                                  on from the start (cpus_apply, or it exits; cpus.h) */
    cpu_set_t cpus;
    const char *config_path;   /* --config FILE, or NULL */
    uint64_t log_max_bytes;    /* --log-dir: rotate agent-ID.log before it exceeds this */
    uint32_t log_keep;         /* --log-dir: rotated files kept (agent-ID.log.1 .. .K) */
    struct config_mem *mem;    /* config.c: what the file's values are kept in */
    const char *metrics;       /* --metrics ADDR:PORT (HTTP /metrics /healthz /readyz), or NULL */
    /* remote agents (src/net/gateway.h) */
    const char *listen;        /* --listen tcp://ADDR:PORT, or NULL */
    const char *advertise;     /* --advertise tcp://HOST:PORT (registered in etcd) */
    const char *curve_secret, *curve_allowed;
    const char *etcd, *etcd_prefix;
    const char *forward;       /* --forward URL: where the "remote" engine sends batches */
    uint32_t etcd_ttl_s;
    uint32_t net_lanes, net_batch_max, net_batch_delay_us, net_window, net_frame_max, net_hwm;
};

enum agent_state { AG_STARTING, AG_RUNNING, AG_BACKOFF, AG_EXITED, AG_FAILED, AG_STOPPING };

struct linebuf {
    char buf[2048];
    size_t len;
};

struct agent {
    int id;
    enum agent_state state;
    pid_t pid;
    int pidfd;
    int out_fd, err_fd;        /* pipe read ends, or -1 */
    struct linebuf out_lb, err_lb;
    int log_fd;                /* --log-dir: DIR/agent-ID.log (append), or -1 */
    uint64_t log_bytes;        /* its size, for the rotation */
    int log_failed;            /* a write or rotation failed: warned once */
    uint32_t restarts;
    uint32_t spawn_gen;        /* bumps per start: tags io_uring requests */
    uint32_t consecutive;      /* abnormal exits in a row, for the backoff */
    uint64_t fail_ns[64];      /* recent abnormal exit times (ring), for the give-up limit */
    uint32_t nfail;
    uint64_t started_ns;
    uint64_t next_start_ns;    /* AG_BACKOFF: when to start again */
    uint64_t stop_deadline_ns; /* AG_STOPPING: when to SIGKILL */
    int last_status;           /* wait status of the last exit */
    int wanted;                /* inside the fleet size (scale) */
    uint64_t tasks_done;       /* over all its lanes */
};

/* A lane's shared memory, counted: the lane holds one reference while attached and every row
 * an engine reads or writes in place holds one until its batch is back, so a lane cut while a
 * GPU still works on its rows stays mapped (and pinned) until then. */
struct lane_mem {
    uint8_t *map;
    size_t size;
    uint32_t refs;
    int registered;            /* engine host_register succeeded: rows by pointer */
};

struct lane {
    int in_use;
    uint32_t id;
    uint32_t generation;
    int conn;                  /* index in sup.conns */
    int cmp_efd;               /* we write it to wake the agent */
    uint8_t *map;
    size_t size;
    struct lane_mem *mem;      /* owns map */
    struct oag_lane_hdr hdr;   /* private copy, never re-read */
    struct ring_side sub;      /* we consume */
    struct ring_side cmp;      /* we produce */
    uint32_t owed;             /* tasks taken from sub without a completion slot yet */
    uint32_t cmp_assign;       /* any-order: next completion slot to hand out; slots from
                                  cmp.mine up to here are being written or wait to publish */
    uint32_t intake;           /* next submission index to take into the queues */
    uint8_t *flags;            /* per slot: F_TAKEN / F_READY (batcher.c) */
    int touched;               /* in bat.touched: has results to publish */
    int release_mark;          /* in bat.released: slots to hand back after this batch */
    uint64_t tasks_done;
    pid_t peer_pid;
    int agent_id;              /* fleet agent id or -1 */
    int active_idx;            /* position in sup.active */
    uint32_t shard;            /* the shard (data-plane thread) serving it */
    int shard_idx;             /* position in its shard's active list */
    const char *cut_why;       /* a shard thread found it broken: main cuts it (shard.c) */
    uint64_t settle_since;     /* --intake-settle: when the intake first left its fresh tasks
                                  to settle (0: not waiting) */
};

enum conn_kind { CONN_FREE, CONN_NEW, CONN_AGENT };

struct conn {
    enum conn_kind kind;
    int fd;
    uint32_t gen;              /* bumps on reuse: stale io_uring completions are ignored */
    int lane;                  /* CONN_AGENT: lane id */
    pid_t pid;
    uid_t uid;
    int refuse;                /* 0, or the error to answer this peer's hello with */
};

/* A task queued in the supervisor: its header copied and validated, its payload still in the
 * lane's slot (idx). */
struct pend {
    uint32_t lane, gen, idx, len;
    uint64_t ticket;
    uint64_t deadline_ns;      /* 0: none */
    uint64_t enq_ns;
    uint64_t submit_ns;        /* latency origin: the agent's submit time if plausible, else
                                  enq_ns (metrics.c) */
    uint32_t next;             /* queue link / free list */
    uint8_t dead;              /* expired while queued: skipped when popped */
};

/* One row of a batch in flight. */
struct task {
    uint32_t lane, gen, idx;
    uint32_t cidx;             /* by pointer: the completion slot the engine writes */
    struct lane_mem *mem;      /* by pointer: the lane memory it holds a reference on; else NULL */
    uint64_t ticket;
    uint64_t deadline_ns;
    uint64_t submit_ns;        /* as in struct pend */
    uint64_t enq_ns;           /* taken into the supervisor's queue */
};

/* Where one finished task's time went (oag-ctl trace). The trace id is agent:generation:ticket,
 * the ticket being the one the agent got from oag_submit. Times are CLOCK_MONOTONIC ns; start
 * and done are 0 for a task that never reached the engine (expired, failed while queued). */
struct trace_rec {
    uint32_t lane, gen;
    uint64_t ticket;
    uint64_t submit_ns, enq_ns, start_ns, done_ns, pub_ns;
    uint32_t batch;            /* rows in its batch */
    int32_t status;
};
#define TRACE_CAP 4096u

/* A batch buffer set bound to one engine instance (host memory from that instance). */
struct bslot {
    struct oag_batch b;
    struct task *tasks;
    struct inst *inst;         /* owns the buffers */
    struct inst *run;          /* runs the batch: inst, or another after a failure there */
    int retried;               /* this batch already ran again elsewhere once */
    int busy;
    uint64_t start_ns;
    struct rchunk *chunk;      /* the batch's results go to this chunk of the shared result
                                  area, or NULL (into the lanes) */
};

struct batcher {
    struct pend *pool;
    uint32_t pool_cap, pool_used;
    uint32_t *free_idx;        /* free pool entries, a stack: pool_cap - pool_used of them (a
                                  free list linked through the entries made every intake wait
                                  for the previous entry's load) */
    uint32_t npend;            /* live queued tasks */
    uint32_t qhead[OAG_PRIORITY_LEVELS], qtail[OAG_PRIORITY_LEVELS];
    uint64_t next_deadline;
    uint32_t rr;               /* round-robin cursor over active lanes */
    uint32_t touched[65536];   /* lanes with results to publish (at most one entry each) */
    uint32_t released[65536];  /* lanes with slots to hand back (fill_batch) */
    uint32_t ntouched;
    int wake_fd[65536];        /* publish_touched: sleeping agents to wake */
    uint64_t wakes, wakes_handed;
    uint64_t visits, visits_empty; /* lane visits of the intake sweep, those that took nothing */
    uint64_t settle_waits;     /* visits that left a lane's fresh tasks to settle */
    uint64_t batches, tasks_total, dropped, timed_out, ok, failed, engine_errors;
    uint64_t busy_events, queue_ns, compute_ns;
    uint64_t retried;          /* batches run again on another instance after a failure */
    struct bslot *retry_q[SUP_MAX_INST * 8]; /* failed batches waiting for an instance */
    uint32_t nretry;
    struct trace_rec *trace;   /* the last TRACE_CAP finished tasks, a ring */
    uint64_t trace_n;          /* records written so far */
    uint64_t trace_unpub;      /* first record whose pub_ns is not set yet */
    struct copy_job *jobs;     /* row copies of the batch being filled or completed */
    uint32_t njobs;
    size_t job_bytes;
    struct copypool copy;
    int copy_init;             /* copy set up (batcher_fini tears it down) */
};

struct sup {
    struct sup_config cfg;
    struct io_uring ring;
    int listen_fd, sig_fd, lock_fd;
    int region_fd, region_ro_fd;
    char region_name[128];
    char lock_path[352];
    struct oag_region *region;
    size_t region_size;
    uint64_t generation;
    uint64_t start_ns;

    const struct oag_engine_ops *engine_ops;
    struct inst *inst[SUP_MAX_INST]; /* current instances, then retiring ones */
    uint32_t ninst;
    struct bslot *slots[SUP_MAX_INST * 8];
    uint32_t nslots;
    uint32_t model_version;
    int ready;                 /* engines warmed up: serving */
    uint32_t settle_rows;      /* --intake-settle resolved: a lane's fresh tasks below this
                                  many wait for its agent to finish the burst (0: off); set
                                  before the data threads start, read-only after */
    int reloading;
    char model_name[64];

    struct lane *lanes;        /* cfg.max_lanes */
    uint32_t *active;          /* ids of lanes in use, dense */
    uint32_t nactive;
    struct conn *conns;
    int nconns;                /* capacity */

    struct agent *agents;
    int nagents;               /* allocated records */
    int fleet_size;            /* wanted */

    struct hints hints;        /* advice to agents in the region header (hints.h) */
    struct shard *sh;          /* the data plane: nsh shards, shard 0 on the main loop thread */
    uint32_t nsh;
    const char *data_auto;     /* --data-threads auto: why it chose nsh (NULL: set by hand) */
    cpu_set_t host_cpus;       /* its CPUs before that */
    cpu_set_t agent_cpus;      /* the launched agents' CPUs: host_cpus less cfg.cpus */
    int stop_depth;            /* world_stop() nesting (main thread) */
    int kick_fd;               /* shard threads ask the main loop for something (shard.c) */
    struct results res;        /* --shared-results */
    uint64_t cut_offs, refused;
    int draining;              /* shutdown requested */
    int stopping_agents;
    uint64_t drain_started_ns;
    int exit_code;
    uint64_t last_publish_ns;
    struct sup_notify notify;
    struct metrics *metrics;   /* --metrics: histograms, snapshot, HTTP thread; NULL when off */
    int lane_reg_warned;       /* a lane's host_register failed (warned once) */
};

uint64_t now_ns(void);

/* instance.c */
int instance_open(struct sup *s);
void instance_close(struct sup *s);
void instance_publish(struct sup *s, int ready);

/* lanes.c */
int conns_init(struct sup *s);
int conn_accept_all(struct sup *s);
void conn_event(struct sup *s, int idx, uint32_t gen, int res);
void conn_close(struct sup *s, int idx);
void lane_cut(struct sup *s, struct lane *l, const char *why);
void lane_wake(struct sup *s, struct lane *l);
void lane_mem_put(struct sup *s, struct lane_mem *m);

/* batcher.c: one batcher per shard, run by the shard's thread */
int batcher_init(struct shard *sh);
void batcher_fini(struct shard *sh);
int batcher_collect(struct shard *sh);
/* Resolves --intake-settle (auto: on where the engine reads rows in place across a bus).
 * Main thread, after the engines start and before the data threads do. */
void batcher_settle_resolve(struct sup *s);
int batcher_dispatch(struct shard *sh, uint64_t now, uint64_t *wake_at);
void batcher_complete(struct shard *sh, struct oag_batch *b);
void batcher_expire(struct shard *sh, uint64_t now);
int batcher_busy(struct shard *sh);
int lanes_have_work(struct shard *sh);

#include "shard.h"
struct bslot *bslot_new(struct sup *s, struct inst *in);
void bslot_free(struct sup *s, struct bslot *bs);

/* engines.c */
/* The backend engines_start() starts with, chosen without building anything (--backend auto:
 * cuda when it is built in, there is a model and a device is present; engines_start falls back
 * to cpu if that device will not serve the model). NULL if none. */
const struct oag_engine_ops *engines_backend(const struct sup *s);
int engines_start(struct sup *s);
void engines_stop(struct sup *s);
void engines_event(struct sup *s, uint32_t idx);
/* Shard threads: completes every finished batch of the shard's instances; returns how many. */
int engines_reap_shard(struct shard *sh);
/* Main thread, world stopped: destroys retired instances with nothing in flight. */
void engines_reap_retired(struct sup *s);
void engines_arm(struct sup *s);
int engines_reload(struct sup *s, const char *model, char *msg, size_t msglen);
void engines_reload_event(struct sup *s);
int engines_usable(struct sup *s);
int engines_usable_shard(struct shard *sh);
/* Makes host memory usable for rows by pointer (ops->host_register on a healthy instance):
 * 0, -ENOTSUP (the backend has no such op), -ENODEV (no healthy instance), or its error. */
int engines_host_register(struct sup *s, void *p, size_t len);
/* The model the current (not retiring) instances serve, or NULL (engines without one). */
const struct oag_model *engines_model(const struct sup *s);
void engines_recover(struct sup *s, uint64_t now);
int engines_reload_wait_fd(int fd);

/* fleet.c */
int fleet_init(struct sup *s);
void fleet_fini(struct sup *s);
void fleet_scale(struct sup *s, int n);
void fleet_tick(struct sup *s, uint64_t now, uint64_t *next_ns);
void fleet_child_event(struct sup *s, int id);
void fleet_output_event(struct sup *s, int id, int which);
void fleet_stop_all(struct sup *s);
int fleet_all_down(struct sup *s);
int fleet_done(struct sup *s, int *all_ok);
struct agent *fleet_agent(struct sup *s, int id);
const char *agent_state_name(enum agent_state st);

/* loop.c */
void loop_arm_poll(struct sup *s, int fd, uint64_t ud, unsigned events);
void loop_cancel(struct sup *s, uint64_t ud);
int loop_run(struct sup *s);

/* notify.c */
void notify_ready(struct sup *s);
void notify_tick(struct sup *s, uint64_t now);

/* ctl.c */
void ctl_handle(struct sup *s, int fd, const char *cmd);
void ctl_reply_and_close(struct sup *s, int fd, const char *text, int status);

/* io_uring user_data: type in the top byte, then a 24-bit generation, then a 32-bit index. */
enum { UD_LISTEN = 1, UD_SIGNAL, UD_DOORBELL, UD_CONN, UD_PIDFD, UD_OUT, UD_ERR, UD_ENGINE,
       UD_RELOAD, UD_KICK };
static inline uint64_t ud_make(unsigned type, uint32_t gen, uint32_t idx)
{
    return ((uint64_t)type << 56) | ((uint64_t)(gen & 0xffffff) << 32) | idx;
}
static inline unsigned ud_type(uint64_t ud) { return (unsigned)(ud >> 56); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t ud_idx(uint64_t ud) { return (uint32_t)ud; }

#endif
