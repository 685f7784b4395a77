/*
 * remote.h - liboag's remote backend: the same calls as shared memory, carried over ZeroMQ to
 * one supervisor (tcp://HOST:PORT), a fixed list (tcp://A:P,tcp://B:Q), or to the supervisors
 * registered under an etcd prefix
 * (etcd://HOST:PORT/PREFIX[?policy=rr|least|latency]). client.c dispatches here when the
 * endpoint names one of these schemes; each function has the contract of its oag_* twin in
 * include/oag/oag.h.
 *
 * Tasks are copied into a window of slots (the tasks this client may have outstanding, like a
 * lane's ring slots), coalesced into frames by an I/O thread (a frame leaves at
 * $OAG_NET_BATCH_MAX tasks or when its oldest task has waited $OAG_NET_BATCH_DELAY_US, or at
 * once when the caller starts to wait), and kept until their result arrives: after a lost
 * connection, or when a supervisor leaves etcd, they are sent again (the supervisor drops
 * duplicates by client and task id; a result for a task already finished is ignored here), so
 * every task ends exactly once.
 */
#ifndef OAG_AGENT_REMOTE_H
#define OAG_AGENT_REMOTE_H

#include "oag/oag.h"

struct oag_remote;

/* 1 if endpoint names a remote scheme (tcp:// or etcd://). */
int remote_is_endpoint(const char *endpoint);

int remote_connect(struct oag_remote **out, const char *endpoint, char *err, size_t errcap);
void remote_close(struct oag_remote *r);
int remote_submit(struct oag_remote *r, const void *in, size_t len, const oag_submit_opts *opts,
                  uint64_t *ticket);
int remote_reserve(struct oag_remote *r, size_t len, void **buf);
int remote_commit(struct oag_remote *r, size_t len, const oag_submit_opts *opts,
                  uint64_t *ticket);
int remote_poll(struct oag_remote *r, oag_completion *done, int max, int timeout_ms);
int remote_infer(struct oag_remote *r, const void *in, size_t in_len, void *out, size_t out_cap,
                 size_t *out_len, int timeout_ms);
int remote_event_fd(struct oag_remote *r);
unsigned remote_outstanding(const struct oag_remote *r);
int remote_get_info(struct oag_remote *r, oag_info *info);

#endif
