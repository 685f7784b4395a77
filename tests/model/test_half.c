/*
 * test_half - float16 / bfloat16 <-> float32 conversions against independent oracles:
 *   - half -> float: every one of the 65536 codes against an ldexp decode;
 *   - float -> half: every midpoint between adjacent codes (ties to even) and its neighbours,
 *     millions of random floats against a binary search over the code space, and the
 *     compiler's _Float16 where it has one; inf, NaN (sign kept, quiet), subnormals, overflow;
 *   - oag_to_f32 on a misaligned buffer for each dtype.
 * Exit: 0 pass, 1 fail.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model/model.h"

static int failures;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            if (++failures < 20) {                                                         \
                fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);           \
                fprintf(stderr, __VA_ARGS__);                                              \
                fputc('\n', stderr);                                                       \
            }                                                                              \
        }                                                                                  \
    } while (0)

static float fbits(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static uint32_t bitsf(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

/* Independent decodes, in double. The inf code decodes to the next power of two, which is
 * where rounding to inf starts. */
static double f16_val(uint32_t h)
{
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? ldexp(m, -24) : e == 31 ? (m ? NAN : 65536.0) : ldexp(1024 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

static double bf16_val(uint32_t h)
{
    if ((h & 0x7fff) == 0x7f80)
        return (h & 0x8000) ? -ldexp(1, 128) : ldexp(1, 128);
    return fbits(h << 16);
}

/* Nearest code to x >= 0 among 0..inf_code, ties to the even code. */
static uint32_t oracle(double x, uint32_t inf_code, double (*val)(uint32_t))
{
    uint32_t lo = 0, hi = inf_code;
    if (x >= val(inf_code))
        return inf_code;
    while (hi - lo > 1) {                       /* val(lo) <= x < val(hi) */
        uint32_t mid = lo + (hi - lo) / 2;
        if (val(mid) <= x)
            lo = mid;
        else
            hi = mid;
    }
    double dl = x - val(lo), dh = val(hi) - x;
    if (dl < dh)
        return lo;
    if (dh < dl)
        return hi;
    return (lo & 1) ? hi : lo;
}

static uint16_t oracle_f16(float f)
{
    uint32_t s = (bitsf(f) >> 16) & 0x8000;
    return (uint16_t)(s | oracle(fabs((double)f), 0x7c00, f16_val));
}

static uint16_t oracle_bf16(float f)
{
    uint32_t s = (bitsf(f) >> 16) & 0x8000;
    return (uint16_t)(s | oracle(fabs((double)f), 0x7f80, bf16_val));
}

static uint64_t rs = 88172645463325252ull;
static uint32_t rnd32(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (uint32_t)(rs >> 16);
}

static void test_decode(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = oag_f16_to_f32((uint16_t)h);
        int nan = ((h >> 10) & 31) == 31 && (h & 1023);
        if (nan) {
            CHECK(isnan(f) && !!signbit(f) == !!(h & 0x8000), "f16 %#x: NaN, sign", h);
            uint16_t back = oag_f32_to_f16(f);
            CHECK((back & 0x7c00) == 0x7c00 && (back & 0x3ff) && (back & 0x8000) == (h & 0x8000),
                  "f16 NaN %#x -> %#x", h, back);
            continue;
        }
        double want = ((h >> 10) & 31) == 31 ? ((h & 0x8000) ? -INFINITY : INFINITY)
                                              : f16_val(h);
        CHECK((double)f == want && !!signbit(f) == !!(h & 0x8000), "f16 %#x -> %.9g want %.9g", h,
              f, want);
        CHECK(oag_f32_to_f16(f) == h, "f16 %#x round trip -> %#x", h, oag_f32_to_f16(f));

        float b = oag_bf16_to_f32((uint16_t)h);
        CHECK(bitsf(b) == h << 16, "bf16 %#x", h);
        if (!isnan(b))
            CHECK(oag_f32_to_bf16(b) == h, "bf16 %#x round trip", h);
        else
            CHECK((oag_f32_to_bf16(b) & 0x7f80) == 0x7f80 && (oag_f32_to_bf16(b) & 0x7f) &&
                  (oag_f32_to_bf16(b) & 0x8000) == (h & 0x8000), "bf16 NaN %#x", h);
    }
    /* A float NaN whose payload lies only in the low bits must stay NaN, not become inf. */
    CHECK((oag_f32_to_f16(fbits(0x7f800001)) & 0x3ff) != 0, "f16 low-payload NaN");
    CHECK((oag_f32_to_bf16(fbits(0xff800001)) & 0x7f) != 0, "bf16 low-payload NaN");
    CHECK(oag_f32_to_bf16(fbits(0xff800001)) & 0x8000, "bf16 NaN sign");
}

/* Every midpoint between adjacent finite codes (and the one to inf) goes to the even code;
 * one float ulp either side goes to the nearer one. */
static void test_midpoints(void)
{
    for (int bf = 0; bf < 2; bf++) {
        uint32_t top = bf ? 0x7f80 : 0x7c00;
        for (uint32_t h = 0; h < top; h++) {
            double a = bf ? bf16_val(h) : f16_val(h), b = bf ? bf16_val(h + 1) : f16_val(h + 1);
            float mid = (float)((a + b) / 2);
            CHECK((double)mid == (a + b) / 2, "midpoint exact");
            uint32_t even = (h & 1) ? h + 1 : h;
            for (int s = 0; s < 2; s++) {
                float m = s ? -mid : mid;
                uint32_t sg = s ? 0x8000 : 0;
                uint16_t got = bf ? oag_f32_to_bf16(m) : oag_f32_to_f16(m);
                CHECK(got == (sg | even), "%s mid %#x/%#x: got %#x", bf ? "bf16" : "f16", h,
                      h + 1, got);
                float below = nextafterf(m, 0), above = nextafterf(m, s ? -INFINITY : INFINITY);
                got = bf ? oag_f32_to_bf16(below) : oag_f32_to_f16(below);
                CHECK(got == (sg | h), "%s below mid %#x: got %#x", bf ? "bf16" : "f16", h, got);
                got = bf ? oag_f32_to_bf16(above) : oag_f32_to_f16(above);
                CHECK(got == (sg | (h + 1)), "%s above mid %#x: got %#x", bf ? "bf16" : "f16", h,
                      got);
            }
        }
    }
    CHECK(oag_f32_to_f16(65504.0f) == 0x7bff && oag_f32_to_f16(65519.99f) == 0x7bff &&
          oag_f32_to_f16(65520.0f) == 0x7c00 && oag_f32_to_f16(1e10f) == 0x7c00 &&
          oag_f32_to_f16(-INFINITY) == 0xfc00 && oag_f32_to_f16(FLT_MAX) == 0x7c00, "overflow");
    CHECK(oag_f32_to_f16(ldexpf(1, -24)) == 1 && oag_f32_to_f16(ldexpf(1, -25)) == 0 &&
          oag_f32_to_f16(nextafterf(ldexpf(1, -25), 1)) == 1 &&
          oag_f32_to_f16(-ldexpf(1, -26)) == 0x8000 && oag_f32_to_f16(FLT_TRUE_MIN) == 0 &&
          oag_f32_to_f16(ldexpf(1, -14)) == 0x400, "subnormals");
    CHECK(oag_f32_to_bf16(FLT_MAX) == 0x7f80 && oag_f32_to_bf16(FLT_TRUE_MIN) == 0x0000 &&
          oag_f32_to_bf16(fbits(0x00010000)) == 0x0001 && oag_f32_to_bf16(-0.0f) == 0x8000,
          "bf16 edges");
}

static void test_random(void)
{
    long n = 0;
    for (int i = 0; i < 2000000; i++) {
        /* Half of them anywhere, half in and around the float16 range. */
        uint32_t u = rnd32();
        if (i & 1)
            u = (u & 0x807fffffu) | ((uint32_t)(98 + rnd32() % 50) << 23);
        float f = fbits(u);
        if (isnan(f))
            continue;
        n++;
        uint16_t h = oag_f32_to_f16(f), want = oracle_f16(f);
        CHECK(h == want, "f16(%a) = %#x, want %#x", (double)f, h, want);
        uint16_t b = oag_f32_to_bf16(f), wantb = oracle_bf16(f);
        CHECK(b == wantb, "bf16(%a) = %#x, want %#x", (double)f, b, wantb);
#ifdef __FLT16_MANT_DIG__
        _Float16 c = (_Float16)f;
        uint16_t cu;
        memcpy(&cu, &c, 2);
        CHECK(h == cu, "f16(%a) = %#x, _Float16 says %#x", (double)f, h, cu);
#endif
    }
    printf("  %ld random floats checked against the oracle%s\n", n,
#ifdef __FLT16_MANT_DIG__
           " and _Float16"
#else
           ""
#endif
    );
}

static void test_to_f32(void)
{
    unsigned char buf[64 + 1];
    float want[8], got[8];
    for (int i = 0; i < 8; i++)
        want[i] = (float)(i - 3) * 0.75f;
    memcpy(buf + 1, want, sizeof want);                         /* misaligned float32 */
    oag_to_f32(got, buf + 1, OAG_DT_F32, 8);
    CHECK(!memcmp(got, want, sizeof want), "f32 copy");
    for (int i = 0; i < 8; i++) {
        uint16_t h = oag_f32_to_f16(want[i]);
        memcpy(buf + 1 + 2 * i, &h, 2);
    }
    oag_to_f32(got, buf + 1, OAG_DT_F16, 8);
    CHECK(!memcmp(got, want, sizeof want), "f16 unaligned");
    for (int i = 0; i < 8; i++) {
        uint16_t h = oag_f32_to_bf16(want[i]);
        memcpy(buf + 1 + 2 * i, &h, 2);
    }
    oag_to_f32(got, buf + 1, OAG_DT_BF16, 8);
    CHECK(!memcmp(got, want, sizeof want), "bf16 unaligned");
    CHECK(oag_dtype_size(OAG_DT_F32) == 4 && oag_dtype_size(OAG_DT_F16) == 2 &&
          oag_dtype_size(OAG_DT_BF16) == 2, "sizes");
    CHECK(!strcmp(oag_dtype_name(OAG_DT_BF16), "bfloat16"), "names");
}

int main(void)
{
    test_decode();
    test_midpoints();
    test_random();
    test_to_f32();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("PASS\n");
    return 0;
}
