/*
 * cpus.h - --cpus LIST: the CPUs the supervisor's own threads run on, its fleet's agents on the
 * others.
 *
 * A single agent waiting on oag_infer() and the supervisor's threads that serve it (the loop,
 * the engine's completion thread) are three busy threads; where the scheduler (and, in a
 * virtual machine, the host) puts them against each other decides whether a batch-1 round trip
 * takes ~32 or ~60 us on the H100 host, a whole run at a time (docs/BENCHMARKS.md, session 9:
 * 3 slow runs of 8 unpinned, none of 8 with the supervisor and the agent on disjoint CPUs).
 * With --cpus the supervisor sets its own affinity at start, before any thread exists (every
 * thread it or a library starts inherits it), and each agent it launches gets the CPUs of its
 * original mask that the list leaves out (all of them when the list takes every one). Agents
 * it does not launch are their owners' to place (taskset).
 */
#ifndef OAG_SCHED_CPUS_H
#define OAG_SCHED_CPUS_H

#include <sched.h>
#include <stddef.h>

/* "0-3,8,10-11" into *set. Returns 0, or -EINVAL with a message in err (the first bad
 * token). */
int cpus_parse(const char *s, cpu_set_t *set, char *err, size_t errlen);
/* *set as a list ("0-3,8"), "" for none; truncated to cap. */
void cpus_format(const cpu_set_t *set, char *out, size_t cap);

struct sup;
/* With --cpus: checks the list against this process's mask, keeps the mask (host_cpus), sets
 * the process's affinity and the agents' set. 0, or a negative errno with the reason logged. */
int cpus_apply(struct sup *s);
/* In an agent's child process after fork: its CPUs (no-op without --cpus). */
void cpus_agent(const struct sup *s);

#endif
