/* b158-cl-server: an OpenAI-compatible HTTP server with continuous batching.
 *
 * Threads. The library is not thread-safe (b158/model.h, sessions): a runtime, its model and
 * its session are one unit for one thread at a time. So:
 *   - the main thread loads the model and vocabulary, creates runtime and session, hands the
 *     session to the scheduler thread (sched.c) and then only waits for SIGINT / SIGTERM;
 *   - the scheduler thread alone calls the session (b158_session_decode, logits, sequence
 *     slots) and the requests' samplers, one step at a time, for every running request;
 *   - libmicrohttpd's threads, one per connection (http.c), parse and validate requests,
 *     tokenize prompts with the shared vocabulary (immutable after loading, b158/tokenizer.h),
 *     queue a task and wait on that task's channel (mutex + condition variable) for text.
 * At a signal the server stops accepting connections, ends queued and running requests (503, or
 * an error event in a stream), joins the scheduler, closes the connections and frees
 * everything; the exit status is 0. */
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b158/b158.h"
#include "b158/model.h"
#include "b158/tokenizer.h"
#include "cli-common.h"
#include "http.h"
#include "sched.h"

typedef struct {
    const char *model, *host, *api_key, *device, *alias;
    int port, n_seq, n_ctx, n_batch, max_queue, cpu_ref;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: b158-cl-server [-m MODEL.gguf] [options]\n"
            "  -m, --model FILE       GGUF model (default: the shipped %s)\n"
            "  --host ADDR            address to listen on (default 127.0.0.1)\n"
            "  --port N               port (default 8080; 0 = any free port, printed)\n"
            "  -np, --parallel N      sequence slots: requests decoded together (default 4)\n"
            "  -c, --ctx-size N       context of each slot in tokens (default: the model's, at "
            "most 4096)\n"
            "  -b, --batch-size N     most tokens per forward step (default 256)\n"
            "  --queue N              requests that may wait for a slot; more get 503 (default "
            "256)\n"
            "  --api-key KEY          require 'Authorization: Bearer KEY' (all but /health)\n"
            "  --alias NAME           model id in /v1/models and responses (default: the "
            "file name)\n"
            "  --device SEL           OpenCL device index or name substring\n"
            "  --cpu-ref              run on the plain-C reference path instead of OpenCL\n"
            "  -h, --help             this text\n",
            B158_DEFAULT_MODEL);
}

static int parse(int argc, char **argv, args *a)
{
    memset(a, 0, sizeof *a);
    a->host = "127.0.0.1";
    a->port = 8080;
    a->n_seq = 4;
    a->n_batch = 256;
    a->max_queue = 256;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define IS(x) (strcmp(o, x) == 0)
        if (IS("-h") || IS("--help")) {
            usage(stdout);
            return 1;
        }
        if (IS("--cpu-ref")) {
            a->cpu_ref = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "error: %s needs a value, or is unknown (see --help)\n", o);
            return 2;
        }
        i++;
        if (IS("-m") || IS("--model"))
            a->model = v;
        else if (IS("--host"))
            a->host = v;
        else if (IS("--api-key"))
            a->api_key = v;
        else if (IS("--alias"))
            a->alias = v;
        else if (IS("--device"))
            a->device = v;
        else if (IS("--port")) {
            if (cli_parse_int(o, v, 0, 65535, &a->port))
                return 2;
        } else if (IS("-np") || IS("--parallel")) {
            if (cli_parse_int(o, v, 1, 256, &a->n_seq))
                return 2;
        } else if (IS("-c") || IS("--ctx-size")) {
            if (cli_parse_int(o, v, 0, 1 << 24, &a->n_ctx))
                return 2;
        } else if (IS("-b") || IS("--batch-size")) {
            if (cli_parse_int(o, v, 1, 1 << 16, &a->n_batch))
                return 2;
        } else if (IS("--queue")) {
            if (cli_parse_int(o, v, 0, 1 << 20, &a->max_queue))
                return 2;
        } else {
            fprintf(stderr, "error: unknown argument '%s' (see --help)\n", o);
            return 2;
        }
#undef IS
    }
    if (a->cpu_ref && a->device) {
        fprintf(stderr, "error: --cpu-ref runs without OpenCL; it excludes --device\n");
        return 2;
    }
    if (a->api_key && !a->api_key[0]) {
        fprintf(stderr, "error: --api-key is empty\n");
        return 2;
    }
    if (a->n_batch < a->n_seq) {
        fprintf(stderr,
                "error: -b %d is smaller than -np %d: a step holds one token of every slot\n",
                a->n_batch, a->n_seq);
        return 2;
    }
    return 0;
}

/* The model's id: --alias, else the file name without its folders; a name that is not UTF-8
 * cannot be a JSON string, so it becomes "b158-cl". */
static const char *model_id(const args *a, const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *id = a->alias ? a->alias : slash ? slash + 1 : path;
    json_t *j = json_string(id);
    json_decref(j);
    if (!j)
        fprintf(stderr, "warning: the model name '%s' is not UTF-8; serving it as 'b158-cl'\n", id);
    return j ? id : "b158-cl";
}

static int fail(const char *what)
{
    fprintf(stderr, "error: %s%s%s\n", what ? what : "", what ? ": " : "", b158_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    /* SIGINT and SIGTERM are taken by sigwait in this thread only: blocked before any other
     * thread (OpenCL's, MHD's, the scheduler) exists, so every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* a shell may start background jobs with SIGINT ignored, and POSIX leaves it open whether
     * an ignored signal stays pending for sigwait (Linux keeps it): the default action back */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_IGN); /* a vanished client is an error return, not a signal */

    args a;
    int rc = parse(argc, argv, &a);
    if (rc)
        return rc == 1 ? 0 : rc;
    char defbuf[4096];
    const char *path = a.model;
    if (!path && !(path = cli_default_model(defbuf, sizeof defbuf))) {
        fprintf(stderr,
                "error: no model given (-m FILE) and the default model %s was not found next "
                "to the program or in the source tree\n",
                B158_DEFAULT_MODEL);
        return 1;
    }

    b158_runtime *rt = NULL;
    b158_model *model = NULL;
    b158_vocab *vocab = NULL;
    b158_session *session = NULL;
    srv_sched *sched = NULL;
    srv_http *http = NULL;
    rc = 1;
    if (b158_model_load(path, &model) != B158_OK) {
        fail(NULL);
        goto done;
    }
    if (b158_vocab_load(path, &vocab) != B158_OK) {
        fail("tokenizer");
        goto done;
    }
    const b158_model_info *info = b158_model_get_info(model);
    if (b158_vocab_n_tokens(vocab) > info->n_vocab) {
        fprintf(stderr, "error: %s: the tokenizer has %d tokens but the embedding only %d rows\n",
                path, b158_vocab_n_tokens(vocab), info->n_vocab);
        goto done;
    }
    b158_session_params sp = b158_session_default_params();
    sp.n_ctx = a.n_ctx                                             ? a.n_ctx
               : info->n_ctx_train > 0 && info->n_ctx_train < 4096 ? info->n_ctx_train
                                                                   : 4096;
    sp.n_batch = a.n_batch;
    sp.n_seq = a.n_seq;
    if (!a.cpu_ref) {
        b158_runtime_params rp = b158_runtime_default_params();
        rp.device = a.device;
        if (b158_runtime_create(&rp, &rt) != B158_OK) {
            fail(NULL);
            goto done;
        }
        if (b158_model_upload(model, rt) != B158_OK) {
            fail("uploading the weights");
            goto done;
        }
        sp.rt = rt;
    }
    if (b158_session_create(model, &sp, &session) != B158_OK) {
        fail(NULL);
        goto done;
    }
    size_t tlen = 0;
    const char *tmpl = b158_vocab_chat_template(vocab, &tlen);
    const b158_chat_format *fmt = b158_chat_detect(tmpl, tlen);
    const int n_seq = b158_session_n_seq(session), n_ctx = b158_session_n_ctx(session);
    fprintf(stderr,
            "model: %s (%s), %d layers, n_embd %d, vocab %d; chat format %s\n"
            "slots: %d x %d tokens of context, %d tokens per step, queue %d\n",
            path, info->arch_name, info->n_layer, info->n_embd, info->n_vocab, fmt->name, n_seq,
            n_ctx, a.n_batch, a.max_queue);
    if (rt)
        fprintf(stderr, "device: %s (%s)\n", b158_runtime_device(rt)->name,
                b158_runtime_device(rt)->platform);
    else
        fprintf(stderr, "device: CPU reference path (plain C, no OpenCL)\n");

    const srv_sched_params schp = {session, vocab, a.n_batch, a.max_queue};
    if (srv_sched_start(&schp, &sched)) {
        fprintf(stderr, "error: cannot start the scheduler thread\n");
        goto done;
    }
    const srv_http_params hp = {a.host, a.port,        a.api_key, model_id(&a, path), vocab,
                                fmt,    info->n_vocab, n_ctx,     (size_t)1 << 20,    sched};
    char err[512];
    if (srv_http_start(&hp, &http, err, sizeof err)) {
        fprintf(stderr, "error: %s\n", err);
        goto done;
    }
    const int ipv6 = strchr(a.host, ':') != NULL;
    printf("b158-cl-server: listening on http://%s%s%s:%d\n", ipv6 ? "[" : "", a.host,
           ipv6 ? "]" : "", srv_http_port(http));
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "b158-cl-server: %s, shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
done:
    /* stop accepting; end every request; let the answers go out; then close connections */
    srv_http_quiesce(http);
    srv_sched_stop(sched);
    if (srv_http_drain(http, 10000))
        fprintf(stderr, "b158-cl-server: clients slow to take their last answer; closing\n");
    srv_http_stop(http);
    srv_sched_free(sched);
    b158_session_free(session);
    b158_model_free(model);
    b158_vocab_free(vocab);
    b158_runtime_free(rt);
    return rc;
}
