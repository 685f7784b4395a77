/*
 * gateway.h - the supervisor's door for remote agents (--listen tcp://ADDR:PORT).
 *
 * The gateway is a thread of oag-supervisor that is itself an oag client of that supervisor:
 * it holds a few lanes through liboag (shared memory, like any agent), so remote tasks go
 * through the same batcher, queue limits and engines as local ones and the event loop does not
 * know the gateway exists. On the network side it is a ZeroMQ ROUTER (ROUTER_MANDATORY,
 * MAXMSGSIZE, ZMTP heartbeats; CURVE with an allowed-keys file, else loopback only) speaking
 * the frames of wire.h: it drops duplicate tasks by (client id, task id), coalesces results
 * into frames, keeps each frame until the client acknowledges it and sends the unacknowledged
 * ones again when the client reconnects.
 *
 * With an etcd URL it registers "PREFIX/NAME" = {"addr", "gpus", "load", "pid"} under a lease
 * it keeps alive (a second thread, so that a slow etcd never stalls the gateway).
 */
#ifndef OAG_NET_GATEWAY_H
#define OAG_NET_GATEWAY_H

#include <stdint.h>

struct gateway;

struct gateway_cfg {
    const char *listen;          /* tcp://ADDR:PORT */
    const char *local;           /* the supervisor's own control socket (liboag endpoint) */
    const char *name;            /* instance name, for the etcd key */
    uint32_t lanes;              /* lanes opened to the supervisor */
    uint32_t batch_max;          /* results per frame */
    uint32_t delay_us;           /* a results frame leaves at most this long after its first */
    uint32_t frame_max;          /* bytes per frame, both ways (ZMQ_MAXMSGSIZE) */
    uint32_t window;             /* tasks one client may have in the gateway */
    uint32_t hwm;                /* ZeroMQ high-water marks (messages) */
    const char *curve_secret;    /* file with the server's "PUBLIC SECRET" Z85 keys, or NULL */
    const char *curve_allowed;   /* file with the allowed client public keys, one per line */
    const char *etcd;            /* http://HOST:PORT, or NULL */
    const char *etcd_prefix;     /* key prefix, e.g. /oag */
    uint32_t etcd_ttl_s;         /* lease TTL */
    const char *advertise;       /* address to register (default: the listen address) */
    int gpus;                    /* registered as is */
};

/* Checks the configuration, binds the listening socket (so that a taken port or a refused
 * address fails the supervisor's start with one line), and starts the thread, which connects
 * its lanes once the supervisor's loop serves. Returns 0, or -EINVAL / -EADDRINUSE / -ENOMEM
 * after logging why. */
int gateway_start(struct gateway **out, const struct gateway_cfg *cfg);

/* Stops the threads (tasks still in flight are dropped: their clients resubmit elsewhere),
 * revokes the etcd lease, frees everything. gateway_stop(NULL) is a no-op. */
void gateway_stop(struct gateway *g);

/* The "remote" engine (fwd_engine.c) forwards batches to this liboag endpoint (tcp://... or
 * etcd://HOST:PORT/PREFIX). Call once, before the engines are created; the string must outlive
 * them. */
void gateway_set_forward(const char *endpoint);

/* Checks that ADDR of tcp://ADDR:PORT is a loopback address. Returns 1 or 0. */
int gateway_is_loopback(const char *listen);

#endif
