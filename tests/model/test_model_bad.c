/*
 * test_model_bad - malformed model folders: each must fail with its exact error code, no model,
 * and one line of message naming the file and the problem. Then random corruptions of a valid
 * folder (header bytes, truncations, config bytes): never a crash, never a half-valid model.
 * Exit: 0 pass, 1 fail.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model/gen.h"
#include "model/model.h"

static int failures, ncases;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

static char root[] = "/tmp/oag-test-model-bad-XXXXXX";

static void write_bytes(const char *dir, const char *name, const void *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

/* A safetensors file: 8-byte length (hlen_field, or the real length when ~0), header, then
 * data_len bytes of data (float32 0.25 each, so values can be checked). */
static void write_st(const char *dir, const char *header, uint64_t hlen_field, size_t data_len)
{
    size_t hl = strlen(header);
    uint64_t field = hlen_field == UINT64_MAX ? hl : hlen_field;
    size_t n = 8 + hl + data_len;
    unsigned char *buf = calloc(1, n + 4);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(field >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i + 4 <= data_len; i += 4) {
        float v = 0.25f;
        memcpy(buf + 8 + hl + i, &v, 4);
    }
    write_bytes(dir, "model.safetensors", buf, n);
    free(buf);
}

static const char *new_dir(const char *label)
{
    static char dir[1024];
    snprintf(dir, sizeof dir, "%s/%03d-%s", root, ++ncases, label);
    if (mkdir(dir, 0700) < 0) {
        perror(dir);
        exit(1);
    }
    return dir;
}

/* Loads dir and checks the outcome: rc, no model, and each of the (up to 3) substrings. */
static void expect(const char *label, const char *dir, int want, const char *s1, const char *s2,
                   const char *s3)
{
    char err[512];
    struct oag_model *m = (struct oag_model *)(uintptr_t)0x1;
    memset(err, 'x', sizeof err);
    int rc = oag_model_load(&m, dir, err, sizeof err);
    if (want == 0) {
        CHECK(rc == 0 && m, "%s: rc %d (%s), want success", label, rc, err);
        oag_model_free(rc == 0 ? m : NULL);
        return;
    }
    CHECK(rc == want, "%s: rc %d (%s), want %d (%s): %s", label, rc, strerror(-rc), want,
          strerror(-want), err);
    CHECK(m == NULL, "%s: *out not NULL on failure", label);
    CHECK(err[0] && !strchr(err, '\n'), "%s: message empty or not one line: '%s'", label, err);
    const char *subs[3] = { s1, s2, s3 };
    for (int i = 0; i < 3; i++)
        CHECK(!subs[i] || strstr(err, subs[i]), "%s: message '%s' lacks '%s'", label, err,
              subs[i]);
    printf("  %-28s %-7s %s\n", label, want == -EINVAL ? "EINVAL" : want == -EFBIG ? "EFBIG" :
           want == -ENOENT ? "ENOENT" : "other", err);
}

/* ---- the base model: linear 4 -> 3 with bias, float32 -------------------------------------- */

#define CFG_HEAD "{\"format\":\"oag-mlp\",\"version\":1,\"dtype\":\"float32\","
#define BASE_CFG CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":[" \
    "{\"type\":\"linear\",\"weight\":\"0.weight\",\"bias\":\"0.bias\"}]}"
#define W_GOOD "\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,48]}"
#define B_GOOD "\"0.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[48,60]}"
#define BASE_HDR "{" W_GOOD "," B_GOOD "}"

/* A case where only the config, the header, the header length or the data size change. */
static void bad(const char *label, const char *cfg, const char *hdr, size_t data_len, int want,
                const char *s1, const char *s2, const char *s3)
{
    const char *dir = new_dir(label);
    if (cfg)
        write_bytes(dir, "config.json", cfg, strlen(cfg));
    if (hdr)
        write_st(dir, hdr, UINT64_MAX, data_len);
    expect(label, dir, want, s1, s2, s3);
}

static void test_valid(void)
{
    /* The base model, checked field by field. */
    const char *dir = new_dir("valid");
    write_bytes(dir, "config.json", BASE_CFG, strlen(BASE_CFG));
    write_st(dir, "{\"__metadata__\":{\"k\":\"v\"}," W_GOOD "," B_GOOD "}  ", UINT64_MAX, 60);
    struct oag_model *m = NULL;
    char err[512];
    int rc = oag_model_load(&m, dir, err, sizeof err);
    CHECK(rc == 0, "valid: %s", err);
    if (rc == 0) {
        CHECK(m->input_dim == 4 && m->output_dim == 3 && m->max_dim == 4 && m->nlayers == 1,
              "dims");
        const struct oag_layer *l = &m->layers[0];
        CHECK(l->kind == OAG_L_LINEAR && l->in_dim == 4 && l->out_dim == 3, "layer");
        CHECK(l->weight.ndim == 2 && l->weight.shape[0] == 3 && l->weight.shape[1] == 4 &&
              l->weight.nbytes == 48 && !strcmp(l->weight.name, "0.weight"), "weight");
        CHECK(l->bias.ndim == 1 && l->bias.shape[0] == 3 && l->bias.nbytes == 12, "bias");
        CHECK(m->param_bytes == 60, "param_bytes %llu", (unsigned long long)m->param_bytes);
        CHECK(strstr(dir, m->name) != NULL, "default name '%s' from the folder", m->name);
        CHECK((const char *)l->bias.data == (const char *)l->weight.data + 48, "data pointers");
        CHECK((const unsigned char *)l->weight.data >= (const unsigned char *)m->map &&
              (const unsigned char *)l->bias.data + 12 <= (const unsigned char *)m->map +
              m->map_size, "tensors inside the mapping");
        float w[12];
        oag_to_f32(w, l->weight.data, l->weight.dtype, 12);
        CHECK(w[0] == 0.25f && w[11] == 0.25f, "weight values");
    }
    oag_model_free(m);

    /* A float16 model whose data section is misaligned (odd header length), read correctly. */
    dir = new_dir("valid-f16-unaligned");
    const char *cfg = "{\"format\":\"oag-mlp\",\"version\":1,\"dtype\":\"float16\",\"name\":\"h\","
                      "\"input_dim\":2,\"output_dim\":2,\"layers\":[{\"type\":\"layernorm\","
                      "\"weight\":\"w\",\"eps\":0.001},{\"type\":\"softmax\"}]}";
    write_bytes(dir, "config.json", cfg, strlen(cfg));
    const char *hdr = "{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}";
    size_t hl = strlen(hdr);
    unsigned char buf[256] = { 0 };
    buf[0] = (unsigned char)hl;
    memcpy(buf + 8, hdr, hl);
    uint16_t h[2] = { 0x3c00, 0xc000 };          /* 1.0, -2.0 */
    memcpy(buf + 8 + hl, h, 4);
    write_bytes(dir, "model.safetensors", buf, 8 + hl + 4);
    rc = oag_model_load(&m, dir, err, sizeof err);
    CHECK(rc == 0, "f16 unaligned: %s", err);
    if (rc == 0) {
        float w[2];
        oag_to_f32(w, m->layers[0].weight.data, OAG_DT_F16, 2);
        CHECK(w[0] == 1.0f && w[1] == -2.0f, "f16 values %g %g", w[0], w[1]);
        CHECK(m->layers[0].bias.data == NULL && m->layers[0].eps == 0.001f, "no bias, eps");
        CHECK(!strcmp(m->name, "h") && m->dtype == OAG_DT_F16, "name, dtype");
        CHECK(m->layers[1].kind == OAG_L_SOFTMAX, "softmax");
    }
    oag_model_free(m);

    /* No tensors at all: an activation-only model with an empty header. */
    bad("valid-no-tensors", CFG_HEAD "\"input_dim\":3,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"relu\"}]}", "{}", 0, 0, NULL, NULL, NULL);
    /* A trailing slash on the folder is fine. */
    char d2[1100];
    snprintf(d2, sizeof d2, "%s/", dir);
    expect("valid-trailing-slash", d2, 0, NULL, NULL, NULL);
}

static void test_files(void)
{
    const char *dir = new_dir("missing-config");
    write_st(dir, BASE_HDR, UINT64_MAX, 60);
    expect("missing config.json", dir, -ENOENT, "config.json", "No such file", NULL);

    bad("missing-safetensors", BASE_CFG, NULL, 0, -ENOENT, "model.safetensors", "No such file",
        NULL);
    expect("missing folder", "/nonexistent/oag-model", -ENOENT, "config.json", NULL, NULL);

    dir = new_dir("config-is-dir");
    char p[1100];
    snprintf(p, sizeof p, "%s/config.json", dir);
    mkdir(p, 0700);
    expect("config.json a folder", dir, -EINVAL, "config.json", "not a regular file", NULL);

    dir = new_dir("truncated-5");
    write_bytes(dir, "config.json", BASE_CFG, strlen(BASE_CFG));
    write_bytes(dir, "model.safetensors", "\x10\0\0\0\0", 5);
    expect("truncated to 5 bytes", dir, -EINVAL, "model.safetensors", "truncated", NULL);

    dir = new_dir("empty-file");
    write_bytes(dir, "config.json", BASE_CFG, strlen(BASE_CFG));
    write_bytes(dir, "model.safetensors", "", 0);
    expect("empty safetensors", dir, -EINVAL, "model.safetensors", "truncated", NULL);

    dir = new_dir("header-past-end");
    write_bytes(dir, "config.json", BASE_CFG, strlen(BASE_CFG));
    write_st(dir, BASE_HDR, 1000, 60);
    expect("header length past end", dir, -EINVAL, "model.safetensors", "header length 1000",
           "past the end");

    dir = new_dir("header-absurd");
    write_bytes(dir, "config.json", BASE_CFG, strlen(BASE_CFG));
    write_st(dir, BASE_HDR, 1ull << 40, 60);
    expect("header length absurd", dir, -EFBIG, "model.safetensors", "header length", "limit");

    dir = new_dir("header-max64");
    write_bytes(dir, "config.json", BASE_CFG, strlen(BASE_CFG));
    write_st(dir, BASE_HDR, UINT64_MAX - 1, 60);
    expect("header length 2^64-2", dir, -EFBIG, "header length", NULL, NULL);

    bad("truncated-data", BASE_CFG, BASE_HDR, 50, -EINVAL, "model.safetensors: tensor '0.bias'",
        "data_offsets [48, 60) exceed the data section (50 bytes)", NULL);
}

static void test_header(void)
{
    bad("offsets-past-end", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[32,32],\"data_offsets\":[0,4096]}," B_GOOD "}",
        60, -EINVAL, "model.safetensors: tensor '0.weight': data_offsets [0, 4096) exceed the "
        "data section (60 bytes)", NULL, NULL);
    bad("offsets-huge", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,1e300]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "exceed the data section", NULL);
    bad("offsets-reversed", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[48,0]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "end before they begin", NULL);
    bad("offsets-negative", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[-8,40]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "data_offsets", NULL);
    bad("offsets-fraction", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0.5,48.5]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "not non-negative integers", NULL);
    bad("offsets-strings", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[\"0\",\"48\"]}," B_GOOD
        "}", 60, -EINVAL, "'0.weight'", "data_offsets", NULL);
    bad("offsets-three", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,24,48]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "two integers", NULL);
    bad("overlap", BASE_CFG,
        "{" W_GOOD ",\"0.bias\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[40,52]}}", 60,
        -EINVAL, "'0.weight' [0, 48) and '0.bias' [40, 52) overlap", NULL, NULL);
    bad("overlap-unreferenced", BASE_CFG,
        "{" W_GOOD "," B_GOOD ",\"extra\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
        60, -EINVAL, "'extra'", "overlap", NULL);
    bad("dtype-vs-config", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F16\",\"shape\":[3,4],\"data_offsets\":[0,24]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "dtype F16 but config.json says float32", NULL);
    bad("dtype-unknown", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"I64\",\"shape\":[3,2],\"data_offsets\":[0,48]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "unsupported dtype 'I64'", NULL);
    bad("dtype-missing", BASE_CFG,
        "{\"0.weight\":{\"shape\":[3,4],\"data_offsets\":[0,48]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "'dtype' is missing", NULL);
    bad("size-vs-shape", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4],\"data_offsets\":[0,44]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "hold 44 bytes but shape [3, 4] of F32 needs 48", NULL);
    bad("shape-3d", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,2,2],\"data_offsets\":[0,48]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "3 dimensions", NULL);
    bad("shape-zero", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[0,4],\"data_offsets\":[0,0]}," B_GOOD "}",
        60, -EINVAL, "'0.weight'", "shape[0] is not a positive integer", NULL);
    bad("shape-absurd", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[3,4000000000],\"data_offsets\":[0,48]},"
        B_GOOD "}", 60, -EFBIG, "'0.weight'", "shape[1] is larger than the limit", NULL);
    bad("shape-overflow", BASE_CFG,
        "{\"0.weight\":{\"dtype\":\"F32\",\"shape\":[18446744073709551616,4],"
        "\"data_offsets\":[0,48]}," B_GOOD "}", 60, -EFBIG, "'0.weight'", "shape[0]", NULL);
    bad("duplicate-tensor", BASE_CFG,
        "{" W_GOOD "," B_GOOD ",\"0.bias\":{\"dtype\":\"F32\",\"shape\":[3],"
        "\"data_offsets\":[60,72]}}", 72, -EINVAL, "'0.bias' is listed twice", NULL, NULL);
    bad("header-bad-json", BASE_CFG, "{\"0.weight\": {\"dtype\": \"F32\", ", 60, -EINVAL,
        "model.safetensors", "not valid JSON", NULL);
    bad("header-trailing-garbage", BASE_CFG, BASE_HDR " xx", 60, -EINVAL, "model.safetensors",
        "not valid JSON", NULL);
    bad("header-array", BASE_CFG, "[1, 2, 3]", 60, -EINVAL, "model.safetensors",
        "not a JSON object", NULL);
    bad("header-entry-not-object", BASE_CFG, "{\"0.weight\": 5," B_GOOD "}", 60, -EINVAL,
        "'0.weight'", "not an object", NULL);
    bad("metadata-not-object", BASE_CFG, "{\"__metadata__\": [1]," W_GOOD "," B_GOOD "}", 60,
        -EINVAL, "'__metadata__'", NULL, NULL);

    const char *dir = new_dir("header-nul");
    write_bytes(dir, "config.json", BASE_CFG, strlen(BASE_CFG));
    char hdr[] = BASE_HDR "  ";
    size_t hl = sizeof hdr - 1;
    hdr[hl - 1] = '\0';
    unsigned char buf[512] = { 0 };
    buf[0] = (unsigned char)hl;
    memcpy(buf + 8, hdr, hl);
    write_bytes(dir, "model.safetensors", buf, 8 + hl + 60);
    expect("header with a NUL byte", dir, -EINVAL, "model.safetensors", "NUL", NULL);
}

static void test_config(void)
{
    bad("config-bad-json", "{\"format\": \"oag-mlp\", ", BASE_HDR, 60, -EINVAL,
        "config.json", "bad JSON", NULL);
    bad("config-empty", "", BASE_HDR, 60, -EINVAL, "config.json", "bad JSON", NULL);
    bad("config-not-object", "[]", BASE_HDR, 60, -EINVAL, "config.json", "not a JSON object",
        NULL);
    bad("config-format", "{\"format\":\"onnx\",\"version\":1}", BASE_HDR, 60, -EINVAL,
        "config.json", "'format'", NULL);
    bad("config-version", "{\"format\":\"oag-mlp\",\"version\":2}", BASE_HDR, 60, -EINVAL,
        "config.json", "'version'", NULL);
    bad("config-dtype", "{\"format\":\"oag-mlp\",\"version\":1,\"dtype\":\"float64\"}", BASE_HDR,
        60, -EINVAL, "config.json", "'dtype' is 'float64'", NULL);
    bad("config-no-input-dim", CFG_HEAD "\"output_dim\":3,\"layers\":[]}", BASE_HDR, 60,
        -EINVAL, "config.json", "'input_dim' is missing", NULL);
    bad("config-input-dim-string", CFG_HEAD "\"input_dim\":\"4\",\"output_dim\":3}", BASE_HDR,
        60, -EINVAL, "config.json", "'input_dim' is a string", NULL);
    bad("config-input-dim-fraction", CFG_HEAD "\"input_dim\":4.5,\"output_dim\":3}", BASE_HDR,
        60, -EINVAL, "config.json", "'input_dim'", "positive integer");
    bad("config-input-dim-negative", CFG_HEAD "\"input_dim\":-4,\"output_dim\":3}", BASE_HDR,
        60, -EINVAL, "'input_dim'", NULL, NULL);
    bad("config-input-dim-absurd", CFG_HEAD "\"input_dim\":2097152,\"output_dim\":3}", BASE_HDR,
        60, -EFBIG, "config.json", "'input_dim' is larger than the limit", NULL);
    bad("config-output-dim-absurd", CFG_HEAD "\"input_dim\":4,\"output_dim\":1e12}", BASE_HDR,
        60, -EFBIG, "config.json", "'output_dim'", NULL);
    bad("config-duplicate-key", CFG_HEAD "\"input_dim\":4,\"input_dim\":4,\"output_dim\":3}",
        BASE_HDR, 60, -EINVAL, "config.json", "'input_dim' appears twice", NULL);
    bad("config-name-long", CFG_HEAD "\"name\":\"" "0123456789012345678901234567890123456789"
        "012345678901234567890123\",\"input_dim\":4,\"output_dim\":3}", BASE_HDR, 60, -EINVAL,
        "config.json", "'name'", NULL);
    bad("layers-missing", CFG_HEAD "\"input_dim\":4,\"output_dim\":3}", BASE_HDR, 60, -EINVAL,
        "config.json", "'layers' is missing", NULL);
    bad("layers-not-array", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":{}}",
        BASE_HDR, 60, -EINVAL, "config.json", "'layers' is an object", NULL);
    bad("layers-empty", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":[]}", BASE_HDR,
        60, -EINVAL, "config.json", "'layers' is empty", NULL);
    bad("layer-not-object", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":[\"relu\"]}",
        BASE_HDR, 60, -EINVAL, "config.json", "layers[0] is a string", NULL);
    bad("layer-no-type", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":[{}]}", BASE_HDR,
        60, -EINVAL, "config.json", "layers[0]: key 'type' is missing", NULL);
    bad("layer-unknown-type", CFG_HEAD "\"input_dim\":4,\"output_dim\":4,\"layers\":"
        "[{\"type\":\"relu\"},{\"type\":\"conv2d\"}]}", BASE_HDR, 60, -EINVAL, "config.json",
        "layers[1]: unknown layer type 'conv2d'", NULL);
    bad("softmax-not-last", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"softmax\"},{\"type\":\"linear\",\"weight\":\"0.weight\"}]}", BASE_HDR, 60,
        -EINVAL, "config.json", "layers[0]: softmax must be the last layer", NULL);
    bad("linear-no-weight", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"linear\"}]}", BASE_HDR, 60, -EINVAL, "config.json",
        "layers[0]: key 'weight' is missing", NULL);
    bad("weight-not-string", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"linear\",\"weight\":7}]}", BASE_HDR, 60, -EINVAL, "config.json",
        "'weight' is a number", NULL);
    bad("missing-tensor", BASE_CFG, "{" W_GOOD "}", 48, -EINVAL, "layers[0]: 'bias': tensor "
        "'0.bias' not found in model.safetensors", NULL, NULL);
    bad("weight-chain-input", CFG_HEAD "\"input_dim\":5,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"linear\",\"weight\":\"0.weight\",\"bias\":\"0.bias\"}]}", BASE_HDR, 60,
        -EINVAL, "layers[0]: 'weight': tensor '0.weight' has shape [3, 4], expected [out, 5]",
        NULL, NULL);
    bad("weight-chain-second", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"linear\",\"weight\":\"0.weight\"},{\"type\":\"relu\"},"
        "{\"type\":\"linear\",\"weight\":\"0.weight\"}]}", BASE_HDR, 60, -EINVAL,
        "layers[2]: 'weight'", "expected [out, 3]", NULL);
    bad("weight-1d", CFG_HEAD "\"input_dim\":3,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"linear\",\"weight\":\"0.bias\"}]}", BASE_HDR, 60, -EINVAL,
        "'0.bias' has shape [3], expected [out, 3]", NULL, NULL);
    bad("bias-shape", CFG_HEAD "\"input_dim\":4,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"linear\",\"weight\":\"0.weight\",\"bias\":\"b4\"}]}",
        "{" W_GOOD "," B_GOOD ",\"b4\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[60,76]}}",
        76, -EINVAL, "layers[0]: 'bias': tensor 'b4' has shape [4], expected [3]", NULL, NULL);
    bad("layernorm-shape", CFG_HEAD "\"input_dim\":4,\"output_dim\":4,\"layers\":"
        "[{\"type\":\"layernorm\",\"weight\":\"0.bias\"}]}", BASE_HDR, 60, -EINVAL,
        "layers[0]: 'weight': tensor '0.bias' has shape [3], expected [4]", NULL, NULL);
    bad("layernorm-eps", CFG_HEAD "\"input_dim\":3,\"output_dim\":3,\"layers\":"
        "[{\"type\":\"layernorm\",\"weight\":\"0.bias\",\"eps\":-1}]}", BASE_HDR, 60, -EINVAL,
        "layers[0]: 'eps'", NULL, NULL);
    bad("output-dim-mismatch", CFG_HEAD "\"input_dim\":4,\"output_dim\":5,\"layers\":"
        "[{\"type\":\"linear\",\"weight\":\"0.weight\",\"bias\":\"0.bias\"}]}", BASE_HDR, 60,
        -EINVAL, "config.json", "end with width 3 but 'output_dim' is 5", NULL);

    /* 70000 layers: refused before anything is allocated per layer. */
    size_t cap = 70000 * 20 + 256, len = 0;
    char *cfg = malloc(cap);
    len += (size_t)snprintf(cfg, cap, CFG_HEAD "\"input_dim\":3,\"output_dim\":3,\"layers\":[");
    for (int i = 0; i < 70000; i++)
        len += (size_t)snprintf(cfg + len, cap - len, "%s{\"type\":\"relu\"}", i ? "," : "");
    snprintf(cfg + len, cap - len, "]}");
    bad("layers-absurd", cfg, BASE_HDR, 60, -EFBIG, "config.json", "'layers' has 70000 entries",
        NULL);
    free(cfg);
}

/* ---- random corruption ----------------------------------------------------------------- */

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(uint32_t n)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs % n);
}

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    rewind(f);
    unsigned char *p = malloc(*len + 1);
    if (fread(p, 1, *len, f) != *len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

static void test_fuzz(void)
{
    char src[1024], err[512], path[1100];
    snprintf(src, sizeof src, "%s/fuzz-src", root);
    struct oag_gen_layer L[] = {
        { .kind = OAG_L_LINEAR, .out_dim = 6, .bias = 1 }, { .kind = OAG_L_GELU },
        { .kind = OAG_L_LAYERNORM, .bias = 1 }, { .kind = OAG_L_LINEAR, .out_dim = 3 },
        { .kind = OAG_L_SOFTMAX },
    };
    struct oag_gen_spec spec = { .dtype = OAG_DT_F16, .input_dim = 5, .nlayers = 5, .layers = L,
                                 .seed = 3 };
    if (oag_model_generate(src, &spec, err, sizeof err)) {
        CHECK(0, "generate: %s", err);
        return;
    }
    size_t st_len, cfg_len;
    snprintf(path, sizeof path, "%s/model.safetensors", src);
    unsigned char *st = slurp(path, &st_len);
    snprintf(path, sizeof path, "%s/config.json", src);
    unsigned char *cfg = slurp(path, &cfg_len);
    if (!st || !cfg) {
        CHECK(0, "slurp");
        return;
    }
    size_t hlen = st[0] | (size_t)st[1] << 8;
    const char *dir = new_dir("fuzz");
    unsigned char *buf = malloc(st_len + cfg_len);
    int ok = 0, refused = 0, iters = 3000;
    if (getenv("OAG_TEST_FUZZ_ITERS"))                  /* longer runs by hand */
        iters = atoi(getenv("OAG_TEST_FUZZ_ITERS"));
    for (int it = 0; it < iters; it++) {
        int what = rnd(4);
        memcpy(buf, st, st_len);
        size_t n = st_len;
        if (what == 0 || what == 1) {                   /* flip bytes in the length + header */
            for (int k = 0; k <= (int)rnd(4); k++) {
                static const char pool[] = "{}[]\":,0123456789-e. FBI";
                size_t at = rnd((uint32_t)(8 + hlen));
                buf[at] = what ? (unsigned char)pool[rnd(sizeof pool - 1)]
                               : (unsigned char)rnd(256);
            }
        } else if (what == 2) {                         /* truncate */
            n = rnd((uint32_t)st_len);
        }
        write_bytes(dir, "model.safetensors", buf, n);
        if (what == 3) {                                /* corrupt the config instead */
            memcpy(buf, cfg, cfg_len);
            for (int k = 0; k <= (int)rnd(3); k++) {
                static const char pool[] = "{}[]\":,0123456789-e. lnr";
                buf[rnd((uint32_t)cfg_len)] = (unsigned char)pool[rnd(sizeof pool - 1)];
            }
            write_bytes(dir, "config.json", buf, cfg_len);
        } else {
            write_bytes(dir, "config.json", cfg, cfg_len);
        }
        struct oag_model *m = NULL;
        err[0] = '\0';
        int rc = oag_model_load(&m, dir, err, sizeof err);
        if (rc == 0) {
            ok++;
            /* Whatever loaded is consistent: every tensor inside the mapping, widths chain. */
            uint32_t w = m->input_dim;
            for (uint32_t i = 0; i < m->nlayers; i++) {
                const struct oag_layer *l = &m->layers[i];
                CHECK(l->in_dim == w, "fuzz %d: width chain", it);
                w = l->out_dim;
                const struct oag_tensor *ts[2] = { &l->weight, &l->bias };
                for (int k = 0; k < 2; k++)
                    if (ts[k]->data)
                        CHECK((const unsigned char *)ts[k]->data >= (const unsigned char *)m->map
                              && (const unsigned char *)ts[k]->data + ts[k]->nbytes <=
                              (const unsigned char *)m->map + m->map_size,
                              "fuzz %d: tensor outside the mapping", it);
            }
            CHECK(w == m->output_dim, "fuzz %d: output width", it);
            oag_model_free(m);
        } else {
            refused++;
            CHECK(m == NULL && err[0] && !strchr(err, '\n'), "fuzz %d: rc %d msg '%s'", it, rc,
                  err);
            CHECK(rc == -EINVAL || rc == -EFBIG, "fuzz %d: rc %d (%s)", it, rc, err);
        }
    }
    printf("  fuzz: %d corruptions, %d still valid, %d refused\n", iters, ok, refused);
    free(buf);
    free(st);
    free(cfg);
}

int main(void)
{
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_valid();
    test_files();
    test_header();
    test_config();
    test_fuzz();

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", root);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("PASS (%d cases)\n", ncases);
    return 0;
}
