/*
 * fuzz_wire.c - libFuzzer harness for the network frames remote agents and a supervisor's
 * gateway exchange (src/net/wire.h): net_frame_parse() on an untrusted frame, then, for a frame
 * it accepts, everything the receivers do with it: walk the records (net_rec_next), read a
 * WELCOME or an ERROR body.
 *
 * Input: u8 selecting max_payload (16 << (b % 12)), then the frame. Checks, beyond the
 * sanitizers: an accepted frame's body_len matches its size, its records are exactly `count`,
 * each lies inside the frame and is at most max_payload bytes; the ERROR text is NUL-terminated
 * within its buffer; a refusal is a negative errno with a reason.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t max_payload = 16u << (data[0] % 12);
    const uint8_t *f = data + 1;
    size_t len = size - 1;
    /* An exact copy: a read one past the frame is then an ASan report. */
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return 0;
    memcpy(buf, f, len);
    struct net_hdr h;
    const char *why = NULL;
    int rc = net_frame_parse(buf, len, max_payload, &h, &why);
    if (getenv("OAG_FUZZ_VERBOSE"))
        fprintf(stderr, "net_frame_parse: %d %s\n", rc, rc && why ? why : "");
    if (rc != 0) {
        if (rc != -EPROTO && rc != -EPROTONOSUPPORT && rc != -EMSGSIZE)
            abort();
        if (rc == -EPROTO && (!why || !*why))
            abort(); /* refused without a reason */
        free(buf);
        return 0;
    }
    if (len < NET_HDR || h.body_len != len - NET_HDR || h.magic != NET_MAGIC)
        abort();
    if (h.type == NET_TASKS || h.type == NET_RESULTS) {
        size_t off = NET_HDR;
        uint32_t n = 0;
        struct net_rec r;
        volatile uint8_t sum = 0;
        while (net_rec_next(buf, len, &h, &off, &r)) {
            if (r.len > max_payload || off > len || r.data < buf ||
                (size_t)(r.data - buf) + r.len > len || ++n > h.count)
                abort();
            for (uint32_t k = 0; k < r.len; k++)
                sum += r.data[k];
        }
        if (n != h.count || off != len)
            abort();
    } else if (h.type == NET_WELCOME) {
        struct net_welcome w;
        net_get_welcome(buf, &w);
        if (strnlen(w.engine, sizeof w.engine) >= sizeof w.engine)
            abort();
    } else if (h.type == NET_ERROR) {
        char text[64];
        (void)net_get_error(buf, len, text, sizeof text);
        if (strnlen(text, sizeof text) >= sizeof text)
            abort();
    }
    free(buf);
    return 0;
}
