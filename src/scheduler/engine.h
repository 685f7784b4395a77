/*
 * engine.h - the inference engine behind an ops table. The scheduler calls only these; a backend
 * (identity, CPU, CUDA) registers one table and is chosen once at start by name.
 */
#ifndef OAG_SCHED_ENGINE_H
#define OAG_SCHED_ENGINE_H

#include <stddef.h>
#include <stdint.h>

struct oag_engine;

struct oag_engine_params {
    uint32_t max_batch;
    uint32_t max_payload;   /* bytes of one task's input and output */
    const char *model;      /* model path, or NULL */
};

/* One batch: n rows. Input row i is in_len[i] bytes at in + i * stride; the engine writes output
 * row i (out_len[i] bytes, at most stride) at out + i * stride and status[i] (0 or -errno). */
struct oag_batch {
    uint32_t n;
    uint32_t stride;
    uint8_t *in;
    uint8_t *out;
    uint32_t *in_len;
    uint32_t *out_len;
    int32_t *status;
};

struct oag_engine_ops {
    const char *name;
    /* Returns 0 and *out, or a negative errno with a message logged. */
    int (*create)(struct oag_engine **out, const struct oag_engine_params *p);
    /* Runs one batch to completion. Returns 0 (per-row status in the batch) or a negative errno
     * when the whole batch failed (the caller fails every row). */
    int (*run)(struct oag_engine *e, struct oag_batch *b);
    void (*destroy)(struct oag_engine *e);
};

/* The table for a backend name, or NULL. */
const struct oag_engine_ops *engine_lookup(const char *name);
/* Comma-separated names, for --help. */
const char *engine_names(void);

#endif
