/* Tokenizer tests: llama.cpp's reference vectors for LLaMA SPM, GPT-2 and LLaMA-3 BPE, decoding
 * round trips, special tokens, invalid UTF-8, the streaming decoder, writing vocabularies, and a
 * timing printout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "b158/tokenizer.h"
#include "gguf-write.h"
#include "test-common.h"
#include "tokenizer-impl.h"
#include "tokenizer.h"

/* llama.cpp's LLaMA-3 vocabulary (ggml-vocab-llama-bpe.gguf, fetched). */
static const char *llama3_vocab_path(void)
{
    return b158_test_fetched("tokenizers/ggml-vocab-llama-bpe.gguf");
}

static b158_vocab *load_vocab(const char *path)
{
    b158_vocab *v = NULL;
    b158_status st = b158_vocab_load(path, &v);
    if (st != B158_OK)
        fprintf(stderr, "\n%s\n", b158_last_error());
    CU_ASSERT_EQUAL(st, B158_OK);
    return v;
}

/* Runs every case of NAME.inp / NAME.out (llama.cpp test-tokenizer-0 format: cases separated
 * by "\n__ggml_vocab_test__\n", line k of .out = ids of case k without BOS). */
static void run_vectors(b158_vocab *v, const char *name)
{
    char rel[256];
    size_t ilen, olen;
    snprintf(rel, sizeof rel, "tokenizers/%s.inp", name);
    char *inp = b158_test_read_file(b158_test_fetched(rel), &ilen);
    snprintf(rel, sizeof rel, "tokenizers/%s.out", name);
    char *out = b158_test_read_file(b158_test_fetched(rel), &olen);
    CU_ASSERT_PTR_NOT_NULL_FATAL(inp);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);

    const char *sep = "\n__ggml_vocab_test__\n";
    size_t seplen = strlen(sep);
    int cases = 0, pass = 0, roundtrip = 0;
    char *ip = inp, *op = out;
    while (ip < inp + ilen) {
        char *end = strstr(ip, sep);
        size_t clen = end ? (size_t)(end - ip) : strlen(ip);
        char *eol = strchr(op, '\n');
        if (!eol) {
            CU_FAIL("fewer lines in .out than cases in .inp");
            break;
        }
        *eol = '\0';
        /* expected ids */
        b158_token want[512];
        size_t nw = 0;
        for (char *s = op, *e; nw < 512; s = e) {
            long x = strtol(s, &e, 10);
            if (e == s)
                break;
            want[nw++] = (b158_token)x;
        }
        b158_token got[2048];
        size_t ng = 0;
        b158_status st = b158_tokenize(v, ip, clen, 0, got, 2048, &ng);
        CU_ASSERT_EQUAL(st, B158_OK);
        int ok = st == B158_OK && ng == nw && memcmp(got, want, nw * sizeof *got) == 0;
        if (ok) {
            pass++;
        } else {
            fprintf(stderr, "\n  %s case %d '%.*s':\n    want", name, cases, (int)clen, ip);
            for (size_t i = 0; i < nw; i++)
                fprintf(stderr, " %d", want[i]);
            fprintf(stderr, "\n    got ");
            for (size_t i = 0; i < ng; i++)
                fprintf(stderr, " %d", got[i]);
            fprintf(stderr, "\n");
        }
        /* decoding gives the text back: byte fallback and byte-level BPE are lossless */
        char dec[8192];
        size_t dl = 0;
        if (b158_detokenize(v, got, ng, 0, dec, sizeof dec, &dl) == B158_OK && dl == clen &&
            memcmp(dec, ip, clen) == 0)
            roundtrip++;
        else
            fprintf(stderr, "\n  %s case %d: decodes to '%.*s'\n", name, cases, (int)dl, dec);
        cases++;
        op = eol + 1;
        ip = end ? end + seplen : inp + ilen;
    }
    printf("\n  %s: %d/%d vectors give the expected ids, %d/%d decode back to the input\n", name,
           pass, cases, roundtrip, cases);
    CU_ASSERT_EQUAL(pass, cases);
    CU_ASSERT_EQUAL(roundtrip, cases);
    CU_ASSERT(cases >= 40);
    free(inp);
    free(out);
}

static void test_spm_vectors(void)
{
    b158_vocab *v = load_vocab(b158_test_fetched("tokenizers/ggml-vocab-llama-spm.gguf"));
    if (!v)
        return;
    CU_ASSERT_EQUAL(b158_vocab_get_type(v), B158_VOCAB_SPM);
    CU_ASSERT_EQUAL(b158_vocab_n_tokens(v), 32000);
    CU_ASSERT_EQUAL(b158_vocab_bos(v), 1);
    CU_ASSERT_EQUAL(b158_vocab_eos(v), 2);
    CU_ASSERT_EQUAL(b158_vocab_unk(v), 0);
    CU_ASSERT_EQUAL(b158_vocab_eot(v), -1);
    CU_ASSERT(b158_vocab_add_bos(v));
    CU_ASSERT(b158_vocab_is_eog(v, 2));
    CU_ASSERT(!b158_vocab_is_eog(v, 1));
    CU_ASSERT_EQUAL(b158_vocab_token_type(v, 3), B158_TOKEN_BYTE);
    run_vectors(v, "ggml-vocab-llama-spm.gguf");
    b158_vocab_free(v);
}

static void test_gpt2_vectors(void)
{
    b158_vocab *v = load_vocab(b158_test_fetched("tokenizers/ggml-vocab-gpt-2.gguf"));
    if (!v)
        return;
    CU_ASSERT_EQUAL(b158_vocab_get_type(v), B158_VOCAB_BPE);
    CU_ASSERT_STRING_EQUAL(b158_vocab_pre(v), "gpt-2");
    CU_ASSERT(!b158_vocab_add_bos(v));
    CU_ASSERT(b158_vocab_is_eog(v, 50256));
    run_vectors(v, "ggml-vocab-gpt-2.gguf");
    b158_vocab_free(v);
}

static void test_llama3_vectors(void)
{
    b158_vocab *v = load_vocab(llama3_vocab_path());
    if (!v)
        return;
    CU_ASSERT_EQUAL(b158_vocab_n_tokens(v), 128256);
    CU_ASSERT_STRING_EQUAL(b158_vocab_pre(v), "llama-bpe");
    CU_ASSERT_EQUAL(b158_vocab_bos(v), 128000);
    CU_ASSERT_EQUAL(b158_vocab_eos(v), 128001);
    CU_ASSERT_EQUAL(b158_vocab_eot(v), 128009);
    CU_ASSERT(b158_vocab_add_bos(v));
    CU_ASSERT(b158_vocab_is_eog(v, 128001) && b158_vocab_is_eog(v, 128009));
    CU_ASSERT(!b158_vocab_is_eog(v, 128000) && !b158_vocab_is_eog(v, 9906));
    /* LLaMA 3.0's specials (3.1 renamed some reserved ones: see from_tiktoken) */
    CU_ASSERT_STRING_EQUAL(b158_vocab_token_text(v, 128006, NULL), "<|start_header_id|>");
    CU_ASSERT_STRING_EQUAL(b158_vocab_token_text(v, 128255, NULL),
                           "<|reserved_special_token_250|>");
    CU_ASSERT_EQUAL(b158_vocab_token_type(v, 128009), B158_TOKEN_CONTROL);
    b158_token ids[8];
    size_t n;
    CU_ASSERT_EQUAL(b158_tokenize(v, "Hello world", 11, 0, ids, 8, &n), B158_OK);
    CU_ASSERT(n == 2 && ids[0] == 9906 && ids[1] == 1917);
    run_vectors(v, "ggml-vocab-llama-bpe.gguf");
    b158_vocab_free(v);
}

/* The 2B-4T file has no tokenizer.ggml.pre: a >= 128k BPE vocab must still get LLaMA-3
 * pre-tokenization and BOS. Rebuild the generated vocab without the key. */
static void test_llama3_missing_pre(void)
{
    const char *path = llama3_vocab_path();
    b158_gguf *g = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_open(path, &g), B158_OK);
    /* b158_vocab_from_gguf reads keys only, so a view that hides one key is enough: copy the
     * file with the key renamed in place (same length keeps every offset valid) */
    size_t len;
    char *bytes = b158_test_read_file(path, &len);
    b158_gguf_close(g);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bytes);
    char *k = NULL;
    for (size_t i = 0; i + 18 <= len; i++)
        if (memcmp(bytes + i, "tokenizer.ggml.pre", 18) == 0) {
            k = bytes + i;
            break;
        }
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    memcpy(k, "tokenizer.ggml.prX", 18);
    CU_ASSERT_EQUAL_FATAL(b158_gguf_open_memory(bytes, len, &g), B158_OK);
    b158_vocab *v = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_vocab_from_gguf(g, &v), B158_OK);
    b158_gguf_close(g); /* the vocab keeps its own copies */
    CU_ASSERT_STRING_EQUAL(b158_vocab_pre(v), "llama-bpe");
    CU_ASSERT(b158_vocab_add_bos(v));
    /* "\p{N}{1,3}" splits digits in threes, unlike GPT-2's \p{N}+ */
    const char *text = "1234567 is what's   there";
    b158_token a[64], b[64];
    size_t na, nb;
    CU_ASSERT_EQUAL(b158_tokenize(v, text, strlen(text), B158_TOKENIZE_ADD_BOS, a, 64, &na),
                    B158_OK);
    b158_vocab *ref = load_vocab(path);
    CU_ASSERT_EQUAL(b158_tokenize(ref, text, strlen(text), B158_TOKENIZE_ADD_BOS, b, 64, &nb),
                    B158_OK);
    CU_ASSERT(na == nb && memcmp(a, b, na * sizeof *a) == 0 && a[0] == 128000);
    b158_vocab_free(ref);
    b158_vocab_free(v);
    free(bytes);
}

/* b158-vocab-from-tiktoken: write LLaMA-3's tiktoken ranks (base64 of each token's bytes, rank =
 * id) from llama.cpp's vocabulary, convert them back with the tool, and expect the same 128000
 * tokens, LLaMA 3.1's specials, and llama.cpp's vectors from merges derived from ranks alone. */
static void test_llama3_from_tiktoken(void)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    b158_vocab *ref = load_vocab(llama3_vocab_path());
    CU_ASSERT_PTR_NOT_NULL_FATAL(ref);
    char model[] = "/tmp/b158-test-tiktoken-XXXXXX";
    int fd = mkstemp(model);
    CU_ASSERT_FATAL(fd >= 0);
    FILE *f = fdopen(fd, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (b158_token id = 0; id < 128000; id++) {
        size_t n;
        const unsigned char *p = (const unsigned char *)b158_vocab_token_piece(ref, id, 0, &n);
        for (size_t i = 0; i < n; i += 3) {
            uint32_t w = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) |
                         (i + 2 < n ? p[i + 2] : 0);
            fputc(b64[w >> 18 & 63], f);
            fputc(b64[w >> 12 & 63], f);
            fputc(i + 1 < n ? b64[w >> 6 & 63] : '=', f);
            fputc(i + 2 < n ? b64[w & 63] : '=', f);
        }
        fprintf(f, " %d\n", id);
    }
    CU_ASSERT_EQUAL_FATAL(fclose(f), 0);

    char vocab[] = "/tmp/b158-test-tiktoken-vocab-XXXXXX";
    fd = mkstemp(vocab);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "'%s/b158-vocab-from-tiktoken' -i '%s' -o '%s' >&2",
             getenv("B158_BIN_DIR"), model, vocab);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    b158_vocab *v = load_vocab(vocab);
    CU_ASSERT_PTR_NOT_NULL_FATAL(v);
    CU_ASSERT_EQUAL(b158_vocab_n_tokens(v), b158_vocab_n_tokens(ref));
    CU_ASSERT_STRING_EQUAL(b158_vocab_pre(v), "llama-bpe");
    int same = 0;
    for (b158_token id = 0; id < 128000; id++) {
        size_t la, lb;
        const char *a = b158_vocab_token_text(v, id, &la);
        const char *b = b158_vocab_token_text(ref, id, &lb);
        same += la == lb && memcmp(a, b, la) == 0 &&
                b158_vocab_token_type(v, id) == b158_vocab_token_type(ref, id);
    }
    CU_ASSERT_EQUAL(same, 128000);
    /* the specials are LLaMA 3.1's (as in BitNet 2B-4T), all control tokens */
    static const b158_token shared_specials[] = {128000, 128001, 128006, 128007, 128009};
    for (size_t i = 0; i < sizeof shared_specials / sizeof *shared_specials; i++)
        CU_ASSERT_STRING_EQUAL(b158_vocab_token_text(v, shared_specials[i], NULL),
                               b158_vocab_token_text(ref, shared_specials[i], NULL));
    CU_ASSERT_STRING_EQUAL(b158_vocab_token_text(v, 128004, NULL), "<|finetune_right_pad_id|>");
    CU_ASSERT_STRING_EQUAL(b158_vocab_token_text(v, 128010, NULL), "<|python_tag|>");
    CU_ASSERT_STRING_EQUAL(b158_vocab_token_text(v, 128011, NULL), "<|reserved_special_token_3|>");
    CU_ASSERT_STRING_EQUAL(b158_vocab_token_text(v, 128255, NULL),
                           "<|reserved_special_token_247|>");
    int control = 0;
    for (b158_token id = 128000; id < 128256; id++)
        control += b158_vocab_token_type(v, id) == B158_TOKEN_CONTROL;
    CU_ASSERT_EQUAL(control, 256);
    CU_ASSERT(b158_vocab_is_eog(v, 128001) && b158_vocab_is_eog(v, 128008) &&
              b158_vocab_is_eog(v, 128009));
    CU_ASSERT_EQUAL(b158_vocab_bos(v), 128000);
    CU_ASSERT_EQUAL(b158_vocab_eot(v), 128009);
    run_vectors(v, "ggml-vocab-llama-bpe.gguf");
    b158_vocab_free(v);
    b158_vocab_free(ref);
    unlink(model);
    unlink(vocab);
}

/* ---- behaviour -------------------------------------------------------------------------- */

static void test_special_and_bos(void)
{
    b158_vocab *v = load_vocab(llama3_vocab_path());
    if (!v)
        return;
    const char *text = "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>";
    b158_token ids[64];
    size_t n;
    CU_ASSERT_EQUAL(b158_tokenize(v, text, strlen(text),
                                  B158_TOKENIZE_ADD_BOS | B158_TOKENIZE_PARSE_SPECIAL, ids, 64, &n),
                    B158_OK);
    /* llama-tokenize: 128000 128006 882 128007 271 13347 128009 */
    b158_token want[] = {128000, 128006, 882, 128007, 271, 13347, 128009};
    CU_ASSERT_EQUAL(n, 7);
    CU_ASSERT(n == 7 && memcmp(ids, want, sizeof want) == 0);
    /* without parse_special the markers are plain text */
    CU_ASSERT_EQUAL(b158_tokenize(v, text, strlen(text), 0, ids, 64, &n), B158_OK);
    CU_ASSERT(n > 7);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT(ids[i] < 128000);
    /* decoding: control tokens only on request */
    b158_token t2[] = {128000, 9906, 1917, 128009};
    char out[128];
    size_t len;
    CU_ASSERT_EQUAL(b158_detokenize(v, t2, 4, 0, out, sizeof out, &len), B158_OK);
    CU_ASSERT_STRING_EQUAL(out, "Hello world");
    CU_ASSERT_EQUAL(b158_detokenize(v, t2, 4, 1, out, sizeof out, &len), B158_OK);
    CU_ASSERT_STRING_EQUAL(out, "<|begin_of_text|>Hello world<|eot_id|>");
    CU_ASSERT_EQUAL(b158_detokenize(v, t2, 4, 1, out, 10, &len), B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(len, 38);
    b158_token bad[] = {5, 128256};
    CU_ASSERT_EQUAL(b158_detokenize(v, bad, 2, 0, out, sizeof out, &len), B158_ERR_INVALID_ARG);
    /* small output buffer: the count is still reported */
    CU_ASSERT_EQUAL(b158_tokenize(v, "Hello world", 11, 0, ids, 1, &n), B158_ERR_INVALID_ARG);
    CU_ASSERT(n == 2 && ids[0] == 9906);
    b158_token *all = NULL;
    CU_ASSERT_EQUAL(b158_tokenize_alloc(v, "", 0, B158_TOKENIZE_ADD_BOS, &all, &n), B158_OK);
    CU_ASSERT(n == 1 && all[0] == 128000);
    free(all);
    CU_ASSERT_EQUAL(b158_vocab_find(v, "Hello", 5), 9906);
    CU_ASSERT_EQUAL(b158_vocab_find(v, "<|eot_id|>", 10), 128009);
    CU_ASSERT_EQUAL(b158_vocab_find(v, "no such token at all", 20), -1);
    CU_ASSERT_PTR_NULL(b158_vocab_token_text(v, -1, NULL));
    CU_ASSERT_PTR_NULL(b158_vocab_token_text(v, 128256, NULL));
    b158_vocab_free(v);

    /* SPM: BOS by default, <s> parsed only on request, space prefix after specials */
    v = load_vocab(b158_test_fetched("tokenizers/ggml-vocab-llama-spm.gguf"));
    if (!v)
        return;
    CU_ASSERT_EQUAL(b158_tokenize(v, "Hello", 5, B158_TOKENIZE_ADD_BOS, ids, 64, &n), B158_OK);
    CU_ASSERT(n == 2 && ids[0] == 1 && ids[1] == 15043);
    CU_ASSERT_EQUAL(b158_tokenize(v, "<s>Hello", 8, B158_TOKENIZE_PARSE_SPECIAL, ids, 64, &n),
                    B158_OK);
    CU_ASSERT(n == 2 && ids[0] == 1 && ids[1] == 15043);
    CU_ASSERT_EQUAL(b158_tokenize(v, "<s>Hello", 8, 0, ids, 64, &n), B158_OK);
    CU_ASSERT(n > 2 && ids[0] != 1);
    b158_vocab_free(v);

    /* GPT-2: no BOS even when asked (add_bos_token is false by default) */
    v = load_vocab(b158_test_fetched("tokenizers/ggml-vocab-gpt-2.gguf"));
    if (!v)
        return;
    CU_ASSERT_EQUAL(b158_tokenize(v, "Hello world", 11, B158_TOKENIZE_ADD_BOS, ids, 64, &n),
                    B158_OK);
    CU_ASSERT(n == 2 && ids[0] == 15496 && ids[1] == 995);
    CU_ASSERT_EQUAL(
        b158_tokenize(v, "a<|endoftext|>b", 15, B158_TOKENIZE_PARSE_SPECIAL, ids, 64, &n), B158_OK);
    CU_ASSERT(n == 3 && ids[1] == 50256);
    b158_vocab_free(v);
}

static void test_invalid_utf8(void)
{
    const char text[] = "ab\xff\xfe c\xe2\x82 d\xc0\xaf\xed\xa0\x80 \xf0\x9f\x98";
    size_t len = sizeof text - 1;
    /* SentencePiece: bytes that are not characters fall back to <0xNN>, losslessly */
    b158_vocab *v = load_vocab(b158_test_fetched("tokenizers/ggml-vocab-llama-spm.gguf"));
    if (!v)
        return;
    b158_token ids[256];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(b158_tokenize(v, text, len, 0, ids, 256, &n), B158_OK);
    int has_ff = 0;
    for (size_t i = 0; i < n; i++)
        has_ff |= ids[i] == 3 + 0xff;
    CU_ASSERT(has_ff);
    char out[256];
    size_t ol;
    /* like llama.cpp, characters are cut by lead byte alone, so a bad lead byte swallows the
     * next bytes, here the U+2581 that stands for " c"'s space: it decodes as U+2581 */
    CU_ASSERT_EQUAL(b158_detokenize(v, ids, n, 0, out, sizeof out, &ol), B158_OK);
    CU_ASSERT(ol > len && memcmp(out,
                                 "ab\xff\xfe\xe2\x96\x81"
                                 "c",
                                 8) == 0);
    /* without spaces next to them the bytes come back exactly */
    const char text2[] = "ab\xff\xfe"
                         "cd\xc0\xaf"
                         "xy\xed\xa0\x80"
                         "z\xf0\x9f\x98";
    CU_ASSERT_EQUAL(b158_tokenize(v, text2, sizeof text2 - 1, 0, ids, 256, &n), B158_OK);
    CU_ASSERT_EQUAL(b158_detokenize(v, ids, n, 0, out, sizeof out, &ol), B158_OK);
    CU_ASSERT(ol == sizeof text2 - 1 && memcmp(out, text2, ol) == 0);
    b158_vocab_free(v);

    /* byte-level BPE: like llama.cpp, each stray byte becomes U+FFFD */
    const char *paths[2] = {b158_test_fetched("tokenizers/ggml-vocab-gpt-2.gguf"), NULL};
    char p0[4096];
    snprintf(p0, sizeof p0, "%s", paths[0]);
    paths[0] = p0;
    paths[1] = llama3_vocab_path();
    const char fixed[] = "ab\xef\xbf\xbd\xef\xbf\xbd c\xef\xbf\xbd\xef\xbf\xbd d\xef\xbf\xbd"
                         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf"
                         "\xbd\xef\xbf\xbd";
    for (int k = 0; k < 2; k++) {
        v = load_vocab(paths[k]);
        if (!v)
            return;
        b158_token ref[256];
        size_t nr;
        CU_ASSERT_EQUAL(b158_tokenize(v, text, len, 0, ids, 256, &n), B158_OK);
        CU_ASSERT_EQUAL(b158_tokenize(v, fixed, sizeof fixed - 1, 0, ref, 256, &nr), B158_OK);
        CU_ASSERT(n == nr && memcmp(ids, ref, n * sizeof *ids) == 0);
        /* random bytes: never a crash, always a decodable result */
        for (int iter = 0; iter < 200; iter++) {
            char junk[64];
            size_t jl = (size_t)b158_test_randint(0, 64);
            for (size_t i = 0; i < jl; i++)
                junk[i] = (char)b158_test_rand();
            CU_ASSERT_EQUAL(b158_tokenize(v, junk, jl, B158_TOKENIZE_PARSE_SPECIAL, ids, 256, &n),
                            B158_OK);
            CU_ASSERT_EQUAL(b158_detokenize(v, ids, n, 1, out, sizeof out, &ol), B158_OK);
        }
        b158_vocab_free(v);
    }
}

/* Valid UTF-8 chunk by chunk, and the concatenation equals the full decode. */
static void test_stream(void)
{
    b158_vocab *v = load_vocab(b158_test_fetched("tokenizers/ggml-vocab-gpt-2.gguf"));
    if (!v)
        return;
    const char *text = "emoji \xf0\x9f\x9a\x80\xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab "
                       "\xe1\x9e\x80\xe1\x9e\xb6 \xd0\xbd\xd0\xb5 ok";
    b158_token ids[128];
    size_t n;
    CU_ASSERT_EQUAL_FATAL(b158_tokenize(v, text, strlen(text), 0, ids, 128, &n), B158_OK);
    int partial_tokens = 0;
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = b158_vocab_token_piece(v, ids[i], 0, &pl);
        partial_tokens +=
            pl > 0 && (unsigned char)p[pl - 1] >= 0x80 && (unsigned char)p[pl - 1] < 0xC0 && pl < 4;
    }
    CU_ASSERT(partial_tokens > 0); /* the emoji are split across byte tokens */
    b158_detok_stream s;
    b158_detok_stream_init(&s);
    char all[512], chunk[4096];
    size_t total = 0;
    size_t cap = 3 * (b158_vocab_max_piece(v) + 4);
    CU_ASSERT_FATAL(cap <= sizeof chunk);
    for (size_t i = 0; i < n; i++) {
        size_t cl;
        CU_ASSERT_EQUAL_FATAL(b158_detok_stream_push(&s, v, ids[i], 0, chunk, cap, &cl), B158_OK);
        /* every chunk is complete UTF-8 on its own */
        for (size_t j = 0; j < cl;) {
            unsigned char c = (unsigned char)chunk[j];
            size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
            CU_ASSERT(j + k <= cl);
            j += k;
        }
        memcpy(all + total, chunk, cl);
        total += cl;
    }
    total += b158_detok_stream_flush(&s, all + total, sizeof all - total);
    CU_ASSERT(total == strlen(text) && memcmp(all, text, total) == 0);
    CU_ASSERT_EQUAL(b158_detok_stream_push(&s, v, ids[0], 0, chunk, 4, &n), B158_ERR_INVALID_ARG);

    /* an invalid byte becomes U+FFFD; a dangling lead byte too, at flush */
    b158_detok_stream_init(&s);
    b158_token ff = b158_vocab_find(v, "\xc3\xbf", 2); /* GPT-2 char of byte 0xff */
    b158_token e2 = b158_vocab_find(v, "\xc3\xa2", 2); /* byte 0xe2 */
    CU_ASSERT_FATAL(ff >= 0 && e2 >= 0);
    size_t cl;
    CU_ASSERT_EQUAL(b158_detok_stream_push(&s, v, ff, 0, chunk, cap, &cl), B158_OK);
    CU_ASSERT(cl == 3 && memcmp(chunk, "\xef\xbf\xbd", 3) == 0);
    CU_ASSERT_EQUAL(b158_detok_stream_push(&s, v, e2, 0, chunk, cap, &cl), B158_OK);
    CU_ASSERT_EQUAL(cl, 0);
    CU_ASSERT_EQUAL(b158_detok_stream_flush(&s, chunk, sizeof chunk), 3);
    b158_vocab_free(v);
}

/* Merging SentencePiece lines separately must equal one queue over the whole text. */
/* A vocabulary written from its parts (b158_vocab_write) loads back as written: a byte-level
 * BPE one with merges and a control token, a SentencePiece one with scores; bad parts are
 * refused. */
static void test_vocab_write(void)
{
    char path[] = "/tmp/b158-test-vocab-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    /* BPE: the 256 bytes in a random order, then "ab", "abc" and "<|end|>" */
    enum { NV = 259 };
    static char buf[NV][16];
    const char *texts[NV];
    size_t lens[NV];
    b158_token_type types[NV];
    int order[256];
    for (int i = 0; i < 256; i++)
        order[i] = i;
    for (int i = 255; i > 0; i--) {
        const int j = b158_test_randint(0, i), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    for (int i = 0; i < 256; i++) {
        const unsigned char b = (unsigned char)order[i];
        lens[i] = b158_bpe_text_from_bytes(&b, 1, buf[i]);
        CU_ASSERT(lens[i] == 1 || lens[i] == 2);
        types[i] = B158_TOKEN_NORMAL;
    }
    lens[256] = b158_bpe_text_from_bytes("ab", 2, buf[256]);
    lens[257] = b158_bpe_text_from_bytes("abc", 3, buf[257]);
    CU_ASSERT(lens[256] == 2 && lens[257] == 3 && memcmp(buf[257], "abc", 3) == 0);
    lens[258] = strlen(strcpy(buf[258], "<|end|>"));
    types[256] = types[257] = B158_TOKEN_NORMAL;
    types[258] = B158_TOKEN_CONTROL;
    for (int i = 0; i < NV; i++)
        texts[i] = buf[i];
    const char *merges[] = {"a b", "ab c"};
    b158_vocab_write_params p = b158_vocab_write_default_params();
    p.type = B158_VOCAB_BPE;
    p.pre = "gpt2";
    p.n_tokens = NV;
    p.texts = texts;
    p.lens = lens;
    p.token_types = types;
    p.merges = merges;
    p.n_merges = 2;
    p.eos = 258;
    p.add_bos = 0;
    CU_ASSERT_EQUAL_FATAL(b158_vocab_write(&p, path), B158_OK);
    b158_vocab *v = load_vocab(path);
    CU_ASSERT_EQUAL(b158_vocab_get_type(v), B158_VOCAB_BPE);
    CU_ASSERT_EQUAL(b158_vocab_n_tokens(v), NV);
    CU_ASSERT_EQUAL(b158_vocab_eos(v), 258);
    CU_ASSERT_EQUAL(b158_vocab_bos(v), -1);
    CU_ASSERT_EQUAL(b158_vocab_add_bos(v), 0);
    CU_ASSERT(b158_vocab_is_eog(v, 258) && b158_vocab_is_control(v, 258));
    for (int i = 0; i < NV; i++) { /* every text distinct and stored as given */
        size_t len = 0;
        const char *t = b158_vocab_token_text(v, i, &len);
        CU_ASSERT(t && len == lens[i] && memcmp(t, texts[i], len) == 0);
        CU_ASSERT_EQUAL(b158_vocab_find(v, texts[i], lens[i]), i);
    }
    b158_token ids[8];
    size_t n = 0;
    const char *text = "abcab<|end|>";
    CU_ASSERT_EQUAL(b158_tokenize(v, text, strlen(text), B158_TOKENIZE_PARSE_SPECIAL, ids, 8, &n),
                    B158_OK);
    CU_ASSERT(n == 3 && ids[0] == 257 && ids[1] == 256 && ids[2] == 258);
    CU_ASSERT_EQUAL(b158_tokenize(v, "\xc3\xa9", 2, 0, ids, 8, &n), B158_OK); /* no merge */
    CU_ASSERT(n == 2 && order[ids[0]] == 0xc3 && order[ids[1]] == 0xa9);
    b158_vocab_free(v);

    /* SentencePiece: scores decide the merges */
    const char *spm_texts[] = {"<unk>",
                               "<s>",
                               "</s>",
                               "\xe2\x96\x81",
                               "a",
                               "b",
                               "\xe2\x96\x81"
                               "a",
                               "\xe2\x96\x81"
                               "ab"};
    const float scores[] = {0, 0, 0, -3.0f, -2.0f, -2.5f, b158_test_uniform(-1.0f, -0.5f), -0.25f};
    p = b158_vocab_write_default_params();
    p.type = B158_VOCAB_SPM;
    p.name = "spm test";
    p.n_tokens = 8;
    p.texts = spm_texts;
    p.scores = scores;
    p.unk = 0, p.bos = 1, p.eos = 2, p.add_bos = 1;
    CU_ASSERT_EQUAL_FATAL(b158_vocab_write(&p, path), B158_OK);
    v = load_vocab(path);
    CU_ASSERT_EQUAL(b158_vocab_get_type(v), B158_VOCAB_SPM);
    CU_ASSERT_EQUAL(b158_vocab_token_score(v, 6), scores[6]);
    CU_ASSERT_EQUAL(b158_tokenize(v, "ab", 2, B158_TOKENIZE_ADD_BOS, ids, 8, &n), B158_OK);
    CU_ASSERT(n == 2 && ids[0] == 1 && ids[1] == 7);
    b158_vocab_free(v);

    /* refused: no params, no tokens, an unknown type, a special id outside, an unwritable path */
    CU_ASSERT_EQUAL(b158_vocab_write(NULL, path), B158_ERR_INVALID_ARG);
    b158_vocab_write_params bad = p;
    bad.n_tokens = 0;
    CU_ASSERT_EQUAL(b158_vocab_write(&bad, path), B158_ERR_INVALID_ARG);
    bad = p, bad.type = (b158_vocab_type)0;
    CU_ASSERT_EQUAL(b158_vocab_write(&bad, path), B158_ERR_INVALID_ARG);
    bad = p, bad.eos = 8;
    CU_ASSERT_EQUAL(b158_vocab_write(&bad, path), B158_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NOT_NULL(strstr(b158_last_error(), "outside the vocabulary"));
    CU_ASSERT_EQUAL(b158_vocab_write(&p, "/nonexistent-dir/vocab.gguf"), B158_ERR_IO);
    unlink(path);
}

static void test_spm_line_split(void)
{
    b158_vocab *v = load_vocab(b158_test_fetched("tokenizers/ggml-vocab-llama-spm.gguf"));
    if (!v)
        return;
    size_t len;
    char *text = b158_test_read_file(b158_test_source("tests/data/text/tinyshakespeare.txt"), &len);
    if (!text) {
        b158_vocab_free(v);
        return;
    }
    len = len > 200000 ? 200000 : len;
    CU_ASSERT(v->spm_split_newlines);
    b158_token *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CU_ASSERT_EQUAL(b158_tokenize_alloc(v, text, len, 0, &a, &na), B158_OK);
    v->spm_split_newlines = 0;
    CU_ASSERT_EQUAL(b158_tokenize_alloc(v, text, len, 0, &b, &nb), B158_OK);
    CU_ASSERT(na == nb && memcmp(a, b, na * sizeof *a) == 0);
    free(a);
    free(b);
    free(text);
    b158_vocab_free(v);
}

static void test_load_errors(void)
{
    b158_vocab *v = (b158_vocab *)1;
    CU_ASSERT_EQUAL(b158_vocab_load("/nonexistent.gguf", &v), B158_ERR_IO);
    CU_ASSERT_PTR_NULL(v);
    b158_vocab_free(NULL);
}

/* ---- hostile metadata, chat templates ----------------------------------------------------- */

/* A SentencePiece vocabulary of six tokens written in memory, with scores and token types as
 * given (f32 arrays) and an optional chat template key added by extra; NULL if it did not load
 * (the status in *st). */
static b158_vocab *spm_vocab(const float *scores, const float *types,
                             b158_status (*extra)(b158_gguf_writer *), b158_status *st)
{
    static const char *const tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81\x61", "a", "b"};
    b158_gguf_writer *w = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_create(&w), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_str(w, "tokenizer.ggml.model", "llama"), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_arr_str(w, "tokenizer.ggml.tokens", tokens, NULL, 6), B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_arr(w, "tokenizer.ggml.scores", B158_GGUF_F32, scores, 6),
                    B158_OK);
    CU_ASSERT_EQUAL(b158_gguf_add_arr(w, "tokenizer.ggml.token_type", B158_GGUF_F32, types, 6),
                    B158_OK);
    if (extra)
        CU_ASSERT_EQUAL(extra(w), B158_OK);
    void *data = NULL;
    size_t size = 0;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_writer_write_mem(w, &data, &size), B158_OK);
    b158_gguf_writer_free(w);
    b158_gguf *g = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_gguf_open_memory(data, size, &g), B158_OK);
    b158_vocab *v = NULL;
    *st = b158_vocab_from_gguf(g, &v);
    if (*st != B158_OK)
        fprintf(stderr, "\n%s\n", b158_last_error());
    b158_gguf_close(g);
    free(data);
    return v;
}

static const float plain_scores[6] = {0, 0, 0, -1, -2, -3};
static const float plain_types[6] = {2, 3, 3, 1, 1, 1};

/* Scores and token types of any float value load (a score of -1e10 reached an int32 cast:
 * undefined behaviour); a type that is not a small whole number counts as undefined. */
static void test_hostile_scores(void)
{
    const float scores[6] = {0, 0, 0, -1e10f, 3e38f, NAN};
    const float types[6] = {2, 3.5f, 3, 1e30f, -5, NAN};
    b158_status st;
    b158_vocab *v = spm_vocab(scores, types, NULL, &st);
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    CU_ASSERT_EQUAL(b158_vocab_token_score(v, 3), -1e10f);
    CU_ASSERT_EQUAL(b158_vocab_token_score(v, 4), 3e38f);
    CU_ASSERT_EQUAL(b158_vocab_token_type(v, 0), B158_TOKEN_UNKNOWN);
    CU_ASSERT_EQUAL(b158_vocab_token_type(v, 1), B158_TOKEN_CONTROL); /* 3.5 truncates to 3 */
    CU_ASSERT_EQUAL(b158_vocab_token_type(v, 3), B158_TOKEN_UNDEFINED);
    CU_ASSERT_EQUAL(b158_vocab_token_type(v, 4), B158_TOKEN_UNDEFINED);
    CU_ASSERT_EQUAL(b158_vocab_token_type(v, 5), B158_TOKEN_UNDEFINED);
    /* and the vocabulary still encodes and decodes without tripping over them */
    b158_token *ids = NULL;
    size_t n = 0;
    CU_ASSERT_EQUAL(b158_tokenize_alloc(v, "ab a", 4, B158_TOKENIZE_ADD_BOS, &ids, &n), B158_OK);
    CU_ASSERT(n >= 2 && ids[0] == 1);
    char out[64];
    size_t len;
    CU_ASSERT_EQUAL(b158_detokenize(v, ids, n, 1, out, sizeof out, &len), B158_OK);
    free(ids);
    b158_vocab_free(v);
}

static b158_status add_template_with_nul(b158_gguf_writer *w)
{
    static const char t[] = "{{ x }}\0<|im_start|>{{ y }}";
    return b158_gguf_add_strn(w, "tokenizer.chat_template", t, sizeof t - 1);
}

static b158_status add_template_number(b158_gguf_writer *w)
{
    return b158_gguf_add_u32(w, "tokenizer.chat_template", 7);
}

/* The vocab keeps tokenizer.chat_template (any bytes) for b158_chat_detect, which picks the
 * format by the markers anywhere in the template. */
static void test_chat_template(void)
{
    b158_status st;
    b158_vocab *v = spm_vocab(plain_scores, plain_types, add_template_with_nul, &st);
    CU_ASSERT_EQUAL_FATAL(st, B158_OK);
    size_t len = 0;
    const char *t = b158_vocab_chat_template(v, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(len, 27);
    CU_ASSERT(memcmp(t, "{{ x }}\0<|im_start|>{{ y }}", 28) == 0); /* and the NUL after it */
    CU_ASSERT_EQUAL(b158_chat_detect(t, len)->id, B158_CHAT_CHATML);
    CU_ASSERT_EQUAL(b158_chat_detect(t, strlen(t))->id, B158_CHAT_BITNET);
    b158_vocab_free(v);
    /* no template, or a template that is not a string: none (a warning, not a failed load) */
    v = spm_vocab(plain_scores, plain_types, NULL, &st);
    CU_ASSERT_EQUAL(st, B158_OK);
    len = 99;
    CU_ASSERT_PTR_NULL(b158_vocab_chat_template(v, &len));
    CU_ASSERT_EQUAL(len, 0);
    b158_vocab_free(v);
    v = spm_vocab(plain_scores, plain_types, add_template_number, &st);
    CU_ASSERT_EQUAL(st, B158_OK);
    CU_ASSERT_PTR_NULL(b158_vocab_chat_template(v, NULL));
    b158_vocab_free(v);

    static const struct {
        const char *tmpl;
        b158_chat_id want;
    } cases[] = {
        {"", B158_CHAT_BITNET},
        {"{% for m in messages %}System: {{ m.content }}<|eot_id|>{% endfor %}", B158_CHAT_BITNET},
        {"<|start_header_id|>", B158_CHAT_LLAMA3},
        {"{{ '<|start_header_id|>' + role + '<|end_header_id|>\n\n' }}", B158_CHAT_LLAMA3},
        {"<|im_start|><|start_header_id|>", B158_CHAT_LLAMA3}, /* LLaMA-3's marker first */
        {"{{ '<|im_start|>' + role }}", B158_CHAT_CHATML},
        {"<|im_start|", B158_CHAT_BITNET},
        {"<<||start_header_id|>", B158_CHAT_BITNET},
        {"<|start_header_id", B158_CHAT_BITNET},
        {"x<|im_start|>", B158_CHAT_CHATML},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const b158_chat_format *f = b158_chat_detect(cases[i].tmpl, strlen(cases[i].tmpl));
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        if (f->id != cases[i].want)
            fprintf(stderr, "\n'%s': format %s\n", cases[i].tmpl, f->name);
        CU_ASSERT_EQUAL(f->id, cases[i].want);
        CU_ASSERT(f->name && f->system_prefix && f->user_prefix && f->assistant_prefix &&
                  f->turn_end && f->turn_end[0]);
    }
    /* the length rules, not a NUL: a marker cut by len is not found, NULL is no template */
    CU_ASSERT_EQUAL(b158_chat_detect("<|im_start|>", 11)->id, B158_CHAT_BITNET);
    CU_ASSERT_EQUAL(b158_chat_detect(NULL, 5)->id, B158_CHAT_BITNET);
    const b158_chat_format *l3 = b158_chat_detect("<|start_header_id|>", 19);
    CU_ASSERT_STRING_EQUAL(l3->name, "llama3");
    CU_ASSERT_STRING_EQUAL(l3->turn_end, "<|eot_id|>");
    CU_ASSERT_STRING_EQUAL(b158_chat_detect("", 0)->user_prefix, "User: ");
}

/* The getters on a NULL vocabulary give the documented empty values. */
static void test_null_vocab(void)
{
    CU_ASSERT_EQUAL(b158_vocab_get_type(NULL), 0);
    CU_ASSERT_EQUAL(b158_vocab_n_tokens(NULL), 0);
    CU_ASSERT_EQUAL(b158_vocab_bos(NULL), -1);
    CU_ASSERT_EQUAL(b158_vocab_eos(NULL), -1);
    CU_ASSERT_EQUAL(b158_vocab_eot(NULL), -1);
    CU_ASSERT_EQUAL(b158_vocab_unk(NULL), -1);
    CU_ASSERT_EQUAL(b158_vocab_add_bos(NULL), 0);
    CU_ASSERT_STRING_EQUAL(b158_vocab_pre(NULL), "");
    CU_ASSERT_PTR_NULL(b158_vocab_token_text(NULL, 0, NULL));
    CU_ASSERT_EQUAL(b158_vocab_token_type(NULL, 0), B158_TOKEN_UNDEFINED);
    CU_ASSERT_EQUAL(b158_vocab_token_score(NULL, 0), 0.0f);
    CU_ASSERT_EQUAL(b158_vocab_find(NULL, "a", 1), -1);
    CU_ASSERT_EQUAL(b158_vocab_is_eog(NULL, 0), 0);
    CU_ASSERT_EQUAL(b158_vocab_is_control(NULL, 0), 0);
    CU_ASSERT_EQUAL(b158_vocab_max_piece(NULL), 0);
    size_t len = 9;
    CU_ASSERT_PTR_NULL(b158_vocab_token_piece(NULL, 0, 1, &len));
    CU_ASSERT_EQUAL(len, 0);
    CU_ASSERT_PTR_NULL(b158_vocab_chat_template(NULL, &len));
    b158_token ids[4];
    size_t n;
    CU_ASSERT_EQUAL(b158_tokenize(NULL, "a", 1, 0, ids, 4, &n), B158_ERR_INVALID_ARG);
    char out[8];
    CU_ASSERT_EQUAL(b158_detokenize(NULL, ids, 0, 0, out, sizeof out, &len), B158_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(b158_detok_stream_flush(NULL, out, sizeof out), 0);
}

/* Runs a command line and captures its stdout; returns the exit status. */
static int run_capture(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static void test_tokenize_tool(void)
{
    const char *vocab = llama3_vocab_path();
    const char *bin = getenv("B158_BIN_DIR");
    char cmd[9000], out[4096];
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -p 'Hello world' --no-bos --ids", bin,
             vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "[9906, 1917]\n");
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -p 'Hello world'", bin, vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "128000 -> '<|begin_of_text|>'\n  9906 -> 'Hello'\n"
                                "  1917 -> ' world'\n");
    snprintf(cmd, sizeof cmd,
             "'%s/b158-cl-tokenize' -m '%s' -p 'a<|eot_id|>' --no-bos --ids --parse-special", bin,
             vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "[64, 128009]\n");
    /* llama-tokenize's defaults: special tokens matched, -p's escapes; and its switches off */
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -p 'a<|eot_id|>b\\nc' --no-bos --ids",
             bin, vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "[64, 128009, 65, 198, 66]\n");
    snprintf(cmd, sizeof cmd,
             "'%s/b158-cl-tokenize' -m '%s' -p 'a<|eot_id|>b\\nc' --no-bos --ids "
             "--no-parse-special --no-escape --log-disable",
             bin, vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_PTR_NULL(strstr(out, "128009"));
    CU_ASSERT_PTR_NULL(strstr(out, " 198,"));
    snprintf(cmd, sizeof cmd, "printf 'Hello world' | '%s/b158-cl-tokenize' -m '%s' --stdin --ids",
             bin, vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "[128000, 9906, 1917]\n");
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -p x --stdin 2>/dev/null", bin, vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 2); /* one source of text */
    /* the prompt from a file, bytes included */
    char path[] = "/tmp/b158-test-prompt-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_EQUAL(write(fd, "Hello world", 11), 11);
    close(fd);
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -f '%s' --no-bos --ids", bin, vocab,
             path);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 0);
    CU_ASSERT_STRING_EQUAL(out, "[9906, 1917]\n");
    unlink(path);
    /* bad input: clear message on stderr, non-zero status */
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -p x 2>/dev/null", bin);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m /nonexistent.gguf -p x 2>&1", bin);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "/nonexistent.gguf"));
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -f /nonexistent.txt 2>&1", bin, vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 1);
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -p x --bogus 2>/dev/null", bin, vocab);
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 2);
    snprintf(cmd, sizeof cmd, "'%s/b158-cl-tokenize' -m '%s' -p x 2>&1", bin,
             b158_test_fetched("tokenizers/ggml-vocab-gpt-2.gguf.inp"));
    CU_ASSERT_EQUAL(run_capture(cmd, out, sizeof out), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "not a GGUF file"));
}

/* Tinyshakespeare (1.1 MB) through each tokenizer: printed, not asserted. */
static void test_bench(void)
{
    size_t len;
    char *text = b158_test_read_file(b158_test_source("tests/data/text/tinyshakespeare.txt"), &len);
    if (!text)
        return;
    char spm[4096], gpt2[4096];
    snprintf(spm, sizeof spm, "%s", b158_test_fetched("tokenizers/ggml-vocab-llama-spm.gguf"));
    snprintf(gpt2, sizeof gpt2, "%s", b158_test_fetched("tokenizers/ggml-vocab-gpt-2.gguf"));
    const char *names[3] = {"llama-spm", "gpt-2", "llama-bpe (LLaMA-3)"};
    const char *paths[3] = {spm, gpt2, llama3_vocab_path()};
    printf("\n\n| vocab | bytes | tokens | encode s | MB/s | decode s | round trip |\n"
           "|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < 3; i++) {
        b158_vocab *v = load_vocab(paths[i]);
        if (!v)
            continue;
        b158_token *ids = NULL;
        size_t n = 0;
        struct timespec t0, t1, t2;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        CU_ASSERT_EQUAL(b158_tokenize_alloc(v, text, len, 0, &ids, &n), B158_OK);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        char *dec = malloc(2 * len + 16);
        size_t dl = 0;
        CU_ASSERT_EQUAL(b158_detokenize(v, ids, n, 0, dec, 2 * len + 16, &dl), B158_OK);
        clock_gettime(CLOCK_MONOTONIC, &t2);
        double e = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        double d = (double)(t2.tv_sec - t1.tv_sec) + 1e-9 * (double)(t2.tv_nsec - t1.tv_nsec);
        int same = dl == len && memcmp(dec, text, len) == 0;
        CU_ASSERT(same);
        printf("| %s | %zu | %zu | %.3f | %.1f | %.3f | %s |\n", names[i], len, n, e,
               (double)len / e / 1e6, d, same ? "exact" : "DIFFERS");
        free(dec);
        free(ids);
        b158_vocab_free(v);
    }
    free(text);
}

static void add_suites(void)
{
    static const b158_test_case spm[] = {
        {"vectors", test_spm_vectors}, {"line_split", test_spm_line_split}, {NULL, NULL}};
    static const b158_test_case gpt2[] = {{"vectors", test_gpt2_vectors}, {NULL, NULL}};
    static const b158_test_case llama3[] = {{"vectors", test_llama3_vectors},
                                            {"missing_pre", test_llama3_missing_pre},
                                            {"from_tiktoken", test_llama3_from_tiktoken},
                                            {NULL, NULL}};
    static const b158_test_case api[] = {{"special_and_bos", test_special_and_bos},
                                         {"invalid_utf8", test_invalid_utf8},
                                         {"stream", test_stream},
                                         {"vocab_write", test_vocab_write},
                                         {"load_errors", test_load_errors},
                                         {"tokenize_tool", test_tokenize_tool},
                                         {"hostile_scores", test_hostile_scores},
                                         {"chat_template", test_chat_template},
                                         {"null_vocab", test_null_vocab},
                                         {NULL, NULL}};
    static const b158_test_case bench[] = {{"tinyshakespeare", test_bench}, {NULL, NULL}};
    b158_test_suite("spm", spm);
    b158_test_suite("gpt2", gpt2);
    b158_test_suite("llama_bpe", llama3);
    b158_test_suite("api", api);
    b158_test_suite("bench", bench);
}

int main(int argc, char **argv)
{
    return b158_test_main(argc, argv, add_suites);
}
