/*
 * harness.h - helpers shared by the system tests (header-only, static functions): start a real
 * oag-supervisor under a unique name in a temporary directory, forward its stderr, wait for its
 * ready line, read `oag-ctl status --json`, count /dev/shm entries, fds and mappings, and clean
 * up every process the test caused, even on failure or timeout.
 *
 * The test process makes itself a child subreaper, so agents orphaned by a supervisor that dies
 * are re-parented to it: h_children() finds them and h_cleanup() kills and reaps them.
 *
 * Binaries come from the environment (meson passes them): OAG_SUPERVISOR, OAG_CTL,
 * OAG_AGENT_WORKER. A test whose binary is missing exits 77 (skip).
 */
#ifndef OAG_TESTS_HARNESS_H
#define OAG_TESTS_HARNESS_H

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define H_SKIP 77

static _Atomic int h_failures; /* CHECK may run on several threads */

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            h_failures++;                                                                  \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

#define CHECK_EQ(a, b)                                                                     \
    CHECK((long long)(a) == (long long)(b), "%s = %lld, expected %lld", #a, (long long)(a), \
          (long long)(b))

static inline uint64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static inline void h_sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static inline const char *h_env_bin(const char *var)
{
    const char *p = getenv(var);
    if (!p || !*p || access(p, X_OK) != 0) {
        printf("SKIP: $%s not set or not executable (%s)\n", var, p ? p : "unset");
        exit(H_SKIP);
    }
    return p;
}

/* ---- processes ------------------------------------------------------------------------- */

/* Async-signal-safe: reads the parent pid of pid from /proc/PID/stat; -1 if gone. Also returns
 * the state letter in *state when state is not NULL. */
static inline int h_proc_ppid(int pid, char *state)
{
    char path[64], buf[512];
    int n = 0;
    /* Build "/proc/PID/stat" without snprintf (signal handlers use this). */
    const char *pre = "/proc/";
    char digits[16];
    int nd = 0, v = pid;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && nd < 15);
    for (const char *s = pre; *s; s++)
        path[n++] = *s;
    while (nd)
        path[n++] = digits[--nd];
    for (const char *s = "/stat"; *s; s++)
        path[n++] = *s;
    path[n] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t r = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (r <= 0)
        return -1;
    buf[r] = '\0';
    /* "pid (comm) S ppid ...": comm may contain anything, so find the last ')'. */
    char *p = NULL;
    for (ssize_t i = r - 1; i >= 0; i--)
        if (buf[i] == ')') {
            p = buf + i;
            break;
        }
    if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
        return -1;
    if (state)
        *state = p[2];
    int ppid = 0;
    for (p += 4; *p >= '0' && *p <= '9'; p++)
        ppid = ppid * 10 + (*p - '0');
    return ppid;
}

struct h_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* Async-signal-safe: fills pids[] with the live (non-zombie unless zombies) children of this
 * process. Returns the count. */
static inline int h_children(int *pids, int max, int zombies)
{
    static char buf[16384];
    int fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int self = (int)getpid(), n = 0;
    for (;;) {
        long r = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (r <= 0)
            break;
        for (long off = 0; off < r;) {
            struct h_dirent64 *d = (struct h_dirent64 *)(buf + off);
            off += d->d_reclen;
            int pid = 0, ok = d->d_name[0] != '\0';
            for (const char *s = d->d_name; *s; s++) {
                if (*s < '0' || *s > '9') {
                    ok = 0;
                    break;
                }
                pid = pid * 10 + (*s - '0');
            }
            if (!ok)
                continue;
            char st = 0;
            if (h_proc_ppid(pid, &st) == self && (zombies || st != 'Z') && n < max)
                pids[n++] = pid;
        }
    }
    close(fd);
    return n;
}

static volatile sig_atomic_t h_sup_pid_for_alarm;
/* What the alarm handler removes after killing everything (set by h_sup_start). */
static char h_alarm_shm[400], h_alarm_sock[400], h_alarm_dir[300];

/* Async-signal-safe: SIGKILL the supervisor and every child of ours, reap them all. */
static inline void h_kill_all(void)
{
    int pids[256];
    if (h_sup_pid_for_alarm > 0)
        kill((pid_t)h_sup_pid_for_alarm, SIGKILL);
    for (int round = 0; round < 50; round++) {
        int n = h_children(pids, 256, 0);
        for (int i = 0; i < n; i++)
            kill(pids[i], SIGKILL);
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (n == 0)
            break;
        struct timespec ts = { 0, 20000000 };
        nanosleep(&ts, NULL);
    }
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

static inline void h_on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "FAIL: test ran past its internal time limit; killing everything\n";
    if (write(2, msg, sizeof msg - 1) < 0) {
        /* nothing to do */
    }
    h_kill_all();
    if (h_alarm_shm[0])
        unlink(h_alarm_shm);
    if (h_alarm_sock[0])
        unlink(h_alarm_sock);
    if (h_alarm_dir[0])
        rmdir(h_alarm_dir);
    _exit(1);
}

/* Call first: become a subreaper and arm an internal deadline below meson's timeout. */
static inline void h_init(unsigned limit_s)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGALRM, h_on_alarm);
    alarm(limit_s);
}

/* ---- temp dirs and names --------------------------------------------------------------- */

static inline void h_tmpdir(char *out, size_t cap, const char *tag, mode_t mode)
{
    snprintf(out, cap, "/tmp/oagtest-%s-XXXXXX", tag);
    if (!mkdtemp(out)) {
        fprintf(stderr, "mkdtemp: %s\n", strerror(errno));
        exit(1);
    }
    chmod(out, mode);
}

static inline void h_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        size_t dl = strlen(dir), nl = strlen(e->d_name);
        if (dl + nl + 2 > sizeof path)
            continue;
        memcpy(path, dir, dl);
        path[dl] = '/';
        memcpy(path + dl + 1, e->d_name, nl + 1);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            h_rmtree(path);
        else
            unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static inline void h_unique_name(char *out, size_t cap, const char *tag)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(out, cap, "t-%s-%d-%lx", tag, (int)getpid(), (unsigned long)(ts.tv_nsec & 0xfffff));
}

/* Copies path into a sockaddr_un; -ENAMETOOLONG if it does not fit. */
static inline int h_sun(struct sockaddr_un *sa, const char *path)
{
    size_t n = strlen(path);
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (n >= sizeof sa->sun_path)
        return -ENAMETOOLONG;
    memcpy(sa->sun_path, path, n + 1);
    return 0;
}

/* ---- /dev/shm, fds, maps --------------------------------------------------------------- */

/* Entries in /dev/shm whose name starts with prefix ("" counts all). */
static inline int h_shm_count(const char *prefix)
{
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d)))
        if (e->d_name[0] != '.' && !strncmp(e->d_name, prefix, pl))
            n++;
    closedir(d);
    return n;
}

/* The supervisor's region name in /dev/shm for an instance name: "oag-UID-NAME". */
static inline void h_shm_name(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "oag-%u-%s", (unsigned)getuid(), name);
}

/* Lists /dev/shm entries that start with "oag-UID-NAME" (exact name or longer) on stderr and
 * returns their count. */
static inline int h_shm_leftovers(const char *name)
{
    char want[256];
    h_shm_name(want, sizeof want, name);
    DIR *d = opendir("/dev/shm");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (!strncmp(e->d_name, want, strlen(want))) {
            fprintf(stderr, "  left in /dev/shm: %s\n", e->d_name);
            n++;
        }
    closedir(d);
    return n;
}

static inline int h_count_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static inline int h_count_fds(int pid)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/fd", pid);
    return h_count_dir(p);
}

static inline int h_count_maps(int pid)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/maps", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return -1;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF)
        if (ch == '\n')
            n++;
    fclose(f);
    return n;
}

/* Prints what the supervisor holds open (for a failure diagnosis). */
static inline void h_dump_fds(int pid)
{
    char p[64], path[400], target[512];
    snprintf(p, sizeof p, "/proc/%d/fd", pid);
    DIR *d = opendir(p);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", p, e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        fprintf(stderr, "    fd %s -> %s\n", e->d_name, target);
    }
    closedir(d);
}

/* ---- the supervisor -------------------------------------------------------------------- */

struct h_sup {
    pid_t pid;
    char name[80];
    char dir[256];
    char sock[400];
    int err_rd;
    pthread_t fwd;
    int fwd_started;
    atomic_int ready;
    atomic_int eof;
    int exited, status; /* set by h_sup_wait */
};

static inline void *h_forward(void *arg)
{
    struct h_sup *s = arg;
    FILE *f = fdopen(s->err_rd, "r");
    if (!f)
        return NULL;
    char line[2048];
    while (fgets(line, sizeof line, f)) {
        fprintf(stderr, "  | %s", line);
        if (strstr(line, "oag-supervisor: ready"))
            atomic_store(&s->ready, 1);
    }
    atomic_store(&s->eof, 1);
    fclose(f);
    return NULL;
}

/* Starts the supervisor: SUP --name NAME --socket DIR/NAME.sock [extra...] [-- cmd...].
 * extra and cmd are NULL-terminated (either may be NULL). Waits for the ready line (or the socket
 * answering) up to 15 s. Returns 0 or -1 (and the test fails). */
static inline int h_sup_start(struct h_sup *s, const char *tag, mode_t dir_mode, const char *const *extra,
                       const char *const *cmd)
{
    const char *sup = h_env_bin("OAG_SUPERVISOR");
    memset(s, 0, sizeof *s);
    h_unique_name(s->name, sizeof s->name, tag);
    h_tmpdir(s->dir, sizeof s->dir, tag, dir_mode);
    snprintf(s->sock, sizeof s->sock, "%s/%s.sock", s->dir, s->name);

    const char *argv[96];
    int n = 0;
    argv[n++] = sup;
    argv[n++] = "--name";
    argv[n++] = s->name;
    argv[n++] = "--socket";
    argv[n++] = s->sock;
    /* $OAG_TEST_DATA_THREADS=K: the whole suite again with the data plane over K threads (a
     * test's own --data-threads, later on the line, wins). */
    static char dt[32];
    const char *k = getenv("OAG_TEST_DATA_THREADS");
    if (k && *k) {
        snprintf(dt, sizeof dt, "--data-threads=%s", k);
        argv[n++] = dt;
    }
    for (int i = 0; extra && extra[i] && n < 60; i++)
        argv[n++] = extra[i];
    if (cmd) {
        argv[n++] = "--";
        for (int i = 0; cmd[i] && n < 94; i++)
            argv[n++] = cmd[i];
    }
    argv[n] = NULL;
    fprintf(stderr, "starting:");
    for (int i = 0; i < n; i++)
        fprintf(stderr, " %s", argv[i]);
    fputc('\n', stderr);

    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(p[1], 2);
        signal(SIGPIPE, SIG_DFL);
        alarm(0);
        execv(sup, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    s->pid = pid;
    h_sup_pid_for_alarm = pid;
    char shm[256];
    h_shm_name(shm, sizeof shm, s->name);
    snprintf(h_alarm_shm, sizeof h_alarm_shm, "/dev/shm/%s", shm);
    snprintf(h_alarm_sock, sizeof h_alarm_sock, "%s", s->sock);
    snprintf(h_alarm_dir, sizeof h_alarm_dir, "%s", s->dir);
    s->err_rd = p[0];
    s->fwd_started = pthread_create(&s->fwd, NULL, h_forward, s) == 0;

    uint64_t end = h_now_ms() + 15000;
    while (h_now_ms() < end) {
        if (atomic_load(&s->ready))
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->exited = 1;
            s->status = st;
            fprintf(stderr, "FAIL: supervisor exited before ready (status 0x%x)\n", st);
            h_failures++;
            return -1;
        }
        h_sleep_ms(10);
    }
    fprintf(stderr, "FAIL: supervisor printed no ready line within 15 s\n");
    h_failures++;
    return -1;
}

/* 1 if the supervisor process is still running (not exited, not a zombie). */
static inline int h_sup_alive(struct h_sup *s)
{
    if (s->exited)
        return 0;
    int st;
    pid_t r = waitpid(s->pid, &st, WNOHANG);
    if (r == s->pid) {
        s->exited = 1;
        s->status = st;
        return 0;
    }
    return 1;
}

/* Waits up to timeout_ms for the supervisor to exit. Returns its wait status, or -1 on timeout. */
static inline int h_sup_wait(struct h_sup *s, unsigned timeout_ms)
{
    uint64_t end = h_now_ms() + timeout_ms;
    for (;;) {
        if (!h_sup_alive(s))
            return s->status;
        if (h_now_ms() >= end)
            return -1;
        h_sleep_ms(5);
    }
}

static inline void h_describe_status(const char *what, int st)
{
    if (WIFEXITED(st))
        fprintf(stderr, "%s: exited with code %d\n", what, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        fprintf(stderr, "%s: killed by signal %d\n", what, WTERMSIG(st));
    else
        fprintf(stderr, "%s: wait status 0x%x\n", what, st);
}

/* Stops everything, removes the temp dir and any shm the instance left (after the test's own
 * checks). */
static inline void h_cleanup(struct h_sup *s)
{
    if (s->pid > 0 && h_sup_alive(s)) {
        kill(s->pid, SIGTERM);
        if (h_sup_wait(s, 3000) < 0) {
            kill(s->pid, SIGKILL);
            h_sup_wait(s, 3000);
        }
    }
    h_sup_pid_for_alarm = 0;
    h_alarm_shm[0] = h_alarm_sock[0] = h_alarm_dir[0] = '\0';
    h_kill_all();
    if (s->fwd_started) {
        /* The pipe may be held open by orphans killed just now; give the reader a moment. */
        uint64_t end = h_now_ms() + 1000;
        while (!atomic_load(&s->eof) && h_now_ms() < end)
            h_sleep_ms(5);
        if (atomic_load(&s->eof))
            pthread_join(s->fwd, NULL);
        else
            pthread_detach(s->fwd);
        s->fwd_started = 0;
    }
    char shm[256];
    h_shm_name(shm, sizeof shm, s->name);
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%s", shm);
    unlink(path);
    if (s->dir[0])
        h_rmtree(s->dir);
}

/* ---- oag-ctl --------------------------------------------------------------------------- */

/* Runs `oag-ctl -s SOCK args...` (NULL-terminated), stdout into out (NUL-terminated). Returns its
 * exit code, or -1 if it could not run or was killed (it gets 5 s). */
static inline int h_ctl(const struct h_sup *s, char *out, size_t cap, ...)
{
    const char *ctl = h_env_bin("OAG_CTL");
    const char *argv[16];
    int n = 0;
    argv[n++] = ctl;
    argv[n++] = "-s";
    argv[n++] = s->sock;
    va_list ap;
    va_start(ap, cap);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 15)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(p[1], 1);
        alarm(5);
        signal(SIGALRM, SIG_DFL);
        execv(ctl, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(p[0], out + len, cap - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == cap - 1) {
            char sink[4096];
            while (read(p[0], sink, sizeof sink) > 0)
                ;
            break;
        }
    }
    out[len] = '\0';
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

#define H_MAX_AGENTS 64

struct h_agent {
    int id, pid, restarts;
    long long tasks, generation;
    char state[16];
};

struct h_status {
    int pid;
    long long tasks_done;
    long long dropped;         /* results dropped because their agent's lane went */
    long long wakes, wakes_by_thread;
    int waker_threads;
    char engine[32];
    int nagents;
    struct h_agent a[H_MAX_AGENTS];
};

static inline long long h_json_ll(const cJSON *o, const char *key, int *ok)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) {
        *ok = 0;
        return -1;
    }
    return (long long)v->valuedouble;
}

/* `oag-ctl status --json`, parsed (the caller cJSON_Delete()s it), or NULL (printing why). */
static inline cJSON *h_status_json(const struct h_sup *s)
{
    static char buf[1 << 16];
    int rc = h_ctl(s, buf, sizeof buf, "status", "--json", (const char *)NULL);
    if (rc != 0) {
        fprintf(stderr, "oag-ctl status --json exited %d: %.300s\n", rc, buf);
        return NULL;
    }
    cJSON *j = cJSON_Parse(buf);
    if (!j)
        fprintf(stderr, "oag-ctl status --json: not JSON: %.300s\n", buf);
    return j;
}

/* Fetches and parses `oag-ctl status --json`. Returns 0, or -1 (printing why). */
static inline int h_status(const struct h_sup *s, struct h_status *st)
{
    memset(st, 0, sizeof *st);
    cJSON *j = h_status_json(s);
    if (!j)
        return -1;
    int ok = 1;
    st->pid = (int)h_json_ll(j, "pid", &ok);
    st->tasks_done = h_json_ll(j, "tasks_done", &ok);
    st->dropped = h_json_ll(j, "dropped", &ok);
    st->wakes = h_json_ll(j, "wakes", &ok);
    st->wakes_by_thread = h_json_ll(j, "wakes_by_thread", &ok);
    st->waker_threads = (int)h_json_ll(j, "waker_threads", &ok);
    const cJSON *eng = cJSON_GetObjectItemCaseSensitive(j, "engine");
    if (cJSON_IsString(eng))
        snprintf(st->engine, sizeof st->engine, "%s", eng->valuestring);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "agents");
    if (!cJSON_IsArray(arr))
        ok = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr)
    {
        if (st->nagents >= H_MAX_AGENTS)
            break;
        struct h_agent *a = &st->a[st->nagents++];
        a->id = (int)h_json_ll(e, "id", &ok);
        a->pid = (int)h_json_ll(e, "pid", &ok);
        a->restarts = (int)h_json_ll(e, "restarts", &ok);
        a->tasks = h_json_ll(e, "tasks", &ok);
        a->generation = h_json_ll(e, "generation", &ok);
        const cJSON *state = cJSON_GetObjectItemCaseSensitive(e, "state");
        if (cJSON_IsString(state))
            snprintf(a->state, sizeof a->state, "%s", state->valuestring);
        else
            ok = 0;
    }
    cJSON_Delete(j);
    if (!ok) {
        fprintf(stderr, "oag-ctl status --json: missing fields\n");
        return -1;
    }
    return 0;
}

static inline const struct h_agent *h_find_agent(const struct h_status *st, int id)
{
    for (int i = 0; i < st->nagents; i++)
        if (st->a[i].id == id)
            return &st->a[i];
    return NULL;
}

/* Waits until `want` agents are running with at least min_tasks tasks each (per status).
 * Returns 0, or -1 on timeout (printing the last status). */
static inline int h_wait_running(const struct h_sup *s, int want, long long min_tasks, unsigned timeout_ms,
                          struct h_status *st)
{
    uint64_t end = h_now_ms() + timeout_ms;
    int have = 0;
    while (h_now_ms() < end) {
        if (h_status(s, st) == 0) {
            have = 0;
            for (int i = 0; i < st->nagents; i++)
                if (!strcmp(st->a[i].state, "running") && st->a[i].pid > 0 &&
                    st->a[i].tasks >= min_tasks)
                    have++;
            if (have >= want)
                return 0;
        }
        h_sleep_ms(50);
    }
    fprintf(stderr, "only %d of %d agents running with >= %lld tasks after %u ms:\n", have, want,
            min_tasks, timeout_ms);
    for (int i = 0; i < st->nagents; i++)
        fprintf(stderr, "  agent %d pid %d state %s restarts %d tasks %lld gen %lld\n",
                st->a[i].id, st->a[i].pid, st->a[i].state, st->a[i].restarts, st->a[i].tasks,
                st->a[i].generation);
    return -1;
}

#endif
