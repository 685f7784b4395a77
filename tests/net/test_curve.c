/*
 * test_curve.c - CURVE authentication of remote agents: a supervisor with a key pair and an
 * allowed-keys file (written by oag-keygen) serves a client whose key is listed; a client with
 * another key, and one without CURVE at all, are refused (oag_connect: -EACCES, a log line on
 * the supervisor), and the supervisor keeps serving the allowed one.
 */
#include "nethelp.h"

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
    struct h_sup a;
    memset(&a, 0, sizeof a);
    if (keygen(srv, spub) || keygen(cli, cpub) || keygen(bad, bpub)) {
        CHECK(0, "oag-keygen failed");
        goto out;
    }
    FILE *f = fopen(allowed, "w");
    fprintf(f, "# allowed clients\n%s\n", cpub);
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
