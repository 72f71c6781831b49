/* The fused decode layer's timestamps summed into a b158_stage_profile. */
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

const char *b158_stage_part_name(int part)
{
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
