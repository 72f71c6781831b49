/* The fused decode layer's and the GEMV chain's timestamps summed into a b158_stage_profile. */
#include "stage-profile.h"

static const char *const part_names[B158_STAGE_PARTS] = {"A weight prefetch",
                                                         "A norm + quantize",
                                                         "A QKV GEMV",
                                                         "A grid barrier",
                                                         "B attention",
                                                         "B grid barrier",
                                                         "C sub-norm + quantize",
                                                         "C output GEMV",
                                                         "C grid barrier",
                                                         "D norm + quantize",
                                                         "D gate|up GEMV",
                                                         "D grid barrier",
                                                         "E act * up, sub-norm, quantize",
                                                         "E down GEMV"};

static const char *const chain_names[B158_CHAIN_PARTS] = {
    "output: start of work", "output: rows",      "output: norm tail", "gate|up: flag seen",
    "gate|up: rows",         "gate|up: GLU tail", "down: flag seen",   "down: rows",
    "down: norm tail",       "q|k|v: flag seen",  "q|k|v: rows",       "q|k|v: end"};

_Static_assert(B158_CHAIN_PARTS == 3 * B158_CHAIN_STAGES && B158_CHAIN_PARTS <= B158_STAGE_PARTS,
               "3 parts a stage of the chain, in the profile's arrays");

const char *b158_stage_part_name(int chain, int part)
{
    if (chain)
        return part >= 0 && part < B158_CHAIN_PARTS ? chain_names[part] : "?";
    return part >= 0 && part < B158_STAGE_PARTS ? part_names[part] : "?";
}

static double elapsed(uint64_t from, uint64_t to)
{
    return to >= from ? (double)(to - from) : 0.0;
}

void b158_stage_add(b158_stage_profile *p, const uint64_t *stamps, int blocks, int groups)
{
    if (blocks <= 0 || groups <= 0)
        return;
    uint64_t prev_end = 0;
    for (int l = 0; l < blocks; l++) {
        const uint64_t *b = stamps + (size_t)l * groups * B158_STAMPS;
        uint64_t first = UINT64_MAX, end = 0;
        double sum[B158_STAGE_PARTS] = {0}, lo[B158_STAGE_PARTS], hi[B158_STAGE_PARTS] = {0};
        for (int g = 0; g < groups; g++) {
            const uint64_t *t = b + (size_t)g * B158_STAMPS;
            first = t[0] < first ? t[0] : first;
            end = t[B158_STAGE_PARTS] > end ? t[B158_STAGE_PARTS] : end;
            for (int i = 0; i < B158_STAGE_PARTS; i++) {
                const double d = elapsed(t[i], t[i + 1]);
                sum[i] += d;
                lo[i] = g == 0 || d < lo[i] ? d : lo[i];
                hi[i] = d > hi[i] ? d : hi[i];
            }
        }
        for (int i = 0; i < B158_STAGE_PARTS; i++) {
            p->mean[i] += sum[i] / groups;
            p->min[i] += lo[i];
            p->max[i] += hi[i];
        }
        p->span += elapsed(first, end);
        if (l > 0) {
            p->gap += elapsed(prev_end, first);
            p->gaps++;
        }
        prev_end = end;
    }
    p->blocks += (uint64_t)blocks;
    p->groups = groups;
}

void b158_chain_stage_add(b158_stage_profile *p, const uint64_t *stamps, int blocks, int stride,
                          const int jobs[B158_CHAIN_STAGES], int stages_last)
{
    int total = 0;
    for (int s = 0; s < B158_CHAIN_STAGES; s++)
        total += jobs[s];
    if (blocks <= 0 || total <= 0 || stride < total)
        return;
    uint64_t prev_end = 0;
    for (int l = 0; l < blocks; l++) {
        const uint64_t *b = stamps + (size_t)l * stride * B158_CHAIN_STAMPS;
        const int stages = l + 1 == blocks ? stages_last : B158_CHAIN_STAGES;
        int n = 0; /* the block's jobs */
        for (int s = 0; s < stages; s++)
            n += jobs[s];
        uint64_t first = UINT64_MAX, end = 0;
        for (int j = 0; j < n; j++) {
            const uint64_t *t = b + (size_t)j * B158_CHAIN_STAMPS;
            first = t[0] < first ? t[0] : first;
            end = t[3] > end ? t[3] : end;
        }
        uint64_t prev = first;
        for (int s = 0, j0 = 0; s < stages; j0 += jobs[s], s++) {
            uint64_t go = UINT64_MAX, rows_end = 0, done = 0;
            double lo[3] = {0}, hi[3] = {0};
            for (int j = j0; j < j0 + jobs[s]; j++) {
                const uint64_t *t = b + (size_t)j * B158_CHAIN_STAMPS;
                go = t[1] < go ? t[1] : go;
                rows_end = t[2] > rows_end ? t[2] : rows_end;
                done = t[3] > done ? t[3] : done;
                for (int i = 0; i < 3; i++) { /* the job's own wait, rows and tail */
                    const double d = elapsed(t[i], t[i + 1]);
                    lo[i] = j == j0 || d < lo[i] ? d : lo[i];
                    hi[i] = d > hi[i] ? d : hi[i];
                }
            }
            if (jobs[s] <= 0)
                continue;
            const double crit[3] = {elapsed(prev, go), elapsed(go, rows_end),
                                    elapsed(rows_end, done)};
            for (int i = 0; i < 3; i++) {
                p->mean[3 * s + i] += crit[i];
                p->min[3 * s + i] += lo[i];
                p->max[3 * s + i] += hi[i];
            }
            prev = done;
        }
        p->span += elapsed(first, end);
        if (l > 0) {
            p->gap += elapsed(prev_end, first);
            p->gaps++;
        }
        prev_end = end;
    }
    p->chain = 1;
    p->blocks += (uint64_t)blocks;
    p->groups = total;
}
