/* endpoint.h - where a supervisor instance lives: control socket path and shm name. */
#ifndef OAG_SHM_ENDPOINT_H
#define OAG_SHM_ENDPOINT_H

#include <stddef.h>

#define OAG_DEFAULT_NAME "default"
#define OAG_NAME_MAX 64

/* 1 if name is a valid instance name ([A-Za-z0-9_.-], 1..OAG_NAME_MAX chars, not "." / ".."). */
int oag_name_valid(const char *name);

/* Default directory for control sockets: $XDG_RUNTIME_DIR/oag, else /tmp/oag-UID. Returns 0 or
 * -ENAMETOOLONG. */
int oag_default_dir(char *buf, size_t cap);

/* Default socket path for instance name: DIR/NAME.sock. */
int oag_default_socket(char *buf, size_t cap, const char *name);

/* POSIX shm name of the instance's region: "/oag-UID-NAME". */
int oag_region_name(char *buf, size_t cap, const char *name);

/* Resolves an endpoint argument for a client: NULL -> $OAG_ENDPOINT -> default socket. A value
 * starting with "unix:" has the prefix stripped; anything else is taken as a socket path. */
int oag_resolve_endpoint(char *buf, size_t cap, const char *endpoint);

#endif
