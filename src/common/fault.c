/*
 * fault.c - the fault-injection counters (fault.h) and the --wrap wrappers the supervisor is
 * linked with in fault-injection builds. Each __wrap_F counts one call of its kind and either
 * fails it as F would (NULL / MAP_FAILED / -1 with errno) or calls __real_F.
 */
#include "fault.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

static const char *const kind_names[OAG_FAULT_NKINDS] = { "alloc", "mmap", "eventfd", "socket",
                                                          "cuda" };

/* Parsed once (first call); fail_at[k] = 0: never. Counters count every call of a kind. */
static atomic_int parsed; /* 0 not yet, 1 parsing, 2 done */
static uint64_t fail_at[OAG_FAULT_NKINDS];
static int log_calls;
static atomic_uint_fast64_t calls[OAG_FAULT_NKINDS];

static void parse(void)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&parsed, &expect, 1)) {
        while (atomic_load(&parsed) != 2)
            ; /* another thread is parsing: a few instructions */
        return;
    }
    const char *v = getenv("OAG_FAULT_INJECT");
    const char *lg = getenv("OAG_FAULT_LOG");
    log_calls = lg && *lg && *lg != '0';
    while (v && *v) {
        for (int k = 0; k < OAG_FAULT_NKINDS; k++) {
            size_t n = strlen(kind_names[k]);
            if (!strncmp(v, kind_names[k], n) && v[n] == ':') {
                fail_at[k] = strtoull(v + n + 1, NULL, 10);
                break;
            }
        }
        v = strchr(v, ',');
        if (v)
            v++;
    }
    atomic_store(&parsed, 2);
}

int oag_fault_hit(enum oag_fault_kind k, const char *fn)
{
    if (atomic_load_explicit(&parsed, memory_order_acquire) != 2)
        parse();
    uint64_t n = atomic_fetch_add(&calls[k], 1) + 1;
    char line[96];
    if (n == fail_at[k]) {
        int len = snprintf(line, sizeof line, "oag-fault: injected %s #%llu (%s)\n",
                           kind_names[k], (unsigned long long)n, fn);
        if (write(2, line, (size_t)len) < 0) {
            /* nothing to do */
        }
        return 1;
    }
    if (log_calls) {
        int len = snprintf(line, sizeof line, "oag-fault: %s #%llu (%s)\n", kind_names[k],
                           (unsigned long long)n, fn);
        if (write(2, line, (size_t)len) < 0) {
            /* nothing to do */
        }
    }
    return 0;
}

/* ---- wrappers (-Wl,--wrap=F in the supervisor's link) -------------------------------------- */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t sz);
void *__real_realloc(void *p, size_t n);
void *__real_aligned_alloc(size_t al, size_t n);
int __real_posix_memalign(void **p, size_t al, size_t n);
char *__real_strdup(const char *s);
void *__real_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off);
void *__real_mmap64(void *a, size_t n, int prot, int flags, int fd, off_t off);
int __real_memfd_create(const char *name, unsigned flags);
int __real_shm_open(const char *name, int oflag, mode_t mode);
int __real_eventfd(unsigned v, int flags);
int __real_signalfd(int fd, const sigset_t *mask, int flags);
int __real_socket(int dom, int type, int proto);
int __real_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);

void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t sz);
void *__wrap_realloc(void *p, size_t n);
void *__wrap_aligned_alloc(size_t al, size_t n);
int __wrap_posix_memalign(void **p, size_t al, size_t n);
char *__wrap_strdup(const char *s);
void *__wrap_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off);
void *__wrap_mmap64(void *a, size_t n, int prot, int flags, int fd, off_t off);
int __wrap_memfd_create(const char *name, unsigned flags);
int __wrap_shm_open(const char *name, int oflag, mode_t mode);
int __wrap_eventfd(unsigned v, int flags);
int __wrap_signalfd(int fd, const sigset_t *mask, int flags);
int __wrap_socket(int dom, int type, int proto);
int __wrap_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags);

#define FAIL_NULL(kind, fn, err)                                                               \
    do {                                                                                       \
        if (oag_fault_hit(kind, fn)) {                                                         \
            errno = err;                                                                       \
            return NULL;                                                                       \
        }                                                                                      \
    } while (0)
#define FAIL_FD(kind, fn, err)                                                                 \
    do {                                                                                       \
        if (oag_fault_hit(kind, fn)) {                                                         \
            errno = err;                                                                       \
            return -1;                                                                         \
        }                                                                                      \
    } while (0)

void *__wrap_malloc(size_t n)
{
    FAIL_NULL(OAG_FAULT_ALLOC, "malloc", ENOMEM);
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t sz)
{
    FAIL_NULL(OAG_FAULT_ALLOC, "calloc", ENOMEM);
    return __real_calloc(n, sz);
}

void *__wrap_realloc(void *p, size_t n)
{
    FAIL_NULL(OAG_FAULT_ALLOC, "realloc", ENOMEM);
    return __real_realloc(p, n);
}

void *__wrap_aligned_alloc(size_t al, size_t n)
{
    FAIL_NULL(OAG_FAULT_ALLOC, "aligned_alloc", ENOMEM);
    return __real_aligned_alloc(al, n);
}

int __wrap_posix_memalign(void **p, size_t al, size_t n)
{
    if (oag_fault_hit(OAG_FAULT_ALLOC, "posix_memalign"))
        return ENOMEM;
    return __real_posix_memalign(p, al, n);
}

char *__wrap_strdup(const char *s)
{
    FAIL_NULL(OAG_FAULT_ALLOC, "strdup", ENOMEM);
    return __real_strdup(s);
}

void *__wrap_mmap(void *a, size_t n, int prot, int flags, int fd, off_t off)
{
    if (oag_fault_hit(OAG_FAULT_MMAP, "mmap")) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap(a, n, prot, flags, fd, off);
}

/* With _FILE_OFFSET_BITS=64, <sys/mman.h> redirects mmap to mmap64. */
void *__wrap_mmap64(void *a, size_t n, int prot, int flags, int fd, off_t off)
{
    if (oag_fault_hit(OAG_FAULT_MMAP, "mmap")) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap64(a, n, prot, flags, fd, off);
}

int __wrap_memfd_create(const char *name, unsigned flags)
{
    FAIL_FD(OAG_FAULT_MMAP, "memfd_create", EMFILE);
    return __real_memfd_create(name, flags);
}

int __wrap_shm_open(const char *name, int oflag, mode_t mode)
{
    FAIL_FD(OAG_FAULT_MMAP, "shm_open", EMFILE);
    return __real_shm_open(name, oflag, mode);
}

int __wrap_eventfd(unsigned v, int flags)
{
    FAIL_FD(OAG_FAULT_EVENTFD, "eventfd", EMFILE);
    return __real_eventfd(v, flags);
}

int __wrap_signalfd(int fd, const sigset_t *mask, int flags)
{
    FAIL_FD(OAG_FAULT_EVENTFD, "signalfd", EMFILE);
    return __real_signalfd(fd, mask, flags);
}

int __wrap_socket(int dom, int type, int proto)
{
    FAIL_FD(OAG_FAULT_SOCKET, "socket", EMFILE);
    return __real_socket(dom, type, proto);
}

int __wrap_accept4(int fd, struct sockaddr *sa, socklen_t *len, int flags)
{
    FAIL_FD(OAG_FAULT_SOCKET, "accept4", EMFILE);
    return __real_accept4(fd, sa, len, flags);
}
