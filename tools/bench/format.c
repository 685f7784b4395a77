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

/* The host's CPUs for a report's header: "16 online CPUs (8 cores x 2 threads, MODEL)", the
 * cores counted from sysfs topology (distinct package/core pairs of the online CPUs), the model
 * from /proc/cpuinfo; the parts that cannot be read are left out. Whether agents spinning share
 * a core with the supervisor's threads, and how fast those cores are, changes the figures. */
const char *fmt_host_cpus(char *buf, size_t cap)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    char model[96] = "";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            const char *c = strchr(line, ':');
            if (!strncmp(line, "model name", 10) && c) {
                snprintf(model, sizeof model, "%s", c + 2);
                model[strcspn(model, "\n")] = 0;
                break;
            }
        }
        fclose(f);
    }
    /* package << 20 | core of each online CPU; distinct ones are cores */
    enum { MAXC = 1024 };
    uint32_t ids[MAXC];
    int cores = 0, cpus = 0;
    for (int i = 0; i < MAXC && cpus < n; i++) {
        char p[96];
        long pkg = -1, core = -1;
        snprintf(p, sizeof p, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", i);
        if ((f = fopen(p, "r"))) {
            if (fscanf(f, "%ld", &pkg) != 1)
                pkg = -1;
            fclose(f);
        }
        snprintf(p, sizeof p, "/sys/devices/system/cpu/cpu%d/topology/core_id", i);
        if ((f = fopen(p, "r"))) {
            if (fscanf(f, "%ld", &core) != 1)
                core = -1;
            fclose(f);
        }
        if (pkg < 0 || core < 0)
            continue;
        cpus++;
        uint32_t id = (uint32_t)pkg << 20 | ((uint32_t)core & 0xfffff);
        int seen = 0;
        for (int k = 0; k < cores && !seen; k++)
            seen = ids[k] == id;
        if (!seen)
            ids[cores++] = id;
    }
    char topo[48] = "";
    if (cores > 0 && cpus == n && n % cores == 0)
        snprintf(topo, sizeof topo, "%d cores x %ld thread%s", cores, n / cores,
                 n / cores == 1 ? "" : "s");
    snprintf(buf, cap, "%ld online CPUs%s%s%s%s%s", n, topo[0] || model[0] ? " (" : "", topo,
             topo[0] && model[0] ? ", " : "", model, topo[0] || model[0] ? ")" : "");
    return buf;
}
