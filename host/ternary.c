/* Host packing of ternary matrices into the device layout of cl_kernels/ternary.cl. */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

b158_status b158_ternary_pack(const int8_t *w, int n, int k, uint8_t *out)
{
    const int k_pad = b158_ternary_k_pad(k);
    const size_t row_bytes = (size_t)k_pad / 4;
    memset(out, 0x55, row_bytes * (size_t)n); /* code 1 (w = 0) in every slot */
    for (int r = 0; r < n; r++) {
        const int8_t *wr = w + (size_t)r * k;
        uint8_t *o = out + (size_t)r * row_bytes;
        for (int e = 0; e < k; e++) {
            if (wr[e] < -1 || wr[e] > 1)
                return B158_FAIL(B158_ERR_FORMAT, "weight [%d][%d] = %d is not ternary", r, e,
                                 wr[e]);
            const int block = e / 256, j = e % 64, l = (e % 256) / 64;
            uint8_t *b = &o[block * 64 + j];
            *b = (uint8_t)((*b & ~(3u << (2 * l))) | ((unsigned)(wr[e] + 1) << (2 * l)));
        }
    }
    return B158_OK;
}

b158_status b158_tmat_upload_packed(b158_runtime *rt, const uint8_t *codes, const float *scales,
                                    int n, int k, b158_tmat *out)
{
    memset(out, 0, sizeof *out);
    if (n <= 0 || k <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "ternary matrix of %d x %d", n, k);
    const int k_pad = b158_ternary_k_pad(k);
    const size_t bytes = (size_t)n * (size_t)k_pad / 4;
    b158_status st = b158_buf_alloc(rt, B158_MEM_WEIGHTS, bytes, &out->codes);
    if (st == B158_OK)
        st = b158_buf_write(rt, &out->codes, 0, bytes, codes);
    if (st == B158_OK)
        st = b158_buf_alloc(rt, B158_MEM_WEIGHTS, (size_t)n * sizeof(float), &out->scales);
    if (st == B158_OK)
        st = b158_buf_write(rt, &out->scales, 0, (size_t)n * sizeof(float), scales);
    if (st != B158_OK) {
        b158_tmat_free(rt, out);
        return st;
    }
    out->n = n;
    out->k = k;
    out->k_pad = k_pad;
    return B158_OK;
}

b158_status b158_tmat_upload(b158_runtime *rt, const int8_t *w, const float *scales, int n, int k,
                             b158_tmat *out)
{
    memset(out, 0, sizeof *out);
    if (n <= 0 || k <= 0)
        return B158_FAIL(B158_ERR_INVALID_ARG, "ternary matrix of %d x %d", n, k);
    const size_t bytes = (size_t)n * (size_t)b158_ternary_k_pad(k) / 4;
    uint8_t *packed = malloc(bytes);
    if (!packed)
        return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory packing %zu bytes", bytes);
    b158_status st = b158_ternary_pack(w, n, k, packed);
    if (st == B158_OK)
        st = b158_tmat_upload_packed(rt, packed, scales, n, k, out);
    free(packed);
    return st;
}

void b158_tmat_free(b158_runtime *rt, b158_tmat *m)
{
    if (!m)
        return;
    b158_buf_free(rt, &m->codes);
    b158_buf_free(rt, &m->scales);
    m->n = m->k = m->k_pad = 0;
}
