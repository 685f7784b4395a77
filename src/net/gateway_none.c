/* gateway_none.c - the gateway in a build without ZeroMQ/libcurl: --listen is refused. */
#include <errno.h>

#include "gateway.h"
#include "scheduler/log.h"

int gateway_start(struct gateway **out, const struct gateway_cfg *cfg)
{
    (void)cfg;
    *out = 0;
    log_err("--listen/--etcd: this oag-supervisor was built without ZeroMQ and libcurl "
            "(install libzmq3-dev, libcurl4-openssl-dev, libcjson-dev, libsodium-dev)");
    return -EPROTONOSUPPORT;
}

void gateway_stop(struct gateway *g) { (void)g; }

int gateway_is_loopback(const char *listen)
{
    (void)listen;
    return 0;
}

void gateway_set_forward(const char *endpoint) { (void)endpoint; }
