/*
 * proto.h - messages on the supervisor's control socket (AF_UNIX, SOCK_SEQPACKET).
 *
 * Agent:   HELLO(kind=AGENT)  ->  WELCOME + SCM_RIGHTS [region fd (read-only), lane fd,
 *                                                      doorbell eventfd, completion eventfd]
 *          or WELCOME with err < 0 and a reason, and the socket is closed.
 *          The connection then stays open: its hang-up tells either side that the other is gone.
 * Control: HELLO(kind=CTL, cmd="status" | "status --json" | "scale N" | ...)
 *          -> text replies (each up to OAG_CTL_CHUNK bytes), then a final CTL_END with a status.
 *
 * The supervisor checks SO_PEERCRED on every connection before it reads anything.
 */
#ifndef OAG_SHM_PROTO_H
#define OAG_SHM_PROTO_H

#include <stdint.h>

#define OAG_PROTO_MAGIC 0x4f414748u /* "OAGH" */

enum { OAG_HELLO_AGENT = 1, OAG_HELLO_CTL = 2 };
enum { OAG_MSG_WELCOME = 1, OAG_MSG_CTL_TEXT = 2, OAG_MSG_CTL_END = 3 };

#define OAG_CTL_CMD_MAX 256
#define OAG_CTL_CHUNK 4096

struct oag_hello {
    uint32_t magic;
    uint32_t abi;
    uint32_t kind;
    int32_t agent_id;      /* $OAG_AGENT_ID, or -1 for an agent the supervisor did not launch */
    uint32_t pid;
    uint32_t pad;
    char cmd[OAG_CTL_CMD_MAX]; /* CTL only, NUL-terminated */
};

struct oag_welcome {
    uint32_t magic;
    uint32_t type;         /* OAG_MSG_WELCOME */
    int32_t err;           /* 0 or negative errno; on error no fds follow */
    uint32_t abi;          /* supervisor's OAG_ABI_VERSION */
    uint32_t lane_id;
    uint32_t generation;
    uint64_t lane_size;
    uint64_t region_size;
    char reason[160];      /* human-readable, on error */
};

struct oag_ctl_msg {
    uint32_t magic;
    uint32_t type;         /* OAG_MSG_CTL_TEXT or OAG_MSG_CTL_END */
    int32_t status;        /* CTL_END: 0 or negative errno */
    uint32_t len;          /* bytes of text following */
    char text[OAG_CTL_CHUNK];
};

#define OAG_WELCOME_FDS 4

#endif
