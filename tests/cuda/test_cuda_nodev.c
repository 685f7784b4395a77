/*
 * test_cuda_nodev - create() without a usable device returns -ENODEV and never aborts: on a
 * machine without a GPU (or driver) for device 0, and anywhere for an ordinal past the last
 * device or a negative one. With a GPU, also the parameter errors (-EINVAL) and a clean
 * create/destroy. Runs everywhere (no skip).
 */
#include "cu_test.h"
#include "cuda/cuda_engine.h"

int main(void)
{
    const struct oag_engine_ops *ops = &engine_cuda_ops;
    int ndev = oag__cuda_device_count();
    printf("CUDA devices: %d\n", ndev);
    t_tmp_init();
    static const struct oag_gen_layer L[] = { { .kind = OAG_L_LINEAR, .out_dim = 4, .bias = 1 } };
    struct t_model tm;
    t_model_make(&tm, "nodev", OAG_DT_F32, 8, 1, L, 1, 0);

    struct oag_engine *e = (struct oag_engine *)0x1;
    struct oag_engine_params p = { .max_batch = 4, .max_payload = 64, .model = tm.m,
                                   .device = ndev };
    CHECK_EQ(ops->create(&e, &p), -ENODEV);
    p.device = -1;
    CHECK_EQ(ops->create(&e, &p), -ENODEV);
    p.device = 0;
    if (ndev == 0) {
        CHECK_EQ(ops->create(&e, &p), -ENODEV);
    } else {
        p.model = NULL;
        CHECK_EQ(ops->create(&e, &p), -EINVAL);
        p.model = tm.m;
        p.max_batch = 0;
        CHECK_EQ(ops->create(&e, &p), -EINVAL);
        p.max_batch = 4;
        p.max_payload = 16; /* rows of 32 bytes do not fit */
        CHECK_EQ(ops->create(&e, &p), -EINVAL);
        p.max_payload = 64;
        e = NULL;
        CHECK_EQ(ops->create(&e, &p), 0);
        CHECK(e != NULL, "no engine");
        CHECK_EQ(ops->out_row_bytes(e), 16);
        CHECK(ops->max_inflight >= 2, "max_inflight %u", ops->max_inflight);
        CHECK(ops->event_fd(e) >= 0, "no eventfd");
        ops->destroy(e);
    }
    ops->destroy(NULL);
    t_model_free(&tm);
    t_tmp_fini();
    if (t_failures) {
        fprintf(stderr, "test_cuda_nodev: %d failure(s)\n", t_failures);
        return 1;
    }
    printf("test_cuda_nodev: ok\n");
    return 0;
}
