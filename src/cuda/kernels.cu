/*
 * kernels.cu - elementwise, epilogue (bias + activation), layernorm and softmax kernels.
 *
 * Everything computes in float32; only the store rounds, to the destination's type (fp16/bf16
 * round to nearest even). Activations match torch: GELU is the exact erf form, SiLU x*sigmoid(x).
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "kernels.h"
#include "plan.h"

namespace {

template <typename T> __device__ __forceinline__ void store(T *p, float v);
template <> __device__ __forceinline__ void store<float>(float *p, float v) { *p = v; }
template <> __device__ __forceinline__ void store<__half>(__half *p, float v)
{
    *p = __float2half_rn(v);
}
template <> __device__ __forceinline__ void store<__nv_bfloat16>(__nv_bfloat16 *p, float v)
{
    *p = __float2bfloat16_rn(v);
}

template <typename T> __device__ __forceinline__ float load(const T *p);
template <> __device__ __forceinline__ float load<float>(const float *p) { return *p; }
template <> __device__ __forceinline__ float load<__half>(const __half *p)
{
    return __half2float(*p);
}
template <> __device__ __forceinline__ float load<__nv_bfloat16>(const __nv_bfloat16 *p)
{
    return __bfloat162float(*p);
}

__device__ __forceinline__ float activate(float x, int act)
{
    switch (act) {
    case CU_ACT_RELU: return x > 0.f ? x : 0.f;
    case CU_ACT_GELU: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case CU_ACT_SILU: return x / (1.f + expf(-x));
    case CU_ACT_TANH: return tanhf(x);
    default: return x;
    }
}

template <typename T>
__global__ void act_kernel(T *dst, const float *src, size_t n, int act)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        store(dst + i, activate(src[i], act));
}

/* One block row-slice: blockIdx.y walks rows (grid-stride), x covers columns. */
template <typename T>
__global__ void bias_act_kernel(T *dst, const float *g, const float *bias, uint32_t rows,
                                uint32_t cols, int act)
{
    for (uint32_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const size_t base = (size_t)r * cols;
        for (uint32_t c = blockIdx.x * blockDim.x + threadIdx.x; c < cols;
             c += gridDim.x * blockDim.x) {
            float v = g[base + c];
            if (bias)
                v += bias[c];
            store(dst + base + c, activate(v, act));
        }
    }
}

/* Sum over the block; every thread gets the result. sh: 32 floats of shared memory. */
__device__ float block_sum(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads(); /* sh may still be read from a previous reduction */
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    const int nw = (blockDim.x + 31) >> 5;
    v = lane < nw ? sh[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    const int nw = (blockDim.x + 31) >> 5;
    v = lane < nw ? sh[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* One block per row; two passes for mean and variance (numerically safer than sum of squares),
 * a third to write. In place is fine: each thread writes only the elements it read. */
template <typename T>
__global__ void layernorm_kernel(T *dst, const float *src, const float *w, const float *b,
                                 uint32_t cols, float eps)
{
    __shared__ float sh[32];
    const float *x = src + (size_t)blockIdx.x * cols;
    T *y = dst + (size_t)blockIdx.x * cols;
    float s = 0.f;
    for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x)
        s += x[c];
    const float mean = block_sum(s, sh) / (float)cols;
    float q = 0.f;
    for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x) {
        const float d = x[c] - mean;
        q += d * d;
    }
    const float rstd = rsqrtf(block_sum(q, sh) / (float)cols + eps);
    for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = (x[c] - mean) * rstd;
        if (w)
            v *= w[c];
        if (b)
            v += b[c];
        store(y + c, v);
    }
}

template <typename T>
__global__ void softmax_kernel(T *dst, const float *src, uint32_t cols)
{
    __shared__ float sh[32];
    const float *x = src + (size_t)blockIdx.x * cols;
    T *y = dst + (size_t)blockIdx.x * cols;
    float m = -INFINITY;
    for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x)
        m = fmaxf(m, x[c]);
    m = block_max(m, sh);
    float s = 0.f;
    for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x)
        s += expf(x[c] - m);
    const float inv = 1.f / block_sum(s, sh);
    for (uint32_t c = threadIdx.x; c < cols; c += blockDim.x)
        store(y + c, expf(x[c] - m) * inv);
}

template <typename T>
__global__ void widen_kernel(float *dst, const T *src, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        dst[i] = load(src + i);
}

__global__ void trap_kernel(void) { __trap(); }
__global__ void nop_kernel(void) {}

unsigned flat_blocks(size_t n)
{
    size_t b = (n + 255) / 256;
    if (b == 0)
        b = 1;
    return b > (1u << 20) ? (1u << 20) : (unsigned)b;
}

unsigned row_threads(uint32_t cols)
{
    if (cols >= 512)
        return 512;
    unsigned t = (cols + 31) & ~31u;
    return t ? t : 32;
}

} // namespace

extern "C" cudaError_t cu_launch_act(cudaStream_t st, void *dst, int dst_dt, const float *src,
                                     size_t n, int act)
{
    const unsigned nb = flat_blocks(n);
    switch (dst_dt) {
    case CU_F32: act_kernel<<<nb, 256, 0, st>>>((float *)dst, src, n, act); break;
    case CU_F16: act_kernel<<<nb, 256, 0, st>>>((__half *)dst, src, n, act); break;
    case CU_BF16: act_kernel<<<nb, 256, 0, st>>>((__nv_bfloat16 *)dst, src, n, act); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_bias_act(cudaStream_t st, void *dst, int dst_dt, const float *g,
                                          const float *bias, uint32_t rows, uint32_t cols,
                                          int act)
{
    if (rows == 0 || cols == 0)
        return cudaSuccess;
    const unsigned threads = cols >= 256 ? 256 : row_threads(cols);
    unsigned bx = (cols + threads - 1) / threads;
    if (bx > 64)
        bx = 64;
    const dim3 grid(bx, rows < 65535 ? rows : 65535);
    switch (dst_dt) {
    case CU_F32:
        bias_act_kernel<<<grid, threads, 0, st>>>((float *)dst, g, bias, rows, cols, act);
        break;
    case CU_F16:
        bias_act_kernel<<<grid, threads, 0, st>>>((__half *)dst, g, bias, rows, cols, act);
        break;
    case CU_BF16:
        bias_act_kernel<<<grid, threads, 0, st>>>((__nv_bfloat16 *)dst, g, bias, rows, cols,
                                                  act);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_layernorm(cudaStream_t st, void *dst, int dst_dt,
                                           const float *src, const float *w, const float *b,
                                           uint32_t rows, uint32_t cols, float eps)
{
    if (rows == 0)
        return cudaSuccess;
    const unsigned t = row_threads(cols);
    switch (dst_dt) {
    case CU_F32: layernorm_kernel<<<rows, t, 0, st>>>((float *)dst, src, w, b, cols, eps); break;
    case CU_F16: layernorm_kernel<<<rows, t, 0, st>>>((__half *)dst, src, w, b, cols, eps); break;
    case CU_BF16:
        layernorm_kernel<<<rows, t, 0, st>>>((__nv_bfloat16 *)dst, src, w, b, cols, eps);
        break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_softmax(cudaStream_t st, void *dst, int dst_dt, const float *src,
                                         uint32_t rows, uint32_t cols)
{
    if (rows == 0)
        return cudaSuccess;
    const unsigned t = row_threads(cols);
    switch (dst_dt) {
    case CU_F32: softmax_kernel<<<rows, t, 0, st>>>((float *)dst, src, cols); break;
    case CU_F16: softmax_kernel<<<rows, t, 0, st>>>((__half *)dst, src, cols); break;
    case CU_BF16: softmax_kernel<<<rows, t, 0, st>>>((__nv_bfloat16 *)dst, src, cols); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_widen(cudaStream_t st, float *dst, const void *src, int src_dt,
                                       size_t n)
{
    const unsigned nb = flat_blocks(n);
    switch (src_dt) {
    case CU_F32: widen_kernel<<<nb, 256, 0, st>>>(dst, (const float *)src, n); break;
    case CU_F16: widen_kernel<<<nb, 256, 0, st>>>(dst, (const __half *)src, n); break;
    case CU_BF16: widen_kernel<<<nb, 256, 0, st>>>(dst, (const __nv_bfloat16 *)src, n); break;
    default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

/* Rows by pointer. A few blocks walk the rows (grid-stride), each thread with 4 independent
 * 16-byte accesses in flight when both rows allow them: host rows cross the bus at about the
 * copy engines' rate while most multiprocessors stay free for the batches computing on other
 * streams (one block per row would fill the GPU with blocks waiting on the bus). */
#define ROW_UNROLL 4

__device__ __forceinline__ void copy_row(uint8_t *d, const uint8_t *s, uint32_t bytes)
{
    if ((((uintptr_t)s | (uintptr_t)d | bytes) & 15) == 0) {
        const uint32_t step = blockDim.x * 16;
        for (uint32_t i = threadIdx.x * 16; i < bytes; i += ROW_UNROLL * step) {
            uint4 v[ROW_UNROLL];
#pragma unroll
            for (int k = 0; k < ROW_UNROLL; k++)
                if (i + k * step < bytes)
                    v[k] = *(const uint4 *)(s + i + k * step);
#pragma unroll
            for (int k = 0; k < ROW_UNROLL; k++)
                if (i + k * step < bytes)
                    *(uint4 *)(d + i + k * step) = v[k];
        }
    } else {
        for (uint32_t i = threadIdx.x * 4; i < bytes; i += blockDim.x * 4)
            *(uint32_t *)(d + i) = *(const uint32_t *)(s + i);
    }
}

__global__ void gather_kernel(uint8_t *dst, const cu_rowtab *tab, uint32_t row_bytes)
{
    const uint32_t n = tab->n;
    for (uint32_t r = blockIdx.x; r < n; r += gridDim.x) {
        const uint8_t *src = (const uint8_t *)tab->ptr[r];
        if (src)
            copy_row(dst + (size_t)r * row_bytes, src, row_bytes);
    }
}

__global__ void scatter_kernel(const cu_rowtab *tab, uint32_t cap, const uint8_t *src,
                               uint32_t row_bytes)
{
    const uint32_t n = tab->n;
    for (uint32_t r = blockIdx.x; r < n; r += gridDim.x) {
        uint8_t *d = (uint8_t *)tab->ptr[cap + r];
        if (d)
            copy_row(d, src + (size_t)r * row_bytes, row_bytes);
    }
}

static unsigned row_blocks(uint32_t rows, unsigned max_blocks)
{
    return max_blocks && rows > max_blocks ? max_blocks : rows;
}

extern "C" cudaError_t cu_launch_gather(cudaStream_t st, void *dst, const struct cu_rowtab *tab,
                                        uint32_t rows, uint32_t row_bytes, unsigned max_blocks)
{
    if (!rows || (row_bytes & 3))
        return cudaErrorInvalidValue;
    gather_kernel<<<row_blocks(rows, max_blocks), 256, 0, st>>>((uint8_t *)dst, tab, row_bytes);
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_scatter(cudaStream_t st, const struct cu_rowtab *tab,
                                         uint32_t cap, const void *src, uint32_t rows,
                                         uint32_t row_bytes, unsigned max_blocks)
{
    if (!rows || rows > cap || (row_bytes & 3))
        return cudaErrorInvalidValue;
    scatter_kernel<<<row_blocks(rows, max_blocks), 256, 0, st>>>(tab, cap, (const uint8_t *)src,
                                                                  row_bytes);
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_fault_badconfig(cudaStream_t st)
{
    nop_kernel<<<1, 4096, 0, st>>>(); /* > 1024 threads per block: refused at launch */
    return cudaGetLastError();
}

extern "C" cudaError_t cu_launch_fault_trap(cudaStream_t st)
{
    trap_kernel<<<1, 1, 0, st>>>();
    return cudaGetLastError();
}
