/* The fused decode layer's and the GEMV chain's timestamps (cl_kernels/decode.cl) summed into a
 * b158_stage_profile. */
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

/* The GEMV chain's (cl_kernels/decode.cl): B158_CHAIN_STAMPS a job (its start, the end of its
 * wait, of its rows and of its tail), stride jobs a block; a block's jobs are jobs[s] of each
 * stage s in turn, the last block's only of its first stages_last stages. Adds each stage's
 * critical path to p's B158_CHAIN_PARTS parts (include/b158/model.h). */
#define B158_CHAIN_STAMPS 4
#define B158_CHAIN_STAGES 4
void b158_chain_stage_add(b158_stage_profile *p, const uint64_t *stamps, int blocks, int stride,
                          const int jobs[B158_CHAIN_STAGES], int stages_last);

#endif
