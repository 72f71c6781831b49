/* Internal model representation shared by the loader, the random builder and both forward
 * paths: ternary matrices packed in the device layout, FP32 norms, FP16 embedding. */
#ifndef B158_HOST_MODEL_H
#define B158_HOST_MODEL_H

#include "b158/model.h"
#include "gguf.h"
#include "ops.h"

/* A ternary matrix on the host in the layout of cl_kernels/ternary.cl (see b158_ternary_pack):
 * n rows of k_pad / 4 bytes, plus one FP32 scale per row. */
typedef struct b158_tpack {
    uint8_t *codes;
    float *scales;
    int n, k, k_pad;
} b158_tpack;

struct b158_layer {
    const float *attn_norm;     /* n_embd */
    const float *attn_sub_norm; /* n_head * head_dim, NULL without sub-norms */
    const float *ffn_norm;      /* n_embd */
    const float *ffn_sub_norm;  /* n_ff, NULL without sub-norms */
    b158_tpack wq, wk, wv, wo, wgate, wup, wdown;
};

/* Element e of row r of a packed matrix, in {-1, 0, +1} (layout: b158_ternary_pack). */
static inline int b158_tpack_get(const b158_tpack *t, int r, int e)
{
    const uint8_t b = t->codes[(size_t)r * (t->k_pad / 4) + (e / 256) * 64 + e % 64];
    return (int)((b >> (2 * ((e % 256) / 64))) & 3) - 1;
}

/* Device weights of one layer: packed ternary matrices, or for the FP16 baseline engine dense
 * FP16 matrices holding W_t * scale (n rows of k; host/baseline.c). Matrices that read the same
 * input are one: wqkv holds q's rows, then k's, then v's (n_head + 2 n_head_kv heads of output),
 * wgu gate's rows then up's (2 n_ff outputs), so each is one matmul launch. */
struct b158_layer_dev {
    b158_buf attn_norm, attn_sub_norm, ffn_norm, ffn_sub_norm;
    b158_tmat wqkv, wo, wgu, wdown;
    b158_buf hqkv, ho, hgu, hdown;
};

struct b158_model {
    b158_model_info info;
    char arch_name[32];
    char name[128];
    struct b158_layer *layers; /* n_layer */
    const float *output_norm;  /* n_embd */
    const uint16_t *tok_embd;  /* (n_vocab, n_embd) FP16 */
    const uint16_t *output;    /* (n_vocab, n_embd) FP16 LM head; == tok_embd when tied */
    void **owned;              /* host allocations freed with the model */
    size_t n_owned, cap_owned;
    void *file; /* the mapped GGUF the weights may point into (loader) */
    void (*file_close)(void *);
    /* device copies, after b158_model_upload */
    b158_runtime *rt;
    b158_weight_mode dev_mode;  /* ternary, or the FP16 baseline */
    struct b158_layer_dev *dev; /* n_layer */
    b158_buf d_output_norm, d_tok_embd, d_output;
};

/* b158_model_load from an open GGUF file (b158_gguf_open_memory for the fuzz target), host side
 * only. The model takes g over: it is closed with the model, or before returning an error. */
b158_status b158_model_from_gguf(b158_gguf *g, b158_model **out);

/* Allocates host memory owned by the model (freed by b158_model_free). */
void *b158_model_alloc(b158_model *m, size_t bytes);
/* An empty model with info copied and layers allocated; derived fields filled in. */
b158_status b158_model_new(const b158_model_info *info, b158_model **out);
/* Checks shapes and fills derived info (head_dim, n_rot, n_ternary). */
b158_status b158_model_check(b158_model *m);

/* Packs w (n x k, values -1/0/+1) into t with model-owned memory. */
b158_status b158_tpack_from_int8(b158_model *m, const int8_t *w, const float *scales, int n, int k,
                                 b158_tpack *t);

/* The splits of the attention's keys that a device session's one-token step over n_keys keys
 * takes (1 where it splits none; forward.c, for the tests). */
struct b158_session;
int b158_session_step_splits(const struct b158_session *s, int n_keys);
/* Whether a one-token greedy step is queued ahead (tests) */
int b158_session_ahead(const struct b158_session *s);
/* Whether one-token steps replay a recorded launch plan (bit 0) and greedy steps their one-row
 * argmax's (bit 1) (tests) */
int b158_session_planned(const struct b158_session *s);

/* y[m][n] (+)= sum_k w[n][k] q[m][k] * scale[n] / s[m] from packed codes; q has row stride k. */
void b158_ref_ternary_matmul_packed(const b158_tpack *t, const int8_t *q, const float *s,
                                    int m_rows, float *y, int accumulate);

#endif
