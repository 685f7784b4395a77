/*
 * cpulist.c - CPU lists ("0-3,8") to and from cpu_set_t (cpus.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "cpus.h"

int cpus_parse(const char *s, cpu_set_t *set, char *err, size_t errlen)
{
    CPU_ZERO(set);
    const char *p = s;
    if (!*p) {
        snprintf(err, errlen, "empty CPU list");
        return -EINVAL;
    }
    while (*p) {
        char *end;
        errno = 0;
        unsigned long a = strtoul(p, &end, 10), b;
        if (end == p || errno || *p == '-' || *p == '+' || a >= CPU_SETSIZE)
            goto bad;
        b = a;
        if (*end == '-') {
            const char *q = end + 1;
            b = strtoul(q, &end, 10);
            if (end == q || errno || *q == '-' || *q == '+' || b >= CPU_SETSIZE || b < a)
                goto bad;
        }
        for (unsigned long i = a; i <= b; i++)
            CPU_SET(i, set);
        if (*end == ',' && end[1])
            end++;
        else if (*end)
            goto bad;
        p = end;
    }
    return 0;
bad:
    snprintf(err, errlen, "expected a CPU list like 0-3,8 (CPUs below %d), got '%s'",
             CPU_SETSIZE, s);
    return -EINVAL;
}

void cpus_format(const cpu_set_t *set, char *out, size_t cap)
{
    size_t n = 0;
    if (cap)
        out[0] = '\0';
    for (int i = 0; i < CPU_SETSIZE; i++) {
        if (!CPU_ISSET(i, set))
            continue;
        int j = i;
        while (j + 1 < CPU_SETSIZE && CPU_ISSET(j + 1, set))
            j++;
        int w = j > i ? snprintf(out + n, cap > n ? cap - n : 0, "%s%d-%d", n ? "," : "", i, j)
                      : snprintf(out + n, cap > n ? cap - n : 0, "%s%d", n ? "," : "", i);
        if (w < 0 || n + (size_t)w >= cap)
            return;
        n += (size_t)w;
        i = j;
    }
}
