#include "bench.h"

/* ---- main -------------------------------------------------------------------------------- */

void usage(FILE *f)
{
    fprintf(f,
        "usage: oag-bench [OPTIONS]\n"
        "  --quick            20000 round trips per latency path, 1 s per throughput row\n"
        "  --iters N          measured round trips per latency path (default 50000)\n"
        "  --warmup N         unmeasured round trips first (default iters/10)\n"
        "  --duration S       seconds per throughput row (default 2)\n"
        "  --window W         tasks outstanding per agent (default 64)\n"
        "  --agents LIST      oag throughput rows, comma-separated agent counts (default 1,8,64,512)\n"
        "  --zmq-agents N     agents of the ZeroMQ pipeline (default 8)\n"
        "  --ring-slots N     --ring-slots of the throughput supervisor (default 256)\n"
        "  --agent-spin-us N  OAG_SPIN_US of the throughput agents (default: unset)\n"
        "  --agent-nice N     throughput agents run N nice levels below the bench and its\n"
        "                     servers, as oag-supervisor's --agent-nice (default 10; 0: same)\n"
        "  --supervisor PATH  oag-supervisor to run (default %s)\n"
        "  --sup-arg ARG      append ARG to every oag-supervisor's arguments (repeatable,\n"
        "                     e.g. --sup-arg --waker-threads=1)\n"
        "  --sup-cpus LIST    the supervisors on these CPUs (their --cpus), the bench's\n"
        "                     agents on its other CPUs\n"
        "  --no-oag           baselines only\n"
        "  --no-latency, --no-throughput   skip a part\n"
        "\nModel mode (instead of the sections above): a model engine offline and through the\n"
        "supervisor, per model: offline ceiling per batch size, end-to-end tasks/s, batch-1 latency,\n"
        "sync vs pipelined agents, no batching vs dynamic batching.\n"
        "  --model DIR        a model folder (config.json + model.safetensors); repeatable\n"
        "  --gen-models       generate and bench the two standard models: 2-layer 768x768 and\n"
        "                     4-layer 4096x4096 fp16 MLPs (relu), with oag-gen-model\n"
        "  --models-dir DIR   --gen-models writes its models here and keeps them (reused when\n"
        "                     present); default: a temp dir, removed at exit\n"
        "  --gen-model PATH   oag-gen-model (default: next to oag-bench, else next to the\n"
        "                     supervisor's build, else %s)\n"
        "  --backend B        auto (default: cuda if it works, else cpu) | cpu | cuda\n"
        "  --device N         GPU for cuda (offline engine and the supervisor's --gpus; default 0)\n"
        "  --gpus LIST        the model supervisors' --gpus instead (e.g. 0,1,2,3: one engine\n"
        "                     instance per GPU; tools/bench-multigpu)\n"
        "  --instances N      the model supervisors' --instances (cpu engine)\n"
        "  --threads N        --threads for the cpu engine (default: OpenBLAS's)\n"
        "  --max-batch N      cap of every batch size (default 8192)\n"
        "  --batches LIST     offline batch sizes (default 1,8,32,128,512,2048,8192; 1, the e2e\n"
        "                     and the dynamic batch are always added)\n"
        "  --offline-iters N  timed batches per offline point and mode (default 200)\n"
        "  --offline-max-s S  time budget per offline batch size (default 2)\n"
        "  --offline-warmup N untimed batches before each offline point (default 3)\n"
        "  --e2e-batch N      --max-batch of the end-to-end and sync/pipelined supervisors (512)\n"
        "  --e2e-agents LIST  agent counts of the end-to-end rows (default 64,512)\n"
        "  --e2e-delay-us N   their --max-delay-us (default 200)\n"
        "  --model-window W   tasks outstanding per async agent (default: 16 x batch / agents,\n"
        "                     or 2 us of the offline ceiling's rows if more; a power\n"
        "                     of two in 8..1024)\n"
        "  --model-duration S measured seconds per agent row (default 3)\n"
        "  --model-warmup S   unmeasured seconds before (default 0.5)\n"
        "  --lat-iters N      oag_infer calls of the single-agent latency row (default 20000)\n"
        "  --lat-warmup N     untimed calls before them (default iters/10, at least 100)\n"
        "  --cmp-agents N     agents of the sync/pipelined and batching rows (default 64)\n"
        "  --dyn-batch N      dynamic batching row: --max-batch (default 32) ...\n"
        "  --dyn-delay-us N   ... and --max-delay-us (default 1000)\n"
        "  --max-queue N      the supervisors' --max-queue (default: agents x window, >= 4096)\n"
        "  --model-samples N  latency samples kept per row, all agents (default 1000000)\n"
        "  --ready-timeout S  wait for a supervisor to load and warm up (default 120)\n"
        "  --skip LIST        parts to skip: offline,e2e,latency,sync,batching\n"
        "  --ctl PATH         read status --json by running this oag-ctl (default: speak the\n"
        "                     control protocol directly)\n"
        "  --quick            also: 50 offline batches and 0.5 s per point, 1 s rows, 5000 calls\n"
        "\nTables (one command per table of the agent-deployment tuning guide; docs/BENCHMARKS.md):\n"
        "  oag-bench table N [OPTIONS]   (or --table N), N =\n"
        "    1 model loading: plain read() + conversion vs mmap + chunked upload\n"
        "    2 batch-size sweep of the offline engine: time per batch and per item\n"
        "    3 synchronous vs asynchronous pipelined agents\n"
        "    4 no batching vs dynamic batching\n"
        "    5 shared memory + eventfd vs RPC (ZeroMQ, same engine): latency, 1..512 agents\n"
        "    6 load ramp in steps of tasks in flight: p50, p99, error rate, the knee\n"
        "    7 concurrency sweep over shm (perf_analyzer-like), stable windows\n"
        "  The model options above apply (--model DIR, else the generated mlp768x2-fp16;\n"
        "  --backend, --models-dir, --batches, --cmp-agents, --dyn-batch, --dyn-delay-us, ...).\n"
        "  --json FILE        also write the figures as JSON (tools/bench-plots draws them)\n"
        "  --load-mb N        table 1: size of the generated model in MB (default 1100;\n"
        "                     with --model DIR table 1 loads that model instead)\n"
        "  --load-dtype T     table 1: float32 | float16 | bfloat16 (default float16)\n"
        "  --load-reps N      table 1: runs per path, the fastest counts (default 1)\n"
        "  --scale-agents L   table 5: agent counts (default 1,8,64,512)\n"
        "  --ramp LIST        table 6: tasks in flight per step (default 100,500,1000)\n"
        "  --ramp-agents N    table 6: agent processes (default 50)\n"
        "  --ramp-timeout-ms N  table 6: a task later than this is an error (default 500)\n"
        "  --ramp-queue N     table 6: the supervisor's --max-queue (default 512)\n"
        "  --sweep LIST       table 7: tasks in flight (default 1,2,4,8,16,32,64,128,256,512,1024)\n"
        "  --sweep-agents N   table 7: agent processes (default 16)\n"
        "  --sweep-window S   table 7: measurement window (default 0.5)\n"
        "  --sweep-max-windows N  table 7: windows per level at most (default 10)\n"
        "  --no-rpc           tables 5-7: skip the RPC baseline\n",
        OAG_SUPERVISOR_PATH, OAG_GEN_MODEL_PATH);
}

static int parse_list(const char *v, unsigned *out, int cap, int *n, unsigned min, unsigned max)
{
    char buf[256], *save = NULL;
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*n == cap)
            return -EINVAL;
        unsigned x;
        char *end;
        errno = 0;
        unsigned long l = strtoul(t, &end, 10);
        if (errno || end == t || *end || l < min || l > max)
            return -EINVAL;
        x = (unsigned)l;
        out[(*n)++] = x;
    }
    return *n ? 0 : -EINVAL;
}

static int parse_secs(const char *v, double *out, double min, double max)
{
    char *end;
    double d = strtod(v, &end);
    if (end == v || *end || !(d >= min && d <= max))
        return -EINVAL;
    *out = d;
    return 0;
}

static int parse_uint(const char *s, unsigned *out, unsigned min, unsigned max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -EINVAL;
    *out = (unsigned)v;
    return 0;
}

int parse_args(struct opts *o, int argc, char **argv)
{
    int warm_set = 0, first = 1;
    unsigned x_table = 0;
    /* `oag-bench table N ...` is `oag-bench --table N ...` */
    if (argc >= 3 && !strcmp(argv[1], "table")) {
        if (parse_uint(argv[2], &x_table, 1, 7)) {
            fprintf(stderr, "oag-bench: table %s: no such table (1..7)\n", argv[2]);
            usage(stderr);
            return -EINVAL;
        }
        o->table = (int)x_table;
        first = 3;
    } else if (argc == 2 && !strcmp(argv[1], "table")) {
        fprintf(stderr, "oag-bench: table: which one? (1..7)\n");
        return -EINVAL;
    }
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0, used = 1;
        if (!strcmp(a, "--quick")) {
            o->iters = 20000;
            o->duration_s = 1.0;
            o->off_iters = 50;
            o->off_max_s = 0.5;
            o->m_duration_s = 1.0;
            o->m_warm_s = 0.3;
            o->m_lat_iters = 5000;
            used = 0;
        } else if (!strcmp(a, "--iters") && v) {
            bad = parse_uint(v, &o->iters, 100, 100000000);
        } else if (!strcmp(a, "--warmup") && v) {
            bad = parse_uint(v, &o->warmup, 0, 100000000);
            warm_set = 1;
        } else if (!strcmp(a, "--duration") && v) {
            char *end;
            o->duration_s = strtod(v, &end);
            bad = *end || !(o->duration_s >= 0.1 && o->duration_s <= 600);
        } else if (!strcmp(a, "--window") && v) {
            bad = parse_uint(v, &o->window, 1, OAG_MAX_SLOTS);
        } else if (!strcmp(a, "--zmq-agents") && v) {
            bad = parse_uint(v, &o->zmq_agents, 1, 1024);
        } else if (!strcmp(a, "--ring-slots") && v) {
            bad = parse_uint(v, &o->ring_slots, 2, OAG_MAX_SLOTS) ||
                  (o->ring_slots & (o->ring_slots - 1));
        } else if (!strcmp(a, "--agent-spin-us") && v) {
            unsigned x;
            bad = parse_uint(v, &x, 0, 10000000);
            o->tput_spin_us = v;
        } else if (!strcmp(a, "--sup-arg") && v) {
            bad = g_nsup_args == MAX_SUP_ARGS;
            if (!bad)
                g_sup_args[g_nsup_args++] = v;
        } else if (!strcmp(a, "--sup-cpus") && v) {
            /* the supervisors on LIST (--cpus), the bench's agents on our other CPUs */
            cpu_set_t sup, mine;
            char err[160];
            bad = g_nsup_args >= MAX_SUP_ARGS - 1 || cpus_parse(v, &sup, err, sizeof err) ||
                  sched_getaffinity(0, sizeof mine, &mine) != 0;
            if (!bad) {
                static char arg[300];
                snprintf(arg, sizeof arg, "--cpus=%s", v);
                g_sup_args[g_nsup_args++] = arg;
                CPU_ZERO(&g_agent_cpus);
                for (int c = 0; c < CPU_SETSIZE; c++)
                    if (CPU_ISSET(c, &mine) && !CPU_ISSET(c, &sup))
                        CPU_SET(c, &g_agent_cpus);
                g_agent_cpus_set = CPU_COUNT(&g_agent_cpus) > 0;
            }
        } else if (!strcmp(a, "--agent-nice") && v) {
            bad = parse_uint(v, &g_agent_nice, 0, 39);
        } else if (!strcmp(a, "--supervisor") && v) {
            o->supervisor = v;
            o->supervisor_set = 1;
        } else if (!strcmp(a, "--model") && v) {
            bad = o->nmodels == MM_MAX_MODELS;
            if (!bad)
                o->models[o->nmodels++] = v;
        } else if (!strcmp(a, "--gen-models")) {
            o->gen_models = 1;
            used = 0;
        } else if (!strcmp(a, "--models-dir") && v) {
            o->models_dir = v;
        } else if (!strcmp(a, "--gen-model") && v) {
            o->gen_model = v;
        } else if (!strcmp(a, "--ctl") && v) {
            o->ctl = v;
        } else if (!strcmp(a, "--backend") && v) {
            o->backend = v;
            bad = strcmp(v, "auto") && strcmp(v, "cpu") && strcmp(v, "cuda");
        } else if (!strcmp(a, "--device") && v) {
            bad = parse_uint(v, &o->device, 0, 63);
        } else if (!strcmp(a, "--gpus") && v) {
            o->gpus = v;
            bad = !*v || strspn(v, "0123456789,") != strlen(v);
        } else if (!strcmp(a, "--instances") && v) {
            bad = parse_uint(v, &o->instances, 1, 16);
        } else if (!strcmp(a, "--threads") && v) {
            bad = parse_uint(v, &o->threads, 1, 1024);
        } else if (!strcmp(a, "--max-batch") && v) {
            bad = parse_uint(v, &o->max_batch, 1, 1u << 20);
        } else if (!strcmp(a, "--batches") && v) {
            bad = parse_list(v, o->batches, MM_MAX_BATCHES - 3, &o->nbatches, 1, 1u << 20);
        } else if (!strcmp(a, "--offline-iters") && v) {
            bad = parse_uint(v, &o->off_iters, 5, 10000000);
        } else if (!strcmp(a, "--offline-max-s") && v) {
            bad = parse_secs(v, &o->off_max_s, 0.01, 3600);
        } else if (!strcmp(a, "--e2e-batch") && v) {
            bad = parse_uint(v, &o->e2e_batch, 1, 1u << 20);
        } else if (!strcmp(a, "--e2e-agents") && v) {
            bad = parse_list(v, o->e2e_agents, MAX_ROWS, &o->ne2e, 1, MAX_KIDS - 64);
        } else if (!strcmp(a, "--e2e-delay-us") && v) {
            bad = parse_uint(v, &o->e2e_delay_us, 0, 100000000);
        } else if (!strcmp(a, "--model-window") && v) {
            bad = parse_uint(v, &o->m_window, 1, OAG_MAX_SLOTS);
        } else if (!strcmp(a, "--model-duration") && v) {
            bad = parse_secs(v, &o->m_duration_s, 0.05, 3600);
        } else if (!strcmp(a, "--model-warmup") && v) {
            bad = parse_secs(v, &o->m_warm_s, 0, 600);
        } else if (!strcmp(a, "--lat-iters") && v) {
            bad = parse_uint(v, &o->m_lat_iters, 10, 100000000);
        } else if (!strcmp(a, "--lat-warmup") && v) {
            bad = parse_uint(v, &o->m_lat_warmup, 1, 100000000);
        } else if (!strcmp(a, "--offline-warmup") && v) {
            bad = parse_uint(v, &o->off_warmup, 1, 1000000);
        } else if (!strcmp(a, "--cmp-agents") && v) {
            bad = parse_uint(v, &o->cmp_agents, 1, MAX_KIDS - 64);
        } else if (!strcmp(a, "--dyn-batch") && v) {
            bad = parse_uint(v, &o->dyn_batch, 1, 1u << 20);
        } else if (!strcmp(a, "--dyn-delay-us") && v) {
            bad = parse_uint(v, &o->dyn_delay_us, 0, 100000000);
        } else if (!strcmp(a, "--max-queue") && v) {
            bad = parse_uint(v, &o->m_max_queue, 1, 1u << 24);
        } else if (!strcmp(a, "--model-samples") && v) {
            bad = parse_uint(v, &o->m_samples, 1000, 100000000);
        } else if (!strcmp(a, "--ready-timeout") && v) {
            bad = parse_uint(v, &o->sup_ready_s, 1, 3600);
        } else if (!strcmp(a, "--skip") && v) {
            char buf[128], *save = NULL;
            snprintf(buf, sizeof buf, "%s", v);
            for (char *t = strtok_r(buf, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save)) {
                if (!strcmp(t, "offline"))
                    o->skip_offline = 1;
                else if (!strcmp(t, "e2e"))
                    o->skip_e2e = 1;
                else if (!strcmp(t, "latency"))
                    o->skip_mlat = 1;
                else if (!strcmp(t, "sync"))
                    o->skip_sync = 1;
                else if (!strcmp(t, "batching"))
                    o->skip_batching = 1;
                else
                    bad = 1;
            }
        } else if (!strcmp(a, "--agents") && v) {
            char buf[256], *save = NULL;
            snprintf(buf, sizeof buf, "%s", v);
            o->nrows = 0;
            for (char *t = strtok_r(buf, ",", &save); t && !bad; t = strtok_r(NULL, ",", &save)) {
                if (o->nrows == MAX_ROWS)
                    bad = 1;
                else
                    bad = parse_uint(t, &o->agents[o->nrows++], 1, MAX_KIDS - 16);
            }
        } else if (!strcmp(a, "--no-oag")) {
            o->no_oag = 1;
            used = 0;
        } else if (!strcmp(a, "--no-latency")) {
            o->no_latency = 1;
            used = 0;
        } else if (!strcmp(a, "--no-throughput")) {
            o->no_throughput = 1;
            used = 0;
        } else if (!strcmp(a, "--table") && v) {
            bad = parse_uint(v, &x_table, 1, 7);
            o->table = (int)x_table;
        } else if (!strcmp(a, "--json") && v) {
            o->json = v;
        } else if (!strcmp(a, "--load-mb") && v) {
            bad = parse_secs(v, &o->load_mb, 0.01, 1e6);
        } else if (!strcmp(a, "--load-dtype") && v) {
            o->load_dtype = v;
            bad = strcmp(v, "float32") && strcmp(v, "float16") && strcmp(v, "bfloat16");
        } else if (!strcmp(a, "--load-reps") && v) {
            bad = parse_uint(v, &o->load_reps, 1, 100);
        } else if (!strcmp(a, "--scale-agents") && v) {
            bad = parse_list(v, o->scale_agents, MAX_ROWS, &o->nscale, 1, MAX_KIDS - 64);
        } else if (!strcmp(a, "--ramp") && v) {
            bad = parse_list(v, o->ramp, MAX_ROWS, &o->nramp, 1, 1u << 20);
        } else if (!strcmp(a, "--ramp-agents") && v) {
            bad = parse_uint(v, &o->ramp_agents, 1, MAX_KIDS - 64);
        } else if (!strcmp(a, "--ramp-timeout-ms") && v) {
            bad = parse_uint(v, &o->ramp_timeout_ms, 1, 3600000);
        } else if (!strcmp(a, "--ramp-queue") && v) {
            bad = parse_uint(v, &o->ramp_queue, 1, 1u << 24);
        } else if (!strcmp(a, "--sweep") && v) {
            bad = parse_list(v, o->sweep, MAX_ROWS, &o->nsweep, 1, 1u << 20);
        } else if (!strcmp(a, "--sweep-agents") && v) {
            bad = parse_uint(v, &o->sweep_agents, 1, MAX_KIDS - 64);
        } else if (!strcmp(a, "--sweep-window") && v) {
            bad = parse_secs(v, &o->sweep_win_s, 0.02, 600);
        } else if (!strcmp(a, "--sweep-max-windows") && v) {
            bad = parse_uint(v, &o->sweep_max_win, 3, MM_MAX_WIN);
        } else if (!strcmp(a, "--no-rpc")) {
            o->no_rpc = 1;
            used = 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else {
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "oag-bench: bad argument: %s%s%s\n", a, v && used ? " " : "",
                    v && used ? v : "");
            usage(stderr);
            return -EINVAL;
        }
        i += used;
    }
    if (!warm_set)
        o->warmup = o->iters / 10 < 100 ? 100 : o->iters / 10;
    return 0;
}
