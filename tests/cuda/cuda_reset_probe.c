/*
 * cuda_reset_probe - can this machine bring a CUDA context back after a sticky fault, in the
 * same process? Not a test: a probe for the engine's recovery design, run by hand on a GPU.
 *
 *   cuda_reset_probe SCENARIO     (one scenario per process: a fault may poison the process)
 *
 * Each scenario sets something up, traps a kernel, waits for the error, calls cudaDeviceReset,
 * and then retries cudaSetDevice + cudaFree(0) (which creates the new context) every 50 ms for
 * up to 5 s, printing how long the device took to come back, or that it never did.
 *   0  nothing else
 *   1  a cuBLAS handle made before the fault (destroyed after it, as the engine does)
 *   2  host memory pinned with cudaHostRegister before the fault
 *   3  a second thread that used the context (as the engine's completion thread does)
 *   4  all of the above
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "cuda/kernels.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *toucher(void *arg)
{
    cudaEvent_t *ev = arg;
    cudaSetDevice(0);
    cudaEventQuery(*ev);
    return NULL;
}

int main(int argc, char **argv)
{
    int sc = argc > 1 ? atoi(argv[1]) : 0;
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0)
        return 77;
    cudaSetDevice(0);
    cudaFree(0);
    cublasHandle_t h = NULL;
    void *pinned = NULL;
    cudaStream_t st;
    cudaEvent_t ev;
    cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming | cudaEventBlockingSync);
    cudaEventRecord(ev, st);
    if (sc == 1 || sc == 4)
        printf("cublasCreate: %d\n", (int)cublasCreate(&h));
    if (sc == 2 || sc == 4) {
        pinned = mmap(NULL, 1 << 24, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        printf("cudaHostRegister: %s\n",
               cudaGetErrorName(cudaHostRegister(pinned, 1 << 24, cudaHostRegisterPortable)));
    }
    if (sc == 3 || sc == 4) {
        pthread_t th;
        pthread_create(&th, NULL, toucher, &ev);
        pthread_join(th, NULL);
    }
    cu_launch_fault_trap(st);
    cudaEventRecord(ev, st);
    printf("scenario %d: fault: %s\n", sc, cudaGetErrorName(cudaEventSynchronize(ev)));
    if (h)
        printf("cublasDestroy after the fault: %d\n", (int)cublasDestroy(h));
    double t0 = now_ms();
    cudaError_t r = cudaDeviceReset();
    printf("cudaDeviceReset: %s (%.1f ms)\n", cudaGetErrorName(r), now_ms() - t0);
    t0 = now_ms();
    for (int i = 0;; i++) {
        cudaError_t a = cudaSetDevice(0), b = cudaErrorUnknown;
        if (a == cudaSuccess)
            b = cudaFree(0);
        if (a == cudaSuccess && b == cudaSuccess) {
            printf("scenario %d: device back after %.1f ms (%d retries)\n", sc, now_ms() - t0, i);
            break;
        }
        if (i == 0 || now_ms() - t0 > 5000)
            printf("  retry %d: cudaSetDevice %s, cudaFree(0) %s\n", i, cudaGetErrorName(a),
                   cudaGetErrorName(b));
        if (now_ms() - t0 > 5000) {
            printf("scenario %d: device NOT back after 5 s\n", sc);
            return 1;
        }
        (void)cudaGetLastError();
        usleep(50000);
    }
    if (pinned)
        printf("re-register: %s\n",
               cudaGetErrorName(cudaHostRegister(pinned, 1 << 24, cudaHostRegisterPortable)));
    void *p;
    printf("cudaMalloc after: %s\n", cudaGetErrorName(cudaMalloc(&p, 1 << 20)));
    return 0;
}
