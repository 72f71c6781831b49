/* Helpers shared by the benchmark programs: model shapes by name. */
#ifndef B158_BENCH_COMMON_H
#define B158_BENCH_COMMON_H

#include "b158/model.h"

/* A preset name, or explicit dimensions EMBDxFFxLAYERSxHEADS[xKV_HEADS[xVOCAB]] built like the
 * presets (bitnet-25 graph; KV heads default to HEADS, vocabulary to 32000). Prints why not and
 * returns 2 for anything else, 0 on success. */
int b158_bench_shape_of(const char *name, b158_model_info *h);

#endif
