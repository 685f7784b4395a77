/*
 * format.c - how the human tables write numbers: rates with k/M suffixes, microseconds with the
 * precision their size deserves, fractions as percentages. Each writes into buf (cap bytes) and
 * returns it, so that several can appear in one printf.
 */
#include "bench.h"

const char *fmt_rate(char *buf, size_t cap, double r)
{
    if (r >= 1e6)
        snprintf(buf, cap, "%.2f M", r / 1e6);
    else if (r >= 1e3)
        snprintf(buf, cap, "%.1f k", r / 1e3);
    else
        snprintf(buf, cap, "%.1f  ", r);
    return buf;
}

const char *fmt_us(char *buf, size_t cap, double us)
{
    if (us <= 0)
        snprintf(buf, cap, "-");
    else if (us < 10)
        snprintf(buf, cap, "%.2f", us);
    else if (us < 100000)
        snprintf(buf, cap, "%.1f", us);
    else
        snprintf(buf, cap, "%.0f", us);
    return buf;
}

const char *fmt_pct(char *buf, size_t cap, double f)
{
    if (f < 0)
        snprintf(buf, cap, "n/a");
    else
        snprintf(buf, cap, "%.0f%%", f * 100);
    return buf;
}
