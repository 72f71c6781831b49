/* Plain-C references of every device kernel: the definition the OpenCL results are tested
 * against, and the building blocks of the CPU reference forward pass. */
#include <math.h>

#include "model.h"
#include "half.h"
#include "ref.h"

/* Non-finite inputs get a defined result, the same as quantize_rows gives: fmaxf skips NaN, so
 * a NaN element quantizes to 0; an infinite element makes the scale 0 and its row all zero
 * (inf * 0 is NaN, which becomes 0 again). */
void b158_ref_quantize(const float *x, int k, int m_rows, int8_t *q, float *s)
{
    for (int m = 0; m < m_rows; m++) {
        const float *xr = x + (size_t)m * k;
        float amax = 0.0f;
        for (int i = 0; i < k; i++)
            amax = fmaxf(amax, fabsf(xr[i]));
        const float sc = 127.0f / fmaxf(amax, 1e-5f);
        for (int i = 0; i < k; i++) {
            const float v = nearbyintf(xr[i] * sc); /* ties to even, like torch.round */
            /* in range for the cast: NaN fails both comparisons and becomes 0 */
            q[(size_t)m * k + i] = (int8_t)(v >= -128.0f ? (v <= 127.0f ? v : 127.0f)
                                                         : (v < -128.0f ? -128.0f : 0.0f));
        }
        s[m] = sc;
    }
}

void b158_ref_dequantize(const int8_t *q, const float *s, int k, int m_rows, float *x)
{
    for (int m = 0; m < m_rows; m++)
        for (int i = 0; i < k; i++)
            x[(size_t)m * k + i] = (float)q[(size_t)m * k + i] / s[m];
}

void b158_ref_ternary_matmul(const int8_t *w, const float *w_scale, int n, int k, const int8_t *q,
                             const float *s, int m_rows, int32_t *acc, float *y)
{
    for (int m = 0; m < m_rows; m++) {
        const int8_t *qm = q + (size_t)m * k;
        for (int r = 0; r < n; r++) {
            const int8_t *wr = w + (size_t)r * k;
            int32_t a = 0;
            for (int i = 0; i < k; i++) {
                if (wr[i] > 0)
                    a += qm[i];
                else if (wr[i] < 0)
                    a -= qm[i];
            }
            if (acc)
                acc[(size_t)m * n + r] = a;
            if (y)
                y[(size_t)m * n + r] = (float)a * w_scale[r] / s[m];
        }
    }
}

void b158_ref_rmsnorm(const float *x, const float *w, float *out, int n, int m_rows, float eps)
{
    for (int m = 0; m < m_rows; m++) {
        const float *xr = x + (size_t)m * n;
        float ss = 0.0f;
        for (int i = 0; i < n; i++)
            ss += xr[i] * xr[i];
        const float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (int i = 0; i < n; i++)
            out[(size_t)m * n + i] = xr[i] * inv * w[i];
    }
}

void b158_rope_inv_freq(float *out, int n_rot, float theta_base)
{
    for (int i = 0; i < n_rot / 2; i++)
        out[i] = (float)pow((double)theta_base, -2.0 * i / (double)n_rot);
}

void b158_ref_rope(float *x, const float *inv_freq, int row_stride, int n_heads, int head_dim,
                   int n_rot, int m_rows, const int32_t *tok, enum b158_rope_mode mode)
{
    for (int m = 0; m < m_rows; m++) {
        const int pos = tok[2 * m];
        for (int h = 0; h < n_heads; h++) {
            float *head = x + (size_t)m * row_stride + (size_t)h * head_dim;
            for (int i = 0; i < n_rot / 2; i++) {
                const float angle = (float)pos * inv_freq[i];
                const float c = cosf(angle), sn = sinf(angle);
                const int a = mode == B158_ROPE_NEOX ? i : 2 * i;
                const int b = mode == B158_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
                const float x0 = head[a], x1 = head[b];
                head[a] = x0 * c - x1 * sn;
                head[b] = x0 * sn + x1 * c;
            }
        }
    }
}

void b158_ref_kv_store(const float *k, const float *v, uint16_t *k_cache, uint16_t *v_cache,
                       int kv_dim, int row_stride, int m_rows, const int32_t *tok, int cache_rows)
{
    for (int m = 0; m < m_rows; m++) {
        const int pos = tok[2 * m], row = tok[2 * m + 1] + pos;
        if (pos < 0 || tok[2 * m + 1] < 0 || row >= cache_rows)
            continue;
        for (int i = 0; i < kv_dim; i++) {
            const size_t dst = (size_t)row * kv_dim + i;
            k_cache[dst] = b158_f32_to_f16(k[(size_t)m * row_stride + i]);
            v_cache[dst] = b158_f32_to_f16(v[(size_t)m * row_stride + i]);
        }
    }
}

static int clampi(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* Softmax in two passes over the keys (max, then exp-sum and weighted values), recomputing
 * the scores so the reference needs no scratch memory. */
static float ref_score(const float *qh, const uint16_t *kr, int head_dim, float scale)
{
    float sc = 0.0f;
    for (int d = 0; d < head_dim; d++)
        sc += qh[d] * scale * b158_f16_to_f32(kr[d]);
    return sc;
}

void b158_ref_attention(const float *q, const uint16_t *k_cache, const uint16_t *v_cache,
                        float *out, int n_head, int n_head_kv, int head_dim, int q_stride,
                        int m_rows, const int32_t *tok, int cache_rows, float scale)
{
    const int kv_dim = n_head_kv * head_dim;
    for (int m = 0; m < m_rows; m++) {
        const int row0 = clampi(tok[2 * m + 1], 0, cache_rows - 1);
        const int n_keys = clampi(tok[2 * m] + 1, 1, cache_rows - row0);
        const uint16_t *kc = k_cache + (size_t)row0 * kv_dim, *vc = v_cache + (size_t)row0 * kv_dim;
        for (int h = 0; h < n_head; h++) {
            const size_t kv_off = (size_t)(h / (n_head / n_head_kv)) * head_dim;
            const float *qh = q + (size_t)m * q_stride + (size_t)h * head_dim;
            float *oh = out + (size_t)m * n_head * head_dim + (size_t)h * head_dim;
            float mx = -INFINITY;
            for (int t = 0; t < n_keys; t++)
                mx = fmaxf(mx, ref_score(qh, kc + (size_t)t * kv_dim + kv_off, head_dim, scale));
            float sum = 0.0f;
            for (int d = 0; d < head_dim; d++)
                oh[d] = 0.0f;
            for (int t = 0; t < n_keys; t++) {
                const float p =
                    expf(ref_score(qh, kc + (size_t)t * kv_dim + kv_off, head_dim, scale) - mx);
                sum += p;
                for (int d = 0; d < head_dim; d++)
                    oh[d] += p * b158_f16_to_f32(vc[(size_t)t * kv_dim + kv_off + d]);
            }
            for (int d = 0; d < head_dim; d++)
                oh[d] /= sum;
        }
    }
}

void b158_ref_glu(const float *gate, const float *up, float *out, int count, enum b158_act act)
{
    for (int i = 0; i < count; i++) {
        const float g = gate[i];
        float a;
        if (act == B158_ACT_SILU) {
            a = g / (1.0f + expf(-g));
        } else {
            const float r = fmaxf(g, 0.0f);
            a = r * r;
        }
        out[i] = a * up[i];
    }
}

void b158_ref_embed(const uint16_t *table, const b158_token *ids, float *out, int n_embd,
                    int n_vocab, int m_rows)
{
    for (int m = 0; m < m_rows; m++)
        for (int i = 0; i < n_embd; i++)
            out[(size_t)m * n_embd + i] = (ids[m] >= 0 && ids[m] < n_vocab)
                                              ? b158_f16_to_f32(table[(size_t)ids[m] * n_embd + i])
                                              : NAN;
}

int b158_ref_argmax(const float *x, int n)
{
    int best = -1;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best]))
            best = i;
    return best < 0 ? 0 : best;
}

void b158_ref_f16_matvec(const uint16_t *w, const float *x, float *y, int n_rows, int k, int m_rows)
{
    for (int m = 0; m < m_rows; m++) {
        for (int n = 0; n < n_rows; n++) {
            float a = 0.0f;
            for (int i = 0; i < k; i++)
                a += b158_f16_to_f32(w[(size_t)n * k + i]) * x[(size_t)m * k + i];
            y[(size_t)m * n_rows + n] = a;
        }
    }
}

void b158_ref_hgemm(const uint16_t *w, const uint16_t *x, uint16_t *y, int n_rows, int k,
                    int m_rows)
{
    for (int m = 0; m < m_rows; m++) {
        for (int n = 0; n < n_rows; n++) {
            float a = 0.0f;
            for (int i = 0; i < k; i++)
                a += b158_f16_to_f32(w[(size_t)n * k + i]) * b158_f16_to_f32(x[(size_t)m * k + i]);
            y[(size_t)m * n_rows + n] = b158_f32_to_f16(a);
        }
    }
}

void b158_ref_ternary_matmul_packed(const b158_tpack *t, const int8_t *q, const float *s,
                                    int m_rows, float *y, int accumulate)
{
    const size_t row_bytes = (size_t)t->k_pad / 4;
    for (int m = 0; m < m_rows; m++) {
        const int8_t *qm = q + (size_t)m * t->k;
        for (int r = 0; r < t->n; r++) {
            const uint8_t *row = t->codes + (size_t)r * row_bytes;
            int32_t a = 0;
            for (int c = 0; c < t->k_pad / 256; c++) {
                /* the codes of block c in element order (b158_ternary_pack: 256c + 64l + j) */
                uint8_t code[256];
                for (int l = 0; l < 4; l++)
                    for (int j = 0; j < 64; j++)
                        code[64 * l + j] = (uint8_t)((row[64 * c + j] >> (2 * l)) & 3u);
                const int len = t->k - 256 * c < 256 ? t->k - 256 * c : 256;
                const int8_t *qc = qm + 256 * c;
                /* +q where the weight is +1, -q where it is -1; masks keep it branch-free */
                for (int e = 0; e < len; e++)
                    a += (qc[e] & -(int)(code[e] == 2)) - (qc[e] & -(int)(code[e] == 0));
            }
            const float v = (float)a * t->scales[r] / s[m];
            float *dst = &y[(size_t)m * t->n + r];
            *dst = accumulate ? *dst + v : v;
        }
    }
}
