/* registry.c - the engine backends built into this binary, looked up by name. */
#include <string.h>

#include "engine.h"

extern const struct oag_engine_ops engine_identity_ops;
#ifdef OAG_ENGINE_CPU   /* defined by cpu_engine_dep (src/cpu/meson.build) when it is linked */
extern const struct oag_engine_ops engine_cpu_ops;
#endif
#ifdef OAG_ENGINE_CUDA  /* defined by cuda_engine_dep (src/cuda/meson.build) when it is linked */
extern const struct oag_engine_ops engine_cuda_ops;
#endif
#ifdef OAG_ENGINE_REMOTE /* defined by fwd_engine_dep (src/net/meson.build) when it is linked */
extern const struct oag_engine_ops engine_remote_ops;
#endif

static const struct oag_engine_ops *const engines[] = {
    &engine_identity_ops,
#ifdef OAG_ENGINE_CPU
    &engine_cpu_ops,
#endif
#ifdef OAG_ENGINE_CUDA
    &engine_cuda_ops,
#endif
#ifdef OAG_ENGINE_REMOTE
    &engine_remote_ops,
#endif
};

const struct oag_engine_ops *engine_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++)
        if (!strcmp(engines[i]->name, name))
            return engines[i];
    return NULL;
}

const char *engine_names(void)
{
    static char buf[128];
    if (!buf[0])
        for (size_t i = 0; i < sizeof engines / sizeof engines[0]; i++) {
            if (i)
                strcat(buf, ", ");
            strcat(buf, engines[i]->name);
        }
    return buf;
}
