/* b158-cl-tokenize: prints the tokens of a prompt for a model or vocab GGUF, like llama-tokenize.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "b158/tokenizer.h"
#include "cli-common.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: b158-cl-tokenize -m MODEL.gguf (-p TEXT | -f FILE | --stdin) [options]\n"
               "\n"
               "  -m, --model FILE      model or vocab-only GGUF file\n"
               "  -p, --prompt TEXT     text to tokenize (\\n, \\t, \\r, \\\\, \\\" and \\' "
               "become those characters)\n"
               "  -f, --file FILE       read the text from FILE\n"
               "      --stdin           read the text from standard input\n"
               "      --ids             print only the ids, as [id, id, ...]\n"
               "      --no-bos          never add BOS (default: add it if the vocab asks for it)\n"
               "      --no-parse-special  special tokens' text (e.g. <|eot_id|>) is plain text\n"
               "                        (default: it is those tokens, as llama-tokenize)\n"
               "      --no-escape       take -p as it is\n"
               "      --show-count      print the number of tokens at the end\n"
               "      --timing          print the tokenization time to stderr\n"
               "  -h, --help            this help\n");
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
    int ids_only = 0, no_bos = 0, parse_special = 1, show_count = 0, timing = 0, no_escape = 0;
    int sources = 0; /* -p, -f and --stdin given */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_val = i + 1 < argc;
        if ((!strcmp(a, "-m") || !strcmp(a, "--model")) && has_val)
            model = argv[++i];
        else if ((!strcmp(a, "-p") || !strcmp(a, "--prompt")) && has_val)
            prompt = argv[++i], sources++;
        else if ((!strcmp(a, "-f") || !strcmp(a, "--file")) && has_val)
            file = argv[++i], sources++;
        else if (!strcmp(a, "--stdin"))
            file = "/dev/stdin", sources++;
        else if (!strcmp(a, "--no-escape"))
            no_escape = 1;
        else if (!strcmp(a, "--no-parse-special"))
            parse_special = 0;
        else if (!strcmp(a, "--log-disable"))
            ; /* (llama-tokenize's; nothing is logged here but errors) */
        else if (!strcmp(a, "--ids"))
            ids_only = 1;
        else if (!strcmp(a, "--no-bos"))
            no_bos = 1;
        else if (!strcmp(a, "--parse-special"))
            parse_special = 1; /* (the default; kept for scripts that say it) */
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
    if (!model || sources != 1) {
        fprintf(stderr, "error: need -m and exactly one of -p, -f or --stdin\n\n");
        usage(stderr);
        return 2;
    }

    size_t len;
    char *text = file ? cli_read_file(file, 0, &len) : strdup(prompt);
    if (!text) {
        if (!file)
            fprintf(stderr, "error: out of memory for the text\n");
        return 1;
    }
    if (!file)
        len = no_escape ? strlen(text) : cli_unescape(text, strlen(text));

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
    b158_status st = b158_tokenize_alloc(v, text, len, flags, &ids, &n);
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
