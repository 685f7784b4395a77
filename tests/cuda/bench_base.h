/* bench_base.h - the plain cuBLAS baseline of cuda_offline_bench (bench_base.cu). */
#ifndef OAG_TESTS_BENCH_BASE_H
#define OAG_TESTS_BENCH_BASE_H

#ifdef __cplusplus
extern "C" {
#endif

struct base;
/* An fp16 MLP of nl linear layers (dims[0] -> dims[nl]) with ReLU between, weights w[l]
 * [dims[l+1], dims[l]] and biases b[l] in fp16 host memory. Returns 0 or -1 (printed). */
int base_create(struct base **out, int dev, unsigned nl, const unsigned *dims,
                const void *const *w, const void *const *b, unsigned max_batch);
/* Median microseconds of `runs` graph launches of one forward of n rows (copies included),
 * or -1 on an error. */
double base_median_us(struct base *b, unsigned n, int runs);
void base_destroy(struct base *b);

#ifdef __cplusplus
}
#endif

#endif
