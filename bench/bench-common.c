/* Helpers shared by the benchmark programs: model shapes by name. */
#include "bench-common.h"

#include <stdio.h>
#include <stdlib.h>

/* A preset name, or explicit dimensions EMBDxFFxLAYERSxHEADS[xKV_HEADS[xVOCAB]] built like the
 * presets (bitnet-25 graph; KV heads default to HEADS, vocabulary to 32000). Prints why not and
 * returns 2 for anything else. */
int b158_bench_shape_of(const char *name, b158_model_info *h)
{
    if (b158_model_preset(name, h) == B158_OK)
        return 0;
    long v[6] = {0, 0, 0, 0, 0, 32000};
    const long max[6] = {1 << 16, 1 << 18, 1024, 1024, 1024, 1 << 21};
    int n = 0;
    const char *p = name;
    while (n < 6 && *p >= '0' && *p <= '9') {
        char *end;
        v[n] = strtol(p, &end, 10);
        n++;
        p = end;
        if (*p != 'x')
            break;
        p++;
    }
    int ok = *p == '\0' && n >= 4;
    if (ok && n == 4)
        v[4] = v[3];
    for (int i = 0; ok && i < 6; i++)
        ok = v[i] > 0 && v[i] <= max[i];
    ok = ok && v[0] % v[3] == 0 && (v[0] / v[3]) % 2 == 0 && v[3] % v[4] == 0;
    if (!ok) {
        fprintf(stderr,
                "error: unknown preset '%s' (700M, 1.3B, 3B, 3.9B, 2B-4T, tiny, or "
                "EMBDxFFxLAYERSxHEADS[xKV_HEADS[xVOCAB]] with EMBD a multiple of 2 * HEADS and "
                "HEADS of KV_HEADS)\n",
                name);
        return 2;
    }
    b158_model_preset("700M", h); /* the presets' graph, eps, RoPE and context */
    h->n_embd = (int)v[0], h->n_ff = (int)v[1], h->n_layer = (int)v[2];
    h->n_head = (int)v[3], h->n_head_kv = (int)v[4], h->n_vocab = (int)v[5];
    return 0;
}
