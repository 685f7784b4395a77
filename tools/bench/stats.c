#include "bench.h"

/* ---- statistics -------------------------------------------------------------------------- */

int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Index of the nearest-rank q-percentile among n sorted samples (n >= 1). */
size_t rank_index(size_t n, double q)
{
    double x = q * (double)n;
    size_t k = (size_t)x;
    if ((double)k < x)
        k++;
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return k - 1;
}

/* Nearest-rank percentile of sorted samples (ns), in microseconds. */
double pct_us(const uint32_t *s, size_t n, double q)
{
    return s[rank_index(n, q)] / 1000.0;
}

void summarize(struct lat_res *r, uint32_t *s, size_t n)
{
    qsort(s, n, sizeof *s, cmp_u32);
    r->p50 = pct_us(s, n, 0.50);
    r->p99 = pct_us(s, n, 0.99);
    r->p999 = pct_us(s, n, 0.999);
    r->max = s[n - 1] / 1000.0;
    r->ok = 1;
}

uint32_t clamp_ns(uint64_t ns)
{
    return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}
uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

uint32_t round64(uint32_t v)
{
    return (v + 63u) & ~63u;
}

unsigned next_pow2(unsigned v)
{
    unsigned p = 1;
    while (p < v && p < (1u << 30))
        p <<= 1;
    return p;
}

int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted doubles. */
double pct_d(const double *s, size_t n, double q)
{
    return s[rank_index(n, q)];
}
