/*
 * ops.h - helpers of the operations tests (header-only, on top of ../harness.h): run the
 * supervisor to its exit with its stdout and stderr captured, and write small files.
 */
#ifndef OAG_TESTS_OPS_H
#define OAG_TESTS_OPS_H

#include "../harness.h"

/* Runs argv (NULL-terminated) with stdout and stderr both into out (NUL-terminated, truncated
 * to cap) and stdin from /dev/null; waits up to timeout_ms for it to exit, then SIGKILLs it.
 * Returns its wait status, or -1 if it could not run or had to be killed. */
static inline int ops_run(const char *const *argv, char *out, size_t cap, unsigned timeout_ms)
{
    int p[2];
    out[0] = '\0';
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
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(p[1], 1);
        dup2(p[1], 2);
        signal(SIGPIPE, SIG_DFL);
        alarm(0);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    size_t len = 0;
    uint64_t end = h_now_ms() + timeout_ms;
    int st = -1, done = 0, eof = 0;
    for (;;) {
        char sink[4096];
        ssize_t r = read(p[0], len < cap - 1 ? out + len : sink,
                         len < cap - 1 ? cap - 1 - len : sizeof sink);
        if (r > 0) {
            if (len < cap - 1)
                len += (size_t)r;
            continue;
        }
        if (r == 0)
            eof = 1;
        if (!done && waitpid(pid, &st, WNOHANG) == pid) {
            done = 1;
            end = h_now_ms() + 1000; /* the rest of its output, unless an orphan holds the pipe */
        }
        if (done && eof)
            break;
        if (h_now_ms() >= end) {
            if (!done) {
                fprintf(stderr, "FAIL: %s ran past %u ms: killed\n", argv[0], timeout_ms);
                h_failures++;
                kill(pid, SIGKILL);
                waitpid(pid, &st, 0);
                st = -1;
            }
            break;
        }
        h_sleep_ms(2);
    }
    out[len] = '\0';
    close(p[0]);
    return st;
}

/* Starts the supervisor (identity backend) with `option value` and expects it refused at start:
 * exit status 2 and an error holding each of the NULL-terminated strings in want. */
static inline void ops_expect_refused(const char *option, const char *value,
                                      const char *const *want)
{
    static char out[1 << 14];
    char name[80];
    h_unique_name(name, sizeof name, "refused");
    const char *argv[] = { h_env_bin("OAG_SUPERVISOR"), "--name", name, "--backend", "identity",
                           option, value, NULL };
    int st = ops_run(argv, out, sizeof out, 20000);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 2, "%s %s: wait status 0x%x", option, value, st);
    for (; *want; want++)
        CHECK(strstr(out, *want), "%s %s: the error does not say '%s':\n%s", option, value,
              *want, out);
}

/* Writes text to path; the test fails if it cannot. */
static inline void ops_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "cannot create %s: %s", path, strerror(errno));
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
}

/* Reads a whole file into a malloc'd NUL-terminated buffer (NULL if it cannot). */
static inline char *ops_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - 1 - n, f)) > 0) {
        n += r;
        if (n == cap - 1) {
            char *nb = realloc(b, cap * 2);
            if (!nb) {
                free(b);
                b = NULL;
                break;
            }
            b = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (b)
        b[n] = '\0';
    if (len)
        *len = n;
    return b;
}

/* 1 if path exists. */
static inline int ops_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

#endif
