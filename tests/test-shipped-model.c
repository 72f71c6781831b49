/* The shipped model (models/shakespeare-bitnet.gguf) against what PyTorch recorded at export
 * (models/shakespeare-bitnet.expected.json): validation perplexity on a slice within 1%, and
 * the greedy continuation of the recorded prompt token for token, on OpenCL and on the CPU
 * reference path; and greedy continuations of several prompts served together through the
 * batch API, token for token those of each prompt alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "b158/model.h"
#include "b158/tokenizer.h"
#include "test-common.h"

static char json[65536];

static int load_json(void)
{
    if (json[0])
        return 1;
    FILE *f = fopen(b158_test_source("models/shakespeare-bitnet.expected.json"), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    size_t n = fread(json, 1, sizeof json - 1, f);
    fclose(f);
    json[n] = '\0';
    return n > 0;
}

/* The number after "key": inside the object that follows "section": (a flat search is enough
 * for the exporter's JSON). */
static double json_number(const char *section, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\"", section);
    const char *s = strstr(json, pat);
    CU_ASSERT_PTR_NOT_NULL_FATAL(s);
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *k = strstr(s, pat);
    CU_ASSERT_PTR_NOT_NULL_FATAL(k);
    return atof(k + strlen(pat));
}

/* Runs a command line with the build's programs first on PATH; returns its stdout. */
static char *run(const char *cmdline, int *status)
{
    static char out[1 << 16];
    char cmd[4096];
    const char *bin = getenv("B158_BIN_DIR");
    snprintf(cmd, sizeof cmd, "export PATH='%s':\"$PATH\"; %s 2>/dev/null", bin ? bin : ".",
             cmdline);
    FILE *p = popen(cmd, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    return out;
}

static int need_device(void)
{
    size_t n = 0;
    if (b158_device_list(NULL, 0, &n) != B158_OK) {
        b158_test_skip("no OpenCL device");
        return 0;
    }
    return 1;
}

static void test_perplexity(void)
{
    if (!load_json() || !need_device())
        return;
    /* the slice: "characters [A, B)" of the validation split, tokenized on its own */
    const char *t = strstr(strstr(json, "\"val_slice\""), "characters [");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    long a = 0, b = 0;
    CU_ASSERT_FATAL(sscanf(t, "characters [%ld, %ld)", &a, &b) == 2 && b > a);
    const double want = json_number("val_slice", "ppl");
    const int n_ctx = (int)json_number("val_slice", "n_ctx");
    FILE *f = fopen(b158_test_source("tests/data/text/tinyshakespeare.txt"), "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    char *text = malloc((size_t)(b - a));
    CU_ASSERT_FATAL(fseek(f, a, SEEK_SET) == 0 &&
                    fread(text, 1, (size_t)(b - a), f) == (size_t)(b - a));
    fclose(f);
    char path[] = "/tmp/b158-slice-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    FILE *o = fdopen(fd, "wb");
    fwrite(text, 1, (size_t)(b - a), o);
    fclose(o);
    free(text);
    const char *modes[] = {"", "--cpu-ref"};
    for (int i = 0; i < 2; i++) {
        char cmd[1024];
        int st;
        snprintf(cmd, sizeof cmd, "b158-cl-perplexity -f '%s' -c %d %s", path, n_ctx, modes[i]);
        const char *out = run(cmd, &st);
        CU_ASSERT_EQUAL(st, 0);
        const char *fin = strstr(out, "Final estimate: PPL = ");
        CU_ASSERT_PTR_NOT_NULL_FATAL(fin);
        const double got = atof(fin + 22);
        fprintf(stderr, "\nvalidation slice perplexity %s: b158-cl %.4f, PyTorch %.4f (%+.3f%%)",
                i ? "CPU reference" : "OpenCL", got, want, 100.0 * (got - want) / want);
        CU_ASSERT(got > want * 0.99 && got < want * 1.01);
    }
    remove(path);
}

/* JSON string to text: the escapes the exporter writes for ASCII text. */
static void unescape(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && *s != '"' && n + 1 < cap; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            out[n++] = *s == 'n' ? '\n' : *s == 't' ? '\t' : *s;
        } else {
            out[n++] = *s;
        }
    }
    out[n] = '\0';
}

static void test_greedy(void)
{
    if (!load_json() || !need_device())
        return;
    const char *g = strstr(json, "\"greedy\"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    char prompt[256], text[4096], want[4352];
    unescape(strstr(g, "\"prompt\": \"") + 11, prompt, sizeof prompt);
    unescape(strstr(g, "\"text\": \"") + 9, text, sizeof text);
    const int n = (int)json_number("greedy", "n_predict");
    snprintf(want, sizeof want, "%s%s\n", prompt, text);
    const char *modes[] = {"", "--cpu-ref"};
    for (int i = 0; i < 2; i++) {
        char cmd[1024];
        int st;
        snprintf(cmd, sizeof cmd, "b158-cl-run -p '%s' -n %d --temp 0 --ignore-eos %s", prompt, n,
                 modes[i]);
        const char *out = run(cmd, &st);
        CU_ASSERT_EQUAL(st, 0);
        if (strcmp(out, want) != 0)
            fprintf(stderr, "\n%s greedy text differs:\n  got  '%s'\n  want '%s'\n",
                    i ? "CPU reference" : "OpenCL", out, want);
        CU_ASSERT_STRING_EQUAL(out, want);
    }
}

/* ---- batched greedy ---------------------------------------------------------------------- */

enum { SHIP_R = 5, SHIP_NS = 3, SHIP_GEN = 24 };

static const char *ship_prompts[SHIP_R] = {
    "ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak.",
    "KING RICHARD II:\nNo matter where;", "O", "JULIET:\nWhat man art thou that thus"};

/* Greedy tokens of every prompt alone, then the prompts through SHIP_NS slots: each joins when
 * a slot is free (its prompt in the same step as the others' next tokens) and leaves after
 * SHIP_GEN tokens, its slot cleared for the next. */
static void check_ship_batched(b158_model *m, b158_runtime *rt, b158_token **prompt,
                               const size_t *n_prompt, int nv)
{
    b158_token alone[SHIP_R][SHIP_GEN], got[SHIP_R][SHIP_GEN];
    b158_session_params p = b158_session_default_params();
    p.rt = rt, p.n_ctx = 128;
    for (int r = 0; r < SHIP_R; r++) {
        b158_session *s = NULL;
        CU_ASSERT_EQUAL_FATAL(b158_session_create(m, &p, &s), B158_OK);
        CU_ASSERT_EQUAL_FATAL(b158_session_eval(s, prompt[r], (int)n_prompt[r]), B158_OK);
        for (int i = 0; i < SHIP_GEN; i++) {
            alone[r][i] = b158_test_argmax(b158_session_logits(s, -1), nv);
            CU_ASSERT_EQUAL_FATAL(b158_session_eval(s, &alone[r][i], 1), B158_OK);
        }
        b158_session_free(s);
    }
    p.n_seq = SHIP_NS;
    b158_session *s = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_session_create(m, &p, &s), B158_OK);
    int owner[SHIP_NS] = {-1, -1, -1}, n_got[SHIP_R] = {0}, next = 0, done = 0;
    b158_token tok[256];
    b158_seq_id seq[256];
    int8_t want[256];
    int who[256];
    while (done < SHIP_R) {
        for (int q = 0; q < SHIP_NS && next < SHIP_R; q++)
            if (owner[q] < 0) {
                CU_ASSERT_EQUAL(b158_session_seq_clear(s, q), B158_OK);
                owner[q] = next++;
            }
        int n = 0;
        for (int q = 0; q < SHIP_NS; q++) {
            const int r = owner[q];
            if (r < 0)
                continue;
            if (n_got[r] == 0 && b158_session_seq_pos(s, q) == 0) {
                for (size_t i = 0; i < n_prompt[r]; i++, n++)
                    tok[n] = prompt[r][i], seq[n] = q, who[n] = r, want[n] = 0;
            } else {
                tok[n] = got[r][n_got[r] - 1], seq[n] = q, who[n] = r, want[n] = 0, n++;
            }
            want[n - 1] = 1;
        }
        CU_ASSERT_EQUAL_FATAL(b158_session_decode(s, &(b158_batch){n, tok, seq, want, 0}), B158_OK);
        for (int i = 0; i < n; i++) {
            if (!want[i])
                continue;
            const int r = who[i];
            got[r][n_got[r]++] = b158_test_argmax(b158_session_logits(s, i), nv);
            if (n_got[r] == SHIP_GEN) {
                owner[seq[i]] = -1;
                done++;
            }
        }
    }
    b158_session_free(s);
    for (int r = 0; r < SHIP_R; r++) {
        int same = 0;
        while (same < SHIP_GEN && got[r][same] == alone[r][same])
            same++;
        if (same < SHIP_GEN)
            fprintf(stderr, "\nprompt %d (%s): batched differs from alone at token %d", r,
                    rt ? "OpenCL" : "CPU reference", same);
        CU_ASSERT_EQUAL(same, SHIP_GEN);
    }
}

static void test_batched(void)
{
    if (!need_device())
        return;
    const char *path = b158_test_source("models/shakespeare-bitnet.gguf");
    b158_vocab *v = NULL;
    b158_model *m = NULL, *md = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_vocab_load(path, &v), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_model_load(path, &m), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_model_load(path, &md), B158_OK);
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_AUTO);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rt);
    CU_ASSERT_EQUAL_FATAL(b158_model_upload(md, rt), B158_OK);
    b158_token *prompt[SHIP_R];
    size_t n_prompt[SHIP_R];
    for (int r = 0; r < SHIP_R; r++)
        CU_ASSERT_EQUAL_FATAL(b158_tokenize_alloc(v, ship_prompts[r], strlen(ship_prompts[r]),
                                                  B158_TOKENIZE_ADD_BOS, &prompt[r], &n_prompt[r]),
                              B158_OK);
    const int nv = b158_model_get_info(m)->n_vocab;
    check_ship_batched(md, rt, prompt, n_prompt, nv);
    check_ship_batched(m, NULL, prompt, n_prompt, nv);
    for (int r = 0; r < SHIP_R; r++)
        free(prompt[r]);
    b158_model_free(m);
    b158_model_free(md);
    b158_vocab_free(v);
}

static void add_suites(void)
{
    b158_test_suite("perplexity",
                    (b158_test_case[]){{"validation_slice", test_perplexity}, {NULL, NULL}});
    b158_test_suite("greedy", (b158_test_case[]){{"recorded_tokens", test_greedy}, {NULL, NULL}});
    b158_test_suite("batched",
                    (b158_test_case[]){{"alone_equals_batched", test_batched}, {NULL, NULL}});
}

int main(int argc, char **argv)
{
    return b158_test_main(argc, argv, add_suites);
}
