/* The device copy bandwidth, the yardstick of the benchmarks' bandwidth-bound kernels: an
 * internal helper (it enqueues on the runtime's queue), for b158-cl-kernel-bench and the
 * --profile of b158-cl-bench. */
#ifndef B158_BENCH_BANDWIDTH_H
#define B158_BENCH_BANDWIDTH_H

#include "b158/b158.h"

/* Memory bandwidth of the runtime's device, the yardstick of the bandwidth-bound kernels:
 * bytes read + written per second of a copy, the better of clEnqueueCopyBuffer (one thread
 * on PoCL) and a copy kernel over all compute units. Buffers of 256 MiB, far larger than the
 * caches; medians of reps runs.
 * Returns 0 on success, nonzero (the last error says why) when it cannot measure. */
typedef struct b158_bench_bandwidth {
    double copy_api_gbs;    /* clEnqueueCopyBuffer */
    double copy_kernel_gbs; /* the copy kernel */
    double copy_gbs;        /* the better of the two */
} b158_bench_bandwidth;
int b158_bench_bandwidth_measure(b158_runtime *rt, int reps, b158_bench_bandwidth *out);

#endif
