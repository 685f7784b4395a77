/*
 * green.c - see green.h.
 */
#include "green.h"

#include <cuda.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

typedef CUresult (*fn_get_t)(CUdevice *, int);
typedef CUresult (*fn_res_t)(CUdevice, CUdevResource *, CUdevResourceType);
typedef CUresult (*fn_split_t)(CUdevResource *, unsigned *, const CUdevResource *,
                               CUdevResource *, unsigned, unsigned);
typedef CUresult (*fn_desc_t)(CUdevResourceDesc *, CUdevResource *, unsigned);
typedef CUresult (*fn_ctx_t)(CUgreenCtx *, CUdevResourceDesc, CUdevice, unsigned);
typedef CUresult (*fn_destroy_t)(CUgreenCtx);
typedef CUresult (*fn_stream_t)(CUstream *, CUgreenCtx, unsigned, int);

struct cu_green {
    CUgreenCtx ctx[2];             /* [0] compute, [1] copy */
    unsigned sms[2];
    fn_destroy_t destroy;
    fn_stream_t stream;
};

static void *entry(const char *name)
{
    void *fn = NULL;
    enum cudaDriverEntryPointQueryResult q;
    if (cudaGetDriverEntryPointByVersion(name, &fn, CUDA_VERSION, cudaEnableDefault, &q) !=
            cudaSuccess || q != cudaDriverEntryPointSuccess)
        return NULL;
    return fn;
}

static const char *missing(void *const *fns, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!fns[i])
            return names[i];
    return NULL;
}

int cu_green_create(struct cu_green **out, int dev, unsigned copy_sms, char *why, size_t whylen)
{
    fn_get_t get = (fn_get_t)entry("cuDeviceGet");
    fn_res_t res = (fn_res_t)entry("cuDeviceGetDevResource");
    fn_split_t split = (fn_split_t)entry("cuDevSmResourceSplitByCount");
    fn_desc_t desc = (fn_desc_t)entry("cuDevResourceGenerateDesc");
    fn_ctx_t create = (fn_ctx_t)entry("cuGreenCtxCreate");
    struct cu_green *g = calloc(1, sizeof *g);
    if (!g)
        return -ENOMEM;
    g->destroy = (fn_destroy_t)entry("cuGreenCtxDestroy");
    g->stream = (fn_stream_t)entry("cuGreenCtxStreamCreate");
    void *fns[] = { (void *)get, (void *)res, (void *)split, (void *)desc, (void *)create,
                    (void *)g->destroy, (void *)g->stream };
    static const char *const names[] = { "cuDeviceGet", "cuDeviceGetDevResource",
                                         "cuDevSmResourceSplitByCount",
                                         "cuDevResourceGenerateDesc", "cuGreenCtxCreate",
                                         "cuGreenCtxDestroy", "cuGreenCtxStreamCreate" };
    const char *m = missing(fns, names, 7);
    if (m) {
        snprintf(why, whylen, "the driver has no %s", m);
        free(g);
        return -ENOTSUP;
    }
    CUdevice d;
    CUdevResource all, part, rest;
    CUdevResourceDesc dd[2];
    unsigned n = 1;
    const char *step = "cuDeviceGet";
    CUresult r = get(&d, dev);
    if (r == CUDA_SUCCESS && (step = "cuDeviceGetDevResource",
                              r = res(d, &all, CU_DEV_RESOURCE_TYPE_SM)) == CUDA_SUCCESS &&
        (step = "split", r = split(&part, &n, &all, &rest, 0, copy_sms)) == CUDA_SUCCESS &&
        n == 1 && rest.sm.smCount > 0 &&
        (step = "descriptor", r = desc(&dd[1], &part, 1)) == CUDA_SUCCESS &&
        (r = desc(&dd[0], &rest, 1)) == CUDA_SUCCESS &&
        (step = "cuGreenCtxCreate",
         r = create(&g->ctx[1], dd[1], d, CU_GREEN_CTX_DEFAULT_STREAM)) == CUDA_SUCCESS) {
        r = create(&g->ctx[0], dd[0], d, CU_GREEN_CTX_DEFAULT_STREAM);
        if (r == CUDA_SUCCESS) {
            g->sms[1] = part.sm.smCount;
            g->sms[0] = rest.sm.smCount;
            *out = g;
            return 0;
        }
        g->destroy(g->ctx[1]);
    }
    snprintf(why, whylen, "%s failed (%d%s)", step, (int)r,
             r == CUDA_SUCCESS ? ", no partition left for compute" : "");
    free(g);
    return -ENOTSUP;
}

void cu_green_destroy(struct cu_green *g)
{
    if (!g)
        return;
    for (int i = 0; i < 2; i++)
        if (g->ctx[i])
            (void)g->destroy(g->ctx[i]);
    free(g);
}

int cu_green_stream(struct cu_green *g, int copy, int priority, cudaStream_t *st)
{
    CUstream s = NULL;
    if (g->stream(&s, g->ctx[copy ? 1 : 0], CU_STREAM_NON_BLOCKING, priority) != CUDA_SUCCESS)
        return -EIO;
    *st = (cudaStream_t)s;
    return 0;
}

unsigned cu_green_sms(const struct cu_green *g, int copy) { return g->sms[copy ? 1 : 0]; }
