/*
 * fault_cuda.c - the CUDA kind of fault injection (fault.h): wrappers for the CUDA and cuBLAS
 * calls that allocate device or pinned memory, streams and handles. Linked into the supervisor
 * of fault-injection builds that have the cuda engine (-Wl,--wrap, src/common/meson.build).
 */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "fault.h"

cudaError_t __real_cudaMalloc(void **p, size_t n);
cudaError_t __real_cudaHostAlloc(void **p, size_t n, unsigned int flags);
cudaError_t __real_cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags);
cublasStatus_t __real_cublasCreate_v2(cublasHandle_t *h);
cudaError_t __wrap_cudaMalloc(void **p, size_t n);
cudaError_t __wrap_cudaHostAlloc(void **p, size_t n, unsigned int flags);
cudaError_t __wrap_cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags);
cublasStatus_t __wrap_cublasCreate_v2(cublasHandle_t *h);

cudaError_t __wrap_cudaMalloc(void **p, size_t n)
{
    if (oag_fault_hit(OAG_FAULT_CUDA, "cudaMalloc"))
        return cudaErrorMemoryAllocation;
    return __real_cudaMalloc(p, n);
}

cudaError_t __wrap_cudaHostAlloc(void **p, size_t n, unsigned int flags)
{
    if (oag_fault_hit(OAG_FAULT_CUDA, "cudaHostAlloc"))
        return cudaErrorMemoryAllocation;
    return __real_cudaHostAlloc(p, n, flags);
}

cudaError_t __wrap_cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int flags)
{
    if (oag_fault_hit(OAG_FAULT_CUDA, "cudaStreamCreateWithFlags"))
        return cudaErrorMemoryAllocation;
    return __real_cudaStreamCreateWithFlags(s, flags);
}

cublasStatus_t __wrap_cublasCreate_v2(cublasHandle_t *h)
{
    if (oag_fault_hit(OAG_FAULT_CUDA, "cublasCreate"))
        return CUBLAS_STATUS_ALLOC_FAILED;
    return __real_cublasCreate_v2(h);
}
