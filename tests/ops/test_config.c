/*
 * test_config.c - the configuration file (--config FILE / -c FILE), against a real supervisor:
 *  1. bad files: an unknown key, a bad value, an unknown section (even an empty one), a bad
 *     [fleet] command, a syntax error and a missing file each stop the supervisor with exit
 *     status 2 and one error line naming FILE:LINE: KEY (the file alone when it cannot be read);
 *     nothing is left behind: no process, no /dev/shm region, no socket, no lock file;
 *  2. the same bad value as a flag gives the same message with "--KEY:" in place of
 *     "FILE:LINE: KEY:" (one validation for both);
 *  3. --help documents every option, --config and the log rotation flags included;
 *  4. a good file is honoured and flags override it: max-batch, max-queue, intake-quantum,
 *     in-order, agents and
 *     the [fleet] command come from the file (seen in `oag-ctl status --json` and in the agents
 *     running), while --max-delay-us and --name given as flags win over the file's values;
 *     SIGTERM then stops it with status 0.
 *
 * Environment: OAG_SUPERVISOR, OAG_CTL, OAG_AGENT_WORKER.
 */
#include "ops.h"

static const char *sup_bin;
static char tmp[256];

/* The lock file a supervisor named name would create (instance.c: the default directory). */
static void lock_path(char *out, size_t cap, const char *name)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    if (xdg && xdg[0] == '/')
        snprintf(out, cap, "%s/oag/%s.lock", xdg, name);
    else
        snprintf(out, cap, "/tmp/oag-%u/%s.lock", (unsigned)getuid(), name);
}

/* Counts the lines of text that start with "oag-supervisor:". */
static int error_lines(const char *text)
{
    int n = 0;
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (!strncmp(p, "oag-supervisor:", 15))
            n++;
    return n;
}

/* Runs the supervisor with the flags in args (NULL-terminated) and checks that it refuses to
 * start: exit status 2, exactly one error line, containing want; nothing left behind for name. */
static void expect_refusal(const char *what, const char *const *args, const char *name,
                           const char *want)
{
    static char out[1 << 16];
    const char *argv[32];
    int n = 0;
    argv[n++] = sup_bin;
    for (int i = 0; args[i] && n < 31; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    fprintf(stderr, "== %s\n", what);
    int st = ops_run(argv, out, sizeof out, 10000);
    fprintf(stderr, "%s", out);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s: wait status 0x%x, expected exit 2",
          what, st);
    CHECK(strstr(out, want) != NULL, "%s: expected '%s' in the output", what, want);
    CHECK_EQ(error_lines(out), 1);
    CHECK(strstr(out, "ready") == NULL, "%s: the supervisor got ready", what);
    int kids[16];
    CHECK_EQ(h_children(kids, 16, 1), 0);
    CHECK_EQ(h_shm_leftovers(name), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/%s.sock", tmp, name);
    CHECK(!ops_exists(path), "%s: socket %s created", what, path);
    lock_path(path, sizeof path, name);
    CHECK(!ops_exists(path), "%s: lock %s created", what, path);
}

/* Writes tmp/file with a [supervisor] section that names the instance and its socket (so that
 * whatever it might create is known), followed by body. Returns the path (static). */
static const char *conf(const char *file, const char *name, const char *body)
{
    static char path[512];
    char text[4096];
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    snprintf(text, sizeof text, "# oag test configuration\n[supervisor]\nname = %s\nsocket = %s/%s.sock\n%s",
             name, tmp, name, body);
    ops_write(path, text);
    return path;
}

static void bad_files(void)
{
    char name[80], want[700];
    h_unique_name(name, sizeof name, "cfg");

    const char *f = conf("unknown-key.ini", name, "backend = identity\nmax-bach = 8\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:6: max-bach: unknown key in [supervisor]", f);
    expect_refusal("unknown key", (const char *[]){ "--config", f, NULL }, name, want);

    f = conf("bad-value.ini", name, "\n; a comment\nmax-batch = x\n");
    snprintf(want, sizeof want,
             "oag-supervisor: %s:7: max-batch: expected an integer from 1 to 65536, got 'x'\n", f);
    expect_refusal("bad value", (const char *[]){ "--config", f, NULL }, name, want);
    f = conf("good-value.ini", name, "max-batch = 8\n");
    expect_refusal("the same bad value as a flag over a good file",
                   (const char *[]){ "--config", f, "--max-batch", "x", NULL }, name,
                   "oag-supervisor: --max-batch: expected an integer from 1 to 65536, got 'x'\n");

    f = conf("bad-switch.ini", name, "in-order = maybe\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:5: in-order: expected true or false, got 'maybe'", f);
    expect_refusal("bad switch value", (const char *[]){ "-c", f, NULL }, name, want);

    f = conf("bad-slots.ini", name, "ring-slots = 48\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:5: ring-slots: must be a power of two, got 48", f);
    expect_refusal("ring-slots not a power of two", (const char *[]){ "-c", f, NULL }, name, want);

    f = conf("unknown-section.ini", name, "max-batch = 8\n[supervisr]\nmax-batch = 9\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:6: [supervisr]: unknown section", f);
    expect_refusal("unknown section", (const char *[]){ "--config", f, NULL }, name, want);

    f = conf("empty-section.ini", name, "[extra]\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:5: [extra]: unknown section", f);
    expect_refusal("unknown empty section", (const char *[]){ "--config", f, NULL }, name, want);

    f = conf("fleet-key.ini", name, "[fleet]\ncommand = true\nagents = 2\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:7: agents: unknown key in [fleet]", f);
    expect_refusal("unknown key in [fleet]", (const char *[]){ "--config", f, NULL }, name, want);

    f = conf("quote.ini", name, "[fleet]\ncommand = sh -c 'echo\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:6: command: unterminated ' quote", f);
    expect_refusal("unterminated quote", (const char *[]){ "--config", f, NULL }, name, want);

    f = conf("syntax.ini", name, "max-batch 8\n");
    snprintf(want, sizeof want, "oag-supervisor: %s:5: expected [section], key = value", f);
    expect_refusal("syntax error", (const char *[]){ "--config", f, NULL }, name, want);

    char missing[400];
    snprintf(missing, sizeof missing, "%s/missing.ini", tmp);
    snprintf(want, sizeof want, "oag-supervisor: %s: cannot read the configuration: No such file", missing);
    expect_refusal("missing file", (const char *[]){ "--config", missing, "--name", name, NULL },
                   name, want);
}

static void help(void)
{
    static char out[1 << 16];
    fprintf(stderr, "== --help\n");
    const char *argv[] = { sup_bin, "--help", NULL };
    int st = ops_run(argv, out, sizeof out, 10000);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "--help: wait status 0x%x", st);
    static const char *const opts[] = {
        "-c, --config FILE", "-n, --name", "-s, --socket", "-a, --agents", "-b, --backend",
        "-m, --model", "--gpus", "--threads", "--max-batch", "--max-delay-us",
        "--preferred-batch", "--max-queue", "--intake-quantum", "--in-order", "--copy-threads", "--max-payload",
        "--ring-slots", "--max-lanes", "--spin-us", "--restart-delay-ms", "--restart-max-ms",
        "--restart-burst", "--restart-window-s", "--stop-timeout-ms", "--allow-uid",
        "--allow-gid", "--socket-mode", "--log-dir", "--log-max-bytes", "--log-keep",
        "--exit-with-fleet", "-q, --quiet", "-v, --verbose", "-h, --help", "[supervisor]",
        "[fleet]", "command = ",
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        CHECK(strstr(out, opts[i]) != NULL, "--help does not mention '%s'", opts[i]);
}

static int json_num(const cJSON *j, const char *key, double *v)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsNumber(x))
        return -1;
    *v = x->valuedouble;
    return 0;
}

static void good_file(void)
{
    fprintf(stderr, "== a good file, flags overriding it\n");
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    char path[400], text[2048];
    snprintf(path, sizeof path, "%s/good.ini", tmp);
    snprintf(text, sizeof text,
             "; the test's configuration\n"
             "[supervisor]\n"
             "name = from-the-file        ; overridden by --name\n"
             "backend = identity\n"
             "max-batch = 7\n"
             "max-delay-us = 100          ; overridden by --max-delay-us\n"
             "max-queue = 300\n"
             "intake-quantum = 16\n"
             "in-order = true\n"
             "agents = 2\n"
             "stop-timeout-ms = 2000\n"
             "\n"
             "[fleet]\n"
             "command = %s --forever --quiet\n", worker);
    ops_write(path, text);
    struct h_sup s;
    const char *extra[] = { "-c", path, "--max-delay-us", "250", NULL };
    if (h_sup_start(&s, "cfgok", 0700, extra, NULL) == 0) {
        struct h_status hs;
        CHECK_EQ(h_wait_running(&s, 2, 1, 15000, &hs), 0);
        CHECK_EQ(hs.nagents, 2);
        static char buf[1 << 16];
        int rc = h_ctl(&s, buf, sizeof buf, "status", "--json", (const char *)NULL);
        CHECK_EQ(rc, 0);
        cJSON *j = cJSON_Parse(buf);
        CHECK(j != NULL, "status --json is not JSON: %.300s", buf);
        if (j) {
            double v = -1;
            CHECK(json_num(j, "max_batch", &v) == 0 && v == 7, "max_batch %g, expected 7 (file)", v);
            v = -1;
            CHECK(json_num(j, "max_delay_us", &v) == 0 && v == 250,
                  "max_delay_us %g, expected 250 (the flag over the file's 100)", v);
            v = -1;
            CHECK(json_num(j, "max_queue", &v) == 0 && v == 300, "max_queue %g, expected 300", v);
            CHECK(json_num(j, "intake_quantum", &v) == 0 && v == 16,
                  "intake_quantum %g, expected 16 (file)", v);
            v = -1;
            CHECK(json_num(j, "fleet_size", &v) == 0 && v == 2, "fleet_size %g, expected 2", v);
            CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "in_order")),
                  "in_order is not true");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
            CHECK(cJSON_IsString(name) && !strcmp(name->valuestring, s.name),
                  "name '%s', expected the flag's '%s'", cJSON_IsString(name) ? name->valuestring : "?",
                  s.name);
            const cJSON *eng = cJSON_GetObjectItemCaseSensitive(j, "engine");
            CHECK(cJSON_IsString(eng) && !strcmp(eng->valuestring, "identity"),
                  "engine is not identity");
            cJSON_Delete(j);
        }
        kill(s.pid, SIGTERM);
        int st = h_sup_wait(&s, 8000);
        CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "after SIGTERM: status 0x%x", st);
    }
    h_cleanup(&s);
    CHECK_EQ(h_shm_leftovers(s.name), 0);
}

int main(void)
{
    h_init(80);
    sup_bin = h_env_bin("OAG_SUPERVISOR");
    h_tmpdir(tmp, sizeof tmp, "config", 0700);
    bad_files();
    help();
    good_file();
    h_kill_all();
    h_rmtree(tmp);
    if (h_failures) {
        fprintf(stderr, "%d check(s) failed\n", h_failures);
        return 1;
    }
    printf("config: ok\n");
    return 0;
}
