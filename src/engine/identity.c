/* identity.c - result = input: the zero-compute baseline for measuring the runtime. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct oag_engine { uint32_t max_payload; };

static int identity_create(struct oag_engine **out, const struct oag_engine_params *p)
{
    struct oag_engine *e = calloc(1, sizeof *e);
    if (!e)
        return -ENOMEM;
    e->max_payload = p->max_payload;
    *out = e;
    return 0;
}

static int identity_submit(struct oag_engine *e, struct oag_batch *b)
{
    (void)e;
    for (uint32_t i = 0; i < b->n; i++) {
        uint32_t len = b->in_len[i] <= b->out_stride ? b->in_len[i] : 0;
        if (b->in_ptr) /* rows by pointer: one copy, from the agent's slot to its result slot */
            memcpy(b->out_ptr[i], b->in_ptr[i], len);
        else
            memcpy(b->out + (size_t)i * b->out_stride, b->in + (size_t)i * b->in_stride, len);
        b->out_len[i] = len;
        b->status[i] = len == b->in_len[i] ? 0 : -EMSGSIZE;
    }
    b->whole_rc = 0;
    return 0;
}

static void identity_destroy(struct oag_engine *e) { free(e); }

/* Rows by pointer need nothing of host memory. */
static int identity_host_register(struct oag_engine *e, void *p, size_t len)
{
    (void)e;
    (void)p;
    (void)len;
    return 0;
}

static void identity_host_unregister(void *p) { (void)p; }

const struct oag_engine_ops engine_identity_ops = {
    .name = "identity", .create = identity_create, .destroy = identity_destroy,
    .submit = identity_submit,
    .host_register = identity_host_register, .host_unregister = identity_host_unregister,
};
