/* Chat formats: which turn markers a model's chat template uses (b158_chat_detect). */
#include <string.h>

#include "b158/tokenizer.h"

static const b158_chat_format formats[] = {
    {B158_CHAT_BITNET, "bitnet", "System: ", "User: ", "Assistant: ", "<|eot_id|>"},
    {B158_CHAT_LLAMA3, "llama3", "<|start_header_id|>system<|end_header_id|>\n\n",
     "<|start_header_id|>user<|end_header_id|>\n\n",
     "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"},
    {B158_CHAT_CHATML, "chatml", "<|im_start|>system\n", "<|im_start|>user\n",
     "<|im_start|>assistant\n", "<|im_end|>\n"},
};

/* Whether needle occurs in hay[0..n) (memmem is not POSIX; templates may hold NUL bytes). */
static int contains(const char *hay, size_t n, const char *needle)
{
    const size_t nl = strlen(needle);
    for (const char *p = hay; n >= nl; n--, p++) {
        const char *c = memchr(p, needle[0], n - nl + 1);
        if (!c)
            return 0;
        n -= (size_t)(c - p);
        p = c;
        if (memcmp(c, needle, nl) == 0)
            return 1;
    }
    return 0;
}

const b158_chat_format *b158_chat_detect(const char *tmpl, size_t len)
{
    if (!tmpl)
        return &formats[B158_CHAT_BITNET];
    if (contains(tmpl, len, "<|start_header_id|>"))
        return &formats[B158_CHAT_LLAMA3];
    if (contains(tmpl, len, "<|im_start|>"))
        return &formats[B158_CHAT_CHATML];
    return &formats[B158_CHAT_BITNET];
}
