/* b158-cl-perplexity: perplexity of a model over a text file, llama-perplexity style:
 * consecutive chunks of n_ctx tokens, each scored on its second half. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b158/model.h"
#include "b158/tokenizer.h"
#include "cli-common.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: b158-cl-perplexity [-m MODEL.gguf] -f TEXT [options]\n"
            "  -m FILE          GGUF model (default: the shipped %s)\n"
            "  -f FILE          text to score\n"
            "  -c N             tokens per chunk (default 512)\n"
            "  --chunks N       score at most N chunks (default: all)\n"
            "  -b N             tokens per forward pass (default: the chunk)\n"
            "  --device SEL     OpenCL device index or name substring\n"
            "  --cpu-ref        run on the plain-C reference path\n"
            "  --no-bos         never put BOS at the start of a chunk\n",
            B158_DEFAULT_MODEL);
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *text_path = NULL, *device = NULL;
    int n_ctx = 512, n_batch = 0, max_chunks = 0, cpu_ref = 0, no_bos = 0;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(o, "-h") || !strcmp(o, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(o, "--cpu-ref")) {
            cpu_ref = 1;
        } else if (!strcmp(o, "--no-bos")) {
            no_bos = 1;
        } else if (v && !strcmp(o, "-m")) {
            model_path = argv[++i];
        } else if (v && !strcmp(o, "-f")) {
            text_path = argv[++i];
        } else if (v && !strcmp(o, "--device")) {
            device = argv[++i];
        } else if (!strcmp(o, "-c")) {
            if (cli_parse_int(o, argv[++i < argc ? i : i - 1], 8, 1 << 20, &n_ctx))
                return 2;
        } else if (!strcmp(o, "-b")) {
            if (cli_parse_int(o, argv[++i < argc ? i : i - 1], 1, 1 << 20, &n_batch))
                return 2;
        } else if (!strcmp(o, "--chunks")) {
            if (cli_parse_int(o, argv[++i < argc ? i : i - 1], -1, 1 << 30, &max_chunks))
                return 2;
            max_chunks = max_chunks < 0 ? 0 : max_chunks; /* -1: all, as llama-perplexity */
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", o);
            usage(stderr);
            return 2;
        }
    }
    char defbuf[4096];
    if (!model_path && !(model_path = cli_default_model(defbuf, sizeof defbuf))) {
        fprintf(stderr, "error: no model given (-m) and the default model was not found\n");
        return 1;
    }
    if (!text_path) {
        fprintf(stderr, "error: -f TEXT is required\n");
        usage(stderr);
        return 2;
    }
    size_t text_len;
    char *text = cli_read_file(text_path, 0, &text_len);
    if (!text)
        return 1;
    int rc = 1;
    b158_model *m = NULL;
    b158_vocab *vocab = NULL;
    b158_runtime *rt = NULL;
    b158_session *s = NULL;
    b158_token *tok = NULL;
    size_t n_tok = 0;
    if (b158_model_load(model_path, &m) != B158_OK ||
        b158_vocab_load(model_path, &vocab) != B158_OK)
        goto fail;
    const int add_bos = !no_bos && b158_vocab_add_bos(vocab);
    if (b158_tokenize_alloc(vocab, text, text_len, add_bos ? B158_TOKENIZE_ADD_BOS : 0, &tok,
                            &n_tok) != B158_OK)
        goto fail;
    const int n_chunks_all = (int)(n_tok / (size_t)n_ctx);
    const int n_chunks = max_chunks && max_chunks < n_chunks_all ? max_chunks : n_chunks_all;
    if (n_chunks == 0) {
        fprintf(stderr, "error: %s has %zu tokens, fewer than one chunk of %d (-c)\n", text_path,
                n_tok, n_ctx);
        goto done;
    }
    const int n_train = b158_model_get_info(m)->n_ctx_train;
    if (n_train > 0 && n_ctx > n_train) /* (llama-perplexity says so too) */
        fprintf(stderr,
                "warning: chunks of %d tokens (-c) are longer than the model's training context "
                "(%d): the figure is not the model's perplexity at its own context\n",
                n_ctx, n_train);
    if (n_chunks_all < 2) /* (llama-perplexity refuses fewer than 2 * n_ctx tokens) */
        fprintf(stderr, "warning: %s holds one chunk of %d tokens; llama-perplexity wants two\n",
                text_path, n_ctx);
    b158_session_params sp = b158_session_default_params();
    sp.n_ctx = n_ctx;
    sp.n_batch = n_batch ? n_batch : n_ctx;
    sp.all_logits = 1;
    if (!cpu_ref) {
        b158_runtime_params rp = b158_runtime_default_params();
        rp.device = device;
        if (b158_runtime_create(&rp, &rt) != B158_OK || b158_model_upload(m, rt) != B158_OK)
            goto fail;
        sp.rt = rt;
    }
    if (b158_session_create(m, &sp, &s) != B158_OK)
        goto fail;
    fprintf(stderr, "%s: %zu tokens, %d chunks of %d, scoring the second half of each, %s, on %s\n",
            text_path, n_tok, n_chunks, n_ctx, add_bos ? "BOS first" : "no BOS",
            rt ? b158_runtime_device(rt)->name : "the CPU reference path");
    const int nv = b158_model_get_info(m)->n_vocab, first = n_ctx / 2;
    double nll = 0, nll2 = 0;
    long count = 0;
    const double t0 = cli_now();
    for (int c = 0; c < n_chunks; c++) {
        b158_token *chunk = tok + (size_t)c * n_ctx;
        const b158_token saved = chunk[0];
        if (add_bos) /* as llama-perplexity: every chunk starts with BOS */
            chunk[0] = b158_vocab_bos(vocab);
        b158_session_reset(s);
        b158_status st = b158_session_eval(s, chunk, n_ctx);
        chunk[0] = saved;
        if (st != B158_OK)
            goto fail;
        for (int j = first; j < n_ctx - 1; j++) {
            const float *l = b158_session_logits(s, j);
            float mx = l[0];
            for (int k = 1; k < nv; k++)
                mx = l[k] > mx ? l[k] : mx;
            double sum = 0;
            for (int k = 0; k < nv; k++)
                sum += exp((double)l[k] - mx);
            const double v = log(sum) + mx - l[chunk[j + 1]];
            nll += v;
            nll2 += v * v;
            count++;
        }
        printf("[%d]%.4f,", c + 1, exp(nll / count));
        fflush(stdout);
    }
    const double mean = nll / count, var = nll2 / count - mean * mean;
    const double ppl = exp(mean);
    printf("\nFinal estimate: PPL = %.4f +/- %.5f\n", ppl,
           ppl * sqrt(var > 0 ? var / (count - 1 > 0 ? count - 1 : 1) : 0));
    fprintf(stderr, "%ld tokens scored in %.2f s (%.1f tokens/s evaluated)\n", count,
            cli_now() - t0, (double)n_chunks * n_ctx / (cli_now() - t0));
    if (rt)
        cli_print_memory(rt);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "error: %s\n", b158_last_error());
done:
    b158_session_free(s);
    b158_model_free(m);
    b158_vocab_free(vocab);
    b158_runtime_free(rt);
    free(tok);
    free(text);
    return rc;
}
