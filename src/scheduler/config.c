/*
 * config.c - oag-supervisor's options: one table for the flags, the configuration file and
 * --help.
 *
 * Each option has one setter that parses and validates its value and reports a bad one through
 * opt_err(), which names where the value came from: "--max-batch: ..." for a flag,
 * "FILE:LINE: max-batch: ..." for the file. The file (INI, read with libinih) is read before
 * the flags, so a flag overrides it; checks that involve several options run once both are in.
 *
 * libinih's handler is not told the line number, so the file is fed to it through our own line
 * reader, which counts lines, refuses lines longer than inih's buffer (inih would split them
 * into two "lines") and checks section headers (inih reports only keys, so an empty unknown
 * section would otherwise pass unseen).
 */
#include "config.h"
#include "cpus.h"

#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "shm/endpoint.h"

/* Everything allocated for values read from the file: a list of blocks freed by config_fini. */
struct config_mem {
    struct config_mem *next;
    char data[];               /* at offset 8: aligned enough for the pointers of a command */
};

/* One parse: where the value at hand comes from, and what is resolved only at the end. */
struct parse {
    struct sup_config *c;
    const char *file;          /* the value comes from this file; NULL: from a flag */
    int line;                  /* its line */
    const char *sock;          /* --socket, checked at the end (it defaults from the name) */
    int agents;                /* --agents, or -1: by the command */
    char **file_cmd;           /* [fleet] command */
    int allow_from_file[2];    /* the allow-uid / allow-gid lists hold the file's entries */
    /* the file reader */
    FILE *f;
    int lineno;                /* of the line last handed to inih */
    int indented;              /* that line starts with white space */
    char prev_key[64];         /* last key of the section: an indented line continues it */
    int failed;                /* an error was printed: stop */
};

struct opt;
typedef int (*opt_setter)(struct parse *p, const struct opt *o, const char *v);

#define OPT_CMDLINE 1u    /* a flag only: no key in the file (--config, --help) */
#define OPT_ENGINES 2u    /* --help appends the engine names to the text */

struct opt {
    const char *name;          /* the long flag, and the key in [supervisor] */
    int key;                   /* short letter, or a value above 255 */
    const char *arg;           /* the value's name in --help; NULL: a switch (true/false in a file) */
    opt_setter set;
    uint32_t min, max;         /* bounds, for the integer setters */
    size_t off;                /* field of struct sup_config the generic setters fill */
    unsigned flags;
    const char *help;          /* --help text, lines separated by '\n' */
};

/* ---- messages and memory ---------------------------------------------------------------- */

static void opt_err(const struct parse *p, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void opt_err(const struct parse *p, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->file)
        fprintf(stderr, "oag-supervisor: %s:%d: %s: %s\n", p->file, p->line, key, msg);
    else
        fprintf(stderr, "oag-supervisor: --%s: %s\n", key, msg);
}

/* Errors that concern a line of the file rather than a key. */
static void line_err(struct parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line_err(struct parse *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "oag-supervisor: %s:%d: %s\n", p->file, p->lineno, msg);
    p->failed = 1;
}

static void *mem_alloc(struct sup_config *c, size_t n)
{
    struct config_mem *m = malloc(sizeof *m + n);
    if (!m)
        return NULL;
    m->next = c->mem;
    c->mem = m;
    return m->data;
}

static char *mem_strdup(struct sup_config *c, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = mem_alloc(c, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

void config_fini(struct sup_config *c)
{
    while (c->mem) {
        struct config_mem *m = c->mem;
        c->mem = m->next;
        free(m);
    }
}

/* ---- value parsers ---------------------------------------------------------------------- */

static int parse_u32(struct parse *p, const struct opt *o, const char *v, uint32_t min,
                     uint32_t max, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || *end || end == v || v[0] == '-' || x < min || x > max) {
        opt_err(p, o->name, "expected an integer from %u to %u, got '%s'", min, max, v);
        return -EINVAL;
    }
    *out = (uint32_t)x;
    return 0;
}

/* "a,b,c" into ascending unique values in [min, max]. Returns the count or -EINVAL. */
static int parse_list(struct parse *p, const struct opt *o, const char *v, uint32_t min,
                      uint32_t max, uint32_t *out, int cap)
{
    int n = 0;
    const char *s = v;
    while (*s) {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (errno || end == s || *s == '-' || x < min || x > max || n >= cap ||
            (*end && *end != ',') || (n > 0 && x <= out[n - 1])) {
            opt_err(p, o->name, "expected ascending integers from %u to %u separated by commas "
                                "(at most %d), got '%s'", min, max, cap, v);
            return -EINVAL;
        }
        out[n++] = (uint32_t)x;
        s = *end ? end + 1 : end;
    }
    if (n == 0) {
        opt_err(p, o->name, "empty list");
        return -EINVAL;
    }
    return n;
}

/* A switch: set by a flag (v == NULL), or true/false in the file. */
static int parse_switch(struct parse *p, const struct opt *o, const char *v, int *out)
{
    static const char *const yes[] = { "true", "yes", "on", "1" }, *const no[] = { "false", "no",
                                                                                  "off", "0" };
    if (!v) {
        *out = 1;
        return 0;
    }
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcasecmp(v, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(v, no[i])) {
            *out = 0;
            return 0;
        }
    }
    opt_err(p, o->name, "expected true or false, got '%s'", v);
    return -EINVAL;
}

/* ---- setters ---------------------------------------------------------------------------- */

#define FIELD(p, o, type) ((type *)(void *)((char *)(p)->c + (o)->off))

static int set_u32(struct parse *p, const struct opt *o, const char *v)
{
    return parse_u32(p, o, v, o->min, o->max, FIELD(p, o, uint32_t));
}

static int set_int(struct parse *p, const struct opt *o, const char *v)
{
    uint32_t x;
    int rc = parse_u32(p, o, v, o->min, o->max, &x);
    if (rc == 0)
        *FIELD(p, o, int) = (int)x;
    return rc;
}

static int set_str(struct parse *p, const struct opt *o, const char *v)
{
    *FIELD(p, o, const char *) = v;
    return 0;
}

static int set_switch(struct parse *p, const struct opt *o, const char *v)
{
    return parse_switch(p, o, v, FIELD(p, o, int));
}

static int set_name(struct parse *p, const struct opt *o, const char *v)
{
    if (!oag_name_valid(v)) {
        opt_err(p, o->name, "'%s' is not a valid instance name (letters, digits, '_', '-', '.'; "
                            "at most %d)", v, OAG_NAME_MAX);
        return -EINVAL;
    }
    p->c->name = v;
    return 0;
}

static int set_socket(struct parse *p, const struct opt *o, const char *v)
{
    if (!*v || strlen(v) >= sizeof p->c->socket_path) {
        opt_err(p, o->name, "expected a path of 1 to %zu characters", sizeof p->c->socket_path - 1);
        return -EINVAL;
    }
    p->sock = v;
    return 0;
}

static int set_agents(struct parse *p, const struct opt *o, const char *v)
{
    uint32_t x;
    int rc = parse_u32(p, o, v, o->min, o->max, &x);
    if (rc == 0)
        p->agents = (int)x;
    return rc;
}

static int set_backend(struct parse *p, const struct opt *o, const char *v)
{
    if (strcmp(v, "auto") && !engine_lookup(v)) {
        opt_err(p, o->name, "no engine '%s' in this build (have: auto, %s)", v, engine_names());
        return -EINVAL;
    }
    p->c->backend = v;
    return 0;
}

static int set_cpus(struct parse *p, const struct opt *o, const char *v)
{
    char err[160];
    if (cpus_parse(v, &p->c->cpus, err, sizeof err)) {
        opt_err(p, o->name, "%s", err);
        return -EINVAL;
    }
    p->c->cpus_set = 1;
    return 0;
}

/* "auto" (0, resolved at start: shards_auto) or K. */
static int set_int_auto(struct parse *p, const struct opt *o, const char *v)
{
    if (!strcmp(v, "auto")) {
        *FIELD(p, o, int) = 0;
        return 0;
    }
    if (strspn(v, "0123456789") != strlen(v)) {
        opt_err(p, o->name, "expected auto or a count from %u to %u, got '%s'", o->min, o->max, v);
        return -EINVAL;
    }
    return set_int(p, o, v);
}

/* auto|on|off into an int field: -1, 1, 0. */
static int set_auto_switch(struct parse *p, const struct opt *o, const char *v)
{
    if (!strcmp(v, "auto"))
        *FIELD(p, o, int) = -1;
    else if (!strcmp(v, "on"))
        *FIELD(p, o, int) = 1;
    else if (!strcmp(v, "off"))
        *FIELD(p, o, int) = 0;
    else {
        opt_err(p, o->name, "expected auto, on or off, got '%s'", v);
        return -EINVAL;
    }
    return 0;
}

static int set_ring_slots(struct parse *p, const struct opt *o, const char *v)
{
    uint32_t x;
    int rc = parse_u32(p, o, v, o->min, o->max, &x);
    if (rc)
        return rc;
    if (x & (x - 1)) {
        opt_err(p, o->name, "must be a power of two, got %u", x);
        return -EINVAL;
    }
    p->c->ring_slots = x;
    return 0;
}

/* --allow-uid / --allow-gid: repeatable. Flags replace a list the file filled. */
static int set_allow(struct parse *p, const struct opt *o, const char *v)
{
    struct sup_config *c = p->c;
    int gid = !strcmp(o->name, "allow-gid");
    int *n = gid ? &c->nallow_gid : &c->nallow_uid;
    uint32_t x;
    if (parse_u32(p, o, v, 0, UINT32_MAX - 1, &x))
        return -EINVAL;
    if (!p->file && p->allow_from_file[gid]) {
        *n = 0;
        p->allow_from_file[gid] = 0;
    } else if (p->file) {
        p->allow_from_file[gid] = 1;
    }
    if (*n >= SUP_MAX_ALLOW) {
        opt_err(p, o->name, "at most %d of them", SUP_MAX_ALLOW);
        return -EINVAL;
    }
    if (gid)
        c->allow_gid[(*n)++] = (gid_t)x;
    else
        c->allow_uid[(*n)++] = (uid_t)x;
    return 0;
}

static int set_socket_mode(struct parse *p, const struct opt *o, const char *v)
{
    char *end;
    errno = 0;
    long m = strtol(v, &end, 8);
    if (errno || *end || end == v || m < 0 || m > 0777) {
        opt_err(p, o->name, "expected an octal mode, got '%s'", v);
        return -EINVAL;
    }
    p->c->socket_mode = (int)m;
    return 0;
}

static int set_gpus(struct parse *p, const struct opt *o, const char *v)
{
    struct sup_config *c = p->c;
    if (!strcmp(v, "all")) {
        c->ngpus = 0;
        return 0;
    }
    uint32_t g[SUP_MAX_GPUS];
    int n = parse_list(p, o, v, 0, 255, g, SUP_MAX_GPUS);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++)
        c->gpus[i] = (int)g[i];
    c->ngpus = n;
    return 0;
}

static int set_preferred(struct parse *p, const struct opt *o, const char *v)
{
    int n = parse_list(p, o, v, o->min, o->max, p->c->preferred, SUP_MAX_PREFERRED);
    if (n < 0)
        return n;
    p->c->npreferred = (uint32_t)n;
    return 0;
}

/* The longest agent log path: DIR + "/agent-" + id + ".log." + keep. */
#define LOG_NAME_ROOM 40

static int set_log_dir(struct parse *p, const struct opt *o, const char *v)
{
    struct stat st;
    if (strlen(v) + LOG_NAME_ROOM >= PATH_MAX) {
        opt_err(p, o->name, "path too long");
        return -EINVAL;
    }
    if (stat(v, &st) < 0 || !S_ISDIR(st.st_mode) || access(v, W_OK | X_OK) < 0) {
        opt_err(p, o->name, "'%s' is not a directory we can write to", v);
        return -EINVAL;
    }
    p->c->log_dir = v;
    return 0;
}

/* A byte count with an optional binary suffix K, M or G. */
static int set_size(struct parse *p, const struct opt *o, const char *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    int shift = 0;
    if (end != v && *end && !end[1]) {
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        }
    }
    uint64_t max = (uint64_t)o->max << 20; /* o->max is in MiB */
    if (errno || *end || end == v || v[0] == '-' || x == 0 || x > (max >> shift)) {
        opt_err(p, o->name, "expected a size from 1 byte to %u G (a number of bytes, or with "
                            "a suffix K, M or G), got '%s'", o->max >> 10, v);
        return -EINVAL;
    }
    *FIELD(p, o, uint64_t) = (uint64_t)x << shift;
    return 0;
}

static int set_metrics(struct parse *p, const struct opt *o, const char *v)
{
    char why[320];
    if (metrics_parse_addr(v, NULL, NULL, why, sizeof why)) {
        opt_err(p, o->name, "%s", why);
        return -EINVAL;
    }
    p->c->metrics = v;
    return 0;
}

static int set_quiet(struct parse *p, const struct opt *o, const char *v)
{
    int on;
    if (parse_switch(p, o, v, &on))
        return -EINVAL;
    if (on)
        log_level = LOG_WARN;
    else if (log_level == LOG_WARN)
        log_level = LOG_INFO;
    return 0;
}

static int set_verbose(struct parse *p, const struct opt *o, const char *v)
{
    int on;
    if (parse_switch(p, o, v, &on))
        return -EINVAL;
    if (on)
        log_level = LOG_DEBUG;
    else if (log_level == LOG_DEBUG)
        log_level = LOG_INFO;
    return 0;
}

static int set_tcp(struct parse *p, const struct opt *o, const char *v)
{
    const char *colon = strrchr(v, ':');
    if (strncmp(v, "tcp://", 6) || !colon || colon < v + 7 || !colon[1] || strlen(v) > 200) {
        opt_err(p, o->name, "expected tcp://ADDR:PORT, got '%s'", v);
        return -EINVAL;
    }
    *FIELD(p, o, const char *) = v;
    return 0;
}

static int set_forward(struct parse *p, const struct opt *o, const char *v)
{
    if (strncmp(v, "tcp://", 6) && strncmp(v, "etcd://", 7)) {
        opt_err(p, o->name, "expected tcp://HOST:PORT or etcd://HOST:PORT/PREFIX, got '%s'", v);
        return -EINVAL;
    }
    *FIELD(p, o, const char *) = v;
    return 0;
}

/* ---- the table ---------------------------------------------------------------------------- */

enum {
    O_MAX_BATCH = 256, O_MAX_DELAY, O_MAX_PAYLOAD, O_RING_SLOTS, O_MAX_LANES, O_SPIN,
    O_RDELAY, O_RMAX, O_RBURST, O_RWINDOW, O_STOP, O_ALLOW_UID, O_ALLOW_GID, O_SOCK_MODE,
    O_LOG_DIR, O_LOG_MAX, O_LOG_KEEP, O_EXIT_FLEET, O_GPUS, O_THREADS, O_PREFERRED, O_MAX_QUEUE,
    O_IN_ORDER, O_COPY_THREADS, O_METRICS, O_COPY_ROWS, O_INSTANCES, O_AGENT_NICE, O_WAKERS,
    O_QUANTUM, O_SETTLE, O_SHARED_RESULTS, O_DATA_THREADS, O_STREAM_ROWS, O_CPUS,
    O_LISTEN, O_ADVERTISE, O_CURVE_SECRET, O_CURVE_ALLOWED, O_ETCD, O_ETCD_PREFIX, O_ETCD_TTL,
    O_FORWARD, O_NET_LANES, O_NET_BATCH_MAX, O_NET_BATCH_DELAY, O_NET_WINDOW, O_NET_FRAME_MAX, O_NET_HWM,
};

#define OFF(field) offsetof(struct sup_config, field)

static const struct opt opts[] = {
    { "config", 'c', "FILE", NULL, 0, 0, 0, OPT_CMDLINE,
      "read options from this INI file first; flags given here\n"
      "override it (format below)" },
    { "name", 'n', "NAME", set_name, 0, 0, 0, 0,
      "instance name (default \"default\"); shm /oag-UID-NAME" },
    { "socket", 's', "PATH", set_socket, 0, 0, 0, 0,
      "control socket (default $XDG_RUNTIME_DIR/oag/NAME.sock,\n"
      "else /tmp/oag-UID/NAME.sock); agents get it as OAG_ENDPOINT" },
    { "agents", 'a', "N", set_agents, 0, 1u << 20, 0, 0,
      "agents to launch running CMD (default 1 with CMD, else 0)" },
    { "backend", 'b', "NAME", set_backend, 0, 0, 0, OPT_ENGINES,
      "engine: auto (default: cuda when a GPU is present and a model\n"
      "is given, else cpu; identity without a model) or one of: " },
    { "model", 'm', "DIR", set_str, 0, 0, OFF(model), 0,
      "model folder (config.json + model.safetensors)" },
    { "gpus", O_GPUS, "all|I,J,...", set_gpus, 0, 0, 0, 0,
      "GPUs for the cuda engine, one engine instance each (default all)" },
    { "instances", O_INSTANCES, "N", set_int, 1, 16, OFF(instances), 0,
      "engine instances of the cpu or identity engine (default 1;\n"
      "the cuda engine has one per GPU, see --gpus)" },
    { "threads", O_THREADS, "N", set_int, 1, 1024, OFF(threads), 0,
      "BLAS threads for the cpu engine (default: a quarter of the\n"
      "cores, 1 below 8 cores; agents share the machine)" },
    { "max-batch", O_MAX_BATCH, "N", set_u32, 1, 1u << 16, OFF(max_batch), 0,
      "largest batch (default 256)" },
    { "max-delay-us", O_MAX_DELAY, "N", set_u32, 0, 10000000, OFF(max_delay_us), 0,
      "how long the oldest task may wait for a batch to fill\n"
      "(default 0: leave as soon as the queues are drained)" },
    { "preferred-batch", O_PREFERRED, "L", set_preferred, 1, 1u << 16, 0, 0,
      "preferred batch sizes, comma-separated (e.g. 32,64,128)" },
    { "max-queue", O_MAX_QUEUE, "N", set_u32, 1, 1u << 24, OFF(max_queue), 0,
      "tasks queued in the supervisor, all agents together (default\n"
      "4096); when full, submits fail at once with -EBUSY" },
    { "intake-quantum", O_QUANTUM, "N", set_u32, 0, OAG_MAX_SLOTS, OFF(intake_quantum), 0,
      "tasks taken from one agent's lane per round-robin sweep, at\n"
      "most (default 0: max batch / agents, at least 8, and at least\n"
      "32 when the max batch is 128 or more)" },
    { "intake-settle", O_SETTLE, "auto|on|off", set_auto_switch, 0, 0, OFF(intake_settle), 0,
      "take a lane's tasks once its agent has stopped adding to them\n"
      "(its submission index unchanged since the last visit) or a\n"
      "quantum waits, so that a burst stays one run of rows (default\n"
      "auto: on where the engine reads rows in place across a bus)" },
    { "shared-results", O_SHARED_RESULTS, "N", set_u32, 0, 4096, OFF(shared_results), 0,
      "a shared result area of N batches (default 0: none): the\n"
      "engine writes each batch's results there in one piece (one\n"
      "copy-engine transfer on a GPU) and agents read them in place;\n"
      "every agent can read every agent's results (read-only)" },
    { "in-order", O_IN_ORDER, NULL, set_switch, 0, 0, OFF(in_order), 0,
      "complete each agent's tasks in submission order" },
    { "copy-rows", O_COPY_ROWS, NULL, set_switch, 0, 0, OFF(copy_rows), 0,
      "copy every row through the supervisor's batch buffers, even\n"
      "where the engine could read and write agents' lanes directly" },
    { "copy-threads", O_COPY_THREADS, "N", set_int, 0, 64, OFF(copy_threads), 0,
      "threads that help copy rows of large batches (default: a\n"
      "quarter of the cores, at most 8, none below 8 cores)" },
    { "data-threads", O_DATA_THREADS, "K|auto", set_int_auto, 1, OAG_MAX_SHARDS,
      OFF(data_threads), 0,
      "threads serving the lanes (default auto: 2 for a GPU engine\n"
      "with rows of 4 KB or less, --max-batch 256 or more and 8 CPUs\n"
      "or more, else 1):\n"
      "agents are spread over K shards at attach, each with its own\n"
      "batcher, engine instances (one per GPU each, or --instances),\n"
      "wake-up threads and share of --max-queue and of\n"
      "--shared-results; for fleets whose tasks/s one thread cannot\n"
      "take in (oag-ctl status shows how busy each thread is)" },
    { "stream-rows", O_STREAM_ROWS, "auto|on|off", set_auto_switch, 0, 0, OFF(stream_rows), 0,
      "advise agents to write rows of 1 KB or more with streaming\n"
      "stores (default auto: while a GPU reads them in place and the\n"
      "rows in flight fit in the agents' cores' L2 caches)" },
    { "waker-threads", O_WAKERS, "N", set_int, 0, WAKERS_MAX, OFF(waker_threads), 0,
      "threads that write agents' wake-ups in bursts (default: one\n"
      "per 4 cores, 1..4; 0: the loop writes them)" },
    { "max-payload", O_MAX_PAYLOAD, "BYTES", set_u32, 1, OAG_MAX_PAYLOAD_LIMIT, OFF(max_payload), 0,
      "largest task input/output (default 4096)" },
    { "ring-slots", O_RING_SLOTS, "N", set_ring_slots, 2, OAG_MAX_SLOTS, 0, 0,
      "tasks one agent may have outstanding, power of two (default 256)" },
    { "max-lanes", O_MAX_LANES, "N", set_u32, 1, 65536, OFF(max_lanes), 0,
      "agents attached at once (default 1024)" },
    { "spin-us", O_SPIN, "N", set_u32, 0, 1000000, OFF(spin_us), 0,
      "spin on empty lanes before sleeping (default 50)" },
    { "cpus", O_CPUS, "LIST", set_cpus, 0, 0, 0, 0,
      "run the supervisor's threads on these CPUs (e.g. 0-3,8) and\n"
      "the agents it launches on the others it may use (default: no\n"
      "placement): keeps a fleet's agents off the CPUs that batch\n"
      "and return their tasks" },
    { "agent-nice", O_AGENT_NICE, "N", set_int, 0, 39, OFF(agent_nice), 0,
      "agents run N nice levels below the supervisor (default 10;\n"
      "0: the same): a fleet that keeps every core busy cannot\n"
      "starve the threads that batch and return its tasks" },
    { "restart-delay-ms", O_RDELAY, "N", set_u32, 0, 3600000, OFF(restart_delay_ms), 0,
      "first restart delay after an abnormal exit (default 100)" },
    { "restart-max-ms", O_RMAX, "N", set_u32, 0, 3600000, OFF(restart_max_ms), 0,
      "cap of the doubling restart delay (default 5000)" },
    { "restart-burst", O_RBURST, "N", set_u32, 1, UINT32_MAX - 1, OFF(restart_burst), 0,
      "give up on an agent after N abnormal exits ..." },
    { "restart-window-s", O_RWINDOW, "S", set_u32, 1, 86400, OFF(restart_window_s), 0,
      "... within S seconds (default 5 in 10)" },
    { "stop-timeout-ms", O_STOP, "N", set_u32, 0, 3600000, OFF(stop_timeout_ms), 0,
      "SIGTERM, then SIGKILL after N ms (default 5000)" },
    { "allow-uid", O_ALLOW_UID, "UID", set_allow, 0, 0, 0, 0,
      "also accept connections from this uid (repeatable)" },
    { "allow-gid", O_ALLOW_GID, "GID", set_allow, 0, 0, 0, 0,
      "also accept connections from this gid (repeatable)" },
    { "socket-mode", O_SOCK_MODE, "OCTAL", set_socket_mode, 0, 0, 0, 0,
      "socket file mode (default 0600, 0666 with allow lists)" },
    { "log-dir", O_LOG_DIR, "DIR", set_log_dir, 0, 0, 0, 0,
      "agents' output to DIR/agent-ID.log (default: prefixed on\n"
      "the supervisor's stdout/stderr)" },
    { "log-max-bytes", O_LOG_MAX, "N", set_size, 0, 1u << 20 /* MiB: 1 TiB */, OFF(log_max_bytes), 0,
      "rotate agent-ID.log before it grows past N bytes; suffix\n"
      "K, M or G (default 10M)" },
    { "log-keep", O_LOG_KEEP, "K", set_u32, 0, 1000, OFF(log_keep), 0,
      "rotated logs kept, agent-ID.log.1 (newest) to .K (default 5;\n"
      "0: the log is emptied instead)" },
    { "metrics", O_METRICS, "ADDR:PORT", set_metrics, 0, 0, 0, 0,
      "serve Prometheus /metrics, /healthz and /readyz over HTTP on\n"
      "a literal address (e.g. 127.0.0.1:9464 or [::1]:9464)" },
    { "listen", O_LISTEN, "tcp://ADDR:PORT", set_tcp, 0, 0, OFF(listen), 0,
      "also serve remote agents over ZeroMQ here (loopback only\n"
      "unless --curve-secret-key is given)" },
    { "advertise", O_ADVERTISE, "tcp://HOST:PORT", set_tcp, 0, 0, OFF(advertise), 0,
      "the address registered in etcd (default: the --listen one)" },
    { "curve-secret-key", O_CURVE_SECRET, "FILE", set_str, 0, 0, OFF(curve_secret), 0,
      "CURVE: this supervisor's 'PUBLIC SECRET' Z85 keys (oag-keygen)" },
    { "curve-allowed-keys", O_CURVE_ALLOWED, "FILE", set_str, 0, 0, OFF(curve_allowed), 0,
      "CURVE: the client public keys allowed, one per line" },
    { "etcd", O_ETCD, "http://HOST:PORT", set_str, 0, 0, OFF(etcd), 0,
      "register this supervisor in etcd (needs --listen)" },
    { "etcd-prefix", O_ETCD_PREFIX, "PREFIX", set_str, 0, 0, OFF(etcd_prefix), 0,
      "key prefix in etcd (default /oag)" },
    { "etcd-ttl", O_ETCD_TTL, "S", set_u32, 1, 3600, OFF(etcd_ttl_s), 0,
      "etcd lease TTL: the key vanishes this long after a crash\n(default 2)" },
    { "forward", O_FORWARD, "URL", set_forward, 0, 0, OFF(forward), 0,
      "other supervisors (tcp://H:P[,tcp://H:P...] or\n"
      "etcd://H:P/PREFIX[?policy=...]): with --backend remote every\n"
      "batch runs there; else agents send tasks there while the\n"
      "queue here is full (instead of -EBUSY)" },
    { "net-lanes", O_NET_LANES, "N", set_u32, 1, 16, OFF(net_lanes), 0,
      "lanes the gateway opens to this supervisor (default 2)" },
    { "net-batch-max", O_NET_BATCH_MAX, "N", set_u32, 1, 65536, OFF(net_batch_max), 0,
      "results per frame to a remote agent (default 256)" },
    { "net-batch-delay-us", O_NET_BATCH_DELAY, "N", set_u32, 0, 1000000, OFF(net_batch_delay_us), 0,
      "a results frame leaves at most N us after its first result\n(default 0: at the end of each pass)" },
    { "net-window", O_NET_WINDOW, "N", set_u32, 1, 1u << 20, OFF(net_window), 0,
      "tasks one remote agent may have outstanding (default 1024)" },
    { "net-frame-max", O_NET_FRAME_MAX, "BYTES", set_u32, 4096, 1u << 30, OFF(net_frame_max), 0,
      "largest frame either way (ZMQ_MAXMSGSIZE; default 4 MiB)" },
    { "net-hwm", O_NET_HWM, "N", set_u32, 1, 1u << 20, OFF(net_hwm), 0,
      "ZeroMQ high-water mark in frames per peer (default 1000)" },
    { "exit-with-fleet", O_EXIT_FLEET, NULL, set_switch, 0, 0, OFF(exit_with_fleet), 0,
      "exit once every agent has exited and none will restart\n"
      "(status 0 if all exited 0, else 1)" },
    { "quiet", 'q', NULL, set_quiet, 0, 0, 0, 0, "errors and warnings only" },
    { "verbose", 'v', NULL, set_verbose, 0, 0, 0, 0, "debug logging" },
    { "help", 'h', NULL, NULL, 0, 0, 0, OPT_CMDLINE, "this text" },
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const struct opt *opt_by_key(int key)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (opts[i].key == key)
            return &opts[i];
    return NULL;
}

static const struct opt *opt_by_name(const char *name)
{
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp(opts[i].name, name))
            return &opts[i];
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: oag-supervisor [OPTIONS] [-- CMD [ARGS...]]\n"
               "Runs the inference engine and a fleet of agents that submit tasks over shared "
               "memory.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        const struct opt *o = &opts[i];
        char left[64];
        if (o->key < 256)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->key, o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        const char *h = o->help;
        for (int first = 1; *h; first = 0) {
            size_t n = strcspn(h, "\n");
            fprintf(f, "  %-26s %.*s", first ? left : "", (int)n, h);
            h += n;
            if (*h)
                h++;
            else if (o->flags & OPT_ENGINES)
                fputs(engine_names(), f);
            fputc('\n', f);
        }
    }
    fprintf(f,
"\nConfiguration file (--config FILE), INI; read first, so flags override it:\n"
"  [supervisor]               every option above without its dashes: max-batch = 64;\n"
"                             switches take true or false (in-order = true); repeat\n"
"                             allow-uid / allow-gid for several ids\n"
"  [fleet]\n"
"  command = CMD ARGS         the agents' command line, split on white space; '...'\n"
"                             and \"...\" quote (\\\" inside \"...\"); CMD after -- wins\n"
"  Values are taken as written (no quotes); \" ;\" starts a comment, as do '#' and ';'\n"
"  at the start of a line; a line is at most %d characters.\n",
            INI_MAX_LINE - 2);
}

/* ---- the configuration file --------------------------------------------------------------- */

static const char *const sections[] = { "supervisor", "fleet" };

/* Splits a command line: white space separates words; '...' quotes literally; "..." quotes with
 * \" and \\ escapes; elsewhere a backslash escapes the next character. Returns 0, or -EINVAL
 * after printing the problem. */
static int split_command(struct parse *p, const char *key, const char *v, char ***out)
{
    size_t len = strlen(v), maxw = len / 2 + 2;
    char **argv = mem_alloc(p->c, maxw * sizeof *argv + len + 1);
    if (!argv) {
        opt_err(p, key, "out of memory");
        return -ENOMEM;
    }
    char *d = (char *)(argv + maxw);
    size_t n = 0;
    const char *s = v;
    for (;;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s)
            break;
        argv[n++] = d;
        while (*s && *s != ' ' && *s != '\t') {
            if (*s == '\'' || *s == '"') {
                char q = *s++;
                while (*s && *s != q) {
                    if (q == '"' && *s == '\\' && (s[1] == '"' || s[1] == '\\'))
                        s++;
                    *d++ = *s++;
                }
                if (!*s) {
                    opt_err(p, key, "unterminated %c quote in '%s'", q, v);
                    return -EINVAL;
                }
                s++;
            } else if (*s == '\\' && s[1]) {
                *d++ = s[1];
                s += 2;
            } else {
                *d++ = *s++;
            }
        }
        *d++ = '\0';
    }
    if (n == 0) {
        opt_err(p, key, "empty command");
        return -EINVAL;
    }
    argv[n] = NULL;
    *out = argv;
    return 0;
}

/* libinih's handler: one KEY = VALUE of SECTION. Returns 1 (go on) or 0 (an error, printed). */
static int on_value(void *user, const char *section, const char *key, const char *value)
{
    struct parse *p = user;
    if (p->failed)
        return 0;
    p->line = p->lineno;
    if (p->indented && p->prev_key[0] && !strcmp(key, p->prev_key)) {
        opt_err(p, key, "an indented line continues the value above; a value must fit on one "
                        "line (do not indent keys)");
        goto fail;
    }
    snprintf(p->prev_key, sizeof p->prev_key, "%s", key);
    if (!*section) {
        opt_err(p, key, "outside a section (put it under [supervisor])");
        goto fail;
    }
    if (!strcmp(section, "fleet")) {
        if (strcmp(key, "command")) {
            opt_err(p, key, "unknown key in [fleet] (known: command)");
            goto fail;
        }
        if (split_command(p, key, value, &p->file_cmd))
            goto fail;
        return 1;
    }
    /* [supervisor]: the reader refused any other section. */
    const struct opt *o = opt_by_name(key);
    if (!o || (o->flags & OPT_CMDLINE)) {
        opt_err(p, key, "unknown key in [supervisor]%s", o ? " (a command-line flag only)" : "");
        goto fail;
    }
    if (!*value) {
        opt_err(p, key, "empty value");
        goto fail;
    }
    char *v = mem_strdup(p->c, value);
    if (!v) {
        opt_err(p, key, "out of memory");
        goto fail;
    }
    if (o->set(p, o, v) == 0)
        return 1;
fail:
    p->failed = 1;
    return 0;
}

/* libinih's line reader (fgets-like): counts lines, refuses what inih would split or skip. */
static char *read_line(char *buf, int cap, void *user)
{
    struct parse *p = user;
    if (p->failed || !fgets(buf, cap, p->f))
        return NULL;
    p->lineno++;
    size_t n = strlen(buf);
    if (n > 0 && buf[n - 1] != '\n' && !feof(p->f)) {
        line_err(p, "line longer than %d characters", cap - 2);
        return NULL;
    }
    const char *s = buf;
    if (p->lineno == 1 && !strncmp(s, "\xEF\xBB\xBF", 3))
        s += 3; /* UTF-8 byte order mark */
    p->indented = *s == ' ' || *s == '\t';
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '[' && !(p->indented && p->prev_key[0])) { /* indented: inih continues a value */
        size_t len = strcspn(s + 1, "]\n");
        int known = 0;
        for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
            if (strlen(sections[i]) == len && !strncmp(s + 1, sections[i], len))
                known = 1;
        if (!known) {
            line_err(p, "[%.*s]: unknown section (known: [supervisor], [fleet])", (int)len, s + 1);
            return NULL;
        }
        p->prev_key[0] = '\0';
    }
    return buf;
}

static int parse_file(struct parse *p, const char *path)
{
    struct stat st;
    p->f = fopen(path, "r");
    if (!p->f || fstat(fileno(p->f), &st) < 0 || S_ISDIR(st.st_mode)) {
        int e = !p->f ? errno : EISDIR;
        fprintf(stderr, "oag-supervisor: %s: cannot read the configuration: %s\n", path,
                strerror(e));
        if (p->f)
            fclose(p->f);
        return -EINVAL;
    }
    p->file = path;
    int rc = ini_parse_stream(read_line, p, on_value, p);
    int rd = ferror(p->f);
    fclose(p->f);
    p->f = NULL;
    if (!p->failed && rd) {
        fprintf(stderr, "oag-supervisor: %s: read error\n", path);
        p->failed = 1;
    } else if (!p->failed && rc > 0) {
        p->lineno = rc;
        line_err(p, "expected [section], key = value or a comment");
    } else if (!p->failed && rc < 0) {
        fprintf(stderr, "oag-supervisor: %s: out of memory\n", path);
        p->failed = 1;
    }
    p->file = NULL;
    return p->failed ? -EINVAL : 0;
}

/* ---- the command line --------------------------------------------------------------------- */

void config_defaults(struct sup_config *c)
{
    c->name = OAG_DEFAULT_NAME;
    c->backend = "auto";
    c->max_queue = 4096;
    c->copy_threads = -1;
    c->waker_threads = -1;
    c->data_threads = 0; /* auto */
    c->stream_rows = -1;
    c->intake_settle = -1;
    c->instances = 1;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = ncpu >= 8 ? (int)(ncpu / 4) : 1; /* BLAS threads for the cpu engine */
    c->max_batch = 256;
    c->max_delay_us = 0;
    c->max_payload = 4096;
    c->ring_slots = 256;
    c->max_lanes = 1024;
    c->spin_us = 50;
    c->restart_delay_ms = 100;
    c->agent_nice = 10;
    c->restart_max_ms = 5000;
    c->restart_burst = 5;
    c->restart_window_s = 10;
    c->stop_timeout_ms = 5000;
    c->socket_mode = -1;
    c->log_max_bytes = 10u << 20;
    c->log_keep = 5;
    c->etcd_prefix = "/oag";
    c->etcd_ttl_s = 2;
    c->net_lanes = 2;
    c->net_batch_max = 256;
    c->net_window = 1024;
    c->net_frame_max = 4u << 20;
    c->net_hwm = 1000;
}

/* Checks that involve several options, once the file and the flags are in. */
static int check_all(struct parse *p)
{
    struct sup_config *c = p->c;
    if (p->sock) {
        strcpy(c->socket_path, p->sock); /* length checked by set_socket */
    } else if (oag_default_socket(c->socket_path, sizeof c->socket_path, c->name)) {
        fprintf(stderr, "oag-supervisor: default socket path too long\n");
        return -EINVAL;
    }
    c->agents = p->agents >= 0 ? p->agents : (c->cmd ? 1 : 0);
    if (c->agents > 0 && !c->cmd) {
        fprintf(stderr, "oag-supervisor: --agents %d given but no command (after --, or "
                        "[fleet] command in the configuration file)\n", c->agents);
        return -EINVAL;
    }
    if ((uint32_t)c->agents > c->max_lanes) {
        fprintf(stderr, "oag-supervisor: --agents %d exceeds --max-lanes %u\n", c->agents,
                c->max_lanes);
        return -EINVAL;
    }
    if (!strcmp(c->backend, "remote") && !c->forward) {
        fprintf(stderr, "oag-supervisor: --backend remote needs --forward URL\n");
        return -EINVAL;
    }
    if (c->model && !strcmp(c->backend, "identity")) {
        fprintf(stderr, "oag-supervisor: --model needs a model engine (cpu, cuda or auto), not identity\n");
        return -EINVAL;
    }
    if (!c->model && strcmp(c->backend, "identity") && strcmp(c->backend, "auto") &&
        strcmp(c->backend, "remote")) {
        fprintf(stderr, "oag-supervisor: --backend %s needs --model DIR\n", c->backend);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < c->npreferred; i++)
        if (c->preferred[i] > c->max_batch) {
            fprintf(stderr, "oag-supervisor: --preferred-batch %u exceeds --max-batch %u\n",
                    c->preferred[i], c->max_batch);
            return -EINVAL;
        }
    if (c->data_threads > 1 && c->max_queue < (uint64_t)c->max_batch * (uint32_t)c->data_threads)
        fprintf(stderr, "oag-supervisor: warning: --max-queue %u split over %d data threads "
                        "holds fewer tasks per thread than --max-batch %u\n", c->max_queue,
                c->data_threads, c->max_batch);
    else if (c->max_queue < c->max_batch)
        fprintf(stderr, "oag-supervisor: warning: --max-queue %u is smaller than --max-batch %u: "
                        "batches will hold at most %u tasks\n", c->max_queue, c->max_batch,
                c->max_queue);
    if ((c->etcd || c->curve_secret || c->curve_allowed || c->advertise) && !c->listen) {
        fprintf(stderr, "oag-supervisor: --etcd, --advertise and the CURVE keys need --listen\n");
        return -EINVAL;
    }
    if (c->listen && c->net_frame_max < c->max_payload + 64) {
        fprintf(stderr, "oag-supervisor: --net-frame-max %u is below --max-payload %u + 64 (one "
                        "task and the frame header)\n", c->net_frame_max, c->max_payload);
        return -EINVAL;
    }
    if (c->etcd && strncmp(c->etcd, "http://", 7) && strncmp(c->etcd, "https://", 8)) {
        fprintf(stderr, "oag-supervisor: --etcd: expected http://HOST:PORT, got '%s'\n", c->etcd);
        return -EINVAL;
    }
    if (c->etcd_prefix[0] != '/' || strlen(c->etcd_prefix) > 200) {
        fprintf(stderr, "oag-supervisor: --etcd-prefix: expected /NAME, got '%s'\n",
                c->etcd_prefix);
        return -EINVAL;
    }
    if (c->shared_results) {
        uint64_t chunk = results_chunk_bytes(c->max_batch, c->max_payload);
        if ((uint64_t)c->shared_results * chunk > (64ull << 30)) {
            fprintf(stderr, "oag-supervisor: --shared-results %u: the area would take %llu MB "
                            "(%u batches of %u rows of --max-payload %u); at most 64 GB\n",
                    c->shared_results,
                    (unsigned long long)(((uint64_t)c->shared_results * chunk) >> 20),
                    c->shared_results, c->max_batch, c->max_payload);
            return -EINVAL;
        }
    }
    struct oag_lane_geom g;
    if (oag_lane_geom(&g, c->max_payload, c->ring_slots)) {
        fprintf(stderr, "oag-supervisor: invalid lane geometry\n");
        return -EINVAL;
    }
    return 0;
}

int config_parse(struct sup_config *c, int argc, char **argv)
{
    struct option lopts[NOPTS + 1];
    char sopts[3 * NOPTS + 2];
    size_t ns = 0;
    sopts[ns++] = '+'; /* stop at the first non-option: the agent command */
    for (size_t i = 0; i < NOPTS; i++) {
        lopts[i] = (struct option){ opts[i].name, opts[i].arg ? required_argument : no_argument,
                                    NULL, opts[i].key };
        if (opts[i].key < 256) {
            sopts[ns++] = (char)opts[i].key;
            if (opts[i].arg)
                sopts[ns++] = ':';
        }
    }
    sopts[ns] = '\0';
    lopts[NOPTS] = (struct option){ 0, 0, 0, 0 };

    /* First pass: --help, and the file to read before the flags. */
    const char *file = NULL;
    int k;
    optind = 0;
    opterr = 0;
    while ((k = getopt_long(argc, argv, sopts, lopts, NULL)) != -1) {
        if (k == 'h') {
            usage(stdout);
            return 1;
        }
        if (k == 'c')
            file = optarg;
    }

    struct parse p = { .c = c, .agents = -1 };
    if (file) {
        c->config_path = file;
        if (parse_file(&p, file))
            return -EINVAL;
    }

    optind = 0;
    opterr = 1;
    while ((k = getopt_long(argc, argv, sopts, lopts, NULL)) != -1) {
        const struct opt *o = opt_by_key(k);
        if (!o) {
            usage(stderr);
            return -EINVAL;
        }
        if (!o->set)
            continue; /* --config: read above */
        if (o->set(&p, o, optarg))
            return -EINVAL;
    }
    c->cmd = optind < argc ? argv + optind : p.file_cmd;
    return check_all(&p);
}
