/*
 * oag-gen-model - writes a random model folder (config.json + model.safetensors) of any size, for
 * tests and benchmarks. The architecture is an MLP:
 *
 *   input -> [linear(hidden) -> act -> layernorm?] x (layers - 1) -> linear(output) -> softmax?
 *
 * Weights are uniform(-1/sqrt(in), 1/sqrt(in)) (torch's default init) so activations stay O(1).
 * The tensor file is streamed: multi-gigabyte models need no more memory than small ones.
 * Exit status: 0 written, 1 failed, 2 bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/gen.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: oag-gen-model --out DIR [options]\n"
"Writes a random MLP model folder (config.json + model.safetensors).\n\n"
"  --out DIR          the model folder (created if missing; files replaced)\n"
"  --input N          input width (default 768)\n"
"  --hidden N         hidden width (default 768)\n"
"  --output N         output width (default 768)\n"
"  --layers N         linear layers (default 2; 1: a single linear input -> output)\n"
"  --dtype T          float32 | float16 | bfloat16 (default float32)\n"
"  --act A            relu | gelu | silu | tanh (default relu), after each hidden linear\n"
"  --layernorm        a layernorm after each hidden activation\n"
"  --softmax          a softmax at the end\n"
"  --no-bias          linear layers without bias\n"
"  --seed S           random seed (default 1)\n"
"  --name NAME        the config's name (default random)\n"
"  -h, --help         this text\n");
}

static int parse_u(const char *opt, const char *s, unsigned long long max, unsigned long long *v)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(s, &end, 0);
    if (errno || end == s || *end || s[0] == '-' || x > max) {
        fprintf(stderr, "oag-gen-model: %s: '%s' is not an integer in 0..%llu\n", opt, s, max);
        return -1;
    }
    *v = x;
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_OUT = 256, O_INPUT, O_HIDDEN, O_OUTPUT, O_LAYERS, O_DTYPE, O_ACT, O_LN, O_SOFTMAX,
           O_NOBIAS, O_SEED, O_NAME };
    static const struct option opts[] = {
        { "out", required_argument, NULL, O_OUT },
        { "input", required_argument, NULL, O_INPUT },
        { "hidden", required_argument, NULL, O_HIDDEN },
        { "output", required_argument, NULL, O_OUTPUT },
        { "layers", required_argument, NULL, O_LAYERS },
        { "dtype", required_argument, NULL, O_DTYPE },
        { "act", required_argument, NULL, O_ACT },
        { "layernorm", no_argument, NULL, O_LN },
        { "softmax", no_argument, NULL, O_SOFTMAX },
        { "no-bias", no_argument, NULL, O_NOBIAS },
        { "seed", required_argument, NULL, O_SEED },
        { "name", required_argument, NULL, O_NAME },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    const char *out = NULL, *name = NULL;
    unsigned long long input = 768, hidden = 768, output = 768, layers = 2, seed = 1;
    enum oag_dtype dt = OAG_DT_F32;
    enum oag_layer_kind act = OAG_L_RELU;
    int ln = 0, sm = 0, bias = 1, o;
    const unsigned long long dmax = 1u << 20;

    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_OUT: out = optarg; break;
        case O_INPUT: if (parse_u("--input", optarg, dmax, &input)) return 2; break;
        case O_HIDDEN: if (parse_u("--hidden", optarg, dmax, &hidden)) return 2; break;
        case O_OUTPUT: if (parse_u("--output", optarg, dmax, &output)) return 2; break;
        case O_LAYERS: if (parse_u("--layers", optarg, 4096, &layers)) return 2; break;
        case O_SEED: if (parse_u("--seed", optarg, UINT64_MAX, &seed)) return 2; break;
        case O_NAME: name = optarg; break;
        case O_DTYPE:
            if (!strcmp(optarg, "float32")) dt = OAG_DT_F32;
            else if (!strcmp(optarg, "float16")) dt = OAG_DT_F16;
            else if (!strcmp(optarg, "bfloat16")) dt = OAG_DT_BF16;
            else {
                fprintf(stderr, "oag-gen-model: --dtype: '%s' is not float32, float16 or "
                        "bfloat16\n", optarg);
                return 2;
            }
            break;
        case O_ACT:
            if (!strcmp(optarg, "relu")) act = OAG_L_RELU;
            else if (!strcmp(optarg, "gelu")) act = OAG_L_GELU;
            else if (!strcmp(optarg, "silu")) act = OAG_L_SILU;
            else if (!strcmp(optarg, "tanh")) act = OAG_L_TANH;
            else {
                fprintf(stderr, "oag-gen-model: --act: '%s' is not relu, gelu, silu or tanh\n",
                        optarg);
                return 2;
            }
            break;
        case O_LN: ln = 1; break;
        case O_SOFTMAX: sm = 1; break;
        case O_NOBIAS: bias = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !out) {
        fprintf(stderr, "oag-gen-model: %s\n", out ? "unexpected argument" : "--out DIR is required");
        usage(stderr);
        return 2;
    }
    if (!input || !hidden || !output || !layers) {
        fprintf(stderr, "oag-gen-model: --input, --hidden, --output and --layers must be >= 1\n");
        return 2;
    }

    size_t nl = (size_t)layers + (size_t)(layers - 1) * (1 + (size_t)ln) + (size_t)sm;
    struct oag_gen_layer *L = calloc(nl, sizeof *L);
    if (!L) {
        fprintf(stderr, "oag-gen-model: out of memory\n");
        return 1;
    }
    size_t k = 0;
    for (unsigned long long i = 0; i < layers; i++) {
        int last = i + 1 == layers;
        L[k++] = (struct oag_gen_layer){ .kind = OAG_L_LINEAR, .bias = bias,
                                         .out_dim = (uint32_t)(last ? output : hidden) };
        if (!last) {
            L[k++] = (struct oag_gen_layer){ .kind = act };
            if (ln)
                L[k++] = (struct oag_gen_layer){ .kind = OAG_L_LAYERNORM, .bias = 1 };
        }
    }
    if (sm)
        L[k++] = (struct oag_gen_layer){ .kind = OAG_L_SOFTMAX };

    struct oag_gen_spec spec = {
        .name = name, .dtype = dt, .input_dim = (uint32_t)input, .nlayers = (uint32_t)k,
        .layers = L, .seed = seed,
    };
    char err[512];
    int rc = oag_model_generate(out, &spec, err, sizeof err);
    free(L);
    if (rc) {
        fprintf(stderr, "oag-gen-model: %s\n", err);
        return 1;
    }
    /* Report what was written, through the loader: the folder is known to load. */
    struct oag_model *m;
    rc = oag_model_load(&m, out, err, sizeof err);
    if (rc) {
        fprintf(stderr, "oag-gen-model: wrote %s but it does not load: %s\n", out, err);
        return 1;
    }
    printf("oag-gen-model: wrote %s: %u layers, %u -> %u, %s, %llu bytes of weights\n", out,
           m->nlayers, m->input_dim, m->output_dim, oag_dtype_name(m->dtype),
           (unsigned long long)m->param_bytes);
    oag_model_free(m);
    return 0;
}
