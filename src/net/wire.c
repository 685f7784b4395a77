/* wire.c - encoding and validation of the remote frames (format: wire.h). */
#include "wire.h"

#include <errno.h>
#include <string.h>

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }
static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

void net_put_hdr(void *buf, const struct net_hdr *h)
{
    uint8_t *p = buf;
    put32(p, NET_MAGIC);
    p[4] = h->version ? h->version : NET_VERSION;
    p[5] = h->type;
    put16(p + 6, h->flags);
    put64(p + 8, h->client);
    put64(p + 16, h->seq);
    put64(p + 24, h->ack);
    put32(p + 32, h->count);
    put32(p + 36, h->body_len);
}

void net_finish(void *buf, size_t len, uint32_t count)
{
    uint8_t *p = buf;
    put32(p + 32, count);
    put32(p + 36, (uint32_t)(len - NET_HDR));
}

void net_put_task(void *buf, size_t *off, uint64_t task, uint32_t timeout_us, uint8_t priority,
                  const void *data, uint32_t len)
{
    uint8_t *p = (uint8_t *)buf + *off;
    put64(p, task);
    put32(p + 8, timeout_us);
    put32(p + 12, len);
    memset(p + 16, 0, 8);
    p[16] = priority;
    if (len)
        memcpy(p + NET_TASK_REC, data, len);
    *off += NET_TASK_REC + len;
}

void net_put_result(void *buf, size_t *off, uint64_t task, int32_t status, const void *data,
                    uint32_t len)
{
    uint8_t *p = (uint8_t *)buf + *off;
    put64(p, task);
    put32(p + 8, (uint32_t)status);
    put32(p + 12, len);
    if (len)
        memcpy(p + NET_RESULT_REC, data, len);
    *off += NET_RESULT_REC + len;
}

void net_put_welcome(void *buf, const struct net_welcome *w)
{
    uint8_t *p = buf;
    put32(p, w->max_payload);
    put32(p + 4, w->window);
    put32(p + 8, w->input_dim);
    put32(p + 12, w->output_dim);
    put32(p + 16, w->frame_max);
    put32(p + 20, 0);
    put64(p + 24, w->session);
    memset(p + 32, 0, 32);
    size_t n = strnlen(w->engine, 31);
    memcpy(p + 32, w->engine, n);
}

void net_get_welcome(const void *frame, struct net_welcome *w)
{
    const uint8_t *p = (const uint8_t *)frame + NET_HDR;
    w->max_payload = get32(p);
    w->window = get32(p + 4);
    w->input_dim = get32(p + 8);
    w->output_dim = get32(p + 12);
    w->frame_max = get32(p + 16);
    w->session = get64(p + 24);
    memcpy(w->engine, p + 32, 31);
    w->engine[31] = '\0';
}

int32_t net_get_error(const void *frame, size_t len, char *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)frame + NET_HDR;
    uint32_t n = get32(p + 4);
    (void)len; /* parse checked 8 + n == body_len */
    if (cap) {
        size_t k = n < cap - 1 ? n : cap - 1;
        memcpy(out, p + 8, k);
        out[k] = '\0';
        for (size_t i = 0; i < k; i++)
            if ((unsigned char)out[i] < 0x20 || (unsigned char)out[i] > 0x7e)
                out[i] = '?';
    }
    return (int32_t)get32(p);
}

int net_frame_parse(const void *buf, size_t len, uint32_t max_payload, struct net_hdr *h,
                    const char **why)
{
    const uint8_t *p = buf;
    const char *dummy;
    if (!why)
        why = &dummy;
    if (len < NET_HDR) {
        *why = "truncated header";
        return -EPROTO;
    }
    h->magic = get32(p);
    h->version = p[4];
    h->type = p[5];
    h->flags = get16(p + 6);
    h->client = get64(p + 8);
    h->seq = get64(p + 16);
    h->ack = get64(p + 24);
    h->count = get32(p + 32);
    h->body_len = get32(p + 36);
    if (h->magic != NET_MAGIC) {
        *why = "bad magic";
        return -EPROTO;
    }
    if (h->version != NET_VERSION) {
        *why = "unknown protocol version";
        return -EPROTONOSUPPORT;
    }
    if ((uint64_t)h->body_len != (uint64_t)(len - NET_HDR)) {
        *why = h->body_len > len - NET_HDR ? "truncated body" : "trailing bytes after the body";
        return -EPROTO;
    }
    if (h->flags != 0) {
        *why = "unknown flags";
        return -EPROTO;
    }
    size_t rec;
    switch (h->type) {
    case NET_HELLO:
    case NET_ACK:
        if (h->body_len || h->count) {
            *why = "unexpected body";
            return -EPROTO;
        }
        return 0;
    case NET_WELCOME:
        if (h->body_len != NET_WELCOME_LEN || h->count) {
            *why = "bad welcome size";
            return -EPROTO;
        }
        return 0;
    case NET_ERROR:
        if (h->body_len < 8 || get32(p + NET_HDR + 4) != h->body_len - 8) {
            *why = "bad error body";
            return -EPROTO;
        }
        return 0;
    case NET_TASKS:
        rec = NET_TASK_REC;
        break;
    case NET_RESULTS:
        rec = NET_RESULT_REC;
        break;
    default:
        *why = "unknown frame type";
        return -EPROTO;
    }
    if (h->seq == 0) {
        *why = "sequenced frame without a sequence number";
        return -EPROTO;
    }
    /* Every record: its fixed part, then its length, checked against what is left. */
    size_t off = NET_HDR;
    uint32_t n = 0;
    while (off < len) {
        if (len - off < rec) {
            *why = "truncated record";
            return -EPROTO;
        }
        uint32_t rl = get32(p + off + 12);
        if (rl > max_payload) {
            *why = "record larger than the maximum payload";
            return -EMSGSIZE;
        }
        if (rl > len - off - rec) {
            *why = "record runs past the end of the frame";
            return -EPROTO;
        }
        if (h->type == NET_TASKS) {
            for (int i = 17; i < 24; i++)
                if (p[off + (size_t)i]) {
                    *why = "nonzero reserved bytes in a task";
                    return -EPROTO;
                }
        }
        off += rec + rl;
        if (++n > h->count) {
            *why = "more records than the count";
            return -EPROTO;
        }
    }
    if (n != h->count) {
        *why = "fewer records than the count";
        return -EPROTO;
    }
    return 0;
}

int net_rec_next(const void *buf, size_t len, const struct net_hdr *h, size_t *off,
                 struct net_rec *r)
{
    const uint8_t *p = (const uint8_t *)buf + *off;
    if (*off >= len)
        return 0;
    r->task = get64(p);
    r->len = get32(p + 12);
    if (h->type == NET_TASKS) {
        r->timeout_us = get32(p + 8);
        r->priority = p[16];
        r->status = 0;
        r->data = p + NET_TASK_REC;
        *off += NET_TASK_REC + r->len;
    } else {
        r->status = (int32_t)get32(p + 8);
        r->timeout_us = 0;
        r->priority = 0;
        r->data = p + NET_RESULT_REC;
        *off += NET_RESULT_REC + r->len;
    }
    return 1;
}
