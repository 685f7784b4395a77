/*
 * test_cpus.c - --cpus LIST: the supervisor's threads on those CPUs, the agents it launches on
 * the others (src/scheduler/cpus.h).
 *  1. the list's syntax: ranges and singles parse and format back; empty, reversed, open,
 *     doubled commas, signs, words and CPUs past CPU_SETSIZE are refused;
 *  2. a supervisor with --cpus FIRST (the first CPU this process may use) and 2 agents: every
 *     thread of the supervisor is allowed FIRST only, each agent every other CPU of our mask
 *     (/proc/PID/task/TID/status Cpus_allowed_list), status (text and JSON) says both, and the
 *     agents' tasks are served (needs 2 CPUs, else this part is skipped);
 *  3. a CPU this process may not use and a malformed list are refused at start (exit 2) with the
 *     option and the reason.
 *
 * Environment: OAG_SUPERVISOR, OAG_CTL, OAG_AGENT_WORKER.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <sched.h>

#include "ops.h"
#include "scheduler/cpus.h"

static void parse_cases(void)
{
    static const struct { const char *in, *out; } good[] = {
        { "0", "0" }, { "0-3,8", "0-3,8" }, { "8,0-3", "0-3,8" }, { "2,3,4,7", "2-4,7" },
        { "5-5", "5" }, { "0-1,1-2", "0-2" }, { "1023", "1023" },
    };
    static const char *bad[] = { "", "3-1", "1-", "-1", "+1", "1,,2", "1,", ",1", "a", "0-x",
                                 "1024", "0-1024", "1 2", "0x1" };
    char err[200], out[64];
    cpu_set_t set;
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int rc = cpus_parse(good[i].in, &set, err, sizeof err);
        cpus_format(&set, out, sizeof out);
        CHECK(rc == 0 && !strcmp(out, good[i].out), "'%s': rc %d, formats as '%s', want '%s' (%s)",
              good[i].in, rc, out, good[i].out, rc ? err : "");
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = cpus_parse(bad[i], &set, err, sizeof err);
        CHECK(rc == -EINVAL && strstr(err, "CPU list"), "'%s' accepted (rc %d, '%s')", bad[i], rc,
              err);
    }
}

/* /proc/PID/task/TID/status's Cpus_allowed_list of every thread of pid equals want; returns
 * how many threads were looked at. */
static int threads_allowed(int pid, const char *want)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", pid);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "%s: %s", dir, strerror(errno));
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        char path[400], line[256], got[256] = "?";
        snprintf(path, sizeof path, "%s/%s/status", dir, de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* a thread that just ended */
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "Cpus_allowed_list: %255s", got) == 1)
                break;
        fclose(f);
        CHECK(!strcmp(got, want), "pid %d thread %s may run on %s, want %s", pid, de->d_name, got,
              want);
        n++;
    }
    closedir(d);
    return n;
}

static void placed(void)
{
    cpu_set_t mine;
    CHECK(sched_getaffinity(0, sizeof mine, &mine) == 0, "sched_getaffinity: %s", strerror(errno));
    if (CPU_COUNT(&mine) < 2) {
        printf("only one CPU to run on: placement not checked\n");
        return;
    }
    int first = 0;
    while (!CPU_ISSET(first, &mine))
        first++;
    cpu_set_t rest = mine;
    CPU_CLR(first, &rest);
    char want_sup[16], want_agents[256];
    snprintf(want_sup, sizeof want_sup, "%d", first);
    cpus_format(&rest, want_agents, sizeof want_agents);

    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    const char *extra[] = { "--backend", "identity", "--cpus", want_sup, "--agents", "2", NULL };
    const char *cmd[] = { worker, "--forever", "--quiet", NULL };
    struct h_sup s;
    if (h_sup_start(&s, "cpus", 0700, extra, cmd) == 0) {
        struct h_status st;
        CHECK_EQ(h_wait_running(&s, 2, 100, 15000, &st), 0);
        CHECK(threads_allowed(st.pid, want_sup) >= 2, "supervisor: fewer than 2 threads seen");
        for (int i = 0; i < st.nagents; i++)
            CHECK(threads_allowed(st.a[i].pid, want_agents) >= 1, "agent %d: no thread seen",
                  st.a[i].id);
        cJSON *j = h_status_json(&s);
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "cpus");
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "agent_cpus");
        CHECK(cJSON_IsString(c) && !strcmp(c->valuestring, want_sup), "status cpus '%s'",
              cJSON_IsString(c) ? c->valuestring : "?");
        CHECK(cJSON_IsString(a) && !strcmp(a->valuestring, want_agents), "status agent_cpus '%s'",
              cJSON_IsString(a) ? a->valuestring : "?");
        cJSON_Delete(j);
        static char text[1 << 14];
        char want[400];
        snprintf(want, sizeof want, "CPUs: supervisor %s, agents it launches %s", want_sup,
                 want_agents);
        CHECK(h_ctl(&s, text, sizeof text, "status", (const char *)NULL) == 0 &&
                  strstr(text, want),
              "status text does not say '%s':\n%s", want, text);
    }
    h_cleanup(&s);
}

int main(void)
{
    h_init(60);
    parse_cases();
    placed();
    const char *not_ours[] = { "--cpus", "CPU 1023 is not one this process may run on", NULL };
    ops_expect_refused("--cpus", "1023", not_ours);
    const char *malformed[] = { "--cpus", "expected a CPU list", "'3-1'", NULL };
    ops_expect_refused("--cpus", "3-1", malformed);
    if (h_failures)
        return 1;
    printf("cpus: list syntax, supervisor and agents placed apart, bad lists refused\n");
    return 0;
}
