/* Fuzz target: the model loader on the host (host/loader.c through b158_model_from_gguf, no
 * OpenCL device) on arbitrary bytes. A model that loads and is small runs two tokens through
 * the CPU reference forward pass, so hostile weights reach the numerics too. */
#include <math.h>
#include <string.h>

#include "b158/model.h"
#include "fuzz-common.h"
#include "gguf.h"
#include "model.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet();
    return 0;
}

/* Up to this many weights the forward pass is cheap enough to run on every input. */
#define FORWARD_MAX_WEIGHTS (1u << 20)

static void forward(b158_model *m)
{
    const b158_model_info *h = b158_model_get_info(m);
    if (h->n_ternary > FORWARD_MAX_WEIGHTS ||
        (uint64_t)h->n_vocab * (uint64_t)h->n_embd > FORWARD_MAX_WEIGHTS)
        return;
    b158_session_params p = b158_session_default_params();
    p.n_ctx = 4;
    b158_session *s = NULL;
    if (b158_session_create(m, &p, &s) != B158_OK)
        return;
    const int32_t toks[2] = {0, h->n_vocab - 1};
    if (b158_session_eval(s, toks, 2) == B158_OK) {
        const float *l = b158_session_logits(s, -1);
        FUZZ_CHECK(l != NULL);
        volatile float sum = 0.0f; /* read every logit: ASan checks the buffer */
        for (int i = 0; i < h->n_vocab; i++)
            sum += l[i];
        (void)sum;
    }
    const int32_t bad = h->n_vocab;
    FUZZ_CHECK(b158_session_eval(s, &bad, 1) == B158_ERR_INVALID_ARG);
    b158_session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    b158_gguf *g = NULL;
    if (b158_gguf_open_memory(data, size, &g) != B158_OK)
        return 0;
    b158_model *m = NULL;
    if (b158_model_from_gguf(g, &m) != B158_OK) { /* g is closed either way */
        FUZZ_CHECK(m == NULL);
        return 0;
    }
    const b158_model_info *h = b158_model_get_info(m);
    FUZZ_CHECK(h->n_embd > 0 && h->n_layer > 0 && h->n_head > 0 && h->n_head_kv > 0 &&
               h->n_ff > 0 && h->n_vocab > 0 && h->head_dim > 0);
    FUZZ_CHECK(isfinite(h->rms_eps) && h->rms_eps > 0 && isfinite(h->rope_base) &&
               h->rope_base > 0);
    forward(m);
    b158_model_free(m);
    return 0;
}
