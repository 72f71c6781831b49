/* b158-cl-tokenize: prints the tokens of a prompt for a model or vocab GGUF, like llama-tokenize.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b158/tokenizer.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-cl-tokenize -m MODEL.gguf (-p TEXT | -f FILE) [options]\n"
               "\n"
               "  -m, --model FILE      model or vocab-only GGUF file\n"
               "  -p, --prompt TEXT     text to tokenize\n"
               "  -f, --file FILE       read the text from FILE\n"
               "      --ids             print only the ids, as [id, id, ...]\n"
               "      --no-bos          never add BOS (default: add it if the vocab asks for it)\n"
               "      --parse-special   match special tokens such as <|eot_id|> in the text\n"
               "      --show-count      print the number of tokens at the end\n"
               "      --timing          print the tokenization time to stderr\n"
               "  -h, --help            this help\n");
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            char *p = realloc(buf, cap *= 2);
            if (!p) {
                free(buf);
                buf = NULL;
            }
            buf = p;
        }
    }
    if (buf && ferror(f)) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Prints a piece between quotes; bytes that are not valid UTF-8 on their own are shown as
 * \xNN so the terminal never receives half a character. */
static void print_piece(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)p[i];
        size_t need = c < 0x80                ? 1
                      : c >= 0xC2 && c < 0xE0 ? 2
                      : c >= 0xE0 && c < 0xF0 ? 3
                      : c >= 0xF0 && c < 0xF5 ? 4
                                              : 0;
        int ok = need > 0 && i + need <= n;
        for (size_t k = 1; ok && k < need; k++)
            ok = ((unsigned char)p[i + k] & 0xC0) == 0x80;
        if (ok) {
            fwrite(p + i, 1, need, stdout);
            i += need;
        } else {
            printf("\\x%02x", c);
            i++;
        }
    }
}

int main(int argc, char **argv)
{
    const char *model = NULL, *prompt = NULL, *file = NULL;
    int ids_only = 0, no_bos = 0, parse_special = 0, show_count = 0, timing = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_val)
            model = argv[++i];
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && has_val)
            prompt = argv[++i];
        else if ((!strcmp(a, "-f") || !strcmp(a, "--file")) && has_val)
            file = argv[++i];
        else if (!strcmp(a, "--ids"))
            ids_only = 1;
        else if (!strcmp(a, "--no-bos"))
            no_bos = 1;
        else if (!strcmp(a, "--parse-special"))
            parse_special = 1;
        else if (!strcmp(a, "--show-count"))
            show_count = 1;
        else if (!strcmp(a, "--timing"))
            timing = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!model || (!prompt == !file)) {
        fprintf(stderr, "error: need -m and exactly one of -p or -f\n\n");
        usage(stderr);
        return 2;
    }

    size_t len;
    char *text = NULL;
    if (file) {
        text = read_file(file, &len);
        if (!text) {
            fprintf(stderr, "error: cannot read prompt file '%s'\n", file);
            return 1;
        }
    } else {
        len = strlen(prompt);
    }

    b158_vocab *v = NULL;
    if (b158_vocab_load(model, &v) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        free(text);
        return 1;
    }
    unsigned flags =
        (no_bos ? 0 : B158_TOKENIZE_ADD_BOS) | (parse_special ? B158_TOKENIZE_PARSE_SPECIAL : 0);
    b158_token *ids = NULL;
    size_t n = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    b158_status st = b158_tokenize_alloc(v, file ? text : prompt, len, flags, &ids, &n);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        b158_vocab_free(v);
        free(text);
        return 1;
    }
    if (ids_only) {
        printf("[");
        for (size_t i = 0; i < n; i++)
            printf(i ? ", %d" : "%d", ids[i]);
        printf("]\n");
    } else {
        for (size_t i = 0; i < n; i++) {
            size_t pl;
            const char *p = b158_vocab_token_piece(v, ids[i], 1, &pl);
            printf("%6d -> '", ids[i]);
            print_piece(p, pl);
            printf("'\n");
        }
    }
    if (show_count)
        printf("Total number of tokens: %zu\n", n);
    if (timing) {
        double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        fprintf(stderr, "tokenized %zu bytes into %zu tokens in %.3f s (%.1f MB/s)\n", len, n, s,
                s > 0 ? (double)len / s / 1e6 : 0.0);
    }
    free(ids);
    b158_vocab_free(v);
    free(text);
    return 0;
}
