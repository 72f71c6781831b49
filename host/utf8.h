/* UTF-8 for the tokenizers (host/utf8.c): encoding a code point, validating sequences. */
#ifndef B158_HOST_UTF8_H
#define B158_HOST_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Writes cp as 1..4 bytes of UTF-8 and returns the count. */
size_t b158_utf8_encode(uint32_t cp, char *out);

/* > 0: a complete valid sequence of that length starts at s (RFC 3629: no overlongs or
 * surrogates); -1: s[0..n) is a valid but incomplete start; 0: s[0] cannot start a valid
 * sequence here. n > 0. */
int b158_utf8_status(const unsigned char *s, size_t n);

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when s does not start with one. */
size_t b158_utf8_valid_len(const unsigned char *s, size_t n);

/* llama.cpp's sequence length from the lead byte alone (1 for continuation bytes). */
static inline size_t b158_utf8_lead_len(unsigned char c)
{
    static const unsigned char lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

#endif
