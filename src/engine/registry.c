/* registry.c - the engine backends built into this binary, looked up by name. */
#include <string.h>

#include "engine.h"

extern const struct oag_engine_ops engine_identity_ops;

static const struct oag_engine_ops *const engines[] = {
    &engine_identity_ops,
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
