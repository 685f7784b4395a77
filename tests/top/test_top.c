/*
 * test_top.c - `oag-ctl top` against a real supervisor (identity engine, 4 agent_worker
 * --forever agents), its terminal output checked by a small terminal emulator (below):
 *  1. under a pseudo-terminal this test creates (openpty, 30x100): every frame fits the window,
 *     also after it shrinks to 9x50 (SIGWINCH: redrawn for the new size, a "... N more agents"
 *     line) and grows back; frames are drawn in place (one full clear at the start and one per
 *     resize, no more); `q` quits with 0, the last bytes show the cursor again, the terminal's
 *     modes are as before; the last screen lists every agent running, one at least with tasks/s
 *     above 0;
 *  2. Ctrl-C quits the same way (exit 0, cursor and modes restored); SIGTERM restores them and
 *     top dies of the signal;
 *  3. `top --once` (and plain `top`) on a pipe: plain text without escape sequences, exit 0,
 *     every agent listed; a bad --interval exits 2;
 *  4. the supervisor SIGKILLed under a running top: top restores the terminal, says
 *     "supervisor gone" and exits 1.
 */
#include <poll.h>
#include <pty.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "../harness.h"

#define NAGENTS 4

/* ---- a terminal emulator: just what a frame of top may use -------------------------------- */

#define VT_MAXR 64
#define VT_MAXC 256

struct vt {
    int rows, cols;
    char grid[VT_MAXR][VT_MAXC + 1];
    int r, c;                  /* c == cols: pending wrap after the last column */
    int cursor_visible;
    int state;                 /* 0 text, 1 after ESC, 2 in a CSI sequence */
    char csi[32];
    int csilen;
    int new_rows, new_cols;    /* a resize the program has not redrawn for yet (0: none) */
    int homes, clears;
    int violations;
    char first_violation[200];
};

static void vt_clear_rows(struct vt *v, int from_row, int from_col)
{
    for (int r = from_row; r < v->rows; r++)
        for (int c = r == from_row ? from_col : 0; c < v->cols; c++)
            v->grid[r][c] = ' ';
}

static void vt_init(struct vt *v, int rows, int cols)
{
    memset(v, 0, sizeof *v);
    v->rows = rows;
    v->cols = cols;
    v->cursor_visible = 1;
    vt_clear_rows(v, 0, 0);
}

/* Only frames must fit: what is written once the cursor shows again (a closing message on the
 * restored terminal) may wrap and scroll like any output. */
static void vt_violation(struct vt *v, const char *what)
{
    if (v->cursor_visible)
        return;
    if (!v->violations++)
        snprintf(v->first_violation, sizeof v->first_violation, "%s (row %d, window %dx%d)",
                 what, v->r, v->rows, v->cols);
}

static void vt_linefeed(struct vt *v)
{
    if (v->r + 1 < v->rows) {
        v->r++;
        return;
    }
    vt_violation(v, "line feed on the last row: the frame scrolled the window");
    memmove(v->grid[0], v->grid[1], sizeof v->grid[0] * (size_t)(v->rows - 1));
    vt_clear_rows(v, v->rows - 1, 0);
}

static void vt_csi(struct vt *v, char final)
{
    v->csi[v->csilen] = '\0';
    int p1 = atoi(v->csi[0] == '?' ? v->csi + 1 : v->csi);
    switch (final) {
    case 'H': {
        int row = p1 > 0 ? p1 : 1, col = 1;
        const char *semi = strchr(v->csi, ';');
        if (semi && atoi(semi + 1) > 0)
            col = atoi(semi + 1);
        v->r = row - 1 < v->rows ? row - 1 : v->rows - 1;
        v->c = col - 1 < v->cols ? col - 1 : v->cols - 1;
        v->homes++;
        break;
    }
    case 'K':
        if (p1 == 0 && v->c < v->cols)
            for (int c = v->c; c < v->cols; c++)
                v->grid[v->r][c] = ' ';
        break;
    case 'J':
        if (p1 == 2) {
            v->clears++;
            if (v->new_rows) { /* the program redraws for the new size from here on */
                v->rows = v->new_rows;
                v->cols = v->new_cols;
                v->new_rows = v->new_cols = 0;
                if (v->r >= v->rows)
                    v->r = v->rows - 1;
                if (v->c > v->cols)
                    v->c = v->cols;
            }
            vt_clear_rows(v, 0, 0);
        } else if (p1 == 0) {
            vt_clear_rows(v, v->r, v->c < v->cols ? v->c : v->cols);
        }
        break;
    case 'h':
    case 'l':
        if (!strcmp(v->csi, "?25"))
            v->cursor_visible = final == 'h';
        break;
    default:
        break;
    }
}

static void vt_feed(struct vt *v, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (v->state == 1) {
            v->state = ch == '[' ? 2 : 0;
            v->csilen = 0;
            continue;
        }
        if (v->state == 2) {
            if (ch >= 0x40 && ch <= 0x7e) {
                vt_csi(v, ch);
                v->state = 0;
            } else if (v->csilen + 1 < (int)sizeof v->csi) {
                v->csi[v->csilen++] = ch;
            }
            continue;
        }
        if (ch == 0x1b) {
            v->state = 1;
        } else if (ch == '\r') {
            v->c = 0;
        } else if (ch == '\n') {
            vt_linefeed(v);
        } else if ((unsigned char)ch >= 0x20 && ch != 0x7f) {
            if (v->c >= v->cols) {
                vt_violation(v, "line wider than the window");
                v->c = 0;
                vt_linefeed(v);
            }
            v->grid[v->r][v->c++] = ch;
        }
    }
}

/* The screen as text, one line per row, trailing blanks dropped. */
static void vt_text(const struct vt *v, char *out, size_t cap)
{
    size_t len = 0;
    for (int r = 0; r < v->rows && len + VT_MAXC + 2 < cap; r++) {
        int w = v->cols;
        while (w > 0 && v->grid[r][w - 1] == ' ')
            w--;
        memcpy(out + len, v->grid[r], (size_t)w);
        len += (size_t)w;
        out[len++] = '\n';
    }
    out[len] = '\0';
}

/* ---- oag-ctl top on a pseudo-terminal ------------------------------------------------------ */

struct run {
    pid_t pid;
    int master, slave;         /* the test keeps the slave open: its modes stay readable */
    struct vt vt;
    char log[1 << 20];         /* every byte top wrote */
    size_t loglen;
    int exited, status;
    struct termios before;
};

static int run_start(struct run *r, const char *sock, int rows, int cols, const char *interval)
{
    const char *ctl = h_env_bin("OAG_CTL");
    memset(r, 0, sizeof *r);
    struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
    if (openpty(&r->master, &r->slave, NULL, NULL, &ws) < 0) {
        fprintf(stderr, "openpty: %s\n", strerror(errno));
        return -1;
    }
    fcntl(r->master, F_SETFD, FD_CLOEXEC);
    fcntl(r->slave, F_SETFD, FD_CLOEXEC);
    fcntl(r->master, F_SETFL, fcntl(r->master, F_GETFL) | O_NONBLOCK);
    tcgetattr(r->slave, &r->before);
    vt_init(&r->vt, rows, cols);
    fflush(stdout);
    fflush(stderr);
    r->pid = fork();
    if (r->pid < 0)
        return -1;
    if (r->pid == 0) {
        setsid();
        ioctl(r->slave, TIOCSCTTY, 0);
        dup2(r->slave, 0);
        dup2(r->slave, 1);
        dup2(r->slave, 2);
        signal(SIGPIPE, SIG_DFL);
        alarm(0);
        execl(ctl, ctl, "-s", sock, "top", "--interval", interval, (char *)NULL);
        _exit(127);
    }
    return 0;
}

/* Reads what top writes for ms milliseconds, or until it has exited and all is read. */
static void run_pump(struct run *r, unsigned ms)
{
    uint64_t end = h_now_ms() + ms;
    for (;;) {
        char buf[4096];
        ssize_t n = read(r->master, buf, sizeof buf);
        if (n > 0) {
            vt_feed(&r->vt, buf, (size_t)n);
            size_t k = (size_t)n < sizeof r->log - r->loglen ? (size_t)n
                                                             : sizeof r->log - r->loglen;
            memcpy(r->log + r->loglen, buf, k);
            r->loglen += k;
            continue;
        }
        if (!r->exited) {
            int st;
            if (waitpid(r->pid, &st, WNOHANG) == r->pid) {
                r->exited = 1;
                r->status = st;
                continue; /* read what it wrote before it exited */
            }
        } else {
            return;
        }
        if (h_now_ms() >= end)
            return;
        struct pollfd p = { .fd = r->master, .events = POLLIN };
        poll(&p, 1, 10);
    }
}

static int run_wait_exit(struct run *r, unsigned ms)
{
    uint64_t end = h_now_ms() + ms;
    while (!r->exited && h_now_ms() < end)
        run_pump(r, 20);
    return r->exited;
}

static void run_resize(struct run *r, int rows, int cols)
{
    struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
    r->vt.new_rows = rows;
    r->vt.new_cols = cols;
    ioctl(r->master, TIOCSWINSZ, &ws);
}

static void run_end(struct run *r)
{
    if (!r->exited) {
        kill(r->pid, SIGKILL);
        waitpid(r->pid, NULL, 0);
        r->exited = 1;
    }
    close(r->master);
    close(r->slave);
}

static int ends_with(const struct run *r, const char *s)
{
    size_t n = strlen(s);
    return r->loglen >= n && !memcmp(r->log + r->loglen - n, s, n);
}

static int log_has(const struct run *r, const char *s)
{
    return memmem(r->log, r->loglen, s, strlen(s)) != NULL;
}

/* The terminal's modes are those from before top ran. */
static void check_modes(struct run *r, const char *what)
{
    struct termios now;
    CHECK(tcgetattr(r->slave, &now) == 0, "%s: tcgetattr: %s", what, strerror(errno));
    CHECK((now.c_lflag & (ICANON | ECHO | ISIG)) == (r->before.c_lflag & (ICANON | ECHO | ISIG)),
          "%s: terminal modes not restored (lflag 0x%x, before 0x%x)", what,
          (unsigned)now.c_lflag, (unsigned)r->before.c_lflag);
}

static void dump(const char *what, const char *text)
{
    fprintf(stderr, "---- %s ----\n%s---- end ----\n", what, text);
}

/* Finds the agents table in text (lines); marks running ids, returns the highest tasks/s
 * seen (-1 if none parsed). */
static double parse_table(const char *text, int running[NAGENTS])
{
    double best = -1;
    const char *p = strstr(text, "TASKS/S");
    if (!p)
        return -1;
    p = strchr(p, '\n');
    while (p && *++p) {
        int id, pid, restarts;
        char state[16], rate[32];
        if (sscanf(p, "%d %d %15s %d %31s", &id, &pid, state, &restarts, rate) == 5) {
            if (id >= 0 && id < NAGENTS && !strcmp(state, "running") && pid > 0)
                running[id] = 1;
            char *end;
            double v = strtod(rate, &end);
            if (end != rate) {
                if (*end == 'k')
                    v *= 1e3;
                else if (*end == 'M')
                    v *= 1e6;
                if (v > best)
                    best = v;
            }
        }
        p = strchr(p, '\n');
    }
    return best;
}

static void check_all_running(const char *text, const char *what)
{
    int running[NAGENTS] = { 0 };
    double best = parse_table(text, running);
    int ok = 1;
    for (int i = 0; i < NAGENTS; i++) {
        CHECK(running[i], "%s: agent %d not shown running", what, i);
        ok &= running[i];
    }
    CHECK(best > 0, "%s: no agent with tasks/s > 0 (best %.1f)", what, best);
    if (!ok || best <= 0)
        dump(what, text);
}

/* ---- the tests ----------------------------------------------------------------------------- */

static char screen[VT_MAXR * (VT_MAXC + 1) + 1];

static void test_live(struct h_sup *s)
{
    static struct run r;
    if (run_start(&r, s->sock, 30, 100, "250")) {
        CHECK(0, "could not start top on a pseudo-terminal");
        return;
    }
    run_pump(&r, 1200);
    CHECK(!r.exited, "top exited early");
    CHECK(r.vt.homes >= 3, "%d frames in 1.2 s at a 250 ms interval", r.vt.homes);
    CHECK(!r.vt.cursor_visible, "cursor visible while top runs");
    CHECK(r.loglen >= 6 && !memcmp(r.log, "\x1b[?25l", 6), "top did not start by hiding the cursor");
    struct termios raw;
    tcgetattr(r.slave, &raw);
    CHECK(!(raw.c_lflag & (ICANON | ECHO)), "terminal still canonical/echoing while top runs");
    vt_text(&r.vt, screen, sizeof screen);
    check_all_running(screen, "screen at 30x100");

    /* Smaller than the frame: clipped lines, the table cut with a "... N more" line. */
    run_resize(&r, 9, 50);
    run_pump(&r, 800);
    CHECK(r.vt.rows == 9 && r.vt.cols == 50, "no redraw for 9x50 after SIGWINCH (screen %dx%d)",
          r.vt.rows, r.vt.cols);
    vt_text(&r.vt, screen, sizeof screen);
    CHECK(strstr(screen, "more agents") != NULL, "no '... N more agents' line at 9x50");
    if (!strstr(screen, "more agents"))
        dump("screen at 9x50", screen);

    run_resize(&r, 30, 100);
    run_pump(&r, 800);
    CHECK(r.vt.rows == 30 && r.vt.cols == 100, "no redraw for 30x100 after SIGWINCH");

    if (write(r.master, "q", 1) != 1)
        CHECK(0, "write q: %s", strerror(errno));
    CHECK(run_wait_exit(&r, 3000), "top did not quit on q");
    if (r.exited)
        CHECK(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "top after q: status 0x%x",
              r.status);
    CHECK(ends_with(&r, "\x1b[?25h"), "the show-cursor sequence is not the last thing written");
    CHECK(r.vt.cursor_visible, "cursor left hidden");
    check_modes(&r, "after q");
    CHECK(r.vt.violations == 0, "%d frame(s) did not fit: %s", r.vt.violations,
          r.vt.first_violation);
    /* In place: a full clear at the start and after each of the 2 resizes only. */
    CHECK(r.vt.clears == 3, "%d full-screen clears (expected 3: start + 2 resizes)", r.vt.clears);
    CHECK(r.vt.homes >= 8, "only %d frames", r.vt.homes);
    vt_text(&r.vt, screen, sizeof screen);
    check_all_running(screen, "final screen");
    size_t n = strlen(screen);
    while (n > 1 && screen[n - 1] == '\n' && screen[n - 2] == '\n')
        screen[--n] = '\0';
    printf("live: %d frames, %d clears, %zu bytes; final screen:\n%s", r.vt.homes, r.vt.clears,
           r.loglen, screen);
    run_end(&r);
}

static void test_signals(struct h_sup *s)
{
    static struct run r;
    if (run_start(&r, s->sock, 24, 80, "200") == 0) {
        run_pump(&r, 600);
        if (write(r.master, "\x03", 1) != 1) /* Ctrl-C: SIGINT from the line discipline */
            CHECK(0, "write ^C: %s", strerror(errno));
        CHECK(run_wait_exit(&r, 3000), "top did not quit on Ctrl-C");
        if (r.exited)
            CHECK(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                  "top after Ctrl-C: status 0x%x", r.status);
        CHECK(ends_with(&r, "\x1b[?25h"), "Ctrl-C: cursor not shown again at the end");
        check_modes(&r, "after Ctrl-C");
        CHECK(r.vt.violations == 0, "Ctrl-C run: %s", r.vt.first_violation);
        run_end(&r);
    }
    if (run_start(&r, s->sock, 24, 80, "200") == 0) {
        run_pump(&r, 600);
        kill(r.pid, SIGTERM);
        CHECK(run_wait_exit(&r, 3000), "top did not quit on SIGTERM");
        if (r.exited)
            CHECK(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGTERM,
                  "top after SIGTERM: status 0x%x", r.status);
        CHECK(ends_with(&r, "\x1b[?25h"), "SIGTERM: cursor not shown again at the end");
        check_modes(&r, "after SIGTERM");
        run_end(&r);
    }
}

static void test_plain(struct h_sup *s)
{
    static char out[1 << 16];
    int rc = h_ctl(s, out, sizeof out, "top", "--once", "--interval", "300", (const char *)NULL);
    CHECK_EQ(rc, 0);
    CHECK(strchr(out, 0x1b) == NULL, "escape sequences in top --once on a pipe");
    CHECK(strstr(out, "oag-supervisor pid") != NULL, "no header in top --once");
    check_all_running(out, "top --once");
    printf("top --once:\n%s", out);

    rc = h_ctl(s, out, sizeof out, "top", (const char *)NULL); /* not a terminal: one frame */
    CHECK_EQ(rc, 0);
    CHECK(strchr(out, 0x1b) == NULL, "escape sequences in top on a pipe");
    check_all_running(out, "top on a pipe");

    rc = h_ctl(s, out, sizeof out, "top", "--interval", "soon", (const char *)NULL);
    CHECK_EQ(rc, 2);
}

static void test_gone(struct h_sup *s)
{
    static struct run r;
    if (run_start(&r, s->sock, 24, 80, "200")) {
        CHECK(0, "could not start top on a pseudo-terminal");
        return;
    }
    run_pump(&r, 800);
    CHECK(r.vt.homes >= 2, "%d frames before the kill", r.vt.homes);
    kill(s->pid, SIGKILL);
    CHECK(run_wait_exit(&r, 5000), "top still running 5 s after the supervisor died");
    if (r.exited)
        CHECK(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1,
              "top after the supervisor died: status 0x%x", r.status);
    CHECK(log_has(&r, "supervisor gone"), "no 'supervisor gone' message");
    CHECK(log_has(&r, "\x1b[?25h"), "cursor not shown again");
    CHECK(r.vt.cursor_visible, "cursor left hidden");
    check_modes(&r, "after the supervisor died");
    CHECK(r.vt.violations == 0, "gone run: %s", r.vt.first_violation);
    if (r.loglen > 200)
        fprintf(stderr, "top's last words: %.*s", 200, r.log + r.loglen - 200);
    run_end(&r);
}

int main(void)
{
    h_init(100);
    const char *worker = h_env_bin("OAG_AGENT_WORKER");
    h_env_bin("OAG_CTL");
    struct h_sup s;
    char nagents[8];
    snprintf(nagents, sizeof nagents, "%d", NAGENTS);
    const char *extra[] = { "--backend", "identity", "--agents", nagents, NULL };
    const char *cmd[] = { worker, "--forever", "--window", "8", "--quiet", NULL };
    if (h_sup_start(&s, "top", 0700, extra, cmd) == 0) {
        struct h_status st;
        if (h_wait_running(&s, NAGENTS, 1, 15000, &st) == 0) {
            test_live(&s);
            test_signals(&s);
            test_plain(&s);
            test_gone(&s); /* last: kills the supervisor */
        } else {
            h_failures++;
        }
    }
    h_cleanup(&s);
    if (h_failures) {
        printf("FAILED: %d check(s)\n", h_failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
