/*
 * wire.h - the frame format remote agents and a supervisor's gateway exchange over ZeroMQ
 * (one frame = one ZeroMQ message part; DEALER in liboag, ROUTER in the gateway).
 *
 * Every multi-byte field is little-endian, written and read byte by byte (no struct is sent).
 *
 *   header (40 bytes)
 *    0  u32 magic      "OAGN" (0x4e47414f)
 *    4  u8  version    NET_VERSION; another one is refused (-EPROTONOSUPPORT)
 *    5  u8  type       enum net_type
 *    6  u16 flags      0
 *    8  u64 client     the client's id, random per oag_client, kept across reconnects
 *   16  u64 seq        this frame's number in its direction (TASKS, RESULTS: 1, 2, ...; others 0)
 *   24  u64 ack        the highest seq received so far from the peer (cumulative)
 *   32  u32 count      records in the body
 *   36  u32 body_len   bytes after the header; must equal the message size - 40
 *   body
 *    TASKS   count x { u64 task, u32 timeout_us, u32 len, u8 priority, 7 x 0 } + len bytes
 *    RESULTS count x { u64 task, i32 status, u32 len } + len bytes
 *    HELLO   (client -> server; ack = last RESULTS seq the client holds) no body
 *    WELCOME { u32 max_payload, u32 window, u32 input_dim, u32 output_dim, u32 frame_max,
 *              u32 0, u64 session, char engine[32] }
 *            session: random per gateway start; a client seeing a new one knows the sequence
 *            numbers of both directions start again at 1
 *    ACK     no body (the ack field is the message)
 *    ERROR   { i32 code, u32 len } + len bytes of text
 *
 * The peer is untrusted: net_frame_parse() checks the header, then walks every record checking
 * each length as an integer against the bytes left, the record count and the payload cap,
 * before anything of the frame is acted on. A frame either passes whole or is refused whole.
 */
#ifndef OAG_NET_WIRE_H
#define OAG_NET_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define NET_MAGIC 0x4e47414fu
#define NET_VERSION 1u
#define NET_HDR 40u
#define NET_TASK_REC 24u
#define NET_RESULT_REC 16u
#define NET_WELCOME_LEN 64u

enum net_type {
    NET_HELLO = 1,
    NET_WELCOME = 2,
    NET_TASKS = 3,
    NET_RESULTS = 4,
    NET_ACK = 5,
    NET_ERROR = 6,
};

struct net_hdr {
    uint32_t magic;
    uint8_t version, type;
    uint16_t flags;
    uint64_t client, seq, ack;
    uint32_t count, body_len;
};

/* One record of a TASKS or RESULTS frame, as net_rec_next() returns it; data points into the
 * frame (valid while the frame is). */
struct net_rec {
    uint64_t task;
    int32_t status;        /* RESULTS */
    uint32_t timeout_us;   /* TASKS */
    uint8_t priority;      /* TASKS */
    uint32_t len;
    const uint8_t *data;
};

struct net_welcome {
    uint32_t max_payload, window, input_dim, output_dim, frame_max;
    uint64_t session;
    char engine[32];       /* NUL-terminated after parsing */
};

/* Validates a whole frame of len bytes received from an untrusted peer: header, type, version,
 * body length, and (TASKS, RESULTS) every record, no record longer than max_payload, exactly
 * count records and no byte left over; HELLO and ACK have no body, WELCOME its fixed size,
 * ERROR a text that fits. Fills *h. Returns 0, or -EPROTO (malformed; a reason in *why),
 * -EPROTONOSUPPORT (another version), -EMSGSIZE (a record over max_payload). Thread-safe. */
int net_frame_parse(const void *buf, size_t len, uint32_t max_payload, struct net_hdr *h,
                    const char **why);

/* Iterates the records of a frame net_frame_parse() accepted: *off starts at NET_HDR. Returns
 * 1 with *r filled, or 0 at the end. Only valid on a parsed frame (it does not re-check). */
int net_rec_next(const void *buf, size_t len, const struct net_hdr *h, size_t *off,
                 struct net_rec *r);

/* Writers. net_put_hdr writes 40 bytes at buf. The record writers append at buf + *off and
 * advance *off; the caller guarantees the room (NET_TASK_REC / NET_RESULT_REC + len). */
void net_put_hdr(void *buf, const struct net_hdr *h);
void net_put_task(void *buf, size_t *off, uint64_t task, uint32_t timeout_us, uint8_t priority,
                  const void *data, uint32_t len);
void net_put_result(void *buf, size_t *off, uint64_t task, int32_t status, const void *data,
                    uint32_t len);
/* Patches count and body_len of a frame built in buf with total length len. */
void net_finish(void *buf, size_t len, uint32_t count);

/* WELCOME body: writes NET_WELCOME_LEN bytes at buf / reads them from a parsed frame. */
void net_put_welcome(void *buf, const struct net_welcome *w);
void net_get_welcome(const void *frame, struct net_welcome *w);

/* ERROR body: code and text from a parsed ERROR frame (text NUL-terminated into out). */
int32_t net_get_error(const void *frame, size_t len, char *out, size_t cap);

#endif
