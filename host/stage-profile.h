/* The fused decode layer's timestamps (cl_kernels/decode.cl) summed into a b158_stage_profile. */
#ifndef B158_HOST_STAGE_PROFILE_H
#define B158_HOST_STAGE_PROFILE_H

#include <stdint.h>

#include "b158/model.h"

/* Timestamps per group and block: the start, then the end of each of the B158_STAGE_PARTS
 * parts (the kernel's B158_STAMPS). */
#define B158_STAMPS (B158_STAGE_PARTS + 1)

/* Adds one step's stamps, blocks x groups x B158_STAMPS in launch order, to p. A part whose
 * end reads earlier than its start counts 0, and so does a gap where blocks overlap. */
void b158_stage_add(b158_stage_profile *p, const uint64_t *stamps, int blocks, int groups);

#endif
