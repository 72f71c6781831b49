/* b158-cl tokenizers: GGUF vocabularies (SentencePiece and byte-level BPE), encode, decode. */
#ifndef B158_TOKENIZER_H
#define B158_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A loaded vocabulary with its tokenizer; immutable after loading, so one vocab may be used
 * from several threads at once. */
typedef struct b158_vocab b158_vocab;

typedef enum b158_vocab_type {
    B158_VOCAB_SPM = 1, /* tokenizer.ggml.model = "llama": SentencePiece with byte fallback */
    B158_VOCAB_BPE = 2, /* tokenizer.ggml.model = "gpt2": byte-level BPE */
} b158_vocab_type;

/* tokenizer.ggml.token_type values. */
typedef enum b158_token_type {
    B158_TOKEN_UNDEFINED = 0,
    B158_TOKEN_NORMAL = 1,
    B158_TOKEN_UNKNOWN = 2,
    B158_TOKEN_CONTROL = 3,
    B158_TOKEN_USER_DEFINED = 4,
    B158_TOKEN_UNUSED = 5,
    B158_TOKEN_BYTE = 6,
} b158_token_type;

/* Loads the vocabulary of a model or vocab-only GGUF file. B158_ERR_IO / B158_ERR_FORMAT for
 * bad files, B158_ERR_UNSUPPORTED for tokenizer models other than "llama" and "gpt2",
 * B158_ERR_INVALID_ARG for NULL arguments, B158_ERR_HOST_MEMORY. */
b158_status b158_vocab_load(const char *path, b158_vocab **out);
void b158_vocab_free(b158_vocab *v);

/* The getters below accept v == NULL and then return what an empty vocabulary would: 0 for
 * the type, counts and flags, -1 for token ids, "" for strings, NULL for token texts. */
b158_vocab_type b158_vocab_get_type(const b158_vocab *v);
int32_t b158_vocab_n_tokens(const b158_vocab *v);
/* Special ids, -1 when the vocabulary has none. */
b158_token b158_vocab_bos(const b158_vocab *v);
b158_token b158_vocab_eos(const b158_vocab *v);
b158_token b158_vocab_eot(const b158_vocab *v);
b158_token b158_vocab_unk(const b158_vocab *v);
/* Whether the model expects BOS first (tokenizer.ggml.add_bos_token, else llama.cpp's default
 * for the tokenizer: yes for SentencePiece and LLaMA-3 BPE, no for other BPE). */
int b158_vocab_add_bos(const b158_vocab *v);
/* tokenizer.ggml.pre as used ("llama-bpe" also when the key was missing on a 128k vocab);
 * "" for SentencePiece. */
const char *b158_vocab_pre(const b158_vocab *v);

/* Token text as stored in the vocabulary (GPT-2 byte alphabet for BPE, with U+2581 for spaces
 * in SentencePiece), NUL-terminated; *len (may be NULL) gets its length. NULL for a bad id. */
const char *b158_vocab_token_text(const b158_vocab *v, b158_token id, size_t *len);
b158_token_type b158_vocab_token_type(const b158_vocab *v, b158_token id);
float b158_vocab_token_score(const b158_vocab *v, b158_token id);
/* Id of the token whose text is exactly text[0..len), or -1. */
b158_token b158_vocab_find(const b158_vocab *v, const char *text, size_t len);
/* End of generation: eos, eot, and tokens such as <|eot_id|>, <|end_of_text|>, <|endoftext|>,
 * <|eom_id|>, <|im_end|>. */
int b158_vocab_is_eog(const b158_vocab *v, b158_token id);
/* Control or unknown token (rendered only on request by the decoders). */
int b158_vocab_is_control(const b158_vocab *v, b158_token id);

/* ---- chat templates --------------------------------------------------------------------- */

/* tokenizer.chat_template of the file the vocabulary came from (a Jinja template), with a NUL
 * after it; *len (may be NULL) gets its length, which counts any NUL bytes inside it. NULL when
 * the file has none (or it is not a string) and when v is NULL. */
const char *b158_vocab_chat_template(const b158_vocab *v, size_t *len);

/* Chat formats b158_chat_detect recognises. Values are stable; new ones are appended. */
typedef enum b158_chat_id {
    B158_CHAT_BITNET = 0, /* bitnet-b1.58-2B-4T: "System: ", "User: ", "Assistant: " turns */
    B158_CHAT_LLAMA3 = 1, /* <|start_header_id|>role<|end_header_id|>\n\n ... <|eot_id|> */
    B158_CHAT_CHATML = 2, /* <|im_start|>role\n ... <|im_end|>\n */
} b158_chat_id;

/* How a chat format frames a conversation: every turn is prefix + text + turn_end, and the model
 * writes its answer after assistant_prefix (its turn ends with turn_end too). */
typedef struct b158_chat_format {
    b158_chat_id id;
    const char *name; /* "bitnet", "llama3", "chatml" */
    const char *system_prefix;
    const char *user_prefix;
    const char *assistant_prefix;
    const char *turn_end;
} b158_chat_format;

/* The chat format a chat template stands for, told by its markers: a template that contains
 * "<|start_header_id|>" is LLaMA-3's, else one that contains "<|im_start|>" is ChatML; any
 * other template, an empty one and none at all (tmpl NULL) give B158_CHAT_BITNET. tmpl[0..len)
 * may hold any bytes, NUL included, and is searched in full. Never fails: returns static
 * storage, never NULL. */
const b158_chat_format *b158_chat_detect(const char *tmpl, size_t len);

/* ---- encoding --------------------------------------------------------------------------- */

enum {
    B158_TOKENIZE_ADD_BOS = 1 << 0,       /* prepend BOS if the vocab wants one (add_bos) */
    B158_TOKENIZE_PARSE_SPECIAL = 1 << 1, /* "<|eot_id|>" in the text becomes that token */
};

/* Tokenizes text[0..len) (any bytes: invalid UTF-8 is handled as llama.cpp does, by byte
 * fallback for SentencePiece and U+FFFD for BPE). Writes at most cap ids to out and sets
 * *n_out to the number of tokens of the text; when that exceeds cap, returns
 * B158_ERR_INVALID_ARG and out holds the first cap ids (call again with a larger buffer).
 * Other errors: B158_ERR_INVALID_ARG (NULL arguments), B158_ERR_HOST_MEMORY. */
b158_status b158_tokenize(const b158_vocab *v, const char *text, size_t len, unsigned flags,
                          b158_token *out, size_t cap, size_t *n_out);
/* Same into a malloc'd array the caller frees. Errors: B158_ERR_INVALID_ARG (NULL
 * arguments), B158_ERR_HOST_MEMORY. */
b158_status b158_tokenize_alloc(const b158_vocab *v, const char *text, size_t len, unsigned flags,
                                b158_token **out, size_t *n_out);

/* ---- decoding --------------------------------------------------------------------------- */

/* The bytes a token stands for (not NUL-terminated, possibly part of a UTF-8 character).
 * Control and unknown tokens give their text when special is nonzero, else nothing. */
const char *b158_vocab_token_piece(const b158_vocab *v, b158_token id, int special, size_t *len);
/* Longest piece of any token, for sizing buffers. */
size_t b158_vocab_max_piece(const b158_vocab *v);

/* Concatenates the pieces of ids into out (NUL-terminated when it fits). For SentencePiece the
 * space that encoding adds in front of the text is removed again. *len gets the byte count
 * without the NUL; B158_ERR_INVALID_ARG when cap is too small (*len still says how much is
 * needed). Invalid ids are B158_ERR_INVALID_ARG. */
b158_status b158_detokenize(const b158_vocab *v, const b158_token *ids, size_t n, int special,
                            char *out, size_t cap, size_t *len);

/* Streaming decoder for generated tokens: emits only whole UTF-8 characters, holding back an
 * incomplete sequence until the next token completes it. Bytes that can never form a valid
 * character come out as U+FFFD. Plain struct: put it on the stack and init it. */
typedef struct b158_detok_stream {
    unsigned char pending[4];
    unsigned n_pending;
} b158_detok_stream;

void b158_detok_stream_init(b158_detok_stream *s);
/* Decodes one token into out. cap must be at least 3 * (b158_vocab_max_piece(v) + 4).
 * Errors: B158_ERR_INVALID_ARG (NULL arguments, an invalid id, cap too small). */
b158_status b158_detok_stream_push(b158_detok_stream *s, const b158_vocab *v, b158_token id,
                                   int special, char *out, size_t cap, size_t *n_out);
/* Ends the stream: a held-back incomplete sequence becomes U+FFFD. cap >= 3. */
size_t b158_detok_stream_flush(b158_detok_stream *s, char *out, size_t cap);

/* ---- writing vocabularies --------------------------------------------------------------- */

/* A vocabulary given by its parts, for b158_vocab_write. Arrays are the caller's and are only
 * read. */
typedef struct b158_vocab_write_params {
    b158_vocab_type type;               /* B158_VOCAB_BPE or B158_VOCAB_SPM; no default */
    const char *name;                   /* general.name; NULL = not written */
    const char *pre;                    /* tokenizer.ggml.pre ("llama-bpe"); NULL = not written */
    size_t n_tokens;                    /* 1 .. INT32_MAX */
    const char *const *texts;           /* n_tokens token texts, in the vocabulary's alphabet
                                           (BPE: b158_bpe_text_from_bytes) */
    const size_t *lens;                 /* their lengths in bytes; NULL = NUL-terminated texts */
    const b158_token_type *token_types; /* n_tokens types; NULL = not written */
    const float *scores;                /* n_tokens scores (SentencePiece); NULL = not written */
    const char *const *merges;          /* n_merges "left right" BPE merges, first = highest
                                           priority; NULL when n_merges is 0 */
    size_t n_merges;
    b158_token bos, eos, eot, unk; /* special ids; -1 (the default) = not written */
    int add_bos;                   /* tokenizer.ggml.add_bos_token: 0 or 1; -1 (the default) =
                                      not written */
} b158_vocab_write_params;

/* Everything empty or not written, special ids and add_bos -1. */
b158_vocab_write_params b158_vocab_write_default_params(void);

/* Writes a vocab-only GGUF file (general.architecture "llama" and the tokenizer.ggml.* keys of
 * llama.cpp) that b158_vocab_load reads. Errors: B158_ERR_INVALID_ARG (NULL params or path, no
 * tokens, a missing array, a special id outside the vocabulary), B158_ERR_HOST_MEMORY,
 * B158_ERR_IO (the file cannot be written). */
b158_status b158_vocab_write(const b158_vocab_write_params *params, const char *path);

/* The token text of raw bytes in a byte-level BPE vocabulary: every byte as its character of
 * GPT-2's byte alphabet, in UTF-8. Writes at most 2 * n bytes to out (no NUL) and returns how
 * many. */
size_t b158_bpe_text_from_bytes(const void *bytes, size_t n, char *out);

#ifdef __cplusplus
}
#endif
#endif
