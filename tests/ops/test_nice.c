/*
 * test_nice.c - --agent-nice: agents run N nice levels below the supervisor. A real supervisor
 * launches two agents that print their own nice value (field 19 of /proc/self/stat) and exit;
 * --exit-with-fleet ends it:
 *  1. by default both agents are 10 levels below it (capped at 19 as the kernel does);
 *  2. --agent-nice 3: 3 levels below;
 *  3. --agent-nice 0: at the supervisor's own level;
 *  4. --agent-nice 40: refused at start with a clear error (exit 2), no agent runs.
 * The supervisor inherits this test's nice value, the base of every expectation.
 *
 * Environment: OAG_SUPERVISOR.
 */
#include <sys/resource.h>

#include "ops.h"

static const char *sup_bin;

/* Runs the supervisor with args and two printing agents; returns its wait status. */
static int run(const char *tag, const char *const *args, char *out, size_t cap)
{
    char name[80], sock[400];
    h_unique_name(name, sizeof name, tag);
    snprintf(sock, sizeof sock, "/tmp/oag-%u-%s.sock", (unsigned)getuid(), name);
    const char *argv[40];
    int n = 0;
    const char *fixed[] = { sup_bin, "--name", name, "--socket", sock, "--backend", "identity",
                            "--exit-with-fleet", "--agents", "2" };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        argv[n++] = fixed[i];
    for (int i = 0; args[i] && n < 30; i++)
        argv[n++] = args[i];
    argv[n++] = "--";
    argv[n++] = "sh";
    argv[n++] = "-c";
    argv[n++] = "read -r s < /proc/self/stat; set -- ${s##*) }; shift 16; echo \"nice=$1\"";
    argv[n] = NULL;
    int st = ops_run(argv, out, cap, 30000);
    CHECK_EQ(h_shm_leftovers(name), 0);
    return st;
}

/* Checks that out has exactly two "[agent K] nice=V" lines, both with V == want. */
static void expect_nice(const char *tag, const char *out, int want)
{
    int seen = 0, bad = 0;
    for (const char *p = out; (p = strstr(p, "nice=")) != NULL; p += 5) {
        seen++;
        bad += atoi(p + 5) != want;
    }
    CHECK(seen == 2 && bad == 0, "%s: %d agents reported, %d not at nice %d:\n%s", tag, seen,
          bad, want, out);
}

int main(void)
{
    h_init(80);
    sup_bin = h_env_bin("OAG_SUPERVISOR");
    static char out[1 << 16];
    errno = 0;
    int base = getpriority(PRIO_PROCESS, 0);
    CHECK(errno == 0, "getpriority: %s", strerror(errno));
    int cap = 19;

    int st = run("nice-def", (const char *[]){ NULL }, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "default: wait status 0x%x\n%s", st, out);
    expect_nice("default", out, base + 10 < cap ? base + 10 : cap);

    st = run("nice-3", (const char *[]){ "--agent-nice", "3", NULL }, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--agent-nice 3: wait status 0x%x", st);
    expect_nice("--agent-nice 3", out, base + 3 < cap ? base + 3 : cap);

    st = run("nice-0", (const char *[]){ "--agent-nice", "0", NULL }, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "--agent-nice 0: wait status 0x%x", st);
    expect_nice("--agent-nice 0", out, base);

    st = run("nice-bad", (const char *[]){ "--agent-nice", "40", NULL }, out, sizeof out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "--agent-nice 40: wait status 0x%x", st);
    CHECK(strstr(out, "agent-nice") && !strstr(out, "nice="),
          "--agent-nice 40: no clear error naming the option, or an agent ran:\n%s", out);

    if (h_failures)
        return 1;
    printf("nice: agents at %d (default), %d, %d below a supervisor at %d; 40 refused\n",
           base + 10 < cap ? base + 10 : cap, base + 3 < cap ? base + 3 : cap, base, base);
    return 0;
}
