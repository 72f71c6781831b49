/* The shipped model (models/shakespeare-bitnet.gguf) against what PyTorch recorded at export
 * (models/shakespeare-bitnet.expected.json): validation perplexity on a slice within 1%, and
 * the greedy continuation of the recorded prompt token for token, on OpenCL and on the CPU
 * reference path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

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

static void add_suites(void)
{
    b158_test_suite("perplexity",
                    (b158_test_case[]){{"validation_slice", test_perplexity}, {NULL, NULL}});
    b158_test_suite("greedy", (b158_test_case[]){{"recorded_tokens", test_greedy}, {NULL, NULL}});
}

int main(int argc, char **argv)
{
    return b158_test_main(argc, argv, add_suites);
}
