/*
 * cpus.c - see cpus.h.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpus.h"
#include "log.h"
#include "sup.h"

int cpus_apply(struct sup *s)
{
    if (!s->cfg.cpus_set)
        return 0;
    cpu_set_t host;
    if (sched_getaffinity(0, sizeof host, &host) != 0) {
        int rc = -errno;
        log_err("--cpus: cannot read this process's CPUs: %s", strerror(errno));
        return rc;
    }
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &s->cfg.cpus) && !CPU_ISSET(i, &host)) {
            char have[256];
            cpus_format(&host, have, sizeof have);
            log_err("--cpus: CPU %d is not one this process may run on (%s)", i, have);
            return -EINVAL;
        }
    s->host_cpus = host;
    CPU_ZERO(&s->agent_cpus);
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &host) && !CPU_ISSET(i, &s->cfg.cpus))
            CPU_SET(i, &s->agent_cpus);
    if (CPU_COUNT(&s->agent_cpus) == 0) {
        log_warn("--cpus takes every CPU this process has: agents run on all of them too");
        s->agent_cpus = host;
    }
    /* every thread of the process: libraries may have started some before main() */
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    while (d && (de = readdir(d)) != NULL) {
        pid_t tid = (pid_t)atoi(de->d_name);
        if (tid > 0 && sched_setaffinity(tid, sizeof s->cfg.cpus, &s->cfg.cpus) != 0 &&
            errno != ESRCH)
            log_warn("--cpus: thread %d: sched_setaffinity: %s", (int)tid, strerror(errno));
    }
    if (d)
        closedir(d);
    if (sched_setaffinity(0, sizeof s->cfg.cpus, &s->cfg.cpus) != 0) {
        int rc = -errno;
        log_err("--cpus: sched_setaffinity: %s", strerror(errno));
        return rc;
    }
    char mine[256], theirs[256];
    cpus_format(&s->cfg.cpus, mine, sizeof mine);
    cpus_format(&s->agent_cpus, theirs, sizeof theirs);
    log_info("CPUs: supervisor %s, agents it launches %s", mine, theirs);
    return 0;
}

void cpus_agent(const struct sup *s)
{
    if (s->cfg.cpus_set && sched_setaffinity(0, sizeof s->agent_cpus, &s->agent_cpus) != 0)
        fprintf(stderr, "oag-supervisor: agent: sched_setaffinity: %s\n", strerror(errno));
}
