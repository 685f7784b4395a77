/*
 * test_logrotate.c - agents' output with --log-dir and size-based rotation, through a real
 * supervisor whose one agent prints "line 0" .. "line 1999" (sh) and exits; --exit-with-fleet
 * ends the supervisor (exit 0):
 *  1. --log-max-bytes 1000 --log-keep 3: exactly agent-0.log and .1 .. .3 (nothing else, no .4);
 *     no file above 1000 bytes; read oldest (.3) to newest (agent-0.log), the lines are
 *     "line K" .. "line 1999" in order, each exactly once and whole (the oldest ones dropped,
 *     none lost or garbled at a rotation point);
 *  2. --log-max-bytes 2K --log-keep 20: all of line 0 .. line 1999, each once, in order, in
 *     fewer files than the keep limit, none above 2048 bytes;
 *  3. --log-keep 0: only agent-0.log, emptied at each rotation: it ends with line 1999;
 *  4. without --log-dir nothing changed: the lines reach the supervisor's stdout as
 *     "[agent 0] line N".
 *
 * Environment: OAG_SUPERVISOR.
 */
#include "ops.h"

#define NLINES 2000

static const char *sup_bin;
static const char *agent_cmd = "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done";

/* Runs the supervisor with args (NULL-terminated) and the counting agent; checks exit 0. */
static void run(const char *tag, const char *const *args, char *out, size_t cap)
{
    char name[80];
    h_unique_name(name, sizeof name, tag);
    char sock[400];
    snprintf(sock, sizeof sock, "/tmp/oag-%u-%s.sock", (unsigned)getuid(), name);
    const char *argv[40];
    int n = 0;
    argv[n++] = sup_bin;
    argv[n++] = "--name";
    argv[n++] = name;
    argv[n++] = "--socket";
    argv[n++] = sock;
    argv[n++] = "--backend";
    argv[n++] = "identity";
    argv[n++] = "--exit-with-fleet";
    for (int i = 0; args[i] && n < 30; i++)
        argv[n++] = args[i];
    argv[n++] = "--";
    argv[n++] = "sh";
    argv[n++] = "-c";
    argv[n++] = agent_cmd;
    argv[n] = NULL;
    int st = ops_run(argv, out, cap, 30000);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: wait status 0x%x", tag, st);
    if (h_failures)
        fprintf(stderr, "%s", out);
    CHECK_EQ(h_shm_leftovers(name), 0);
    CHECK(!ops_exists(sock), "%s: socket left", tag);
}

/*
 * Reads DIR/agent-0.log.G (G = keep .. 1) then DIR/agent-0.log and checks that their lines
 * are "line N" with N consecutive and ending at NLINES - 1, each file at most max bytes.
 * Returns the first N (0: nothing dropped), or -1.
 */
static int check_files(const char *dir, unsigned keep, size_t max, int *nfiles)
{
    int next = -1, first = -1;
    *nfiles = 0;
    for (int g = (int)keep; g >= 0; g--) {
        char path[512];
        if (g)
            snprintf(path, sizeof path, "%s/agent-0.log.%d", dir, g);
        else
            snprintf(path, sizeof path, "%s/agent-0.log", dir);
        size_t len;
        char *text = ops_slurp(path, &len);
        if (!text) {
            CHECK(next < 0 && g > 0, "%s missing (after newer files, or the live one)", path);
            continue;
        }
        (*nfiles)++;
        CHECK(len <= max, "%s: %zu bytes, above the limit %zu", path, len, max);
        CHECK(len > 0 && text[len - 1] == '\n', "%s: does not end with a whole line", path);
        for (char *p = text; *p;) {
            char *nl = strchr(p, '\n');
            if (nl)
                *nl = '\0';
            int v = -1, used = 0;
            if (sscanf(p, "line %d%n", &v, &used) != 1 || p[used] != '\0') {
                CHECK(0, "%s: garbled line '%.60s'", path, p);
            } else {
                if (first < 0)
                    first = next = v;
                if (v != next) {
                    CHECK(0, "%s: 'line %d' where 'line %d' was expected", path, v, next);
                    next = v;
                }
                next++;
            }
            if (!nl)
                break;
            p = nl + 1;
        }
        free(text);
    }
    CHECK_EQ(next, NLINES);
    return first;
}

int main(void)
{
    h_init(80);
    sup_bin = h_env_bin("OAG_SUPERVISOR");
    static char out[1 << 17];
    char dir[256];

    fprintf(stderr, "== --log-max-bytes 1000 --log-keep 3\n");
    h_tmpdir(dir, sizeof dir, "logrot", 0700);
    run("lr1", (const char *[]){ "--log-dir", dir, "--log-max-bytes", "1000", "--log-keep", "3",
                                 NULL }, out, sizeof out);
    int nfiles;
    int first = check_files(dir, 3, 1000, &nfiles);
    CHECK_EQ(nfiles, 4);
    CHECK_EQ(h_count_dir(dir), 4); /* agent-0.log, .1, .2, .3: no .4, nothing else */
    CHECK(first > 0, "the oldest lines were not dropped (first line %d)", first);
    fprintf(stderr, "   kept line %d .. line %d in %d files\n", first, NLINES - 1, nfiles);
    h_rmtree(dir);

    fprintf(stderr, "== --log-max-bytes 2K --log-keep 20\n");
    h_tmpdir(dir, sizeof dir, "logrot", 0700);
    run("lr2", (const char *[]){ "--log-dir", dir, "--log-max-bytes", "2K", "--log-keep", "20",
                                 NULL }, out, sizeof out);
    first = check_files(dir, 20, 2048, &nfiles);
    CHECK_EQ(first, 0);
    CHECK(nfiles >= 9 && nfiles < 20, "%d files for ~19 KB of lines in 2 KB files", nfiles);
    CHECK_EQ(h_count_dir(dir), nfiles);
    h_rmtree(dir);

    fprintf(stderr, "== --log-keep 0\n");
    h_tmpdir(dir, sizeof dir, "logrot", 0700);
    run("lr3", (const char *[]){ "--log-dir", dir, "--log-max-bytes", "500", "--log-keep", "0",
                                 NULL }, out, sizeof out);
    first = check_files(dir, 0, 500, &nfiles);
    CHECK_EQ(nfiles, 1);
    CHECK_EQ(h_count_dir(dir), 1);
    CHECK(first > 0, "first line %d", first);
    h_rmtree(dir);

    fprintf(stderr, "== no --log-dir: prefixed lines on the supervisor's stdout\n");
    run("lr4", (const char *[]){ NULL }, out, sizeof out);
    CHECK(strstr(out, "[agent 0] line 0\n") != NULL, "no '[agent 0] line 0' in the output");
    CHECK(strstr(out, "[agent 0] line 1999\n") != NULL, "no '[agent 0] line 1999' in the output");

    h_kill_all();
    if (h_failures) {
        fprintf(stderr, "%d check(s) failed\n", h_failures);
        return 1;
    }
    printf("logrotate: ok\n");
    return 0;
}
