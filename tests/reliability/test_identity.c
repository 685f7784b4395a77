/*
 * test_identity.c - scenario 11: identity and permissions.
 *
 *   (a) a segment pre-created under the supervisor's name by someone else (here: the same uid,
 *       mode 0666, 1 byte, its fd kept open by the "attacker"): the supervisor never uses it. It
 *       removes it under its instance lock and creates its own: the name then refers to a new
 *       object (other inode) of mode 0600 and the region's size, the attacker's object is left
 *       untouched (still 1 byte), and agents get the real region (they receive it as an fd over
 *       the socket, never by name);
 *   (b) (root) another uid (65534) on the control socket: with the default socket mode (0600)
 *       it cannot connect at all; with --socket-mode 0666 its oag-ctl command and its agent
 *       connect are refused by the credential check (-EACCES), and the supervisor goes on;
 *   (c) (root) a supervisor running as uid 65534 whose segment name was pre-created by root
 *       (mode 0644): it cannot remove it (sticky /dev/shm) and refuses to start with one line
 *       naming the segment, exit code 1, leaving root's object as it was.
 */
#include "rel.h"

#include <grp.h>

static int drop_to_nobody(void)
{
    return setgroups(0, NULL) == 0 && setgid(65534) == 0 && setuid(65534) == 0 ? 0 : -1;
}

/* Runs fn-like actions as uid 65534 in a child; returns the child's exit code. */
static int as_nobody_connect(const char *sock)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (drop_to_nobody())
            _exit(101);
        oag_client *c = NULL;
        int rc = oag_connect(&c, sock);
        fprintf(stderr, "    uid 65534 oag_connect: %d (%s) \"%s\"\n", rc, oag_strerror(rc),
                oag_last_error());
        oag_close(c);
        _exit(rc == -EACCES ? 0 : rc == 0 ? 2 : 3);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static int as_nobody_ctl(const char *sock)
{
    const char *ctl = h_env_bin("OAG_CTL");
    pid_t pid = fork();
    if (pid == 0) {
        if (drop_to_nobody())
            _exit(101);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execl(ctl, ctl, "-s", sock, "status", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 100;
}

static void part_a(void)
{
    struct rel_sup s;
    rel_sup_init(&s, "precreate");
    char shm[256], path[300];
    h_shm_name(shm, sizeof shm, s.name);
    snprintf(path, sizeof path, "/dev/shm/%s", shm);
    int afd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    CHECK(afd >= 0, "pre-create %s: %s", path, strerror(errno));
    fchmod(afd, 0666);
    CHECK(write(afd, "x", 1) == 1, "write");
    struct stat a0;
    fstat(afd, &a0);
    const char *args[] = { "--backend", "identity", NULL };
    int rc = rel_sup_start(&s, args);
    CHECK(rc == 0, "supervisor refused to start over a pre-created segment");
    if (rc == 0) {
        struct stat n, a1;
        CHECK(stat(path, &n) == 0, "no segment after start");
        fstat(afd, &a1);
        printf("(a) pre-created %s (inode %lu, mode %o, %lld bytes) -> supervisor's segment inode "
               "%lu, mode %o, %lld bytes, uid %u; attacker's object now %lld bytes\n", path,
               (unsigned long)a0.st_ino, (unsigned)(a0.st_mode & 0777), (long long)a0.st_size,
               (unsigned long)n.st_ino, (unsigned)(n.st_mode & 0777), (long long)n.st_size,
               (unsigned)n.st_uid, (long long)a1.st_size);
        CHECK(n.st_ino != a0.st_ino, "the supervisor uses the pre-created object");
        CHECK((n.st_mode & 0777) == 0600, "segment mode %o", (unsigned)(n.st_mode & 0777));
        CHECK(n.st_uid == geteuid(), "segment owner %u", (unsigned)n.st_uid);
        CHECK(n.st_size >= (off_t)sizeof(struct oag_region), "segment size %lld",
              (long long)n.st_size);
        CHECK(a1.st_size == 1, "the attacker's object was changed (%lld bytes)",
              (long long)a1.st_size);
        oag_client *c = NULL;
        CHECK_EQ(oag_connect(&c, s.sock), 0);
        if (c) {
            uint8_t in[16] = { 9 }, out[16];
            size_t ol = 0;
            CHECK_EQ(oag_infer(c, in, sizeof in, out, sizeof out, &ol, 5000), 0);
            oag_close(c);
        }
        int st = rel_sup_stop(&s);
        CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: 0x%x", st);
    }
    if (afd >= 0)
        close(afd);
    rel_sup_cleanup(&s);
}

static void part_b(void)
{
    for (int k = 0; k < 2; k++) {
        struct rel_sup s;
        rel_sup_init(&s, "otheruid");
        const char *def[] = { "--backend", "identity", NULL };
        const char *open_mode[] = { "--backend", "identity", "--socket-mode", "0666", NULL };
        if (rel_sup_start(&s, k ? open_mode : def)) {
            CHECK(0, "start failed");
            rel_sup_cleanup(&s);
            continue;
        }
        int ctl = as_nobody_ctl(s.sock), ag = as_nobody_connect(s.sock);
        long long refused = rel_status_num(s.sock, "refused");
        printf("(b) socket mode %s: uid 65534 oag-ctl status exit %d, agent connect %s; "
               "supervisor refused %lld connection(s)\n", k ? "0666" : "0600 (default)", ctl,
               ag == 0 ? "-EACCES" : "not refused by the check (cannot connect)", refused);
        CHECK(ctl != 0, "uid 65534 ran oag-ctl status");
        if (k) {
            CHECK(ag == 0, "uid 65534 agent connect: child exit %d (0 means -EACCES)", ag);
            CHECK(refused >= 2, "supervisor counted %lld refusals", refused);
        } else {
            CHECK(ag == 3 || ag == 0, "uid 65534 agent connect to a 0600 socket: child exit %d",
                  ag);
        }
        CHECK(h_sup_alive_pid(s.pid), "supervisor died");
        rel_sup_stop(&s);
        rel_sup_cleanup(&s);
    }
}

static void part_c(void)
{
    char dir[256], name[80], sock[400], errp[400], shm[300], path[400];
    h_tmpdir(dir, sizeof dir, "nobody", 0777);
    chown(dir, 65534, 65534);
    h_unique_name(name, sizeof name, "nobody");
    snprintf(sock, sizeof sock, "%s/s.sock", dir);
    snprintf(errp, sizeof errp, "%s/stderr", dir);
    snprintf(shm, sizeof shm, "oag-65534-%s", name);
    snprintf(path, sizeof path, "/dev/shm/%s", shm);
    int rfd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    CHECK(rfd >= 0, "pre-create as root: %s", strerror(errno));
    fchmod(rfd, 0644);
    const char *sup = h_env_bin("OAG_SUPERVISOR");
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(errp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
        dup2(fd, 2);
        if (drop_to_nobody())
            _exit(101);
        unsetenv("XDG_RUNTIME_DIR");
        execl(sup, sup, "--name", name, "--socket", sock, "--backend", "identity", (char *)NULL);
        _exit(127);
    }
    int st = 0;
    uint64_t end = h_now_ms() + 10000;
    int done = 0;
    while (h_now_ms() < end && !(done = waitpid(pid, &st, WNOHANG) == pid))
        h_sleep_ms(10);
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    char log[4096];
    rel_read_file(errp, log, sizeof log);
    struct stat r1;
    fstat(rfd, &r1);
    printf("(c) uid 65534 supervisor over root's pre-created %s: exit %d, said: %s", path,
           WIFEXITED(st) ? WEXITSTATUS(st) : -1, log);
    CHECK(done && WIFEXITED(st) && WEXITSTATUS(st) == 1, "status 0x%x (done %d)", st, done);
    CHECK(strstr(log, shm) != NULL, "the refusal does not name the segment");
    CHECK(access(path, F_OK) == 0 && r1.st_uid == 0 && r1.st_size == 0,
          "root's object was changed or removed");
    close(rfd);
    unlink(path);
    h_rmtree(dir);
    /* The lock directory the supervisor made for uid 65534. */
    h_rmtree("/tmp/oag-65534");
}

int main(void)
{
    h_init(60);
    part_a();
    if (geteuid() == 0) {
        part_b();
        part_c();
    } else {
        printf("(b), (c): SKIPPED (not root)\n");
    }
    printf("%s\n", h_failures ? "FAIL" : "PASS");
    return h_failures ? 1 : 0;
}
