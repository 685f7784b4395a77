/*
 * kernels.h - the CUDA engine's own kernels, launched from C (kernels.cu holds the code).
 *
 * Every launcher enqueues one kernel on stream st (which may be capturing into a graph) and
 * returns the launch's cudaError_t (cudaSuccess, or the error of the launch itself; a fault
 * while the kernel runs shows up later, at the stream's event). Element types are enum cu_dt
 * values; reads of float32 sources may alias the destination (every kernel reads an element
 * before the same thread writes it, and the row kernels reduce before they write).
 * All launchers are safe to call from any thread.
 */
#ifndef OAG_CUDA_KERNELS_H
#define OAG_CUDA_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst[i] = act(src[i]) for n elements; dst of type dst_dt. */
cudaError_t cu_launch_act(cudaStream_t st, void *dst, int dst_dt, const float *src, size_t n,
                          int act);
/* dst[r, c] = act(g[r, c] + bias[c]) for rows x cols; bias may be NULL. */
cudaError_t cu_launch_bias_act(cudaStream_t st, void *dst, int dst_dt, const float *g,
                               const float *bias, uint32_t rows, uint32_t cols, int act);
/* Per row: (x - mean) / sqrt(var + eps) * w + b; w, b may be NULL (1 and 0). Biased variance,
 * as torch.nn.LayerNorm. */
cudaError_t cu_launch_layernorm(cudaStream_t st, void *dst, int dst_dt, const float *src,
                                const float *w, const float *b, uint32_t rows, uint32_t cols,
                                float eps);
/* Per row: exp(x - max) / sum. */
cudaError_t cu_launch_softmax(cudaStream_t st, void *dst, int dst_dt, const float *src,
                              uint32_t rows, uint32_t cols);
/* dst[i] = (float)src[i], src of type src_dt (weights' biases and norms at load time). */
cudaError_t cu_launch_widen(cudaStream_t st, float *dst, const void *src, int src_dt, size_t n);

/* Rows by pointer. A row table lives in pinned host memory that the device reads directly: n,
 * then cap input pointers, then cap output pointers, each into registered host memory or NULL
 * (a row to skip). The kernels are launched for `rows` rows (a bucket, <= cap) and read n when
 * they run, so one captured graph serves any n <= rows. tab is the table's device address. */
struct cu_rowtab {
    uint32_t n;
    uint32_t pad;
    const void *ptr[];             /* in[cap], then out[cap] */
};
/* dst row r (row_bytes, at dst + r * row_bytes) = *in[r] for r < n; NULL rows are skipped (a
 * failed row, or one the copy engines bring). At most max_blocks blocks (0: one per row). */
cudaError_t cu_launch_gather(cudaStream_t st, void *dst, const struct cu_rowtab *tab,
                             uint32_t rows, uint32_t row_bytes, unsigned max_blocks);
/* *out[r] = src row r for r < n; NULL rows are skipped. */
cudaError_t cu_launch_scatter(cudaStream_t st, const struct cu_rowtab *tab, uint32_t cap,
                              const void *src, uint32_t rows, uint32_t row_bytes,
                              unsigned max_blocks);

/* Fault injection (tests): a launch the runtime refuses at once (4096 threads per block; not
 * sticky), and a kernel that traps while it runs (a sticky error: the context is lost). */
cudaError_t cu_launch_fault_badconfig(cudaStream_t st);
cudaError_t cu_launch_fault_trap(cudaStream_t st);

#ifdef __cplusplus
}
#endif

#endif
