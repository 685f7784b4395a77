/*
 * bench_base.cu - the plain cuBLAS baseline for cuda_offline_bench: what a hand-written program
 * does for the same task, with none of the engine around it. Per forward, one CUDA graph:
 * float32 rows H2D from a pinned buffer, a cast to fp16, per layer cublasGemmEx (fp16 in and
 * out, fp32 accumulation) and a bias(+ReLU) kernel, the last layer's result written as float32,
 * D2H into a pinned buffer. Timed by the host: launch + cudaStreamSynchronize (a spin wait).
 */
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bench_base.h"

namespace {

__global__ void to_half(__half *y, const float *x, size_t n)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        y[i] = __float2half_rn(x[i]);
}

/* y[r, c] = relu?(y[r, c] + b[c]) in place (fp16), or into a float32 output */
__global__ void bias_act(__half *y, float *out, const __half *b, size_t n, unsigned cols, int relu)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = __half2float(y[i]) + __half2float(b[i % cols]);
        if (relu)
            v = v > 0.f ? v : 0.f;
        if (out)
            out[i] = v;
        else
            y[i] = __float2half_rn(v);
    }
}

unsigned blocks(size_t n) { return (unsigned)std::min<size_t>((n + 255) / 256, 1u << 20); }

} // namespace

struct base {
    int dev;
    unsigned nl, max_batch;
    std::vector<unsigned> dims;
    std::vector<__half *> w, b;
    cudaStream_t st;
    cublasHandle_t h;
    void *ws;
    float *hin, *hout, *din, *dout;
    __half *x0, *x1;
};

#define OK(call)                                                                                \
    do {                                                                                        \
        cudaError_t e_ = (call);                                                                \
        if (e_ != cudaSuccess) {                                                                \
            fprintf(stderr, "baseline: %s: %s\n", #call, cudaGetErrorString(e_));              \
            return -1;                                                                          \
        }                                                                                       \
    } while (0)

extern "C" int base_create(struct base **out, int dev, unsigned nl, const unsigned *dims,
                           const void *const *w, const void *const *b, unsigned max_batch)
{
    base *B = new base();
    B->dev = dev;
    B->nl = nl;
    B->max_batch = max_batch;
    B->dims.assign(dims, dims + nl + 1);
    OK(cudaSetDevice(dev));
    unsigned wmax = *std::max_element(dims, dims + nl + 1);
    for (unsigned l = 0; l < nl; l++) {
        __half *dw, *db;
        OK(cudaMalloc(&dw, (size_t)dims[l] * dims[l + 1] * 2));
        OK(cudaMalloc(&db, (size_t)dims[l + 1] * 2));
        OK(cudaMemcpy(dw, w[l], (size_t)dims[l] * dims[l + 1] * 2, cudaMemcpyHostToDevice));
        OK(cudaMemcpy(db, b[l], (size_t)dims[l + 1] * 2, cudaMemcpyHostToDevice));
        B->w.push_back(dw);
        B->b.push_back(db);
    }
    OK(cudaStreamCreateWithFlags(&B->st, cudaStreamNonBlocking));
    if (cublasCreate(&B->h) != CUBLAS_STATUS_SUCCESS)
        return -1;
    OK(cudaMalloc(&B->ws, 32 << 20));
    cublasSetStream(B->h, B->st);
    cublasSetWorkspace(B->h, B->ws, 32 << 20);
    OK(cudaHostAlloc(&B->hin, (size_t)max_batch * dims[0] * 4, 0));
    OK(cudaHostAlloc(&B->hout, (size_t)max_batch * dims[nl] * 4, 0));
    OK(cudaMalloc(&B->din, (size_t)max_batch * dims[0] * 4));
    OK(cudaMalloc(&B->dout, (size_t)max_batch * dims[nl] * 4));
    OK(cudaMalloc(&B->x0, (size_t)max_batch * wmax * 2));
    OK(cudaMalloc(&B->x1, (size_t)max_batch * wmax * 2));
    for (size_t i = 0; i < (size_t)max_batch * dims[0]; i++)
        B->hin[i] = (float)((i * 2654435761u) % 2001) / 1000.f - 1.f;
    *out = B;
    return 0;
}

static int forward(base *B, unsigned n)
{
    const float one = 1.f, zero = 0.f;
    const unsigned *d = B->dims.data();
    OK(cudaMemcpyAsync(B->din, B->hin, (size_t)n * d[0] * 4, cudaMemcpyHostToDevice, B->st));
    to_half<<<blocks((size_t)n * d[0]), 256, 0, B->st>>>(B->x0, B->din, (size_t)n * d[0]);
    __half *x = B->x0, *y = B->x1;
    for (unsigned l = 0; l < B->nl; l++) {
        if (cublasGemmEx(B->h, CUBLAS_OP_T, CUBLAS_OP_N, d[l + 1], n, d[l], &one, B->w[l],
                         CUDA_R_16F, d[l], x, CUDA_R_16F, d[l], &zero, y, CUDA_R_16F, d[l + 1],
                         CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) != CUBLAS_STATUS_SUCCESS)
            return -1;
        const int last = l + 1 == B->nl;
        bias_act<<<blocks((size_t)n * d[l + 1]), 256, 0, B->st>>>(
            y, last ? B->dout : nullptr, B->b[l], (size_t)n * d[l + 1], d[l + 1], !last);
        std::swap(x, y);
    }
    OK(cudaMemcpyAsync(B->hout, B->dout, (size_t)n * d[B->nl] * 4, cudaMemcpyDeviceToHost,
                       B->st));
    return 0;
}

extern "C" double base_median_us(struct base *B, unsigned n, int runs)
{
    cudaGraph_t g;
    cudaGraphExec_t ge;
    if (forward(B, n) || cudaStreamSynchronize(B->st) != cudaSuccess) /* warm, outside a graph */
        return -1;
    if (cudaStreamBeginCapture(B->st, cudaStreamCaptureModeThreadLocal) != cudaSuccess)
        return -1;
    int rc = forward(B, n);
    if (cudaStreamEndCapture(B->st, &g) != cudaSuccess || rc)
        return -1;
    if (cudaGraphInstantiate(&ge, g, 0) != cudaSuccess)
        return -1;
    std::vector<double> t;
    for (int i = 0; i < runs + 5; i++) {
        auto t0 = std::chrono::steady_clock::now();
        cudaGraphLaunch(ge, B->st);
        cudaStreamSynchronize(B->st);
        auto t1 = std::chrono::steady_clock::now();
        if (i >= 5)
            t.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
}

extern "C" void base_destroy(struct base *B)
{
    if (!B)
        return;
    cudaStreamSynchronize(B->st);
    for (auto p : B->w)
        cudaFree(p);
    for (auto p : B->b)
        cudaFree(p);
    cublasDestroy(B->h);
    cudaFree(B->ws);
    cudaFreeHost(B->hin);
    cudaFreeHost(B->hout);
    cudaFree(B->din);
    cudaFree(B->dout);
    cudaFree(B->x0);
    cudaFree(B->x1);
    cudaStreamDestroy(B->st);
    delete B;
}
