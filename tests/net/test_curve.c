/*
 * test_curve.c - CURVE authentication of remote agents: a supervisor with a key pair and an
 * allowed-keys file (written by oag-keygen) serves a client whose key is listed; a client with
 * another key, and one without CURVE at all, are refused (oag_connect: -EACCES, a log line on
 * the supervisor), and the supervisor keeps serving the allowed one. A client id belongs to the
 * key that first used it: a second allowed key naming it is refused (-EACCES), and the first
 * keeps its session.
 */
#include <zmq.h>

#include "nethelp.h"
#include "net/wire.h"

/* A raw CURVE DEALER with the key pair in file kf (PUBLIC SECRET) to server public key spub. */
static void *raw_curve(void *ctx, const char *ep, const char *kf, const char *spub)
{
    char pub[64] = "", sec[64] = "";
    FILE *f = fopen(kf, "r");
    if (!f || fscanf(f, "%63s %63s", pub, sec) != 2) {
        if (f)
            fclose(f);
        return NULL;
    }
    fclose(f);
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, spub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40);
    zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40);
    zmq_connect(s, ep);
    return s;
}

/* Sends HELLO for client id on s; returns the reply's frame type, or -1 (no reply in 3 s). */
static int hello(void *s, uint64_t id, int32_t *code)
{
    static uint8_t fb[256], rb[4096];
    struct net_hdr h = { .type = NET_HELLO, .client = id };
    net_put_hdr(fb, &h);
    zmq_send(s, fb, NET_HDR, 0);
    zmq_pollitem_t it = { .socket = s, .events = ZMQ_POLLIN };
    if (zmq_poll(&it, 1, 3000) <= 0)
        return -1;
    int n = zmq_recv(s, rb, sizeof rb, 0);
    struct net_hdr rh;
    if (n < 0 || net_frame_parse(rb, (size_t)n, sizeof rb, &rh, NULL))
        return -1;
    char text[128];
    if (rh.type == NET_ERROR)
        *code = net_get_error(rb, (size_t)n, text, sizeof text);
    return rh.type;
}

static int keygen(const char *file, char pub[64])
{
    const char *kg = h_env_bin("OAG_KEYGEN");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "%s %s", kg, file);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(pub, 1, 63, p);
    pub[n] = '\0';
    pub[strcspn(pub, "\n")] = '\0';
    return pclose(p) == 0 && strlen(pub) == 40 ? 0 : -1;
}

static int run_tasks(const char *ep, int n)
{
    oag_client *c = NULL;
    int rc = oag_connect(&c, ep);
    if (rc) {
        fprintf(stderr, "connect: %s (%s)\n", oag_strerror(rc), oag_last_error());
        return rc;
    }
    struct n_load l;
    n_load_init(&l, c, (uint32_t)n, 64, 200);
    uint64_t end = h_now_ms() + 20000;
    while (l.completed < l.total && h_now_ms() < end && n_load_step(&l, 100) >= 0)
        ;
    int ok = l.completed == l.total && !l.bad && !l.dup && !l.errs;
    n_load_fini(&l);
    oag_close(c);
    return ok ? 0 : -EIO;
}

int main(void)
{
    h_init(60);
    char dir[256], srv[300], cli[300], bad[300], allowed[300];
    char spub[64], cpub[64], bpub[64];
    h_tmpdir(dir, sizeof dir, "curve", 0700);
    snprintf(srv, sizeof srv, "%s/server.key", dir);
    snprintf(cli, sizeof cli, "%s/client.key", dir);
    snprintf(bad, sizeof bad, "%s/other.key", dir);
    snprintf(allowed, sizeof allowed, "%s/allowed", dir);
    char cli2[300], c2pub[64];
    snprintf(cli2, sizeof cli2, "%s/client2.key", dir);
    struct h_sup a;
    memset(&a, 0, sizeof a);
    if (keygen(srv, spub) || keygen(cli, cpub) || keygen(bad, bpub) || keygen(cli2, c2pub)) {
        CHECK(0, "oag-keygen failed");
        goto out;
    }
    FILE *f = fopen(allowed, "w");
    fprintf(f, "# allowed clients\n%s\n%s\n", cpub, c2pub);
    fclose(f);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", n_free_port());
    const char *extra[] = { "--listen", ep, "--curve-secret-key", srv, "--curve-allowed-keys",
                            allowed, NULL };
    if (h_sup_start(&a, "curve", 0700, extra, NULL))
        goto out;
    setenv("OAG_NET_CONNECT_MS", "3000", 1);

    /* The allowed client. */
    setenv("OAG_CURVE_SERVER_KEY", spub, 1);
    setenv("OAG_CURVE_CLIENT_KEY", cli, 1);
    CHECK(run_tasks(ep, 3000) == 0, "the allowed client failed");

    /* Another key: refused. */
    setenv("OAG_CURVE_CLIENT_KEY", bad, 1);
    oag_client *c = NULL;
    uint64_t t0 = h_now_ms();
    int rc = oag_connect(&c, ep);
    fprintf(stderr, "unknown key: %s (%s) after %llu ms\n", oag_strerror(rc), oag_last_error(),
            (unsigned long long)(h_now_ms() - t0));
    CHECK(rc == -EACCES, "a client with an unknown key got %d", rc);
    CHECK(strstr(oag_last_error(), "CURVE") != NULL, "no reason given: %s", oag_last_error());
    oag_close(c);

    /* The wrong server key: the handshake fails on our side. */
    setenv("OAG_CURVE_SERVER_KEY", bpub, 1);
    setenv("OAG_CURVE_CLIENT_KEY", cli, 1);
    c = NULL;
    rc = oag_connect(&c, ep);
    fprintf(stderr, "wrong server key: %s (%s)\n", oag_strerror(rc), oag_last_error());
    CHECK(rc == -EACCES || rc == -ENOENT, "a client expecting another server key got %d", rc);
    oag_close(c);

    /* No CURVE at all. */
    unsetenv("OAG_CURVE_SERVER_KEY");
    unsetenv("OAG_CURVE_CLIENT_KEY");
    c = NULL;
    rc = oag_connect(&c, ep);
    fprintf(stderr, "no CURVE: %s (%s)\n", oag_strerror(rc), oag_last_error());
    CHECK(rc == -EACCES || rc == -ENOENT, "a plain client got %d", rc);
    oag_close(c);

    /* Client ids belong to keys: the second allowed key cannot take over the first's id. */
    void *zctx = zmq_ctx_new();
    void *r1 = raw_curve(zctx, ep, cli, spub), *r2 = raw_curve(zctx, ep, cli2, spub);
    int32_t code = 0;
    uint64_t id = 0x5eed0000c0ffee01ull;
    CHECK(r1 && hello(r1, id, &code) == NET_WELCOME, "first key: no WELCOME");
    int t2 = r2 ? hello(r2, id, &code) : -1;
    fprintf(stderr, "another key naming the same client id: frame type %d, code %d\n", t2, code);
    CHECK(t2 == NET_ERROR && code == -EACCES, "another allowed key took over a client id (%d, %d)",
          t2, code);
    CHECK(r2 && hello(r2, id + 1, &code) == NET_WELCOME, "second key: no WELCOME for its own id");
    CHECK(r1 && hello(r1, id, &code) == NET_WELCOME, "first key lost its client id");
    if (r1)
        zmq_close(r1);
    if (r2)
        zmq_close(r2);
    zmq_ctx_term(zctx);

    /* Still serving the allowed one. */
    setenv("OAG_CURVE_SERVER_KEY", srv, 1); /* the key file works as well */
    setenv("OAG_CURVE_CLIENT_KEY", cli, 1);
    CHECK(run_tasks(ep, 2000) == 0, "the allowed client failed after the refusals");
    CHECK(h_sup_alive(&a), "supervisor died");
out:
    h_cleanup(&a);
    h_rmtree(dir);
    if (h_failures) {
        fprintf(stderr, "%d failure(s)\n", h_failures);
        return 1;
    }
    printf("net_curve: ok\n");
    return 0;
}
