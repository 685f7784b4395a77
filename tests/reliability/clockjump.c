/*
 * clockjump.c - an LD_PRELOAD shim for test_clock: the wall clock (CLOCK_REALTIME and its
 * coarse variant, gettimeofday, time) of the process it is loaded into steps back and forth
 * by hours every 200 ms of CLOCK_MONOTONIC: +1 h, -1 h, +1 day, -1 day, ... as an NTP step or
 * an operator's `date -s` would. CLOCK_MONOTONIC and the others are passed through unchanged.
 * Not a test by itself.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <sys/time.h>
#include <time.h>

static int (*real_cg)(clockid_t, struct timespec *);

static long long offset_s(void)
{
    static const long long steps[] = { 3600, -3600, 86400, -86400, 0 };
    struct timespec m;
    real_cg(CLOCK_MONOTONIC, &m);
    long long slot = ((long long)m.tv_sec * 1000 + m.tv_nsec / 1000000) / 200;
    return steps[slot % 5];
}

static void init(void)
{
    if (!real_cg)
        real_cg = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    init();
    int rc = real_cg(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += offset_s();
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
    (void)tz;
    struct timespec ts;
    int rc = clock_gettime(CLOCK_REALTIME, &ts);
    if (rc == 0) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return rc;
}

time_t time(time_t *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
