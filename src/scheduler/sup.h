/*
 * sup.h - the supervisor's private state. Nothing here lives in memory an agent can write: lanes
 * are mapped here, but every index the supervisor owns is kept privately (struct ring_side) and
 * only published, and everything read from a lane is copied and validated first.
 */
#ifndef OAG_SCHED_SUP_H
#define OAG_SCHED_SUP_H

#include <liburing.h>
#include <stdint.h>
#include <sys/types.h>

#include "engine/engine.h"
#include "shm/layout.h"
#include "shm/ring.h"

#define SUP_MAX_ALLOW 16

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

struct lane {
    int in_use;
    uint32_t id;
    uint32_t generation;
    int conn;                  /* index in sup.conns */
    int cmp_efd;               /* we write it to wake the agent */
    uint8_t *map;
    size_t size;
    struct oag_lane_hdr hdr;   /* private copy, never re-read */
    struct ring_side sub;      /* we consume */
    struct ring_side cmp;      /* we produce */
    uint32_t owed;             /* tasks taken from sub, result not yet published */
    uint32_t pending;          /* completion slots written in the current batch, unpublished */
    uint64_t tasks_done;
    pid_t peer_pid;
    int agent_id;              /* fleet agent id or -1 */
    int active_idx;            /* position in sup.active */
};

enum conn_kind { CONN_FREE, CONN_NEW, CONN_AGENT };

struct conn {
    enum conn_kind kind;
    int fd;
    uint32_t gen;              /* bumps on reuse: stale io_uring completions are ignored */
    int lane;                  /* CONN_AGENT: lane id */
    pid_t pid;
    uid_t uid;
};

/* One task taken from a lane, waiting in (or running in) the batch. */
struct task {
    uint32_t lane;
    uint32_t gen;
    uint64_t ticket;
    uint64_t deadline_ns;      /* 0: none */
};

struct batcher {
    uint32_t n;                /* tasks collected so far */
    uint64_t oldest_ns;        /* when the first of them was collected */
    struct task *tasks;
    struct oag_batch b;
    uint32_t rr;               /* round-robin cursor over active lanes */
    uint64_t batches, tasks_total, dropped, timed_out;
};

struct sup {
    struct sup_config cfg;
    struct io_uring ring;
    int listen_fd, sig_fd, doorbell_fd, lock_fd;
    int region_fd, region_ro_fd;
    char region_name[128];
    char lock_path[352];
    struct oag_region *region;
    size_t region_size;
    uint64_t generation;
    uint64_t start_ns;

    const struct oag_engine_ops *engine_ops;
    struct oag_engine *engine;

    struct lane *lanes;        /* cfg.max_lanes */
    uint32_t *active;          /* ids of lanes in use, dense */
    uint32_t nactive;
    struct conn *conns;
    int nconns;                /* capacity */

    struct agent *agents;
    int nagents;               /* allocated records */
    int fleet_size;            /* wanted */

    struct batcher bat;
    uint64_t tasks_done;
    uint64_t cut_offs, refused;
    uint32_t sleep_epoch;
    uint64_t spin_ns;          /* adaptive, 0..cfg.spin_us */
    int spun;
    int draining;              /* shutdown requested */
    int stopping_agents;
    uint64_t drain_started_ns;
    int exit_code;
    uint64_t last_publish_ns;
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

/* batcher.c */
int batcher_init(struct sup *s);
void batcher_fini(struct sup *s);
int batcher_collect(struct sup *s);
int batcher_due(struct sup *s, uint64_t now);
void batcher_flush(struct sup *s);
int lanes_have_work(struct sup *s);

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

/* ctl.c */
void ctl_handle(struct sup *s, int fd, const char *cmd);

/* io_uring user_data: type in the top byte, then a 24-bit generation, then a 32-bit index. */
enum { UD_LISTEN = 1, UD_SIGNAL, UD_DOORBELL, UD_CONN, UD_PIDFD, UD_OUT, UD_ERR };
static inline uint64_t ud_make(unsigned type, uint32_t gen, uint32_t idx)
{
    return ((uint64_t)type << 56) | ((uint64_t)(gen & 0xffffff) << 32) | idx;
}
static inline unsigned ud_type(uint64_t ud) { return (unsigned)(ud >> 56); }
static inline uint32_t ud_gen(uint64_t ud) { return (uint32_t)(ud >> 32) & 0xffffff; }
static inline uint32_t ud_idx(uint64_t ud) { return (uint32_t)ud; }

#endif
