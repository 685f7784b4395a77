#include "bench.h"

/* ---- the report ---------------------------------------------------------------------------- */

static void print_lat(const struct lat_res *r, const struct lat_res *base, const char *base_name,
                      double target)
{
    if (!r->ok) {
        printf("  %-48s %9s %9s %9s   %s\n", r->name, "n/a", "n/a", "n/a", "(failed or skipped)");
        return;
    }
    /* Three decimals below 10 us: the floor is a few hundred nanoseconds. */
    printf("  %-48s %9.*f %9.*f %9.*f", r->name, r->p50 < 10 ? 3 : 2, r->p50,
           r->p99 < 10 ? 3 : 2, r->p99, r->p999 < 10 ? 3 : 2, r->p999);
    if (base && base->ok) {
        double ratio = r->p50 / base->p50;
        printf("   %5.2fx %-8s target <= %.1fx: %s", ratio, base_name, target,
               ratio <= target ? "PASS" : "MISS");
    }
    printf("\n");
}

void print_report(const struct opts *o, const struct lat_res lat[5],
                         const struct tput_res *tp, int ntp, const struct tput_res *zp)
{
    struct utsname u;
    char b1[32], b2[32];
    uname(&u);
    char hc[192];
    printf("\noag-bench (liboag %s): %d-byte messages, %s, %s %s %s\n", oag_version(), MSG,
           fmt_host_cpus(hc, sizeof hc), u.sysname, u.release, u.machine);
    printf("\nRound-trip latency, microseconds (%u round trips per path after %u warm-up; "
           "p50 ratio vs baseline)\n", o->iters, o->warmup);
    printf("  %-48s %9s %9s %9s\n", "path", "p50", "p99", "p99.9");
    print_lat(&lat[0], NULL, NULL, 0);
    print_lat(&lat[1], NULL, NULL, 0);
    print_lat(&lat[2], NULL, NULL, 0);
    print_lat(&lat[3], &lat[0], "ring", 2.0);
    print_lat(&lat[4], &lat[1], "eventfd", 1.2);

    printf("\nThroughput, round trips/s (64-byte tasks, window %u per agent, %.1f s per row%s%s)\n",
           o->window, o->duration_s, o->tput_spin_us ? ", agents with OAG_SPIN_US=" : "",
           o->tput_spin_us ? o->tput_spin_us : "");
    printf("  %-48s %12s\n", "path", "tasks/s");
    const struct tput_res *oag8 = NULL;
    for (int i = 0; i < ntp; i++) {
        const struct tput_res *t = &tp[i];
        if (!t->ok) {
            printf("  %-48s %12s   (failed or skipped)\n", t->name, "n/a");
            continue;
        }
        printf("  %-48s %12s", t->name, fmt_rate(b1, sizeof b1, t->rate));
        if (t->agents == o->zmq_agents && zp->ok)
            printf("   %5.2fx ZeroMQ pipeline", t->rate / zp->rate);
        if (t->agents == 8)
            oag8 = t;
        printf("\n");
    }
    if (zp->ok)
        printf("  %-48s %12s\n", zp->name, fmt_rate(b1, sizeof b1, zp->rate));
    else
        printf("  %-48s %12s   (failed or skipped)\n", zp->name, "n/a");

    printf("\nTargets (issue 2; informative)\n");
    if (lat[3].ok && lat[0].ok)
        printf("  %-58s %7.2fx  %s\n", "oag_infer p50 awake   <= 2x bare busy-poll ring",
               lat[3].p50 / lat[0].p50, lat[3].p50 <= 2.0 * lat[0].p50 ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag_infer p50 awake   <= 2x bare busy-poll ring", "n/a",
               "-");
    if (lat[4].ok && lat[1].ok)
        printf("  %-58s %7.2fx  %s\n", "oag_infer p50 asleep  <= 1.2x bare eventfd",
               lat[4].p50 / lat[1].p50, lat[4].p50 <= 1.2 * lat[1].p50 ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag_infer p50 asleep  <= 1.2x bare eventfd", "n/a", "-");
    if (oag8 && oag8->agents == 8)
        printf("  %-58s %8s  %s\n", "oag 8 agents          >= 5 M tasks/s",
               fmt_rate(b2, sizeof b2, oag8->rate), oag8->rate >= 5e6 ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag 8 agents          >= 5 M tasks/s", "n/a", "-");
    if (oag8 && oag8->agents == 8 && zp->ok && o->zmq_agents == 8)
        printf("  %-58s %7.2fx  %s\n", "oag 8 agents          >= 3x ZeroMQ pipeline (8 agents)",
               oag8->rate / zp->rate, oag8->rate >= 3.0 * zp->rate ? "PASS" : "MISS");
    else
        printf("  %-58s %8s  %s\n", "oag 8 agents          >= 3x ZeroMQ pipeline (8 agents)",
               "n/a", "-");
    fflush(stdout);
}

/* Identity mode (the default without --model/--gen-models/table): latency of the five paths,
 * then throughput of the oag rows and the ZeroMQ pipeline, then the report. Returns the exit
 * status: 0, 1 (a part failed) or 130 (interrupted). Cleans up its children. */
int identity_main(struct opts *o)
{
    int failures = 0, rc;
    uint32_t *samples = malloc((size_t)o->iters * sizeof *samples);
    struct lat_res lat[5] = {
        { .name = "bare shm ring, both sides busy-poll (floor)" },
        { .name = "shm ring + eventfd, blocking read()" },
        { .name = "ZeroMQ PAIR ipc://" },
        { .name = "oag_infer, awake (default spin)" },
        { .name = "oag_infer, asleep (--spin-us 0, OAG_SPIN_US=0)" },
    };
    struct tput_res tp[MAX_ROWS];
    struct tput_res zp = { .name = "" };
    memset(tp, 0, sizeof tp);
    snprintf(zp.name, sizeof zp.name, "ZeroMQ PUSH/PULL pipeline, %u agents", o->zmq_agents);
    if (!samples) {
        warn("out of memory");
        failures++;
        goto done;
    }

    if (!o->no_latency) {
        for (int k = 0; k < 5 && !g_stop; k++) {
            if (k >= 3 && o->no_oag)
                break;
            fprintf(stderr, "oag-bench: latency: %s ...\n", lat[k].name);
            switch (k) {
            case 0: rc = bench_pingpong(o, 0, samples); break;
            case 1: rc = bench_pingpong(o, 1, samples); break;
            case 2: rc = bench_zmq_pair(o, samples); break;
            default: rc = bench_oag_latency(o, k == 4, samples); break;
            }
            if (rc) {
                warn("latency: %s: %s", lat[k].name, oag_strerror(rc));
                failures++;
            } else {
                summarize(&lat[k], samples, o->iters);
            }
        }
    }

    if (!o->no_throughput && !g_stop) {
        fprintf(stderr, "oag-bench: throughput: %s ...\n", zp.name);
        rc = bench_zmq_pipeline(o, &zp);
        if (rc) {
            warn("throughput: %s: %s", zp.name, oag_strerror(rc));
            failures++;
        }
        for (int i = 0; i < o->nrows; i++)
            snprintf(tp[i].name, sizeof tp[i].name, "oag, %u agent%s", o->agents[i],
                     o->agents[i] == 1 ? "" : "s");
        if (!o->no_oag && !g_stop) {
            unsigned maxa = 8;
            for (int i = 0; i < o->nrows; i++)
                if (o->agents[i] > maxa)
                    maxa = o->agents[i];
            char slots[16], lanes[16];
            snprintf(slots, sizeof slots, "%u", o->ring_slots);
            snprintf(lanes, sizeof lanes, "%u", maxa + 16);
            const char *extra[] = { "--ring-slots", slots, "--max-lanes", lanes, NULL };
            struct sup s;
            rc = sup_start(o, &s, extra);
            if (rc) {
                warn("throughput: supervisor: %s", oag_strerror(rc));
                failures++;
            } else {
                for (int i = 0; i < o->nrows && !g_stop; i++) {
                    fprintf(stderr, "oag-bench: throughput: %s ...\n", tp[i].name);
                    struct tput_agent proto = {
                        .setup = ag_oag_setup, .fill = ag_oag_fill, .reap = ag_oag_reap,
                        .teardown = ag_oag_teardown, .window = o->window, .endpoint = s.sock,
                    };
                    rc = bench_throughput(o, &proto, o->agents[i], &tp[i]);
                    if (rc) {
                        warn("throughput: %s: %s", tp[i].name, oag_strerror(rc));
                        failures++;
                    }
                }
                if (sup_stop(&s))
                    failures++;
            }
        }
    }

done:
    if (g_sup)
        sup_stop(g_sup);
    kill_all_kids();
    if (g_stop) {
        free(samples);
        return 130;
    }
    print_report(o, lat, tp, o->no_throughput ? 0 : o->nrows, &zp);
    free(samples);
    if (failures)
        warn("%d part%s failed (see above)", failures, failures == 1 ? "" : "s");
    return failures ? 1 : 0;
}
