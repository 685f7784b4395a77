/*
 * test_wire.c - the remote frame codec (src/net/wire.c) and the hash map (src/net/hmap.h):
 * frames round-trip; every malformed frame (truncated header or body, trailing bytes, unknown
 * version, type or flags, a record length past the end or over the payload cap, a wrong count,
 * nonzero reserved bytes, a body where none belongs) is refused with its exact error; the map
 * agrees with a plain array through random inserts and deletes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/hmap.h"
#include "net/wire.h"

static int failures;
#define CHECK(c, ...)                                                                     \
    do {                                                                                  \
        if (!(c)) {                                                                       \
            failures++;                                                                   \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c);                  \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
        }                                                                                 \
    } while (0)

static uint8_t buf[1 << 16];

/* A TASKS frame of n records of lengths 0, 7, 14, ... Returns its size. */
static size_t build_tasks(int n)
{
    struct net_hdr h = { .type = NET_TASKS, .client = 0x1122334455667788ull, .seq = 9, .ack = 4 };
    net_put_hdr(buf, &h);
    size_t off = NET_HDR;
    uint8_t data[256];
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < 256; k++)
            data[k] = (uint8_t)(i * 31 + k);
        net_put_task(buf, &off, 1000 + (uint64_t)i, (uint32_t)i * 10, (uint8_t)(i & 3), data,
                     (uint32_t)(i * 7));
    }
    net_finish(buf, off, (uint32_t)n);
    return off;
}

static int parse(size_t len, uint32_t maxp, const char **why)
{
    struct net_hdr h;
    return net_frame_parse(buf, len, maxp, &h, why);
}

static void expect(size_t len, int want, const char *what)
{
    const char *why = "";
    int rc = parse(len, 4096, &why);
    CHECK(rc == want, "%s: got %d (%s), want %d", what, rc, why, want);
}

static void test_roundtrip(void)
{
    size_t len = build_tasks(20);
    struct net_hdr h;
    const char *why = "";
    CHECK(net_frame_parse(buf, len, 4096, &h, &why) == 0, "valid frame refused: %s", why);
    CHECK(h.type == NET_TASKS && h.count == 20 && h.seq == 9 && h.ack == 4 &&
          h.client == 0x1122334455667788ull, "header fields");
    size_t off = NET_HDR;
    struct net_rec r;
    int i = 0;
    while (net_rec_next(buf, len, &h, &off, &r)) {
        CHECK(r.task == 1000 + (uint64_t)i && r.len == (uint32_t)i * 7 &&
              r.timeout_us == (uint32_t)i * 10 && r.priority == (i & 3), "record %d", i);
        for (uint32_t k = 0; k < r.len; k++)
            if (r.data[k] != (uint8_t)(i * 31 + (int)k)) {
                CHECK(0, "record %d byte %u", i, k);
                break;
            }
        i++;
    }
    CHECK(i == 20, "%d records", i);

    /* RESULTS */
    struct net_hdr rh = { .type = NET_RESULTS, .client = 5, .seq = 1 };
    net_put_hdr(buf, &rh);
    off = NET_HDR;
    net_put_result(buf, &off, 77, -EIO, NULL, 0);
    net_put_result(buf, &off, 78, 0, "hello", 5);
    net_finish(buf, off, 2);
    CHECK(net_frame_parse(buf, off, 4096, &h, &why) == 0, "results refused: %s", why);
    size_t o2 = NET_HDR;
    CHECK(net_rec_next(buf, off, &h, &o2, &r) && r.task == 77 && r.status == -EIO && r.len == 0,
          "result 1");
    CHECK(net_rec_next(buf, off, &h, &o2, &r) && r.task == 78 && r.status == 0 && r.len == 5 &&
          !memcmp(r.data, "hello", 5), "result 2");
    CHECK(!net_rec_next(buf, off, &h, &o2, &r), "no third result");

    /* WELCOME */
    struct net_hdr wh = { .type = NET_WELCOME, .body_len = NET_WELCOME_LEN };
    struct net_welcome w = { .max_payload = 4096, .window = 1024, .input_dim = 3,
                             .output_dim = 4, .engine = "identity" }, w2;
    net_put_hdr(buf, &wh);
    net_put_welcome(buf + NET_HDR, &w);
    CHECK(net_frame_parse(buf, NET_HDR + NET_WELCOME_LEN, 4096, &h, &why) == 0, "welcome: %s",
          why);
    net_get_welcome(buf, &w2);
    CHECK(w2.max_payload == 4096 && w2.window == 1024 && w2.input_dim == 3 &&
          w2.output_dim == 4 && !strcmp(w2.engine, "identity"), "welcome fields");
}

static void test_bad(void)
{
    size_t len = build_tasks(5);
    expect(len, 0, "valid");
    expect(NET_HDR - 1, -EPROTO, "truncated header");
    expect(0, -EPROTO, "empty");
    expect(len - 1, -EPROTO, "truncated body");
    expect(len + 1, -EPROTO, "trailing byte");

    build_tasks(5);
    buf[4] = 2;
    expect(len, -EPROTONOSUPPORT, "version 2");
    build_tasks(5);
    buf[0] ^= 1;
    expect(len, -EPROTO, "bad magic");
    build_tasks(5);
    buf[5] = 99;
    expect(len, -EPROTO, "unknown type");
    build_tasks(5);
    buf[6] = 1;
    expect(len, -EPROTO, "unknown flags");
    build_tasks(5);
    memset(buf + 16, 0, 8);
    expect(len, -EPROTO, "seq 0");

    /* count disagreeing with the records */
    build_tasks(5);
    buf[32] = 4;
    expect(len, -EPROTO, "count 4 for 5 records");
    build_tasks(5);
    buf[32] = 6;
    expect(len, -EPROTO, "count 6 for 5 records");

    /* a record length past the end (first record at NET_HDR: len field at +12) */
    build_tasks(5);
    memset(buf + NET_HDR + 12, 0xff, 4);
    expect(len, -EMSGSIZE, "record length 0xffffffff (over the cap)");
    {
        const char *why = "";
        build_tasks(5);
        memset(buf + NET_HDR + 12, 0xff, 4);
        CHECK(parse(len, UINT32_MAX, &why) == -EPROTO, "record past the end with no cap: %s",
              why);
    }
    build_tasks(5);
    buf[NET_HDR + 12] = 200; /* record 0 (len 0) now claims 200 bytes */
    expect(len, -EPROTO, "record length past the others");
    {
        const char *why = "";
        size_t l2 = build_tasks(5);
        CHECK(parse(l2, 20, &why) == -EMSGSIZE, "record of 28 bytes over a cap of 20: %s", why);
    }
    build_tasks(5);
    buf[NET_HDR + 20] = 1;
    expect(len, -EPROTO, "nonzero reserved byte");

    /* control frames with a body, a welcome of the wrong size, an error frame lying */
    struct net_hdr h = { .type = NET_HELLO, .body_len = 4 };
    net_put_hdr(buf, &h);
    expect(NET_HDR + 4, -EPROTO, "hello with a body");
    h.type = NET_ACK;
    h.body_len = 0;
    h.count = 1;
    net_put_hdr(buf, &h);
    expect(NET_HDR, -EPROTO, "ack with a count");
    h = (struct net_hdr){ .type = NET_WELCOME, .body_len = 10 };
    net_put_hdr(buf, &h);
    expect(NET_HDR + 10, -EPROTO, "short welcome");
    h = (struct net_hdr){ .type = NET_ERROR, .body_len = 12 };
    net_put_hdr(buf, &h);
    memset(buf + NET_HDR, 0, 12);
    buf[NET_HDR + 4] = 100; /* text length 100, only 4 bytes there */
    expect(NET_HDR + 12, -EPROTO, "error text past the end");

    /* every truncation of a valid frame is refused, never read past */
    size_t full = build_tasks(8);
    int bad = 0;
    for (size_t l = 0; l < full; l++)
        if (parse(l, 4096, NULL) == 0)
            bad++;
    CHECK(bad == 0, "%d truncations accepted", bad);
}

static void test_hmap(void)
{
    struct hmap m;
    CHECK(hmap_init(&m, 1000) == 0, "init");
    enum { N = 3000 };
    static uint32_t ref[N];
    for (int i = 0; i < N; i++)
        ref[i] = HMAP_EMPTY;
    unsigned seed = 12345;
    int live = 0;
    for (int step = 0; step < 200000; step++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % N);
        uint64_t a = (uint64_t)k % 7, b = (uint64_t)k * 0x10001ull;
        if (ref[k] == HMAP_EMPTY && live < 1000) {
            CHECK(hmap_put(&m, a, b, (uint32_t)step) == 0, "put");
            ref[k] = (uint32_t)step;
            live++;
        } else if (ref[k] != HMAP_EMPTY) {
            uint32_t v = hmap_del(&m, a, b);
            CHECK(v == ref[k], "del %d: %u != %u", k, v, ref[k]);
            ref[k] = HMAP_EMPTY;
            live--;
        }
        if (step % 5000 == 0)
            for (int j = 0; j < N; j++) {
                uint32_t v = hmap_get(&m, (uint64_t)j % 7, (uint64_t)j * 0x10001ull);
                if (v != ref[j]) {
                    CHECK(0, "step %d key %d: %u != %u", step, j, v, ref[j]);
                    break;
                }
            }
    }
    CHECK(m.n == (uint32_t)live, "count %u != %d", m.n, live);
    /* full: beyond half the capacity is refused, not looped on */
    struct hmap s;
    CHECK(hmap_init(&s, 4) == 0, "init small");
    int rc = 0, i = 0;
    for (; i < 100 && rc == 0; i++)
        rc = hmap_put(&s, 1, (uint64_t)i, 1);
    CHECK(rc == -ENOSPC, "a full map refuses: rc %d after %d", rc, i);
    hmap_fini(&s);
    hmap_fini(&m);
}

int main(void)
{
    test_roundtrip();
    test_bad();
    test_hmap();
    if (failures) {
        fprintf(stderr, "%d failure(s)\n", failures);
        return 1;
    }
    printf("wire: ok\n");
    return 0;
}
