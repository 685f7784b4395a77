/*
 * oag.h - the client library agents link against (liboag).
 *
 * An agent connects to a running oag-supervisor, gets its own lane (a submission ring and a
 * completion ring in shared memory, plus two eventfds), and submits small inference tasks.
 *
 * Conventions:
 *  - Every int function returns 0 (or a count) on success and a negative errno on failure;
 *    oag_strerror() turns it into text, oag_last_error() adds the context of the last failure on
 *    this thread (for example the reason the supervisor gave for refusing a connection).
 *  - An oag_client is used by one thread at a time. Different clients are independent.
 *  - Errors that matter: -EMSGSIZE (task larger than the supervisor's max payload),
 *    -EAGAIN (lane full: poll some results first), -EBUSY (the supervisor's overall queue is
 *    full: back off and retry), -ETIMEDOUT, -ECONNRESET (the supervisor went
 *    away or cut this client off), -EPROTO (ABI or protocol mismatch), -EACCES (refused by the
 *    supervisor's credential check), -ENOENT (no supervisor at the endpoint).
 */
#ifndef OAG_OAG_H
#define OAG_OAG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(OAG_BUILDING_LIB)
#define OAG_EXPORT __attribute__((visibility("default")))
#else
#define OAG_EXPORT
#endif

typedef struct oag_client oag_client;

/* One finished task, as oag_poll() returns it. */
typedef struct oag_completion {
    uint64_t ticket;   /* the ticket oag_submit() gave */
    int32_t status;    /* 0: ok; -ETIMEDOUT: deadline passed; -EIO: engine failed the batch;
                          -ECANCELED: supervisor shutting down; other negative errno */
    uint32_t len;      /* bytes of output at data */
    const void *data;  /* output, owned by the library: valid until the next oag_poll(),
                          oag_infer() or oag_close() on this client */
} oag_completion;

/* Options for oag_submit_ex(); zero-initialise and set what you need. */
typedef struct oag_submit_opts {
    uint32_t timeout_us; /* 0: none; else the task completes with status -ETIMEDOUT (and no
                            output) when its result is not ready within this many microseconds
                            of oag_submit_ex() */
    uint8_t priority;    /* 0 (highest) .. OAG_PRIORITY_LEVELS-1: batches take higher levels
                            first, FIFO within a level (larger values count as the lowest) */
} oag_submit_opts;

#define OAG_PRIORITY_LEVELS 4

/* A consistent snapshot of the supervisor's published state (double-buffered, lock-free). */
typedef struct oag_info {
    uint64_t generation;     /* bumps each time the supervisor republishes */
    uint32_t supervisor_pid;
    uint32_t agent_id;       /* this client's lane id */
    uint32_t lane_generation;
    uint32_t max_payload;    /* largest task input (and output) in bytes */
    uint32_t max_batch;
    uint32_t max_delay_us;
    uint32_t ring_slots;     /* tasks this client may have outstanding */
    uint32_t agents;         /* lanes attached right now */
    uint32_t ready;          /* 1 when the engine is warmed up and serving */
    uint64_t tasks_done;     /* all agents, since start */
    char engine[32];         /* engine name, for example "identity" */
    char model[64];          /* model name or "" */
    uint32_t model_version;  /* bumps on each reload */
    uint32_t input_dim;      /* model engines: a task is input_dim float32 values (0: identity,
                                any bytes) */
    uint32_t output_dim;     /* model engines: a result is output_dim float32 values */
} oag_info;

/* Connects to the supervisor at endpoint: a Unix socket path, or NULL for $OAG_ENDPOINT, then
 * the default endpoint ($XDG_RUNTIME_DIR/oag/default.sock, else /tmp/oag-UID/default.sock).
 * A remote endpoint, "tcp://HOST:PORT" (or several, comma-separated) or
 * "etcd://HOST:PORT/PREFIX[?policy=rr|least|latency]", reaches supervisors started with
 * --listen over ZeroMQ with the same calls (docs/CLI.md, "Remote agents"); a remote client
 * runs an I/O thread of its own, and oag_get_info() then reports agents = supervisors reachable.
 * -EPROTONOSUPPORT: a remote endpoint in a liboag built without ZeroMQ.
 * On success *out owns the connection; release it with oag_close(). */
OAG_EXPORT int oag_connect(oag_client **out, const char *endpoint);

/* Submits one task and waits for its result (synchronous). out receives up to out_cap bytes and
 * *out_len the result's size (-ENOBUFS if it did not fit; the task is consumed all the same).
 * timeout_ms < 0 waits forever. Returns the task's status (0 or negative errno). */
OAG_EXPORT int oag_infer(oag_client *c, const void *in, size_t in_len, void *out, size_t out_cap,
                         size_t *out_len, int timeout_ms);

/* Queues one task without waiting; *ticket identifies its completion. -EAGAIN when the lane is
 * full (as many tasks outstanding as oag_info.ring_slots): poll results, then retry. -EBUSY
 * when the supervisor's overall queue is full (overload): back off. Neither ever blocks. */
OAG_EXPORT int oag_submit(oag_client *c, const void *in, size_t in_len, uint64_t *ticket);
OAG_EXPORT int oag_submit_ex(oag_client *c, const void *in, size_t in_len,
                             const oag_submit_opts *opts, uint64_t *ticket);

/* Zero-copy submission: oag_reserve() returns a buffer of at least len bytes inside the
 * submission ring (-EAGAIN when full, -EMSGSIZE when too large); write the input there, then
 * oag_commit() with the bytes actually written (<= len) publishes it. One reservation at a time. */
OAG_EXPORT int oag_reserve(oag_client *c, size_t len, void **buf);
OAG_EXPORT int oag_commit(oag_client *c, size_t len, const oag_submit_opts *opts,
                          uint64_t *ticket);

/* Returns up to max finished tasks in done[], in any order; waits up to timeout_ms for the first
 * (0: do not wait; < 0: forever). Returns the count (0 on timeout) or a negative errno. The data
 * of the returned completions stays valid until the next call on this client. */
OAG_EXPORT int oag_poll(oag_client *c, oag_completion *done, int max, int timeout_ms);

/* An fd that becomes readable when results wait, for the agent's own event loop (poll/epoll/
 * io_uring). After it fires, call oag_poll(c, ..., 0) until it returns fewer than asked. */
OAG_EXPORT int oag_event_fd(oag_client *c);

/* Tasks submitted and not yet returned by oag_poll/oag_infer. */
OAG_EXPORT unsigned oag_outstanding(const oag_client *c);

/* Copies the supervisor's current published state. */
OAG_EXPORT int oag_get_info(oag_client *c, oag_info *info);

/* Closes the connection; tasks still outstanding are dropped. oag_close(NULL) is a no-op. */
OAG_EXPORT void oag_close(oag_client *c);

/* Text for a (negative or positive) errno value, including oag's own meanings. */
OAG_EXPORT const char *oag_strerror(int err);

/* Context for the last failure on this thread (may be ""), for humans. */
OAG_EXPORT const char *oag_last_error(void);

/* Library version string, "MAJOR.MINOR.PATCH". */
OAG_EXPORT const char *oag_version(void);

#ifdef __cplusplus
}
#endif
#endif /* OAG_OAG_H */
