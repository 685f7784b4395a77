/*
 * half.c - float16 / bfloat16 <-> float32 conversions and the dtype table.
 *
 * Pure integer bit manipulation: the results do not depend on the FPU rounding mode, on
 * flush-to-zero, or on the compiler's _Float16 support. float -> half rounds to nearest, ties to
 * even; overflow gives inf, NaN stays NaN (quieted, sign kept), subnormals are produced and read.
 * All functions are pure and safe from any thread.
 */
#include <stdint.h>
#include <string.h>

#include "model.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "oag_to_f32 reads safetensors data (little-endian) in host order: little-endian hosts only"
#endif

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

size_t oag_dtype_size(enum oag_dtype dt)
{
    switch (dt) {
    case OAG_DT_F32: return 4;
    case OAG_DT_F16: return 2;
    case OAG_DT_BF16: return 2;
    }
    return 0;
}

const char *oag_dtype_name(enum oag_dtype dt)
{
    switch (dt) {
    case OAG_DT_F32: return "float32";
    case OAG_DT_F16: return "float16";
    case OAG_DT_BF16: return "bfloat16";
    }
    return "unknown";
}

/* Exact: every float16 value is a float32 value. */
float oag_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;

    if (exp == 0x1f)                                /* inf, or NaN with its payload kept */
        return f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return f32_from_bits(sign);             /* +-0 */
        /* Subnormal man * 2^-24: normalise so the leading 1 becomes the implicit bit. */
        uint32_t e = 127 - 14;
        while (!(man & 0x400u)) {
            man <<= 1;
            e--;
        }
        return f32_from_bits(sign | (e << 23) | ((man & 0x3ffu) << 13));
    }
    return f32_from_bits(sign | ((exp + 127 - 15) << 23) | (man << 13));
}

uint16_t oag_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    x &= 0x7fffffffu;

    if (x > 0x7f800000u)                            /* NaN: quiet, keep the top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
    if (x >= 0x477ff000u)                           /* >= 65520 (the tie above 65504): inf */
        return (uint16_t)(sign | 0x7c00u);
    if (x >= 0x38800000u) {                         /* >= 2^-14: a normal half */
        /* Rebias the exponent, then round the 13 dropped bits to nearest even; a carry out of
         * the mantissa correctly bumps the exponent. */
        x += ((uint32_t)(15 - 127) << 23) + 0xfffu + ((x >> 13) & 1u);
        return (uint16_t)(sign | (x >> 13));
    }
    /* Subnormal half (units of 2^-24) or zero. The value is man * 2^(e - 150) with the implicit
     * bit in man, so the half mantissa is man >> (126 - e), rounded to nearest even. */
    uint32_t e = x >> 23;
    if (e < 102)                                    /* < 2^-25: rounds to zero */
        return sign;
    uint32_t man = (x & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;                       /* 14 .. 24 */
    uint32_t h = man >> shift;
    uint32_t rem = man & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1u)))
        h++;                                        /* may carry into the smallest normal: fine */
    return (uint16_t)(sign | h);
}

/* Exact: bfloat16 is the top half of a float32. */
float oag_bf16_to_f32(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

uint16_t oag_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)            /* NaN: quiet it, keep sign and payload top */
        return (uint16_t)((x >> 16) | 0x0040u);
    x += 0x7fffu + ((x >> 16) & 1u);                /* round to nearest even; overflow -> inf */
    return (uint16_t)(x >> 16);
}

/* src needs no alignment: every element is read with memcpy. */
void oag_to_f32(float *dst, const void *src, enum oag_dtype dt, size_t n)
{
    const unsigned char *s = src;
    uint16_t h;

    switch (dt) {
    case OAG_DT_F32:
        memcpy(dst, s, n * sizeof(float));
        return;
    case OAG_DT_F16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            dst[i] = oag_f16_to_f32(h);
        }
        return;
    case OAG_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            memcpy(&h, s + 2 * i, 2);
            dst[i] = oag_bf16_to_f32(h);
        }
        return;
    }
}
