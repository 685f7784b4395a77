/*
 * etcd.h - the few etcd v3 calls oag needs, through etcd's HTTP/JSON gateway (/v3/...) with
 * libcurl and cJSON: lease grant / keep-alive / revoke, put under a lease, range over a prefix.
 * Keys and values travel base64-encoded (libsodium's codec).
 *
 * One struct etcd is one libcurl handle: use it from one thread at a time. Every call is a
 * blocking HTTP request bounded by the timeout given at creation. Returns are 0 or negative
 * errno: -ECONNREFUSED (no etcd answering), -ETIMEDOUT, -EPROTO (an answer we cannot read),
 * -ENOENT (lease unknown: expired), -ENOMEM.
 */
#ifndef OAG_NET_ETCD_H
#define OAG_NET_ETCD_H

#include <stddef.h>
#include <stdint.h>

struct etcd;

/* base: "http://HOST:PORT" (no trailing slash needed). timeout_ms bounds every request. */
int etcd_create(struct etcd **out, const char *base, long timeout_ms);
void etcd_destroy(struct etcd *e);

int etcd_lease_grant(struct etcd *e, int ttl_s, int64_t *lease);
/* Refreshes the lease; -ENOENT when it has expired (the caller grants a new one). */
int etcd_lease_keepalive(struct etcd *e, int64_t lease);
int etcd_lease_revoke(struct etcd *e, int64_t lease);
/* lease 0: no lease. */
int etcd_put(struct etcd *e, const char *key, const char *val, int64_t lease);

/* Calls fn(key, val, arg) for every key starting with prefix (key and val NUL-terminated,
 * valid during the call). Returns the count or a negative errno. */
int etcd_range_prefix(struct etcd *e, const char *prefix,
                      void (*fn)(const char *key, const char *val, void *arg), void *arg);

#endif
