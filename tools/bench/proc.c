#include "bench.h"

/* ---- process bookkeeping --------------------------------------------------------------- */

volatile sig_atomic_t g_stop;
static pid_t g_kids[MAX_KIDS];
static int g_nkids;
char g_tmpdir[128];

void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void sleep_ms(unsigned ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

void warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("oag-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void kid_forget(pid_t pid)
{
    for (int i = 0; i < g_nkids; i++) {
        if (g_kids[i] == pid) {
            g_kids[i] = g_kids[--g_nkids];
            return;
        }
    }
}

/* fork() that registers the child for cleanup. In the child: dies with the parent, default
 * signal dispositions, empty registry. Returns what fork() returns (or -1 if the registry is
 * full). */
pid_t spawn(void)
{
    if (g_nkids >= MAX_KIDS) {
        errno = EAGAIN;
        return -1;
    }
    pid_t parent = getpid();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        g_nkids = 0;
    } else if (pid > 0) {
        g_kids[g_nkids++] = pid;
    }
    return pid;
}

/* spawn() for an agent process: it runs g_agent_nice nice levels below the bench (and the
 * supervisor or RPC server it forked), as oag-supervisor's --agent-nice does for its fleet. */
unsigned g_agent_nice = 10;
const char *g_sup_args[MAX_SUP_ARGS];
int g_nsup_args;

int g_agent_cpus_set;
cpu_set_t g_agent_cpus;

pid_t spawn_agent(void)
{
    pid_t pid = spawn();
    if (pid == 0 && g_agent_cpus_set)
        (void)sched_setaffinity(0, sizeof g_agent_cpus, &g_agent_cpus);
    if (pid == 0 && g_agent_nice) {
        errno = 0;
        int cur = getpriority(PRIO_PROCESS, 0);
        if (errno == 0)
            (void)setpriority(PRIO_PROCESS, 0, cur + (int)g_agent_nice); /* clamped at 19 */
    }
    return pid;
}

/* Reaps pid, waiting up to timeout_ms (< 0: forever). Returns 0 and *status, or -ETIMEDOUT. */
int reap(pid_t pid, int timeout_ms, int *status)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, timeout_ms < 0 ? 0 : WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            kid_forget(pid);
            return -errno;
        }
        if (now_ns() >= deadline)
            return -ETIMEDOUT;
        if (r == 0)
            sleep_ms(1);
    }
    kid_forget(pid);
    if (status)
        *status = st;
    return 0;
}

/* Reaps pid and checks that it exited 0; otherwise says why with what. Returns 0 or -ECHILD. */
int reap_ok(pid_t pid, int timeout_ms, const char *what)
{
    int st;
    int rc = reap(pid, timeout_ms, &st);
    if (rc == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        reap(pid, -1, &st);
        warn("%s (pid %d) did not exit in time: killed", what, (int)pid);
        return -ETIMEDOUT;
    }
    if (rc)
        return rc;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st))
        warn("%s (pid %d) exited with status %d", what, (int)pid, WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        warn("%s (pid %d) killed by signal %d", what, (int)pid, WTERMSIG(st));
    return -ECHILD;
}

void kill_all_kids(void)
{
    for (int i = 0; i < g_nkids; i++)
        kill(g_kids[i], SIGKILL);
    while (g_nkids > 0)
        reap(g_kids[0], -1, NULL);
}

void rm_tmpdir(void)
{
    if (!g_tmpdir[0])
        return;
    DIR *d = opendir(g_tmpdir);
    if (d) {
        struct dirent *e;
        char p[PATH_MAX + 256];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(p, sizeof p, "%s/%s", g_tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_tmpdir);
    g_tmpdir[0] = '\0';
}

void *shared_alloc(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}
void sleep_until(uint64_t t_ns)
{
    struct timespec ts = { .tv_sec = (time_t)(t_ns / 1000000000ull),
                           .tv_nsec = (long)(t_ns % 1000000000ull) };
    while (!g_stop && clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

void sleep_us(unsigned us)
{
    struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (long)(us % 1000000) * 1000L };
    nanosleep(&ts, NULL);
}

/* The directory of this executable, "" if unknown. */
const char *self_dir(void)
{
    static char dir[PATH_MAX];
    static int done;
    if (!done) {
        done = 1;
        ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
        if (n <= 0) {
            dir[0] = '\0';
        } else {
            dir[n] = '\0';
            char *slash = strrchr(dir, '/');
            if (slash)
                *slash = '\0';
            else
                dir[0] = '\0';
        }
    }
    return dir;
}

/* path if it is an executable file (copied into buf), else NULL. */
static const char *exe_if(char *buf, size_t cap, const char *path)
{
    if (!path || !*path || access(path, X_OK) != 0)
        return NULL;
    if (snprintf(buf, cap, "%s", path) >= (int)cap)
        return NULL;
    return buf;
}

/* The tools next to this binary (a build folder may be carried to another machine, where the
 * compiled-in absolute paths do not exist), then the compiled-in paths. */
void resolve_tools(struct opts *o)
{
    static char sup[PATH_MAX], gen[PATH_MAX];
    char p[PATH_MAX + 64];
    const char *d = self_dir();
    if (!o->supervisor_set) {
        snprintf(p, sizeof p, "%s/../src/scheduler/oag-supervisor", d);
        if (*d && exe_if(sup, sizeof sup, p))
            o->supervisor = sup;
    }
    if (!o->gen_model) {
        snprintf(p, sizeof p, "%s/oag-gen-model", d);
        if (*d && exe_if(gen, sizeof gen, p)) {
            o->gen_model = gen;
        } else {
            /* next to the supervisor's build: BUILD/src/scheduler/../../tools/oag-gen-model */
            char sd[PATH_MAX];
            snprintf(sd, sizeof sd, "%s", o->supervisor);
            char *slash = strrchr(sd, '/');
            if (slash) {
                *slash = '\0';
                snprintf(p, sizeof p, "%s/../../tools/oag-gen-model", sd);
            }
            if (slash && exe_if(gen, sizeof gen, p))
                o->gen_model = gen;
            else
                o->gen_model = OAG_GEN_MODEL_PATH;
        }
    }
}

/* Runs argv (argv[0] a path) with stdout to out_fd (or inherited if < 0), waits. Returns 0 if
 * it exited 0. */
int run_cmd(const char *const argv[], int out_fd, const char *what)
{
    pid_t pid = spawn();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        if (out_fd >= 0)
            dup2(out_fd, 1);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "oag-bench: cannot exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    return reap_ok(pid, 600000, what);
}

void rm_model_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char p[PATH_MAX + 256];
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}
