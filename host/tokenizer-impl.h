/* Tokenizer internals shared by the vocab loader, the BPE and the SentencePiece encoders. */
#ifndef B158_HOST_TOKENIZER_IMPL_H
#define B158_HOST_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "b158/tokenizer.h"
#include "gguf.h"
#include "tokenizer-map.h"
#include "tokenizer-util.h"
#include "tokenizer.h"
#include "utf8.h"

/* Pre-tokenizer regexes (llama.cpp's, which are the tokenizer.json ones with the
 * case-insensitive group spelled out). */
#define B158_RE_LLAMA3                                                                             \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"     \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define B158_RE_GPT2                                                                               \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

struct b158_vocab {
    b158_vocab_type type;
    int32_t n_tokens;
    char pre[64];

    /* token texts, NUL-terminated, back to back */
    char *text;
    uint32_t *text_off;
    uint32_t *text_len;
    float *scores;
    uint8_t *types; /* b158_token_type */
    b158_strmap by_text;
    size_t max_token_len;

    /* decoded bytes of every token (control tokens: their text) */
    char *piece;
    uint32_t *piece_off;
    uint32_t *piece_len;
    size_t max_piece;

    b158_token bos, eos, eot, eom, unk;
    int add_bos;
    int add_space_prefix;
    uint8_t *eog; /* per token: ends generation */

    /* tokens matched in raw text before encoding: control, user-defined and unknown ones,
     * longest text first (as llama.cpp's special token cache) */
    b158_token *specials;
    size_t n_specials;

    /* byte b as a token: BPE its GPT-2 character, SPM <0xNN>; -1 if absent */
    b158_token byte_token[256];

    /* SentencePiece: no multi-byte token contains '\n', so lines can be merged separately */
    int spm_split_newlines;

    /* tokenizer.chat_template (NUL-terminated copy), NULL when the file has none */
    char *chat_template;
    size_t chat_template_len;

    /* BPE */
    b158_pairmap merges;
    int ignore_merges;
    pcre2_code *re;
};

/* A symbol of the merge loops: a byte range of the text in a doubly linked list. */
typedef struct b158_symbol {
    int32_t prev, next;
    uint32_t start, n; /* n == 0: merged into its left neighbour */
    b158_token id;     /* token of the range, -1 if none (BPE only) */
} b158_symbol;

/* Encoders: append the tokens of one raw text fragment. */
/* Builds the merge table and compiles the pre-tokenizer regex (v->pre decides which). */
b158_status b158_bpe_init(b158_vocab *v, const b158_gguf_str *merges, size_t n_merges);
b158_status b158_bpe_encode(const b158_vocab *v, const char *text, size_t len, b158_tokvec *out);
b158_status b158_spm_encode(const b158_vocab *v, const char *text, size_t len, int space_prefix,
                            b158_tokvec *out);

#endif
