/*
 * fuzz_config.c - libFuzzer harness for oag-supervisor's configuration file (src/scheduler/
 * config.c: libinih's reader and our line checks, every option's value parser, the [fleet]
 * command splitter, the cross-option checks).
 *
 * Input: the file's bytes, handed to the real config_parse() as `--config FILE` (a memfd,
 * named through /proc/self/fd). A configuration that is accepted must satisfy what the
 * supervisor relies on: agents <= max_lanes, preferred sizes <= max_batch, a valid lane
 * geometry, a NUL-terminated command vector. A refusal must have printed its reason (stderr
 * goes to a counting sink; set OAG_FUZZ_VERBOSE=1 to see it).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "shm/layout.h"

/* Link-time only: metrics.c (which validates --metrics addresses) refers to these supervisor
 * functions from code the configuration parser never reaches. */
const char *agent_state_name(enum agent_state st) { (void)st; abort(); }
int engines_usable(struct sup *s) { (void)s; abort(); }
struct agent *fleet_agent(struct sup *s, int id) { (void)s; (void)id; abort(); }
uint64_t now_ns(void) { abort(); }
void shards_totals(struct sup *s, struct shard_totals *t) { (void)s; (void)t; abort(); }
void world_stop(struct sup *s) { (void)s; abort(); }
void world_start(struct sup *s) { (void)s; abort(); }

static FILE *sink;
static int verbose;
static size_t said; /* bytes written to the sink */

static ssize_t sink_write(void *cookie, const char *buf, size_t n)
{
    (void)cookie;
    (void)buf;
    said += n;
    return (ssize_t)n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    verbose = getenv("OAG_FUZZ_VERBOSE") != NULL;
    if (!verbose) {
        sink = fopencookie(NULL, "w", (cookie_io_functions_t){ .write = sink_write });
        if (!sink)
            abort();
        setvbuf(sink, NULL, _IONBF, 0);
        stderr = sink; /* our messages only; sanitizer reports write to fd 2 directly */
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!sink && !verbose)
        LLVMFuzzerInitialize(NULL, NULL);
    int fd = memfd_create("oag-fuzz-config", MFD_CLOEXEC);
    if (fd < 0)
        abort();
    for (size_t off = 0; off < size;) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0)
            abort();
        off += (size_t)w;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char a0[] = "oag-supervisor", a1[] = "--config";
    char *argv[] = { a0, a1, path, NULL };

    int saved_level = log_level;
    struct sup_config c;
    memset(&c, 0, sizeof c);
    config_defaults(&c);
    size_t before = said;
    int rc = config_parse(&c, 3, argv);
    if (rc == 0) {
        struct oag_lane_geom g;
        if (c.agents < 0 || (uint32_t)c.agents > c.max_lanes ||
            oag_lane_geom(&g, c.max_payload, c.ring_slots) != 0 || c.npreferred > SUP_MAX_PREFERRED ||
            (c.agents > 0 && !c.cmd))
            abort();
        for (uint32_t i = 0; i < c.npreferred; i++)
            if (c.preferred[i] > c.max_batch)
                abort();
        for (char **a = c.cmd; a && *a; a++)
            if (strlen(*a) > size)
                abort(); /* a word longer than the file: not NUL-terminated */
    } else if (rc != -EINVAL && rc != -ENOMEM && rc != 1) {
        abort();
    } else if (rc < 0 && sink && said == before) {
        abort(); /* refused without saying why */
    }
    config_fini(&c);
    log_level = saved_level;
    close(fd);
    return 0;
}
