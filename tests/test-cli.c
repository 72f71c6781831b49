/* The command-line programs end to end: generation on OpenCL and the CPU reference path,
 * seeded sampling, verify mode, the errors a user meets, and perplexity. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "b158/model.h"
#include "blas.h"
#include "test-common.h"

static char dir[64];
static char model[128];

typedef struct {
    int status;     /* exit status */
    size_t out_len; /* bytes in out: a random model may generate NUL bytes */
    char out[16384];
    char err[65536];
} result;

/* Whether one line of text holds both a and b, in that order. */
static int has_line(const char *text, const char *a, const char *b)
{
    for (const char *p = strstr(text, a); p; p = strstr(p + 1, a)) {
        const char *eol = strchr(p, '\n'), *q = strstr(p, b);
        if (q && (!eol || q < eol))
            return 1;
    }
    return 0;
}

/* Runs a shell command line with $B158_BIN_DIR first on PATH, capturing stdout and stderr. */
static void run(const char *cmdline, result *r)
{
    char cmd[4096], outp[128], errp[128];
    snprintf(outp, sizeof outp, "%s/out.txt", dir);
    snprintf(errp, sizeof errp, "%s/err.txt", dir);
    const char *bin = getenv("B158_BIN_DIR");
    snprintf(cmd, sizeof cmd, "export PATH='%s':\"$PATH\"; (%s) </dev/null >'%s' 2>'%s'",
             bin ? bin : ".", cmdline, outp, errp);
    int st = system(cmd);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
    r->out_len = 0;
    memset(r->out, 0, sizeof r->out);
    memset(r->err, 0, sizeof r->err);
    FILE *f = fopen(outp, "rb");
    if (f) {
        r->out_len = fread(r->out, 1, sizeof r->out - 1, f);
        fclose(f);
    }
    f = fopen(errp, "rb");
    if (f) {
        size_t n = fread(r->err, 1, sizeof r->err - 1, f);
        (void)n;
        fclose(f);
    }
}

static int have_model(void)
{
    if (model[0])
        return 1;
    snprintf(dir, sizeof dir, "/tmp/b158-cli-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    snprintf(model, sizeof model, "%s/m.gguf", dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "b158-gen-model -o '%s' --n-vocab 320 --seed %u", model,
             b158_test_rand() % 1000);
    result r;
    run(cmd, &r);
    if (r.status != 0)
        fprintf(stderr, "\n%s\n", r.err);
    CU_ASSERT_EQUAL_FATAL(r.status, 0);
    size_t n = 0;
    if (b158_device_list(NULL, 0, &n) != B158_OK) {
        b158_test_skip("no OpenCL device");
        return 0;
    }
    return 1;
}

static void test_run(void)
{
    if (!have_model())
        return;
    char cmd[1024];
    result a, b;
    /* greedy generation with the prompt echoed and the summary on stderr */
    snprintf(cmd, sizeof cmd, "b158-cl-run -m '%s' -p 'Hello world' -n 24 --temp 0 --ignore-eos",
             model);
    run(cmd, &a);
    if (a.status)
        fprintf(stderr, "\n%s\n", a.err);
    CU_ASSERT_EQUAL_FATAL(a.status, 0);
    CU_ASSERT_EQUAL(strncmp(a.out, "Hello world", 11), 0); /* the prompt is echoed */
    CU_ASSERT(a.out_len > 11);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "generation: 24 tokens"));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "prompt: "));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "device memory: weights"));
    snprintf(cmd, sizeof cmd,
             "b158-cl-run -m '%s' -p 'Hello world' -n 24 --temp 0 --ignore-eos --cpu-ref", model);
    run(cmd, &b);
    CU_ASSERT_EQUAL(b.status, 0);
    CU_ASSERT_EQUAL(strncmp(b.out, "Hello world", 11), 0);
    /* the same greedy text on both paths, on the shipped (trained) model: a random model's
     * near-tied logits can let one int8 rounding flip change its argmax */
    run("b158-cl-run -p 'KING HENRY:' -n 24 --temp 0 --ignore-eos", &a);
    run("b158-cl-run -p 'KING HENRY:' -n 24 --temp 0 --ignore-eos --cpu-ref", &b);
    CU_ASSERT_EQUAL(a.status, 0);
    CU_ASSERT_EQUAL(b.status, 0);
    CU_ASSERT(strlen(a.out) > 12);
    CU_ASSERT_STRING_EQUAL(a.out, b.out);

    /* a fixed seed reproduces sampled text; the summary says which seed */
    snprintf(cmd, sizeof cmd,
             "b158-cl-run -m '%s' -p 'Once' -n 32 --temp 1.0 --top-k 0 --top-p 1 --min-p 0 "
             "--seed 1234 --ignore-eos",
             model);
    run(cmd, &a);
    run(cmd, &b);
    CU_ASSERT_EQUAL(a.status, 0);
    CU_ASSERT_STRING_EQUAL(a.out, b.out);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "seed 1234"));
    snprintf(cmd, sizeof cmd,
             "b158-cl-run -m '%s' -p 'Once' -n 32 --temp 1.0 --top-k 0 --top-p 1 --min-p 0 "
             "--seed 99 --ignore-eos",
             model);
    run(cmd, &b);
    CU_ASSERT(strcmp(a.out, b.out) != 0); /* 32 draws over 320 tokens: a collision is ~0 */

    /* verify mode prints a difference per position and a summary */
    snprintf(cmd, sizeof cmd, "b158-cl-run -m '%s' -p 'abc' -n 4 --temp 0 --verify --ignore-eos",
             model);
    run(cmd, &a);
    CU_ASSERT_EQUAL(a.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "[verify] pos 0:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "verify: largest logit difference"));
}

static void test_errors(void)
{
    if (!have_model())
        return;
    char cmd[1024];
    result r;
    /* prompt longer than the context */
    snprintf(cmd, sizeof cmd, "b158-cl-run -m '%s' -c 16 -p '%s' -n 4", model,
             "a long prompt that has many more than sixteen tokens in a byte level vocabulary");
    run(cmd, &r);
    CU_ASSERT_NOT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "context"));
    /* missing, malformed and foreign files */
    run("b158-cl-run -m /nonexistent/model.gguf -p x", &r);
    CU_ASSERT_NOT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "error: "));
    snprintf(cmd, sizeof cmd,
             "head -c 5000 '%s' > '%s/trunc.gguf' && b158-cl-run -m '%s/trunc.gguf'", model, dir,
             dir);
    run(cmd, &r);
    CU_ASSERT_NOT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "error: "));
    CU_ASSERT(r.status < 128); /* an error exit, not a signal */
    /* bad device selection and bad flags */
    snprintf(cmd, sizeof cmd, "b158-cl-run -m '%s' --device 97 -p x", model);
    run(cmd, &r);
    CU_ASSERT_NOT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "index 97"));
    run("b158-cl-run --temp", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    run("b158-cl-run --no-such-flag", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    /* prompt files: a directory, a missing file and an endless one are errors, not prompts */
    snprintf(cmd, sizeof cmd, "b158-cl-run -m '%s' -f '%s' -n 1 --cpu-ref", model, dir);
    run(cmd, &r);
    CU_ASSERT_EQUAL(r.status, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "is a directory"));
    snprintf(cmd, sizeof cmd, "b158-cl-run -m '%s' -f '%s/none.txt' -n 1 --cpu-ref", model, dir);
    run(cmd, &r);
    CU_ASSERT_EQUAL(r.status, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "cannot open"));
    snprintf(cmd, sizeof cmd, "b158-cl-run -m '%s' -f /dev/zero -n 1 --cpu-ref", model);
    run(cmd, &r);
    CU_ASSERT_EQUAL(r.status, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "larger than 64 MiB"));
    /* NUL bytes are prompt text like any other: tokenized and echoed, not a cut */
    snprintf(cmd, sizeof cmd,
             "printf 'ab\\000cd\\000' > '%s/nul.txt' && b158-cl-run -m '%s' -f '%s/nul.txt' "
             "-n 1 --temp 0 --ignore-eos --cpu-ref",
             dir, model, dir);
    run(cmd, &r);
    if (r.status)
        fprintf(stderr, "\n%s\n", r.err);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_EQUAL(memcmp(r.out, "ab\0cd\0", 6), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "prompt: 6 tokens")); /* one token per byte */

    run("b158-cl-run --list-devices", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "compute units"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "integer dot"));
}

static void test_perplexity(void)
{
    if (!have_model())
        return;
    char cmd[1024], text[128];
    snprintf(text, sizeof text, "%s/text.txt", dir);
    FILE *f = fopen(text, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (int i = 0; i < 40; i++)
        fprintf(f, "The quick brown fox jumps over the lazy dog %d times.\n", i);
    fclose(f);
    result a, b;
    snprintf(cmd, sizeof cmd, "b158-cl-perplexity -m '%s' -f '%s' -c 64 --chunks 3", model, text);
    run(cmd, &a);
    if (a.status)
        fprintf(stderr, "\n%s\n", a.err);
    CU_ASSERT_EQUAL_FATAL(a.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.out, "[3]"));
    const char *fin = strstr(a.out, "Final estimate: PPL = ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fin);
    double ppl = atof(fin + 22);
    CU_ASSERT(ppl > 1.0 && ppl < 1e6);
    snprintf(cmd, sizeof cmd, "b158-cl-perplexity -m '%s' -f '%s' -c 64 --chunks 3 --cpu-ref",
             model, text);
    run(cmd, &b);
    CU_ASSERT_EQUAL_FATAL(b.status, 0);
    const char *fin2 = strstr(b.out, "Final estimate: PPL = ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fin2);
    double ppl2 = atof(fin2 + 22);
    CU_ASSERT(ppl2 > ppl * 0.99 && ppl2 < ppl * 1.01); /* same model, same text: within 1% */
    snprintf(cmd, sizeof cmd, "b158-cl-perplexity -m '%s' -f '%s' -c 100000", model, text);
    run(cmd, &a);
    CU_ASSERT_NOT_EQUAL(a.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "fewer than one chunk"));
    /* the shipped model (trained on 256) at the default -c 512, all chunks (-1) of a text of
     * one: two warnings, a figure */
    snprintf(cmd, sizeof cmd, "b158-cl-perplexity -f '%s' --chunks -1 --cpu-ref", text);
    run(cmd, &a);
    CU_ASSERT_EQUAL(a.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "longer than the model's training context (256)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "llama-perplexity wants two"));
    CU_ASSERT_PTR_NOT_NULL(strstr(a.out, "Final estimate: PPL = "));
}

/* Chat mode on a model with the LLaMA-3 vocabulary (so <|eot_id|> is one token): the BitNet
 * turn format is used, each user line gets an answer, end of input ends the chat. */
static void test_chat(void)
{
    if (!have_model())
        return;
    char cmd[2048], chat_model[160];
    snprintf(chat_model, sizeof chat_model, "%s/chat.gguf", dir);
    snprintf(cmd, sizeof cmd,
             "b158-gen-model -o '%s' --vocab '%s' --n-embd 256 --n-ff 256 --n-layer 1", chat_model,
             b158_test_fetched("tokenizers/ggml-vocab-llama-bpe.gguf"));
    result r;
    run(cmd, &r);
    if (r.status)
        fprintf(stderr, "\n%s\n", r.err);
    CU_ASSERT_EQUAL_FATAL(r.status, 0);
    snprintf(cmd, sizeof cmd,
             "printf 'Hello there\\nWhat is 2+2?\\n' | b158-cl-run -m '%s' -cnv -p 'Be brief.' "
             "-n 6 --temp 0",
             chat_model);
    run(cmd, &r);
    if (r.status)
        fprintf(stderr, "\n%s\n", r.err);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "chat format: bitnet"));
    /* two answers, each closed by a newline after at most 6 tokens */
    int lines = 0;
    for (const char *p = r.out; *p; p++)
        lines += *p == '\n';
    CU_ASSERT(lines >= 2);
    /* the system message, both turns and the answers went through the model */
    const char *prompt = strstr(r.err, "prompt: ");
    CU_ASSERT_PTR_NOT_NULL(prompt);
    if (prompt)
        CU_ASSERT(atoi(prompt + 8) >= 20);
}

/* What a llama-cli user expects of b158-cl-run (shipped model): a chat message that does not
 * fit what is left of the context ends the chat with a notice and status 0; a chat line of
 * any length is one turn; -p's escapes (unless --no-escape); --seed -1 from the clock; a prompt
 * evaluated in -b steps gives the text of one step; Ctrl-C gives status 130 and the summary. */
static void test_run_llama_cli(void)
{
    if (!have_model())
        return;
    result r;
    run("printf 'hi\\n%0300d\\nthird\\n' 0 | b158-cl-run -cnv -c 64 -n 2 --temp 0 --cpu-ref", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "[the message needs "));
    /* 4500 bytes on one line (fgets into 4096 bytes made two turns of it): prompts "> " before
     * it and after its answer, when the input ends */
    run("(printf 'the %.0s' $(seq 1125); echo) | b158-cl-run -cnv -c 4096 -n 2 --temp 0 "
        "--cpu-ref",
        &r);
    CU_ASSERT_EQUAL(r.status, 0);
    int prompts = 0;
    for (const char *p = strstr(r.err, "\n> "); p; p = strstr(p + 1, "\n> "))
        prompts++;
    CU_ASSERT_EQUAL(prompts, 2);
    run("b158-cl-run -p 'ROMEO:\\nJULIET\\t\\\\q' -n 1 --temp 0 --cpu-ref", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_EQUAL(strncmp(r.out, "ROMEO:\nJULIET\t\\q", 16), 0);
    run("b158-cl-run -p 'ROMEO:\\nJULIET' --no-escape -n 1 --temp 0 --cpu-ref", &r);
    CU_ASSERT_EQUAL(strncmp(r.out, "ROMEO:\\nJULIET", 14), 0);
    run("b158-cl-run -p x -n 1 -s -1 --cpu-ref", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "seed "));
    CU_ASSERT_PTR_NULL(strstr(r.err, "seed 18446744073709551615"));
    run("b158-cl-run -p x -n 1 -s 99999999999999999999999", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    /* llama-cli's readings: negative temperature greedy, top-k -1 off, -n -2 to the end */
    run("b158-cl-run -p x -n 1 --temp -1 --top-k -1 --repeat-last-n -1 --cpu-ref", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "temp 0.00, top-k 0"));
    run("b158-cl-run -p x --repeat-penalty 0", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    /* a greedy prompt in steps of 3 tokens (no pick, nothing decoded ahead, before the last) */
    result one, steps;
/* twelve greedy tokens after a two-line prompt (and more options after it) */
#define HENRY "b158-cl-run -p 'KING HENRY:\\nWhat say you, my lords?' -n 12 --temp 0 --ignore-eos"
    run(HENRY, &one);
    run(HENRY " -b 3", &steps);
    CU_ASSERT_EQUAL(one.status, 0);
    CU_ASSERT_EQUAL(steps.status, 0);
    CU_ASSERT_STRING_EQUAL(one.out, steps.out);
    /* llama-cli's frequency and presence penalties: greedy on the penalized logits, another
     * text; a penalty that is not a finite number refused */
    run(HENRY " --frequency-penalty 1.5 --presence-penalty 0.5", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_STRING_NOT_EQUAL(r.out, one.out);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "frequency penalty 1.50, presence penalty 0.50"));
    run("b158-cl-run -p x --presence-penalty inf", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    /* -r: the greedy text halts after the token that completes a reverse prompt (here one
     * that spans tokens), a prefix of the text without it; an empty one refused */
    run(HENRY " -r 'zzz' -r 'ARD I'", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    const char *hit = strstr(r.out, "ARD I");
    CU_ASSERT_PTR_NOT_NULL(strstr(one.out, "ARD I")); /* the shipped model's greedy text has it */
    CU_ASSERT(hit && strlen(hit + 5) < 16);
    /* (both end with the newline printed after the text) */
    CU_ASSERT(r.out_len < one.out_len && memcmp(r.out, one.out, r.out_len - 1) == 0);
    /* escapes undone as in -p: the halt comes after "III:" and its newline */
    run(HENRY " -r ':\\n'", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(r.out_len < one.out_len && memcmp(r.out, one.out, r.out_len - 1) == 0);
    run("b158-cl-run -p x -r ''", &r);
    CU_ASSERT_EQUAL(r.status, 2);
#undef HENRY
    /* Ctrl-C (a 4096-token generation on the reference path takes far longer than a second) */
    run("timeout --preserve-status -s INT 1 b158-cl-run -p x -n -1 -c 4096 --ignore-eos "
        "--cpu-ref",
        &r);
    CU_ASSERT_EQUAL(r.status, 130);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "longer than the model was trained on (256)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "[interrupted]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "generation: "));
}

/* b158-cl-bench and b158-cl-kernel-bench: argument errors, and the shape of the model bench's
 * JSON on the tiny preset. */
static void test_bench(void)
{
    if (!have_model())
        return;
    result r;
    run("b158-cl-bench", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    run("b158-cl-bench --preset tiny -m some.gguf", &r); /* one mode at a time */
    CU_ASSERT_EQUAL(r.status, 2);
    run("b158-cl-bench --kernels --preset tiny --tokens 4 --reps 1", &r); /* the preset's shapes */
    CU_ASSERT_EQUAL(r.status, 0);
    /* the GEMV is ternary_gemv_cpu, or ternary_gemv_avx512 where the device builds it */
    CU_ASSERT(has_line(r.out, "| cpu | ternary_gemv_", " | 512 | 256 | 1 |"));
    /* --kernels runs b158-cl-kernel-bench, which takes the same arguments */
    run("b158-cl-kernel-bench --shape 70x130 --tokens 3 --reps 1 -o json", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"kernel\": \"f16_matvec\", \"n\": 70, \"k\": 130"));
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"queued_us\": ")); /* launches back to back */
    /* one token: the GEMVs' rows only (a GEMM row there timed no launch: 0 us, inf GB/s) */
    run("b158-cl-kernel-bench --shape 70x130 --tokens 1 --reps 1", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "| f16_matvec |", " | 70 | 130 | 1 |"));
    CU_ASSERT(has_line(r.out, "| f16_gemv_q8 |", " | 70 | 130 | 1 |")); /* the baseline's decode */
    CU_ASSERT_PTR_NULL(strstr(r.out, "gemm"));
    CU_ASSERT_PTR_NULL(strstr(r.out, "inf"));
    /* each variant's launch floor: its times, no bytes or flops */
    CU_ASSERT(has_line(r.out, "| cpu | embed_rows (launch floor) | - | - | - | ", " | - | - |"));
    run("b158-cl-bench --kernels --shape 70x130 -o csv", &r); /* csv is for models */
    CU_ASSERT_EQUAL(r.status, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "-o md|json\n")); /* the kernel bench said so */
    run("b158-cl-bench --preset no-such-size -p 4 -n 2 -r 1", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "unknown preset"));
    /* explicit dimensions: impossible ones refused, a small one measured at its shapes */
    const char *bad_dims[] = {"256x512x2",    "250x512x2x4", "256x512x2x4x3",
                              "256x512x2x4y", "256x512x0x4", "99999999x1x1x1"};
    for (size_t i = 0; i < sizeof bad_dims / sizeof bad_dims[0]; i++) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "b158-cl-bench --preset %s -p 4 -n 2 -r 1", bad_dims[i]);
        run(cmd, &r);
        CU_ASSERT_EQUAL(r.status, 2);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "EMBDxFFxLAYERSxHEADS"));
    }
    run("b158-cl-bench --kernels --preset 192x320x2x6x2x300 --tokens 3 --reps 1", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "| cpu | ternary_gemv_", " | 64 | 192 | 1 |")); /* K, V */
    /* a decode block's four GEMVs with their tails (rows 192 + 640 + 192 + 320): four launches,
     * and on the GPU variant where the session would chain them (not PoCL) one chain launch */
    run("b158-cl-kernel-bench --block 192x320x2x6x2x300 --shape 70x130 --tokens 1 --reps 2 "
        "--variant gpu",
        &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "| gpu | 192x320x2x6x2x300 block: 4 x ternary_gemv_gpu + tails |",
                       " | 1344 | 192, 320 | 1 |"));
    const b158_runtime *gpu = b158_test_runtime(B158_VARIANT_GPU); /* (cached, not freed) */
    if (gpu) {
        const int chained = !strstr(b158_runtime_device(gpu)->platform, "Portable Computing");
        CU_ASSERT_EQUAL(chained,
                        has_line(r.out, "| gpu | 192x320x2x6x2x300 block: 1 x ternary_gemv_chain",
                                 " | 1344 | 192, 320 | 1 |"));
    }
    run("b158-cl-kernel-bench --block tiny,no-such-size", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "unknown preset 'no-such-size'"));
    run("b158-cl-bench --preset 192x320x2x6x2x300 -p 4 -n 2 -r 1 -o csv", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "192x320x2x6x2x300,"));
    run("b158-cl-bench --preset tiny -o xml", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    run("b158-cl-bench --preset tiny --fp16 bogus", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    /* the FP16 baseline's matmuls: CLBlast only in a build with CLBlast on a device with fp16,
     * and said so; auto takes it there */
    b158_runtime *rt = b158_test_runtime(B158_VARIANT_AUTO);
    const int fp16 = rt && b158_runtime_device(rt)->has_fp16;
    run("b158-cl-bench --preset tiny -p 4 -n 2 -r 1 -o json --fp16 clblast", &r);
    if (fp16 && b158_blas_available()) {
        CU_ASSERT_EQUAL(r.status, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"fp16_matmul\": \"clblast\""));
    } else {
        CU_ASSERT_EQUAL(r.status, 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.err, b158_blas_available() ? "cl_khr_fp16" : "no CLBlast"));
    }
    run("b158-cl-bench --preset tiny -p 4 -n 2 -r 1 -o json --fp16 kernels", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"fp16_matmul\": \"kernels\""));
    /* each engine's launches a decode token (tiny: 2 blocks): the FP16-storage kernels' GEMV
     * reads the int8 input and ends in the same tails as the ternary GEMV, so as many (before
     * f16_gemv_q8: 13 a block, a dequantization before each matmul and the norms apart) */
    const char *lf = strstr(r.out, "\"fp16\": {"), *lt = strstr(r.out, "\"ternary\": {");
    CU_ASSERT_FATAL(lf && lt);
    lf = strstr(lf, "\"tg_launches_per_token\": "), lt = strstr(lt, "\"tg_launches_per_token\": ");
    CU_ASSERT_FATAL(lf && lt);
    CU_ASSERT_DOUBLE_EQUAL(atof(lt + 25), 14.0, 1e-9); /* 2 + 5 a block + final norm, LM head */
    CU_ASSERT_DOUBLE_EQUAL(atof(lf + 25), 14.0, 1e-9);
    run("b158-cl-bench --preset tiny -p 8 -n 4 -r 2 -o json", &r);
    if (r.status)
        fprintf(stderr, "\n%s\n", r.err);
    CU_ASSERT_EQUAL_FATAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, fp16 && b158_blas_available() /* --fp16 auto */
                                             ? "\"fp16_matmul\": \"clblast\""
                                             : "\"fp16_matmul\": \"kernels\""));
    const char *keys[] = {"\"device\": \"",
                          "\"driver\": ",
                          "\"build\": ",
                          "\"date\": ",
                          "\"fp16_matmul\": \"",
                          "\"fp16_path\": ",
                          "\"models\": [",
                          "\"name\": \"tiny\"",
                          "\"fp16\": {",
                          "\"ternary\": {",
                          "\"pp_tokens_per_s\": ",
                          "\"tg_ms_per_token\": ",
                          "\"mem_weights\": ",
                          "\"mem_kv_cache\": ",
                          "\"memory_ratio\": ",
                          "\"latency_ratio\": ",
                          "\"greedy_same_tokens\": ",
                          "\"logits_nerr\": ",
                          "\"host_peak_rss_bytes\": "};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (!strstr(r.out, keys[i]))
            fprintf(stderr, "\nJSON lacks %s\n", keys[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(r.out, keys[i]));
    }
    /* braces and brackets balance; the FP16 engine holds more weight bytes than the ternary */
    int depth = 0, bad = 0;
    for (const char *p = r.out; *p; p++) {
        depth += (*p == '{' || *p == '[') - (*p == '}' || *p == ']');
        bad |= depth < 0;
    }
    CU_ASSERT(!bad && depth == 0);
    const char *f = strstr(r.out, "\"fp16\": {"), *t = strstr(r.out, "\"ternary\": {");
    if (f && t) {
        double wf = atof(strstr(f, "\"mem_weights\": ") + 15);
        double wt = atof(strstr(t, "\"mem_weights\": ") + 15);
        CU_ASSERT(wf > wt && wt > 0);
    }
    run("b158-cl-bench --preset tiny -p 8 -n 4 -r 1 -o csv", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    int lines = 0;
    for (const char *p = r.out; *p; p++)
        lines += *p == '\n';
    CU_ASSERT_EQUAL(lines, 3); /* header, fp16, b1.58 */

    /* --engine: one engine alone, without the ratios; a bad name is refused */
    run("b158-cl-bench --preset tiny -p 8 -n 4 -r 1 --engine b158 -o csv", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "tiny,", ",b1.58,") && !strstr(r.out, ",fp16,"));
    run("b158-cl-bench --preset tiny -p 8 -n 4 -r 1 --engine fp16 -o json", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(strstr(r.out, "\"engine\": \"fp16\"") && strstr(r.out, "\"fp16\": {") &&
              !strstr(r.out, "\"ternary\": {") && !strstr(r.out, "\"memory_ratio\""));
    run("b158-cl-bench --preset tiny -p 8 -n 4 -r 1 --engine b158", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "| tiny | b1.58 | ", " |") && !strstr(r.out, "ratio"));
    /* -d: the tg test after that many tokens of context (a session too short would fail) */
    run("b158-cl-bench --preset tiny -p 4 -n 2 -r 1 -d 40 --engine b158 -o csv", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "tiny,", ",4,2,40,1,b1.58,"));
    CU_ASSERT(has_line(r.out, "tiny,", ",tokens\n")); /* how the tg steps ran */
    run("b158-cl-bench --preset tiny -p 4 -n 2 -r 1 --greedy --engine b158 -o json", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"tg_steps\": \"greedy_ahead\""));
    run("b158-cl-bench --preset tiny -p 4 -n 2 -r 1 -d 30 --engine b158 --profile -o json", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"depth\": 30"));
    run("b158-cl-bench --preset tiny -d -1", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "-d wants 0..65536"));
    run("b158-cl-bench --preset tiny --engine ternary", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "--engine wants both, b158 or fp16"));

    /* --profile: both phases of the engine, its kernel families, the copy bandwidth */
    run("b158-cl-bench --preset tiny -p 8 -n 4 -r 1 --engine b158 --profile -o json", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(strstr(r.out, "\"copy_gbs\": ") && strstr(r.out, "\"engine\": \"b1.58\"") &&
              !strstr(r.out, "\"engine\": \"fp16\"") && strstr(r.out, "\"phase\": \"decode\"") &&
              strstr(r.out, "\"phase\": \"prefill\"") &&
              strstr(r.out, "\"family\": \"ternary matmul\"") &&
              strstr(r.out, "\"family\": \"FP16 matmul\"") &&
              strstr(r.out, "\"host_us_per_launch\""));
    /* and by site of the forward pass: a decode step of the 2-layer preset is one launch each
     * of embedding, first norm, final norm and LM head, and one a block of each part */
    CU_ASSERT(strstr(r.out, "{\"site\": \"q|k|v\", \"launches_per_step\": 2.00") &&
              strstr(r.out, "{\"site\": \"attention (+ RoPE, KV store, sub-norm)\", "
                            "\"launches_per_step\": 2.00") &&
              strstr(r.out, "{\"site\": \"down (+ norm)\", \"launches_per_step\": 2.00") &&
              strstr(r.out, "{\"site\": \"LM head\", \"launches_per_step\": 1.00"));
    run("b158-cl-bench --preset tiny -p 8 -n 4 -r 1 --engine fp16 --profile", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "| FP16 matmul | ", "%") &&
              has_line(r.out, "| host between launches | ", "%") && !strstr(r.out, "ternary"));
    CU_ASSERT(has_line(r.out, "| q\\|k\\|v | ", "%") && has_line(r.out, "| LM head | 1.0 | ", "%"));
    run("b158-cl-bench --preset tiny --profile -o csv", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "--profile writes -o md or json"));
    run("b158-cl-bench --preset tiny --variant fast", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.err, "--variant wants cpu or gpu"));
    /* the GPU variant asked for on this device, fused layer on: where the device has a kernel
     * clock (Intel's runtime) the profile adds the fused layer's parts, every one of them */
    run("B158_FUSED_DECODE=1 b158-cl-bench --preset tiny -p 8 -n 4 -r 1 --engine b158 --variant "
        "gpu --profile",
        &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "| ternary matmul | ", "%"));
    if (strstr(r.out, "fused decode layer, inside one launch")) {
        CU_ASSERT(has_line(r.out, "| A weight prefetch | ", "|") &&
                  has_line(r.out, "| B attention | ", "|") &&
                  has_line(r.out, "| E down GEMV | ", "|") &&
                  has_line(r.out, "| first start to last end | ", "|") &&
                  has_line(r.out, "| gap to the next launch | ", "|") &&
                  has_line(r.out, "| fused layer | 2.0 | ", "%"));
        fprintf(stderr, "\nfused layer parts in the profile");
    }
}

/* The greedy pick of sampler params p over logits where token 5 leads (10), 7 follows (9.5),
 * 3 (9.0) and the rest trail, after the window saw 5 three times, 7 once and then the tokens of
 * more[] */
static int penalized_pick(b158_sampler_params p, const int *more, int n_more)
{
    float logits[64];
    for (int i = 0; i < 64; i++)
        logits[i] = -1.0f - 0.01f * (float)i;
    logits[5] = 10.0f, logits[7] = 9.5f, logits[3] = 9.0f;
    p.temp = 0.0f;
    b158_sampler *s = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_sampler_create(&p, 64, &s), B158_OK);
    const int seen[] = {5, 7, 5, 5};
    for (int i = 0; i < 4; i++)
        b158_sampler_accept(s, seen[i]);
    for (int i = 0; i < n_more; i++)
        b158_sampler_accept(s, more[i]);
    const int pick = b158_sampler_sample(s, logits);
    b158_sampler_free(s);
    return pick;
}

/* Frequency and presence penalties as llama.cpp's (and OpenAI's): logit - count * frequency -
 * presence for the tokens of the window, each once; sampling with one is not greedy. */
static void check_penalties(void)
{
    b158_sampler_params p = b158_sampler_default_params();
    p.repeat_last_n = 4;
    CU_ASSERT_EQUAL(penalized_pick(p, NULL, 0), 5);
    p.frequency_penalty = 0.2f; /* 5: 10 - 3 x 0.2 = 9.4, 7: 9.3 */
    CU_ASSERT_EQUAL(penalized_pick(p, NULL, 0), 5);
    p.frequency_penalty = 0.3f; /* 5: 9.1, 7: 9.2, 3: 9.0 */
    CU_ASSERT_EQUAL(penalized_pick(p, NULL, 0), 7);
    const int later[] = {9, 9, 9, 9}; /* 5 and 7 out of the window of 4 */
    CU_ASSERT_EQUAL(penalized_pick(p, later, 4), 5);
    p.frequency_penalty = 0.0f;
    p.presence_penalty = 0.55f; /* once: 5: 9.45, 7: 8.95 (three times would leave 8.35) */
    CU_ASSERT_EQUAL(penalized_pick(p, NULL, 0), 5);
    p.presence_penalty = 1.05f; /* 5: 8.95, 3: 9.0 */
    CU_ASSERT_EQUAL(penalized_pick(p, NULL, 0), 3);
    /* one sampler, two draws: the window's counts start from zero again at each */
    p.presence_penalty = 0.0f, p.frequency_penalty = 0.3f;
    float logits[64];
    for (int i = 0; i < 64; i++)
        logits[i] = i == 5 ? 10.0f : i == 7 ? 9.5f : i == 3 ? 9.0f : -1.0f;
    b158_sampler_params q = p;
    q.temp = 0.0f, q.repeat_last_n = 64;
    b158_sampler *one = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_sampler_create(&q, 64, &one), B158_OK);
    const int seq[] = {5, 5, 7};
    for (int i = 0; i < 3; i++)
        b158_sampler_accept(one, seq[i]);
    CU_ASSERT_EQUAL(b158_sampler_sample(one, logits), 5); /* 5: 9.4, 7: 9.2 */
    /* 5 three times: 9.1, 7: 9.2, 3: 9.0 (counts left from the first draw: 3) */
    CU_ASSERT_EQUAL(b158_sampler_sample(one, logits), 7);
    b158_sampler_free(one);
    p.presence_penalty = -3.0f; /* negative: encouraged */
    p.frequency_penalty = -1.0f;
    CU_ASSERT_EQUAL(penalized_pick(p, NULL, 0), 5);
    /* greedy only without any penalty; non-finite penalties refused */
    b158_sampler_params g = b158_sampler_default_params();
    g.temp = 0.0f;
    CU_ASSERT(b158_sampler_params_greedy(&g));
    g.presence_penalty = 0.1f;
    CU_ASSERT(!b158_sampler_params_greedy(&g));
    g.presence_penalty = 0.0f, g.frequency_penalty = -0.1f;
    CU_ASSERT(!b158_sampler_params_greedy(&g));
    g.frequency_penalty = NAN;
    b158_sampler *s = NULL;
    CU_ASSERT_EQUAL(b158_sampler_create(&g, 64, &s), B158_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(s);
}

static void test_sampler(void)
{
    /* the library's sampler: same seed, same draws; greedy is the argmax */
    const int nv = 1000;
    float *logits = malloc(nv * sizeof *logits);
    for (int i = 0; i < nv; i++)
        logits[i] = b158_test_uniform(-5.0f, 5.0f);
    b158_sampler_params p = b158_sampler_default_params();
    p.seed = 77;
    b158_sampler *a = NULL, *b = NULL;
    CU_ASSERT_EQUAL_FATAL(b158_sampler_create(&p, nv, &a), B158_OK);
    CU_ASSERT_EQUAL_FATAL(b158_sampler_create(&p, nv, &b), B158_OK);
    int same = 1, distinct = 0, prev = -1;
    for (int i = 0; i < 50; i++) {
        b158_token x = b158_sampler_sample(a, logits), y = b158_sampler_sample(b, logits);
        same &= x == y;
        distinct += x != prev;
        prev = x;
        /* top-k 40 keeps only the 40 largest logits */
        int larger = 0;
        for (int j = 0; j < nv; j++)
            larger += logits[j] > logits[x];
        CU_ASSERT(larger < 40);
    }
    CU_ASSERT(same);
    CU_ASSERT(distinct > 5);
    b158_sampler_free(a);
    b158_sampler_free(b);
    p.temp = 0;
    CU_ASSERT_EQUAL_FATAL(b158_sampler_create(&p, nv, &a), B158_OK);
    int best = 0;
    for (int j = 1; j < nv; j++)
        best = logits[j] > logits[best] ? j : best;
    CU_ASSERT_EQUAL(b158_sampler_sample(a, logits), best);
    /* NaN logits are never picked (the device argmax's and b158_ref_argmax's rule), wherever
     * they are, also first */
    logits[0] = NAN;
    logits[b158_test_randint(1, nv - 1)] = NAN;
    int want = -1;
    for (int j = 0; j < nv; j++)
        want = !isnan(logits[j]) && (want < 0 || logits[j] > logits[want]) ? j : want;
    CU_ASSERT_EQUAL(b158_sampler_sample(a, logits), want);
    b158_sampler_free(a);
    /* a repeat penalty pushes a just-sampled argmax down */
    p.repeat_penalty = 1e6f;
    CU_ASSERT_EQUAL_FATAL(b158_sampler_create(&p, nv, &a), B158_OK);
    logits[best] = 100.0f;
    CU_ASSERT_EQUAL(b158_sampler_sample(a, logits), best);
    CU_ASSERT_NOT_EQUAL(b158_sampler_sample(a, logits), best);
    b158_sampler_free(a);
    p.top_p = 0.0f;
    CU_ASSERT_EQUAL(b158_sampler_create(&p, nv, &a), B158_ERR_INVALID_ARG);
    free(logits);
    check_penalties();
}

/* b158-cl-bench --throughput: the largest batch each engine fits in a budget, timed through
 * the batch API; the ternary engine's smaller weights leave room for more sequences. */
static void test_throughput(void)
{
    if (!have_model())
        return;
    result r;
    run("b158-cl-bench --throughput --preset tiny --budget 0.03 -c 32 -p 2 -n 2 -o json", &r);
    CU_ASSERT_EQUAL_FATAL(r.status, 0);
    const char *f = strstr(r.out, "\"fp16\": {"), *t = strstr(r.out, "\"ternary\": {");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    const char *fb = strstr(f, "\"max_batch\": "), *tb = strstr(t, "\"max_batch\": ");
    CU_ASSERT_PTR_NOT_NULL_FATAL(fb);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tb);
    const int nf = atoi(fb + 13), nt = atoi(tb + 13);
    CU_ASSERT(nf > 0 && nt > nf);
    const char *ts = strstr(t, "\"tokens_s\": ");
    CU_ASSERT(ts && atof(ts + 12) > 0);
    /* a budget below the FP16 weights: no batch at all, said so, not a failure */
    run("b158-cl-bench --throughput --preset tiny --budget 0.0001 -c 32 -p 2 -n 2 -o csv", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "tiny,fp16,", ",0,\"weights\",0,"));
    run("b158-cl-bench --throughput --preset tiny --budget 0.0001 -c 32 -p 2 -n 2", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT(has_line(r.out, "| tiny | ", " | - | - |")); /* no ratio to a batch of none */
    run("b158-cl-bench --throughput --preset tiny --budget 0.0001 -c 32 -p 2 -n 2 -o json", &r);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(r.out, "\"batch_ratio\": null, \"throughput_ratio\": null"));
    run("b158-cl-bench --throughput --preset tiny -c 8 -p 4 -n 4", &r); /* -p + -n >= -c */
    CU_ASSERT_EQUAL(r.status, 2);
    run("b158-cl-bench --throughput --preset tiny --budget -1", &r);
    CU_ASSERT_EQUAL(r.status, 2);
    run("b158-cl-bench --throughput", &r);
    CU_ASSERT_EQUAL(r.status, 2);
}

static void add_suites(void)
{
    b158_test_suite(
        "run", (b158_test_case[]){{"generate", test_run}, {"errors", test_errors}, {NULL, NULL}});
    b158_test_suite("chat", (b158_test_case[]){{"turns", test_chat}, {NULL, NULL}});
    b158_test_suite("like_llama_cli",
                    (b158_test_case[]){{"run", test_run_llama_cli}, {NULL, NULL}});
    b158_test_suite("perplexity", (b158_test_case[]){{"chunks", test_perplexity}, {NULL, NULL}});
    b158_test_suite(
        "bench",
        (b158_test_case[]){{"json", test_bench}, {"throughput", test_throughput}, {NULL, NULL}});
    b158_test_suite("sampler", (b158_test_case[]){{"seeded", test_sampler}, {NULL, NULL}});
}

int main(int argc, char **argv)
{
    int rc = b158_test_main(argc, argv, add_suites);
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            rc += 0;
    }
    return rc;
}
