/*
 * oag-demo-agent - what a fleet agent looks like: think a little, infer, repeat; print the rate
 * at exit. Run by the README's first command under oag-supervisor.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "oag/oag.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "Thinking": a little CPU work between inferences, like an agent's own logic. */
static uint64_t think(unsigned us, uint64_t x)
{
    double end = now_s() + us / 1e6;
    do {
        for (int i = 0; i < 64; i++)
            x = x * 6364136223846793005ull + 1442695040888963407ull;
    } while (now_s() < end);
    return x;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = { { "tasks", required_argument, 0, 't' },
                                          { "think-us", required_argument, 0, 'k' },
                                          { "size", required_argument, 0, 's' },
                                          { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 } };
    long tasks = 20000, think_us = 20, size = 64;
    int o;
    while ((o = getopt_long(argc, argv, "t:k:s:h", opts, NULL)) != -1) {
        switch (o) {
        case 't': tasks = strtol(optarg, NULL, 10); break;
        case 'k': think_us = strtol(optarg, NULL, 10); break;
        case 's': size = strtol(optarg, NULL, 10); break;
        case 'h':
            printf("usage: oag-demo-agent [--tasks N] [--think-us US] [--size BYTES]\n"
                   "Connects to $OAG_ENDPOINT, then thinks THINK-US, infers, repeats N times.\n");
            return 0;
        default: return 2;
        }
    }
    if (tasks < 1 || think_us < 0 || size < 1 || size > (1 << 20)) {
        fprintf(stderr, "oag-demo-agent: bad arguments\n");
        return 2;
    }
    oag_client *c;
    int rc = oag_connect(&c, NULL);
    if (rc) {
        fprintf(stderr, "oag-demo-agent: connect: %s (%s)\n", oag_strerror(rc), oag_last_error());
        return 1;
    }
    oag_info info;
    oag_get_info(c, &info);
    int identity = !strcmp(info.engine, "identity");
    size_t out_size = (size_t)size;
    if (info.input_dim) {
        /* A model: a task is one row of input_dim floats, a result output_dim floats. */
        size = (long)info.input_dim * 4;
        out_size = (size_t)info.output_dim * 4;
    }
    const char *id = getenv("OAG_AGENT_ID");
    unsigned char *in = malloc((size_t)size), *out = malloc(out_size);
    uint64_t x = (uint64_t)getpid();
    long bad = 0;
    double t0 = now_s(), waited = 0;
    for (long i = 0; i < tasks; i++) {
        x = think((unsigned)think_us, x);
        if (info.input_dim) {
            for (uint32_t k = 0; k < info.input_dim; k++) {
                float v = (float)((x >> (k % 40)) & 0xffff) / 32768.0f - 1.0f;
                memcpy(in + (size_t)k * 4, &v, 4);
            }
        } else {
            for (long b = 0; b < size; b++)
                in[b] = (unsigned char)(x >> ((b & 7) * 8)) ^ (unsigned char)b;
        }
        size_t got = 0;
        double a = now_s();
        rc = oag_infer(c, in, (size_t)size, out, out_size, &got, 10000);
        waited += now_s() - a;
        if (rc) {
            fprintf(stderr, "oag-demo-agent: infer: %s\n", oag_strerror(rc));
            oag_close(c);
            return 1;
        }
        if (identity && (got != (size_t)size || memcmp(in, out, got)))
            bad++;
        if (info.input_dim) {
            int finite = got == out_size;
            for (size_t k = 0; finite && k < got / 4; k++) {
                float v;
                memcpy(&v, out + k * 4, 4);
                finite = v == v && v - v == 0.0f;
            }
            bad += !finite;
        }
    }
    double dt = now_s() - t0;
    printf("agent %s: %ld tasks in %.2f s on %s%s%s: %.0f tasks/s, mean infer latency %.1f us, "
           "%s\n", id ? id : "-", tasks, dt, info.engine, info.model[0] ? " model " : "",
           info.model, tasks / dt, waited / tasks * 1e6,
           bad ? "RESULTS WRONG" : identity ? "results verified" : "results well-formed");
    oag_close(c);
    free(in);
    free(out);
    return bad ? 1 : 0;
}
