/*
 * instance.c - one supervisor instance: its lock, control socket and shared-memory region.
 *
 * Stale state from a crashed supervisor of the same name is found through the instance lock
 * (an flock the kernel drops when its holder dies, never a pid guess): holding the lock proves
 * that no live supervisor owns the name, so a leftover region or socket is removed and recreated.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "inst.h"
#include "log.h"
#include "model/model.h"
#include "shm/endpoint.h"
#include "shm/latch.h"
#include "sup.h"

/* Makes sure dir exists, is ours and is not writable by others. */
static int secure_dir(const char *dir)
{
    struct stat st;
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        log_err("cannot create %s: %s", dir, strerror(errno));
        return -errno;
    }
    if (lstat(dir, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
        log_err("refusing %s: not a directory owned by uid %u without group/other write",
                dir, (unsigned)geteuid());
        return -EPERM;
    }
    return 0;
}

static int take_lock(struct sup *s)
{
    char dir[256];
    int rc = oag_default_dir(dir, sizeof dir);
    if (rc == 0)
        rc = secure_dir(dir);
    if (rc)
        return rc;
    snprintf(s->lock_path, sizeof s->lock_path, "%s/%s.lock", dir, s->cfg.name);
    for (int attempt = 0;; attempt++) {
        s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (s->lock_fd < 0) {
            log_err("cannot open lock %s: %s", s->lock_path, strerror(errno));
            return -errno;
        }
        if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
            char pid[32] = "?";
            ssize_t n = pread(s->lock_fd, pid, sizeof pid - 1, 0);
            if (n > 0) {
                pid[n] = '\0';
                pid[strcspn(pid, "\n")] = '\0';
            }
            log_err("a supervisor named '%s' is already running (pid %s)", s->cfg.name, pid);
            return -EEXIST;
        }
        /* The previous holder unlinks the file at exit: make sure we locked the file that is
         * still at the path, not one it just removed. */
        struct stat a, b;
        if (fstat(s->lock_fd, &a) == 0 && stat(s->lock_path, &b) == 0 && a.st_ino == b.st_ino &&
            a.st_dev == b.st_dev)
            break;
        close(s->lock_fd);
        s->lock_fd = -1;
        if (attempt == 3) {
            log_err("lock %s keeps changing under us", s->lock_path);
            return -EBUSY;
        }
    }
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
    if (ftruncate(s->lock_fd, 0) < 0 || pwrite(s->lock_fd, buf, (size_t)n, 0) != n)
        log_warn("cannot write pid to %s: %s", s->lock_path, strerror(errno));
    return 0;
}

static int open_socket(struct sup *s)
{
    const char *path = s->cfg.socket_path;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof sa.sun_path) {
        log_err("socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    strcpy(sa.sun_path, path);
    /* The default directory is secured like the lock's; a custom path's directory is the
     * operator's choice. */
    char dir[256];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    char defdir[256];
    if (slash && oag_default_dir(defdir, sizeof defdir) == 0) {
        *slash = '\0';
        if (!strcmp(dir, defdir)) {
            int rc = secure_dir(dir);
            if (rc)
                return rc;
        }
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            log_err("%s exists and is not a socket", path);
            return -EEXIST;
        }
        int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
            close(probe);
            log_err("another process is serving %s", path);
            return -EADDRINUSE;
        }
        if (probe >= 0)
            close(probe);
        log_info("removing stale socket %s", path);
        unlink(path);
    }
    s->listen_fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->listen_fd < 0) {
        int e = errno;
        log_err("cannot create the control socket: %s", strerror(e));
        return -e;
    }
    mode_t old = umask(0177);
    int rc = bind(s->listen_fd, (struct sockaddr *)&sa, sizeof sa);
    umask(old);
    if (rc < 0) {
        rc = -errno;
        log_err("cannot bind %s: %s", path, strerror(errno));
        return rc;
    }
    int mode = s->cfg.socket_mode;
    if (mode < 0)
        mode = (s->cfg.nallow_uid || s->cfg.nallow_gid) ? 0666 : 0600;
    if (chmod(path, (mode_t)mode) < 0)
        log_warn("chmod %s: %s", path, strerror(errno));
    if (listen(s->listen_fd, 512) < 0) {
        int e = errno;
        log_err("cannot listen on %s: %s", path, strerror(e));
        return -e;
    }
    return 0;
}

static int open_region(struct sup *s)
{
    int rc = oag_region_name(s->region_name, sizeof s->region_name, s->cfg.name);
    if (rc)
        return rc;
    /* We hold the instance lock: any segment with our name is a dead supervisor's. */
    if (shm_unlink(s->region_name) == 0)
        log_info("removed stale shared-memory segment %s", s->region_name);
    s->region_fd = shm_open(s->region_name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (s->region_fd < 0) {
        rc = -errno;
        log_err("shm_open %s: %s", s->region_name, strerror(errno));
        return rc;
    }
    s->region_size = (sizeof(struct oag_region) + 4095) & ~(size_t)4095;
    uint64_t results_off = s->region_size, results_size = results_area_bytes(&s->cfg);
    s->region_size += results_size;
    if (ftruncate(s->region_fd, (off_t)s->region_size) < 0) {
        rc = -errno;
        log_err("cannot size the shared-memory segment %s: %s", s->region_name, strerror(-rc));
        return rc;
    }
    /* The result area's pages are taken now: a full /dev/shm is an error here, not a SIGBUS
     * when the first batch writes there. */
    if (results_size && (rc = posix_fallocate(s->region_fd, (off_t)results_off,
                                              (off_t)results_size)) != 0) {
        log_err("cannot allocate the shared result area (%llu MB in %s): %s",
                (unsigned long long)(results_size >> 20), s->region_name, strerror(rc));
        return -rc;
    }
    void *p = mmap(NULL, s->region_size, PROT_READ | PROT_WRITE, MAP_SHARED, s->region_fd, 0);
    if (p == MAP_FAILED) {
        rc = -errno;
        log_err("cannot map the shared-memory segment %s: %s", s->region_name, strerror(-rc));
        return rc;
    }
    s->region = p;
    /* A read-only descriptor is what agents get: they can map it PROT_READ only. */
    s->region_ro_fd = shm_open(s->region_name, O_RDONLY | O_CLOEXEC, 0);
    if (s->region_ro_fd < 0) {
        rc = -errno;
        log_err("shm_open %s (read-only): %s", s->region_name, strerror(-rc));
        return rc;
    }
    struct oag_region *r = s->region;
    r->hdr.size = s->region_size;
    r->hdr.sup_pid = (uint32_t)getpid();
    r->hdr.global_off = (uint32_t)offsetof(struct oag_region, global);
    r->hdr.start_ns = s->start_ns;
    r->hdr.results_off = results_size ? results_off : 0;
    r->hdr.results_size = results_size;
    r->hdr.nshards = s->cfg.data_threads >= 1 && s->cfg.data_threads <= (int)OAG_MAX_SHARDS
                         ? (uint32_t)s->cfg.data_threads : 1;
    for (uint32_t i = 0; i < OAG_MAX_SHARDS; i++)
        oag_store_relaxed_u32(&r->shard[i].sleeping, 0);
    hints_init(s);
    instance_publish(s, 0);
    oag_store_relaxed_u32(&r->hdr.abi, OAG_ABI_VERSION);
    /* Last, with release: pairs with the acquire in the agent's map_region(). */
    oag_store_release_u32(&r->hdr.magic, OAG_REGION_MAGIC);
    return 0;
}

int instance_open(struct sup *s)
{
    int rc = take_lock(s);
    if (rc == 0)
        rc = open_socket(s);
    if (rc == 0)
        rc = open_region(s);
    return rc;
}

void instance_close(struct sup *s)
{
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
        unlink(s->cfg.socket_path);
    }
    if (s->region) {
        munmap(s->region, s->region_size);
        s->region = NULL;
    }
    if (s->region_fd >= 0) {
        close(s->region_fd);
        shm_unlink(s->region_name);
        s->region_fd = -1;
    }
    if (s->region_ro_fd >= 0)
        close(s->region_ro_fd);
    if (s->lock_fd >= 0) {
        unlink(s->lock_path);
        close(s->lock_fd);
    }
    s->region_ro_fd = s->lock_fd = -1;
}

void instance_publish(struct sup *s, int ready)
{
    struct oag_global_state g;
    memset(&g, 0, sizeof g);
    g.generation = ++s->generation;
    struct shard_totals t;
    shards_totals(s, &t); /* world stopped, or before the shard threads run */
    g.tasks_done = t.tasks_done;
    g.sup_pid = (uint32_t)getpid();
    g.max_payload = s->cfg.max_payload;
    g.max_batch = s->cfg.max_batch;
    g.max_delay_us = s->cfg.max_delay_us;
    g.ring_slots = s->cfg.ring_slots;
    g.agents = s->nactive;
    g.ready = (uint32_t)(ready && s->ready && !s->draining); /* draining: not ready */
    snprintf(g.engine, sizeof g.engine, "%s", s->engine_ops ? s->engine_ops->name : s->cfg.backend);
    snprintf(g.model, sizeof g.model, "%s", s->model_name);
    g.model_version = s->model_version;
    const struct oag_model *m = engines_model(s);
    if (m) {
        g.input_dim = m->input_dim;
        g.output_dim = m->output_dim;
    }
    latch_write(&s->region->global.seq, s->region->global.rec[0], sizeof g / 8, &g);
    s->last_publish_ns = now_ns();
}
