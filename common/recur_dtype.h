/* recur_dtype.h: element types of tensors in model files and on devices, and the scalar
 * conversions between them (header-only: small static inline functions). */
#ifndef RECUR_DTYPE_H
#define RECUR_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum recur_dtype {
    RECUR_DTYPE_F32  = 0,
    RECUR_DTYPE_F16  = 1,
    RECUR_DTYPE_BF16 = 2,
    /* One-byte weight formats (recur_quant.h): codes with one fp32 scale per matrix row. */
    RECUR_DTYPE_I8     = 3,  /* int8, symmetric (-127..127)                        */
    RECUR_DTYPE_F8E4M3 = 4,  /* OCP FP8 E4M3 ("e4m3fn": no infinities, max 448)    */
    RECUR_DTYPE_COUNT
} recur_dtype_t;

static inline size_t recur_dtype_size(recur_dtype_t t) {
    switch (t) {
    case RECUR_DTYPE_F32:    return 4;
    case RECUR_DTYPE_I8:
    case RECUR_DTYPE_F8E4M3: return 1;
    default:                 return 2;
    }
}

static inline const char *recur_dtype_name(recur_dtype_t t) {
    switch (t) {
    case RECUR_DTYPE_F32:  return "f32";
    case RECUR_DTYPE_F16:  return "f16";
    case RECUR_DTYPE_BF16: return "bf16";
    case RECUR_DTYPE_I8:   return "int8";
    case RECUR_DTYPE_F8E4M3: return "fp8";
    default:               return "?";
    }
}

/* The value of a --weights option: f32, bf16, int8 or fp8 (e4m3). Returns 0 and sets *out,
 * or -1 for anything else (the caller prints the usage). */
static inline int recur_dtype_parse_weights(const char *s, recur_dtype_t *out) {
    static const struct { const char *name; recur_dtype_t t; } k[] = {
        {"f32", RECUR_DTYPE_F32}, {"bf16", RECUR_DTYPE_BF16}, {"int8", RECUR_DTYPE_I8}, {"fp8", RECUR_DTYPE_F8E4M3}};
    for (size_t i = 0; s && i < sizeof k / sizeof k[0]; i++)
        if (strcmp(s, k[i].name) == 0) {
            *out = k[i].t;
            return 0;
        }
    return -1;
}

static inline float recur_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Round to nearest even; NaN stays NaN (quiet bit forced so it cannot round to Inf). */
static inline uint16_t recur_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE binary16 -> binary32, exact (subnormals, Inf and NaN included). */
static inline float recur_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#ifdef __cplusplus
}
#endif
#endif
