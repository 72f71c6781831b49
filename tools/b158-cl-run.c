/* b158-cl-run: text generation from a GGUF BitNet b1.58 model on an OpenCL device (or the CPU
 * reference path), with llama-cli's flags, an interactive chat mode and a verify mode. */
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b158/b158.h"
#include "b158/model.h"
#include "b158/tokenizer.h"
#include "cli-common.h"

/* The longest prompt file read: 64 MiB of text is some 16M tokens, the largest context -c
 * accepts; past that the file cannot be a prompt (-f /dev/zero ends here, not in swap). */
#define B158_MAX_PROMPT_FILE ((size_t)64 << 20)

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    if (interrupted) /* a second Ctrl-C ends the program at once */
        _exit(130);
    interrupted = 1;
}

/* Ctrl-C sets interrupted, and a read of the chat's next line returns (no restart) */
static void catch_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

#define MAX_REVERSE 8 /* -r texts */

typedef struct {
    const char *model, *prompt, *prompt_file, *device;
    char *reverse[MAX_REVERSE]; /* -r: generation halts when its text has one (argv's, escapes
                                   undone in place) */
    int n_reverse;
    int n_predict, n_ctx, n_batch;
    int ignore_eos, cpu_ref, verify, chat, list_devices, no_display_prompt, special, no_escape;
    b158_sampler_params sp;
    int seed_set;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: b158-cl-run [-m MODEL.gguf] [-p PROMPT | -f FILE] [options]\n"
            "  -m, --model FILE       GGUF model (default: the shipped %s)\n"
            "  -p, --prompt TEXT      prompt (chat mode: the system message)\n"
            "  -f, --file FILE        read the prompt from a file\n"
            "  -n, --n-predict N      tokens to generate (default 128; -1 = until the context "
            "is full)\n"
            "  -c, --ctx-size N       context length (default: the model's, at most 4096)\n"
            "  -b, --batch-size N     prompt tokens per forward pass (default 256)\n"
            "  --temp T               temperature, 0 = greedy (default 0.8)\n"
            "  --top-k N              top-k (default 40, 0 = off)\n"
            "  --top-p P              top-p (default 0.95, 1 = off)\n"
            "  --min-p P              min-p (default 0.05, 0 = off)\n"
            "  --repeat-penalty R     repeat penalty (default 1.0 = off)\n"
            "  --repeat-last-n N      tokens the penalties look back at (default 64, -1 = the\n"
            "                         context)\n"
            "  --frequency-penalty F  subtract F x a recent token's count from its logit\n"
            "                         (default 0 = off)\n"
            "  --presence-penalty P   subtract P from a recent token's logit (default 0 = off)\n"
            "  -s, --seed S           random seed (default: from the clock; printed)\n"
            "  --ignore-eos           keep generating past end-of-sequence tokens\n"
            "  -r, --reverse-prompt S halt generation when the printed text has S (in a chat:\n"
            "                         the reply ends there; escapes as -p's); up to 8\n"
            "  -cnv, --chat           interactive chat in the model's chat format\n"
            "  --device SEL           OpenCL device index or name substring (--list-devices)\n"
            "  --list-devices         print the OpenCL devices and their capabilities\n"
            "  --cpu-ref              run on the plain-C reference path instead of OpenCL\n"
            "  --verify               run OpenCL and the CPU reference side by side and print "
            "the largest logit difference per token\n"
            "  --special              print special tokens' text\n"
            "  --no-escape            take -p as it is (default: \\n, \\t, \\r, \\\\, \\\" and "
            "\\' become the characters)\n"
            "  --no-display-prompt    do not echo the prompt\n"
            "  -h, --help             this text\n",
            B158_DEFAULT_MODEL);
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->n_predict = 128;
    a->sp = b158_sampler_default_params();
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define IS(x) (strcmp(o, x) == 0)
#define NEEDV                                                                                      \
    do {                                                                                           \
        if (!v) {                                                                                  \
            fprintf(stderr, "error: %s needs a value\n", o);                                       \
            return 2;                                                                              \
        }                                                                                          \
        i++;                                                                                       \
    } while (0)
        if (IS("-h") || IS("--help")) {
            usage(stdout);
            return 1;
        } else if (IS("--list-devices")) {
            a->list_devices = 1;
        } else if (IS("-r") || IS("--reverse-prompt")) {
            NEEDV;
            if (!*v || a->n_reverse == MAX_REVERSE) {
                fprintf(stderr, "error: %s wants a non-empty text, at most %d of them\n", o,
                        MAX_REVERSE);
                return 2;
            }
            a->reverse[a->n_reverse++] = argv[i];
        } else if (IS("--ignore-eos")) {
            a->ignore_eos = 1;
        } else if (IS("--cpu-ref")) {
            a->cpu_ref = 1;
        } else if (IS("--verify")) {
            a->verify = 1;
        } else if (IS("-cnv") || IS("--chat") || IS("--conversation")) {
            a->chat = 1;
        } else if (IS("--special")) {
            a->special = 1;
        } else if (IS("--no-escape")) {
            a->no_escape = 1;
        } else if (IS("--no-display-prompt")) {
            a->no_display_prompt = 1;
        } else if (IS("-m") || IS("--model")) {
            NEEDV;
            a->model = v;
        } else if (IS("-p") || IS("--prompt")) {
            NEEDV;
            a->prompt = v;
        } else if (IS("-f") || IS("--file")) {
            NEEDV;
            a->prompt_file = v;
        } else if (IS("--device")) {
            NEEDV;
            a->device = v;
        } else if (IS("-n") || IS("--n-predict")) {
            NEEDV;
            if (cli_parse_int(o, v, -2, 1 << 24, &a->n_predict)) /* (-2: llama-cli's) */
                return 2;
            a->n_predict = a->n_predict < -1 ? -1 : a->n_predict;
        } else if (IS("-c") || IS("--ctx-size")) {
            NEEDV;
            if (cli_parse_int(o, v, 0, 1 << 24, &a->n_ctx))
                return 2;
        } else if (IS("-b") || IS("--batch-size")) {
            NEEDV;
            if (cli_parse_int(o, v, 1, 1 << 16, &a->n_batch))
                return 2;
        } else if (IS("--temp")) {
            NEEDV;
            if (cli_parse_float(o, v, &a->sp.temp))
                return 2;
        } else if (IS("--top-k")) {
            NEEDV;
            if (cli_parse_int(o, v, -(1 << 30), 1 << 30, &a->sp.top_k))
                return 2;
            a->sp.top_k = a->sp.top_k < 0 ? 0 : a->sp.top_k; /* (llama-cli: <= 0 is off) */
        } else if (IS("--top-p")) {
            NEEDV;
            if (cli_parse_float(o, v, &a->sp.top_p))
                return 2;
        } else if (IS("--min-p")) {
            NEEDV;
            if (cli_parse_float(o, v, &a->sp.min_p))
                return 2;
        } else if (IS("--repeat-penalty")) {
            NEEDV;
            if (cli_parse_float(o, v, &a->sp.repeat_penalty))
                return 2;
        } else if (IS("--frequency-penalty")) {
            NEEDV;
            if (cli_parse_float(o, v, &a->sp.frequency_penalty))
                return 2;
        } else if (IS("--presence-penalty")) {
            NEEDV;
            if (cli_parse_float(o, v, &a->sp.presence_penalty))
                return 2;
        } else if (IS("--repeat-last-n")) {
            NEEDV;
            if (cli_parse_int(o, v, -1, 1 << 20, &a->sp.repeat_last_n)) /* -1: the context */
                return 2;
        } else if (IS("-s") || IS("--seed")) {
            NEEDV;
            char *end;
            errno = 0;
            const long long seed = strtoll(v, &end, 10);
            if (end == v || *end || errno == ERANGE) {
                fprintf(stderr,
                        "error: --seed wants a decimal integer (-1: from the clock), got "
                        "'%s'\n",
                        v);
                return 2;
            }
            a->sp.seed = (uint64_t)seed;
            a->seed_set = seed >= 0; /* a negative seed is llama-cli's random one */
        } else {
            fprintf(stderr, "error: unknown argument '%s' (see --help)\n", o);
            return 2;
        }
#undef IS
#undef NEEDV
    }
    /* -r's escapes, as llama-cli's --escape undoes them in its reverse prompts too */
    for (int i = 0; i < a->n_reverse && !a->no_escape; i++)
        if (!cli_unescape(a->reverse[i], strlen(a->reverse[i]))) {
            fprintf(stderr, "error: -r wants a non-empty text\n");
            return 2;
        }
    if (a->prompt && a->prompt_file) {
        fprintf(stderr, "error: give either -p or -f, not both\n");
        return 2;
    }
    /* llama-cli's readings of the sampling values it takes: a negative temperature is greedy,
     * top-p outside (0, 1] keeps the top token (<= 0) or all (> 1), min-p is clamped to [0, 1] */
    a->sp.temp = a->sp.temp < 0.0f ? 0.0f : a->sp.temp;
    a->sp.top_p = a->sp.top_p <= 0.0f ? FLT_MIN : a->sp.top_p > 1.0f ? 1.0f : a->sp.top_p;
    a->sp.min_p = a->sp.min_p < 0.0f ? 0.0f : a->sp.min_p > 1.0f ? 1.0f : a->sp.min_p;
    if (!(a->sp.repeat_penalty > 0.0f)) {
        fprintf(stderr, "error: --repeat-penalty wants a number above 0 (1 = off), got %g\n",
                a->sp.repeat_penalty);
        return 2;
    }
    if (!isfinite(a->sp.repeat_penalty) || !isfinite(a->sp.frequency_penalty) ||
        !isfinite(a->sp.presence_penalty)) {
        fprintf(stderr, "error: the penalties want finite numbers\n");
        return 2;
    }
    if (a->cpu_ref && (a->verify || a->device)) {
        fprintf(stderr,
                "error: --cpu-ref runs without OpenCL; it excludes --verify and --device\n");
        return 2;
    }
    return 0;
}

static double gib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

static int list_devices(void)
{
    size_t n = 0;
    if (b158_device_list(NULL, 0, &n) != B158_OK) {
        fprintf(stderr, "error: %s\n", b158_last_error());
        return 1;
    }
    b158_device_info *devs = calloc(n, sizeof *devs);
    if (!devs || b158_device_list(devs, n, &n) != B158_OK) {
        fprintf(stderr, "error: %s\n", devs ? b158_last_error() : "out of memory");
        free(devs);
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        const b158_device_info *d = &devs[i];
        printf("device %d: %s\n", d->index, d->name);
        printf("  platform          %s\n", d->platform);
        printf("  vendor / driver   %s / %s\n", d->vendor, d->driver);
        printf("  type              %s\n", d->is_gpu ? "GPU" : d->is_cpu ? "CPU" : "other");
        printf("  version           %s; %s\n", d->version, d->c_version);
        printf("  compute units     %u\n", d->compute_units);
        printf("  global memory     %.2f GiB (largest buffer %.2f GiB)\n", gib(d->global_mem),
               gib(d->max_alloc));
        printf("  local memory      %llu KiB\n", (unsigned long long)(d->local_mem / 1024));
        printf("  global mem cache  %llu KiB\n", (unsigned long long)(d->cache_bytes / 1024));
        printf("  max work-group    %zu\n", d->max_work_group);
        printf("  fp16              %s\n", d->has_fp16 ? "yes (cl_khr_fp16)" : "no");
        printf("  subgroups         %s\n", d->has_subgroups ? "yes" : "no");
        printf("  integer dot       %s\n",
               d->has_int_dot ? "yes (cl_khr_integer_dot_product)" : "no");
        printf("  kernel variant    %s\n",
               d->is_gpu ? "gpu (local-memory tiles)" : "cpu (register unpacking, no barriers)");
    }
    free(devs);
    return 0;
}

/* ---- the engine(s) a run uses ----------------------------------------------------------- */

typedef struct {
    b158_runtime *rt;
    b158_model *model;
    b158_vocab *vocab;
    b158_session *dev; /* OpenCL session (NULL with --cpu-ref) */
    b158_session *ref; /* CPU reference session (--cpu-ref or --verify) */
    b158_sampler *sampler;
    int n_vocab;
    int greedy; /* temperature 0 and no repeat penalty, one session: the session's own argmax
                   (on the device, so no logits row is read back per token) */
    double t_load;
    /* timing */
    int n_prompt_tokens, n_gen_tokens;
    double t_prompt, t_gen;
    double verify_worst;
} engine;

static void engine_free(engine *e)
{
    b158_sampler_free(e->sampler);
    b158_session_free(e->dev);
    b158_session_free(e->ref);
    b158_model_free(e->model);
    b158_vocab_free(e->vocab);
    b158_runtime_free(e->rt);
}

static int fail(const char *what)
{
    fprintf(stderr, "error: %s%s%s\n", what ? what : "", what ? ": " : "", b158_last_error());
    return 1;
}

static int engine_open(engine *e, const args *a, const char *model_path)
{
    memset(e, 0, sizeof *e);
    const double t0 = cli_now();
    if (b158_model_load(model_path, &e->model) != B158_OK)
        return fail(NULL);
    if (b158_vocab_load(model_path, &e->vocab) != B158_OK)
        return fail("tokenizer");
    const b158_model_info *h = b158_model_get_info(e->model);
    e->n_vocab = h->n_vocab;
    if (b158_vocab_n_tokens(e->vocab) > h->n_vocab) {
        fprintf(stderr, "error: %s: the tokenizer has %d tokens but the embedding only %d rows\n",
                model_path, b158_vocab_n_tokens(e->vocab), h->n_vocab);
        return 1;
    }
    int n_ctx = a->n_ctx;
    if (n_ctx == 0)
        n_ctx = h->n_ctx_train > 0 && h->n_ctx_train < 4096 ? h->n_ctx_train : 4096;
    else if (h->n_ctx_train > 0 && n_ctx > h->n_ctx_train) /* (llama-cli says so too) */
        fprintf(stderr,
                "warning: a context of %d tokens is longer than the model was trained on (%d): "
                "text past that may degrade\n",
                n_ctx, h->n_ctx_train);
    b158_session_params sp = b158_session_default_params();
    sp.n_ctx = n_ctx;
    sp.n_batch = a->n_batch;
    if (!a->cpu_ref) {
        b158_runtime_params rp = b158_runtime_default_params();
        rp.device = a->device;
        if (b158_runtime_create(&rp, &e->rt) != B158_OK)
            return fail(NULL);
        if (b158_model_upload(e->model, e->rt) != B158_OK)
            return fail("uploading the weights");
        sp.rt = e->rt;
        sp.all_logits = a->verify;
        if (b158_session_create(e->model, &sp, &e->dev) != B158_OK)
            return fail(NULL);
    }
    if (a->cpu_ref || a->verify) {
        sp.rt = NULL;
        sp.all_logits = a->verify;
        if (b158_session_create(e->model, &sp, &e->ref) != B158_OK)
            return fail(NULL);
    }
    b158_sampler_params smp = a->sp;
    if (smp.repeat_last_n < 0) /* -1: the whole context, as llama-cli */
        smp.repeat_last_n = n_ctx;
    if (b158_sampler_create(&smp, h->n_vocab, &e->sampler) != B158_OK)
        return fail(NULL);
    e->greedy = b158_sampler_params_greedy(&a->sp) && !(e->dev && e->ref);
    e->t_load = cli_now() - t0;
    fprintf(stderr,
            "model: %s (%s%s%s), %d layers, n_embd %d, heads %d/%d, n_ff %d, vocab %d, "
            "context %d\n",
            model_path, h->arch_name, h->name[0] ? ", " : "", h->name, h->n_layer, h->n_embd,
            h->n_head, h->n_head_kv, h->n_ff, h->n_vocab, n_ctx);
    if (e->rt)
        fprintf(stderr, "device: %s (%s), %s kernels\n", b158_runtime_device(e->rt)->name,
                b158_runtime_device(e->rt)->platform,
                b158_runtime_variant(e->rt) == B158_VARIANT_GPU ? "gpu" : "cpu");
    else
        fprintf(stderr, "device: CPU reference path (plain C, no OpenCL)\n");
    return 0;
}

static int engine_ctx(const engine *e)
{
    return b158_session_n_ctx(e->dev ? e->dev : e->ref);
}

static int engine_pos(const engine *e)
{
    return b158_session_pos(e->dev ? e->dev : e->ref);
}

/* Evaluates tokens on the session(s); in verify mode compares every position's logits.
 * Without last (a prompt's chunk before its last) the greedy session computes no pick. */
static int engine_eval(engine *e, const b158_token *tok, int n, int last)
{
    if (e->greedy) {
        int8_t *none = last ? NULL : calloc((size_t)n, 1); /* (once a prompt chunk) */
        if (!last && !none) {
            fprintf(stderr, "error: out of memory for the prompt's flags\n");
            return 1;
        }
        const b158_batch b = {n, tok, NULL, none, 1};
        const b158_status st = b158_session_decode(e->dev ? e->dev : e->ref, &b);
        free(none);
        return st != B158_OK ? fail(NULL) : 0;
    }
    if (e->dev && b158_session_eval(e->dev, tok, n) != B158_OK)
        return fail(NULL);
    if (e->ref && b158_session_eval(e->ref, tok, n) != B158_OK)
        return fail(NULL);
    if (e->dev && e->ref) {
        for (int i = 0; i < n; i++) {
            const float *a = b158_session_logits(e->dev, i), *b = b158_session_logits(e->ref, i);
            double diff = 0, ref_max = 0;
            for (int j = 0; j < e->n_vocab; j++) {
                double d = a[j] > b[j] ? a[j] - b[j] : b[j] - a[j];
                if (d > diff)
                    diff = d;
                if ((b[j] > 0 ? b[j] : -b[j]) > ref_max)
                    ref_max = b[j] > 0 ? b[j] : -b[j];
            }
            const int pos = engine_pos(e) - n + i;
            fprintf(stderr, "[verify] pos %d: max |logit diff| %.3e (normalized %.2e)\n", pos, diff,
                    ref_max > 0 ? diff / ref_max : diff);
            if (diff > e->verify_worst)
                e->verify_worst = diff;
        }
    }
    return 0;
}

/* The next token after the last evaluation */
static b158_token engine_next(engine *e)
{
    const b158_session *s = e->dev ? e->dev : e->ref;
    if (!e->greedy)
        return b158_sampler_sample(e->sampler, b158_session_logits(s, -1));
    const b158_token tok = b158_session_argmax(s, -1);
    b158_sampler_accept(e->sampler, tok);
    return tok;
}

static void print_summary(const engine *e)
{
    fprintf(stderr, "\nload time: %.2f s\n", e->t_load);
    if (e->n_prompt_tokens)
        fprintf(stderr, "prompt: %d tokens in %.3f s, %.2f tokens/s\n", e->n_prompt_tokens,
                e->t_prompt, e->n_prompt_tokens / (e->t_prompt > 0 ? e->t_prompt : 1e-9));
    if (e->n_gen_tokens)
        fprintf(stderr, "generation: %d tokens in %.3f s, %.2f tokens/s (%.1f ms/token)\n",
                e->n_gen_tokens, e->t_gen, e->n_gen_tokens / (e->t_gen > 0 ? e->t_gen : 1e-9),
                1000.0 * e->t_gen / e->n_gen_tokens);
    if (e->dev && e->ref)
        fprintf(stderr, "verify: largest logit difference OpenCL vs CPU reference %.3e\n",
                e->verify_worst);
    if (e->rt)
        cli_print_memory(e->rt);
}

/* Appends text[0..len) to the generated text's last bytes in tail (*tail_len of them, room for
 * the longest -r text, longest bytes, and a piece) and says whether one of a's -r texts ends
 * inside what came now; keeps the bytes a later match may start in. */
static int reverse_hit(const args *a, size_t longest, char *tail, size_t *tail_len,
                       const char *text, size_t len)
{
    const size_t old = *tail_len;
    memcpy(tail + old, text, len);
    *tail_len = old + len;
    int hit = 0;
    for (int i = 0; i < a->n_reverse && !hit; i++) {
        const size_t rl = strlen(a->reverse[i]);
        for (size_t at = old + 1 >= rl ? old + 1 - rl : 0; !hit && at + rl <= *tail_len; at++)
            hit = memcmp(tail + at, a->reverse[i], rl) == 0;
    }
    if (*tail_len >= longest) { /* what a match ending later may start in */
        memmove(tail, tail + *tail_len - (longest - 1), longest - 1);
        *tail_len = longest - 1;
    }
    return hit;
}

/* Generates up to n tokens after the current position, streaming text to stdout. Returns the
 * number generated; stops at end-of-generation tokens unless ignore_eos, and after the token
 * whose text completes a -r text; -1 on error. */
static int generate(engine *e, const args *a, int n, int *hit_eog)
{
    b158_detok_stream ds;
    b158_detok_stream_init(&ds);
    const size_t cap = 3 * (b158_vocab_max_piece(e->vocab) + 4);
    size_t longest = 0, tail_len = 0;
    for (int i = 0; i < a->n_reverse; i++)
        longest = strlen(a->reverse[i]) > longest ? strlen(a->reverse[i]) : longest;
    char *buf = malloc(cap), *tail = malloc(cap + longest);
    if (!buf || !tail) {
        free(buf);
        free(tail);
        return -1;
    }
    int reversed = 0;
    int made = 0;
    *hit_eog = 0;
    const double t0 = cli_now();
    while ((n < 0 || made < n) && !interrupted && !reversed) {
        if (engine_pos(e) >= engine_ctx(e)) {
            fprintf(stderr, "\n[context of %d tokens is full]\n", engine_ctx(e));
            break;
        }
        b158_token tok = engine_next(e);
        if (!a->ignore_eos && b158_vocab_is_eog(e->vocab, tok)) {
            *hit_eog = 1;
            /* the end-of-turn token belongs to the history (chat), evaluated but not printed */
            if (engine_eval(e, &tok, 1, 1)) {
                made = -1;
            }
            break;
        }
        size_t len = 0;
        if (tok < b158_vocab_n_tokens(e->vocab) &&
            b158_detok_stream_push(&ds, e->vocab, tok, a->special, buf, cap, &len) == B158_OK) {
            fwrite(buf, 1, len, stdout);
            fflush(stdout);
            reversed = a->n_reverse && reverse_hit(a, longest, tail, &tail_len, buf, len);
        }
        made++;
        if (engine_eval(e, &tok, 1, 1)) {
            made = -1;
            break;
        }
    }
    size_t len = b158_detok_stream_flush(&ds, buf, cap);
    fwrite(buf, 1, len, stdout);
    fflush(stdout);
    free(buf);
    free(tail);
    e->t_gen += cli_now() - t0;
    if (made > 0)
        e->n_gen_tokens += made;
    return made;
}

#define FEED_NO_ROOM 3 /* feed: the text does not fit what is left of the context */

/* Tokenizes text[0..len) (with BOS first when asked; special tokens' text is those tokens, as
 * llama-cli reads a prompt) and, when it fits the context (else FEED_NO_ROOM, *need its tokens),
 * echoes it with echo, then evaluates it in steps of n_batch tokens, timed as prompt processing:
 * a Ctrl-C stops it between two steps. */
static int feed(engine *e, const char *text, size_t len, int bos, int echo, int n_batch,
                size_t *need)
{
    b158_token *tok = NULL;
    size_t n = 0;
    const unsigned flags = (bos ? B158_TOKENIZE_ADD_BOS : 0) | B158_TOKENIZE_PARSE_SPECIAL;
    if (b158_tokenize_alloc(e->vocab, text, len, flags, &tok, &n) != B158_OK)
        return fail("tokenizing the prompt");
    *need = n;
    if ((long)n + engine_pos(e) > engine_ctx(e)) {
        free(tok);
        return FEED_NO_ROOM;
    }
    if (echo) {
        fwrite(text, 1, len, stdout);
        fflush(stdout);
    }
    const double t0 = cli_now();
    int rc = 0;
    size_t done = 0;
    const size_t chunk = n_batch > 0 ? (size_t)n_batch : 256; /* (0: the session's, 256) */
    while (rc == 0 && done < n && !interrupted) {
        const int step = (int)(n - done < chunk ? n - done : chunk);
        rc = engine_eval(e, tok + done, step, done + (size_t)step == n);
        for (int i = 0; rc == 0 && i < step; i++)
            b158_sampler_accept(e->sampler, tok[done + (size_t)i]);
        done += (size_t)step;
    }
    e->t_prompt += cli_now() - t0;
    e->n_prompt_tokens += (int)done;
    free(tok);
    return rc;
}

/* ---- chat -------------------------------------------------------------------------------- */

/* Feeds prefix + text[0..len) + suffix as one piece of the conversation. */
static int feed_turn(engine *e, const char *prefix, const char *text, size_t len,
                     const char *suffix, int bos, int n_batch)
{
    const size_t np = strlen(prefix), ns = strlen(suffix);
    char *turn = malloc(np + len + ns + 1);
    if (!turn) {
        fprintf(stderr, "error: out of memory for a chat turn\n");
        return 1;
    }
    memcpy(turn, prefix, np);
    memcpy(turn + np, text, len);
    memcpy(turn + np + len, suffix, ns + 1);
    size_t need = 0;
    int rc = feed(e, turn, np + len + ns, bos, 0, n_batch, &need);
    free(turn);
    if (rc == FEED_NO_ROOM)
        fprintf(stderr,
                "\n[the message needs %zu tokens and %d of the %d-token context are left; "
                "start a new chat, or a larger context (-c)]\n",
                need, engine_ctx(e) - engine_pos(e), engine_ctx(e));
    return rc;
}

/* Interactive chat in the model's chat format (from its tokenizer.chat_template); system is the
 * system message, system_len bytes. */
static int chat(engine *e, const args *a, const char *system, size_t system_len)
{
    size_t tlen;
    const char *tmpl = b158_vocab_chat_template(e->vocab, &tlen);
    const b158_chat_format *f = b158_chat_detect(tmpl, tlen);
    fprintf(stderr, "chat format: %s. Type a message and press Enter; Ctrl-D or Ctrl-C ends.\n",
            f->name);
    int first = 1, rc = 0;
    if (system && system_len) {
        rc = feed_turn(e, f->system_prefix, system, system_len, f->turn_end, 1, a->n_batch);
        if (rc)
            return rc == FEED_NO_ROOM ? 0 : 1;
        first = 0;
    }
    char *line = NULL; /* a line of any length (getline) */
    size_t line_cap = 0;
    while (!interrupted) {
        fprintf(stderr, "\n> ");
        fflush(stderr);
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) /* end of input, or Ctrl-C while waiting for it */
            break;
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            continue;
        char user_end[256];
        snprintf(user_end, sizeof user_end, "%s%s", f->turn_end, f->assistant_prefix);
        rc = feed_turn(e, f->user_prefix, line, strlen(line), user_end, first, a->n_batch);
        if (rc || interrupted)
            break;
        first = 0;
        int eog = 0;
        if (generate(e, a, a->n_predict, &eog) < 0) {
            rc = 1;
            break;
        }
        /* Ctrl-C during a reply ends the reply, as in llama-cli; the turn is closed below */
        const int stopped = interrupted;
        interrupted = 0;
        if (!eog) { /* close the turn so the history stays well formed */
            size_t need = 0;
            rc = feed(e, f->turn_end, strlen(f->turn_end), 0, 0, a->n_batch, &need);
            if (rc == FEED_NO_ROOM)
                fprintf(stderr, "\n[context full; start a new chat]\n");
            if (rc)
                break;
        }
        printf("\n");
        if (stopped)
            fprintf(stderr, "[reply stopped]\n");
    }
    free(line);
    return rc == FEED_NO_ROOM ? 0 : rc;
}

int main(int argc, char **argv)
{
    args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : rc;
    if (a.list_devices)
        return list_devices();
    char defbuf[4096];
    const char *model_path = a.model;
    if (!model_path && !(model_path = cli_default_model(defbuf, sizeof defbuf))) {
        fprintf(stderr,
                "error: no model given (-m FILE) and the default model %s was not found "
                "next to the program or in the source tree\n",
                B158_DEFAULT_MODEL);
        return 1;
    }
    if (!a.seed_set)
        a.sp.seed = (uint64_t)time(NULL);
    char *prompt_buf = NULL;
    const char *prompt = a.prompt ? a.prompt : "";
    size_t prompt_len = strlen(prompt);
    /* NUL bytes in a prompt file are text like any other (llama-cli keeps them too) */
    if (a.prompt_file &&
        !(prompt = prompt_buf = cli_read_file(a.prompt_file, B158_MAX_PROMPT_FILE, &prompt_len)))
        return 1;
    if (a.prompt && !a.no_escape) { /* -p's escapes, as llama-cli's --escape (its default) */
        if (!(prompt_buf = strdup(a.prompt))) {
            fprintf(stderr, "error: out of memory for the prompt\n");
            return 1;
        }
        prompt_len = cli_unescape(prompt_buf, prompt_len);
        prompt = prompt_buf;
    }
    engine e;
    if (engine_open(&e, &a, model_path)) {
        engine_free(&e);
        free(prompt_buf);
        return 1;
    }
    fprintf(stderr,
            "sampling: temp %.2f, top-k %d, top-p %.2f, min-p %.2f, repeat penalty %.2f, "
            "frequency penalty %.2f, presence penalty %.2f, seed %llu\n\n",
            a.sp.temp, a.sp.top_k, a.sp.top_p, a.sp.min_p, a.sp.repeat_penalty,
            a.sp.frequency_penalty, a.sp.presence_penalty, (unsigned long long)a.sp.seed);
    catch_sigint();
    if (a.chat) {
        rc = chat(&e, &a, prompt, prompt_len);
    } else {
        size_t need = 0; /* the prompt echoed once it fits the context, then evaluated */
        rc = feed(&e, prompt, prompt_len, 1, !a.no_display_prompt, a.n_batch, &need);
        if (rc == FEED_NO_ROOM) {
            fprintf(stderr,
                    "error: the prompt has %zu tokens but only %d of the %d-token context "
                    "are left; use a larger context (-c) or a shorter prompt\n",
                    need, engine_ctx(&e) - engine_pos(&e), engine_ctx(&e));
            rc = 1;
        }
        if (rc == 0 && !interrupted && engine_pos(&e) == 0) {
            /* an empty prompt without BOS: start from the end-of-text token as llama.cpp does */
            b158_token start =
                b158_vocab_bos(e.vocab) >= 0 ? b158_vocab_bos(e.vocab) : b158_vocab_eos(e.vocab);
            rc = start >= 0 ? engine_eval(&e, &start, 1, 1) : 1;
            if (start < 0)
                fprintf(stderr, "error: empty prompt and the vocabulary has no BOS/EOS token\n");
        }
        int eog = 0;
        if (rc == 0 && generate(&e, &a, a.n_predict, &eog) < 0)
            rc = 1;
        if (rc == 0)
            printf("\n");
    }
    if (interrupted)
        fprintf(stderr, "\n[interrupted]\n");
    print_summary(&e);
    engine_free(&e);
    free(prompt_buf);
    /* (a write to stdout that failed, e.g. a full disk, is an error too) */
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "error: writing the generated text failed\n");
        rc = 1;
    }
    return rc == 0 && interrupted ? 130 : rc; /* llama-cli's status after Ctrl-C */
}
