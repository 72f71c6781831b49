/* Fuzz target: chat-template detection (b158_chat_detect) on arbitrary bytes, checked against
 * glibc's memmem as the oracle. */
#define _GNU_SOURCE /* memmem: the oracle only */
#include <string.h>

#include "b158/tokenizer.h"
#include "fuzz-common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_quiet();
    return 0;
}

static int has(const uint8_t *data, size_t size, const char *marker)
{
    return memmem(data, size, marker, strlen(marker)) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so reading past len is caught by ASan */
    char *tmpl = malloc(size ? size : 1);
    FUZZ_CHECK(tmpl);
    if (size)
        memcpy(tmpl, data, size);
    const b158_chat_format *f = b158_chat_detect(tmpl, size);
    FUZZ_CHECK(f && f->name && f->system_prefix && f->user_prefix && f->assistant_prefix &&
               f->turn_end);
    const b158_chat_id want = has(data, size, "<|start_header_id|>") ? B158_CHAT_LLAMA3
                              : has(data, size, "<|im_start|>")      ? B158_CHAT_CHATML
                                                                     : B158_CHAT_BITNET;
    FUZZ_CHECK(f->id == want);
    FUZZ_CHECK(b158_chat_detect(NULL, size)->id == B158_CHAT_BITNET);
    free(tmpl);
    return 0;
}
