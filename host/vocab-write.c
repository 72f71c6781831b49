/* Writes vocab-only GGUF files from a vocabulary's parts (b158_vocab_write), in the key order
 * and types of llama.cpp's vocab files. */
#include <stdlib.h>

#include "b158/tokenizer.h"
#include "error.h"
#include "gguf-write.h"
#include "tokenizer.h"
#include "utf8.h"

b158_vocab_write_params b158_vocab_write_default_params(void)
{
    b158_vocab_write_params p = {0};
    p.bos = p.eos = p.eot = p.unk = -1;
    p.add_bos = -1;
    return p;
}

size_t b158_bpe_text_from_bytes(const void *bytes, size_t n, char *out)
{
    const unsigned char *b = bytes;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += b158_utf8_encode(b158_gpt2_byte_to_cp(b[i]), out + k);
    return k;
}

static b158_status check(const b158_vocab_write_params *p, const char *path)
{
    if (!p || !path)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_vocab_write: params and path required");
    if (p->type != B158_VOCAB_BPE && p->type != B158_VOCAB_SPM)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_vocab_write: unknown vocabulary type %d",
                         (int)p->type);
    if (p->n_tokens == 0 || p->n_tokens > INT32_MAX || !p->texts || (p->n_merges && !p->merges))
        return B158_FAIL(B158_ERR_INVALID_ARG,
                         "b158_vocab_write: %zu tokens (1 to 2^31 - 1 wanted) with texts, and "
                         "%zu merges with their array",
                         p->n_tokens, p->n_merges);
    const b158_token ids[] = {p->bos, p->eos, p->eot, p->unk};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i] < -1 || ids[i] >= (int64_t)p->n_tokens)
            return B158_FAIL(B158_ERR_INVALID_ARG,
                             "b158_vocab_write: special token id %d outside the vocabulary of %zu",
                             (int)ids[i], p->n_tokens);
    if (p->add_bos < -1 || p->add_bos > 1)
        return B158_FAIL(B158_ERR_INVALID_ARG, "b158_vocab_write: add_bos %d is not -1, 0 or 1",
                         p->add_bos);
    return B158_OK;
}

static b158_status add_keys(b158_gguf_writer *w, const b158_vocab_write_params *p,
                            const int32_t *types)
{
    B158_TRY(b158_gguf_add_str(w, "general.architecture", "llama"));
    if (p->name)
        B158_TRY(b158_gguf_add_str(w, "general.name", p->name));
    B158_TRY(
        b158_gguf_add_str(w, "tokenizer.ggml.model", p->type == B158_VOCAB_BPE ? "gpt2" : "llama"));
    if (p->pre)
        B158_TRY(b158_gguf_add_str(w, "tokenizer.ggml.pre", p->pre));
    B158_TRY(b158_gguf_add_arr_str(w, "tokenizer.ggml.tokens", p->texts, p->lens, p->n_tokens));
    if (p->scores)
        B158_TRY(
            b158_gguf_add_arr(w, "tokenizer.ggml.scores", B158_GGUF_F32, p->scores, p->n_tokens));
    if (types)
        B158_TRY(
            b158_gguf_add_arr(w, "tokenizer.ggml.token_type", B158_GGUF_I32, types, p->n_tokens));
    if (p->n_merges)
        B158_TRY(b158_gguf_add_arr_str(w, "tokenizer.ggml.merges", p->merges, NULL, p->n_merges));
    static const char *const keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                       "tokenizer.ggml.eot_token_id",
                                       "tokenizer.ggml.unknown_token_id"};
    const b158_token ids[] = {p->bos, p->eos, p->eot, p->unk};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (ids[i] >= 0)
            B158_TRY(b158_gguf_add_u32(w, keys[i], (uint32_t)ids[i]));
    if (p->add_bos >= 0)
        B158_TRY(b158_gguf_add_bool(w, "tokenizer.ggml.add_bos_token", p->add_bos));
    return B158_OK;
}

b158_status b158_vocab_write(const b158_vocab_write_params *params, const char *path)
{
    B158_TRY(check(params, path));
    int32_t *types = NULL; /* the GGUF array is int32 whatever the enum's size */
    if (params->token_types) {
        types = malloc(params->n_tokens * sizeof *types);
        if (!types)
            return B158_FAIL(B158_ERR_HOST_MEMORY, "out of host memory for %zu token types",
                             params->n_tokens);
        for (size_t i = 0; i < params->n_tokens; i++)
            types[i] = (int32_t)params->token_types[i];
    }
    b158_gguf_writer *w = NULL;
    b158_status st = b158_gguf_writer_create(&w);
    if (st == B158_OK)
        st = add_keys(w, params, types);
    if (st == B158_OK)
        st = b158_gguf_writer_write_file(w, path);
    b158_gguf_writer_free(w);
    free(types);
    return st;
}
