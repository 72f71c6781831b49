/* Internal tokenizer entry points for the model loader (vocab from an already open GGUF). */
#ifndef B158_HOST_TOKENIZER_H
#define B158_HOST_TOKENIZER_H

#include "b158/tokenizer.h"
#include "gguf.h"

/* Builds the vocabulary from the tokenizer.* keys of g. Everything is copied: g may be closed
 * afterwards. */
b158_status b158_vocab_from_gguf(const b158_gguf *g, b158_vocab **out);

/* GPT-2's byte <-> unicode alphabet of byte-level BPE vocabularies. */
uint32_t b158_gpt2_byte_to_cp(uint8_t b);
int b158_gpt2_cp_to_byte(uint32_t cp); /* -1 if cp is not in the alphabet */

#endif
