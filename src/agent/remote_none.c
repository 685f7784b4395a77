/* remote_none.c - liboag without ZeroMQ: tcp:// and etcd:// endpoints are refused. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "remote.h"

int remote_is_endpoint(const char *e)
{
    return e && (!strncmp(e, "tcp://", 6) || !strncmp(e, "etcd://", 7));
}

int remote_connect(struct oag_remote **out, const char *endpoint, char *err, size_t errcap)
{
    (void)endpoint;
    *out = NULL;
    snprintf(err, errcap, "this liboag was built without ZeroMQ: no remote endpoints");
    return -EPROTONOSUPPORT;
}

void remote_close(struct oag_remote *r) { (void)r; }
int remote_submit(struct oag_remote *r, const void *in, size_t len, const oag_submit_opts *opts,
                  uint64_t *ticket)
{
    (void)r, (void)in, (void)len, (void)opts, (void)ticket;
    return -EPROTONOSUPPORT;
}
int remote_reserve(struct oag_remote *r, size_t len, void **buf)
{
    (void)r, (void)len, (void)buf;
    return -EPROTONOSUPPORT;
}
int remote_commit(struct oag_remote *r, size_t len, const oag_submit_opts *opts,
                  uint64_t *ticket)
{
    (void)r, (void)len, (void)opts, (void)ticket;
    return -EPROTONOSUPPORT;
}
int remote_poll(struct oag_remote *r, oag_completion *done, int max, int timeout_ms)
{
    (void)r, (void)done, (void)max, (void)timeout_ms;
    return -EPROTONOSUPPORT;
}
int remote_infer(struct oag_remote *r, const void *in, size_t in_len, void *out, size_t out_cap,
                 size_t *out_len, int timeout_ms)
{
    (void)r, (void)in, (void)in_len, (void)out, (void)out_cap, (void)out_len, (void)timeout_ms;
    return -EPROTONOSUPPORT;
}
int remote_event_fd(struct oag_remote *r)
{
    (void)r;
    return -EPROTONOSUPPORT;
}
unsigned remote_outstanding(const struct oag_remote *r)
{
    (void)r;
    return 0;
}
int remote_get_info(struct oag_remote *r, oag_info *info)
{
    (void)r, (void)info;
    return -EPROTONOSUPPORT;
}
