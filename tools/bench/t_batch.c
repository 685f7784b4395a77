/*
 * t_batch.c - table 2: batch-size sweep of the offline engine (1, 8, 32, ... 8192, --batches):
 * time per batch and per item. The engine is created through its ops table as the supervisor
 * creates it (offline.c); "alone" is one batch submitted and reaped, "kept full" the engine with
 * max_inflight batches in flight (the throughput figure). The baseline is batch 1 in the same run.
 */
#include "bench.h"

#include <cjson/cJSON.h>

int t_batch(struct tctx *c)
{
    const struct opts *o = c->o; /* --batches, default 1, 8, 32, 128, 512, 2048, 8192 */
    int rc = tctx_offline(c, o->batches, o->nbatches, o->off_iters, o->off_max_s);
    tprint_head(c, "Batch-size sweep, offline engine: time per batch and per item");
    cJSON *g = cJSON_AddObjectToObject(c->root, "guide");
    cJSON_AddStringToObject(g, "note", "the guide sweeps 1, 8, 32, ... 8192 on the GPU and "
                            "reports time per batch and per item; no figures in the issue");
    if (rc) {
        printf("  offline engine failed: %s\n", c->mr.off.msg);
        return rc;
    }
    const struct off_row *r1 = off_at(&c->mr, 1);
    printf("  (%u in flight when kept full; per item = kept-full time / batch; baseline: batch 1)\n",
           c->mr.off.max_inflight);
    printf("  %7s %14s %14s %14s %12s %12s\n", "batch", "alone p50 us", "kept full us",
           "per item us", "items/s", "vs batch 1");
    for (int k = 0; k < c->mr.off.nrows; k++) {
        const struct off_row *r = &c->mr.off.rows[k];
        char lab[32], a[32];
        snprintf(lab, sizeof lab, "batch %u", r->batch);
        cJSON *j = trow(c, "oag-engine", lab);
        jnum(j, "batch", r->batch);
        cJSON_AddBoolToObject(j, "ok", r->ok);
        if (!r->ok) {
            printf("  %7u %14s\n", r->batch, "failed");
            c->failures++;
            continue;
        }
        double item = r->pipe_us / r->batch;
        jnum(j, "batch_alone_us", r->lat_p50_us);
        jnum(j, "batch_alone_p99_us", r->lat_p99_us);
        jnum(j, "batch_us", r->pipe_us);
        jnum(j, "item_us", item);
        jnum(j, "items_s", r->rows_s);
        printf("  %7u %14.1f %14.1f %14.3f %12s", r->batch, r->lat_p50_us, r->pipe_us, item,
               fmt_rate(a, sizeof a, r->rows_s));
        if (r1 && r1->rows_s > 0) {
            jnum(j, "speedup_vs_batch1", r->rows_s / r1->rows_s);
            printf(" %11.1fx", r->rows_s / r1->rows_s);
        }
        printf("\n");
    }
    tprint_guide("per-item time falls with the batch until the device saturates (no figures "
                 "in the issue; compare the shape)");
    return 0;
}
