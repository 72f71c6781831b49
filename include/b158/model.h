/* b158-cl public API: models, inference sessions (OpenCL or CPU reference) and sampling. */
#ifndef B158_MODEL_H
#define B158_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "b158/b158.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Architectures (REFERENCE.md s.1). Values are stable; new ones are appended. */
typedef enum b158_arch {
    B158_ARCH_BITNET_25 = 0, /* "bitnet-25": bitnet-b1.58-2B-4T, relu^2, sub-norms */
    B158_ARCH_BITNET = 1,    /* "bitnet": 1bitLLM conversions, silu (or relu^2), sub-norms */
    B158_ARCH_LLAMA = 2,     /* "llama" with ternary linear weights, silu, no sub-norms */
} b158_arch;

typedef struct b158_model_info {
    b158_arch arch;
    const char *arch_name; /* as in the file's general.architecture */
    const char *name;      /* general.name, or "" */
    int n_vocab;           /* rows of the embedding table */
    int n_embd;            /* width of the residual stream */
    int n_layer;
    int n_head;
    int n_head_kv;
    int head_dim;    /* n_embd / n_head unless the file says otherwise */
    int n_ff;        /* FFN hidden width */
    int n_rot;       /* rotated dimensions per head */
    int n_ctx_train; /* context length the model was trained with */
    float rms_eps;
    float rope_base;
    int relu2;            /* 1: relu(gate)^2 * up, 0: silu(gate) * up */
    int sub_norms;        /* 1: attn_sub_norm and ffn_sub_norm present */
    int rope_interleaved; /* 1: pairs (2i, 2i+1); 0: NEOX (i, i + n_rot/2) */
    int tied_embedding;   /* 1: the LM head is the embedding table */
    uint64_t n_ternary;   /* ternary weights in the transformer blocks */
} b158_model_info;

typedef struct b158_model b158_model;

/* Loads a GGUF model file (bitnet-25, bitnet or llama architecture; ternary tensors as TQ2_0,
 * TQ1_0, I2_S or float). The file stays mapped while the model lives. Errors: B158_ERR_IO
 * (cannot open), B158_ERR_FORMAT (malformed or missing tensors, a size of 0, a non-finite
 * rms epsilon or rope base, a NaN or infinite weight in a norm, the embedding or a scale),
 * B158_ERR_UNSUPPORTED (unknown architecture or tensor type), B158_ERR_INVALID_ARG (path or
 * out NULL), B158_ERR_HOST_MEMORY. */
b158_status b158_model_load(const char *path, b158_model **out);

const b158_model_info *b158_model_get_info(const b158_model *model);
void b158_model_free(b158_model *model);

/* The shape of a published configuration as a bitnet-25 model (relu^2, sub-norms, NEOX RoPE,
 * eps 1e-5): "700M", "1.3B", "3B", "3.9B" (the paper's, vocab 32000), "2B-4T"
 * (bitnet-b1.58-2B-4T) or "tiny" (256 wide, 2 layers, vocab 512). Returns B158_ERR_INVALID_ARG
 * for another name. */
b158_status b158_model_preset(const char *name, b158_model_info *out);

/* Builds a model with random weights at the given shape (info's arch, sizes, eps, rope and
 * flags are used; the rest is derived), deterministic in seed. For tests and benchmarks.
 * Errors: B158_ERR_INVALID_ARG (shape or out NULL), B158_ERR_FORMAT / B158_ERR_UNSUPPORTED (a
 * shape that does not hold together or is out of range, dimensions beyond what b158-cl holds,
 * eps or rope base not positive and finite), B158_ERR_HOST_MEMORY. */
b158_status b158_model_random(const b158_model_info *shape, uint64_t seed, b158_model **out);

/* GGUF tensor types of ternary weights (values are GGUF's type ids: ggml's numbering, I2_S is
 * bitnet.cpp's). The float types store the ternary values exactly, times their scale. */
typedef enum b158_tensor_type {
    B158_TENSOR_F32 = 0,
    B158_TENSOR_F16 = 1,
    B158_TENSOR_BF16 = 30,
    B158_TENSOR_TQ1_0 = 34, /* llama.cpp: 1.6 bits per weight, base-3 packing */
    B158_TENSOR_TQ2_0 = 35, /* llama.cpp: 2 bits per weight */
    B158_TENSOR_I2_S = 36,  /* bitnet.cpp: 2 bits per weight, one scale per tensor */
} b158_tensor_type;

/* Writes the model as a GGUF file following llama.cpp's conventions, its ternary weights as
 * ternary_type. The tokenizer is copied from the GGUF file vocab_from, or, when NULL, a
 * byte-level vocabulary without merges is made up (n_vocab >= 257). Errors:
 * B158_ERR_INVALID_ARG (model or path NULL, a matrix shape the type cannot store, a vocabulary
 * that does not fit), B158_ERR_UNSUPPORTED (the model breaks its architecture's conventions, or
 * per-row scales in a per-tensor type), B158_ERR_IO / B158_ERR_FORMAT (vocab_from unreadable or
 * malformed; the file cannot be written), B158_ERR_HOST_MEMORY. */
b158_status b158_model_save(const b158_model *model, const char *path,
                            b158_tensor_type ternary_type, const char *vocab_from);

/* Uploads the weights to rt's device once (counted as B158_MEM_WEIGHTS). The model keeps
 * them until freed; rt must outlive the model. Calling it again with the same rt is a no-op.
 * Errors: B158_ERR_INVALID_ARG (NULL arguments; the model is already on another runtime or in
 * another weight mode), B158_ERR_DEVICE_MEMORY, B158_ERR_OPENCL, B158_ERR_HOST_MEMORY. */
b158_status b158_model_upload(b158_model *model, b158_runtime *rt);

/* Frees the model's device copies (b158_model_upload can then place it again). Every session
 * on the model must be freed first: they run on those copies. */
void b158_model_unload(b158_model *model);

/* How the transformer blocks' weights live on the device. */
typedef enum b158_weight_mode {
    B158_WEIGHTS_TERNARY = 0,      /* 2-bit codes + scales, int8 x ternary kernels (the engine) */
    B158_WEIGHTS_FP16 = 1,         /* FP16 baseline: dense FP16 W_t * scale, FP16-storage matvec on
                                      the same int8-quantized activations (same function) */
    B158_WEIGHTS_FP16_CLBLAST = 2, /* the same dense FP16 matrices through CLBlast's HGEMM /
                                      HGEMV on FP16 activations (FP16 arithmetic); needs a build
                                      with CLBlast (CMake option B158_CLBLAST) and a device with
                                      cl_khr_fp16 (else B158_ERR_UNSUPPORTED) */
} b158_weight_mode;

/* Whether rt can run weights in mode: B158_OK, or B158_ERR_UNSUPPORTED with the reason in
 * b158_last_error() (a build without CLBlast, a device without cl_khr_fp16);
 * B158_ERR_INVALID_ARG for a NULL rt or an unknown mode. */
b158_status b158_weight_mode_check(const b158_runtime *rt, b158_weight_mode mode);

/* b158_model_upload with a choice of weight mode (benchmarks compare them). Errors as
 * b158_model_upload, and those of b158_weight_mode_check. */
b158_status b158_model_upload_as(b158_model *model, b158_runtime *rt, b158_weight_mode mode);

/* ---- sessions: a KV cache and scratch for one or more sequences ------------------------ */

/* Threads: a runtime, the models uploaded to it and the sessions on it are one unit that one
 * thread at a time may use (the runtime's kernel objects, launch counters and memory accounting
 * are not locked). Programs that serve several clients give one thread the device and let the
 * others queue work for it (b158-cl-server does). Objects on different runtimes are
 * independent. */

typedef struct b158_session_params {
    int n_ctx;        /* context length in tokens of each sequence; 0 = the model's training
                         context */
    int n_batch;      /* most tokens per forward step; 0 = 256 */
    int all_logits;   /* nonzero: eval returns logits of every token (perplexity) */
    b158_runtime *rt; /* device to run on (model uploaded to it); NULL = CPU reference path */
    int n_seq;        /* sequence slots, each with its own n_ctx of KV cache; 0 = 1 */
} b158_session_params;

b158_session_params b158_session_default_params(void);

typedef struct b158_session b158_session;

/* A session for model (NULL params = the defaults); builds every kernel it runs. Errors:
 * B158_ERR_INVALID_ARG (model or out NULL; params.rt set but the model not uploaded to it),
 * B158_ERR_UNSUPPORTED (a context too large), B158_ERR_HOST_MEMORY, B158_ERR_DEVICE_MEMORY
 * (KV cache and scratch do not fit), B158_ERR_BUILD, B158_ERR_OPENCL. */
b158_status b158_session_create(b158_model *model, const b158_session_params *params,
                                b158_session **out);
void b158_session_free(b158_session *s);

/* A sequence: one slot of the session's KV cache, 0 <= id < n_seq. */
typedef int32_t b158_seq_id;

/* Tokens of one or more sequences for one b158_session_decode call. Each token is appended to
 * its sequence at the sequence's next position, in batch order, so a sequence's tokens must
 * come in the order of its text. */
typedef struct b158_batch {
    int n_tokens;
    const b158_token *token;   /* n_tokens ids */
    const b158_seq_id *seq_id; /* n_tokens sequence ids; NULL = all in sequence 0 */
    const int8_t *logits;      /* n_tokens flags, nonzero = return this token's logits; NULL =
                                  the last token of each sequence in the batch */
    int greedy;                /* nonzero: those tokens get only their greedy next token
                                  (b158_session_argmax), computed where the logits are (on a
                                  device: 4 bytes read back instead of n_vocab floats), and
                                  b158_session_logits gives NULL for them */
} b158_batch;

/* Greedy decoding ahead: on a device session of one sequence (not profiling), a greedy call
 * whose last token asks for its pick queues the one-token step after it, that pick as its
 * token, before it waits for the pick; a next call asking for exactly that (a greedy call of
 * that one token at that position) finds its step running and queues the one after, so the
 * device never waits for the host between tokens. Any other call, b158_session_reset,
 * b158_session_seq_clear or b158_session_free first waits for the queued step and forgets it
 * (its cache row lies past the sequence's end). The results are those without it, bit for
 * bit; B158_SPECULATE=0 in the environment turns it off at session creation. */

/* Runs every token of batch through the model in forward steps of at most n_batch tokens,
 * reading the weights once per step for all sequences in it. Returns, before computing
 * anything: B158_ERR_CONTEXT_FULL if a sequence would pass n_ctx tokens (the message names
 * it), B158_ERR_INVALID_ARG for a token id outside the vocabulary, a sequence id outside
 * [0, n_seq) or bad arguments. B158_ERR_OPENCL or B158_ERR_DEVICE_MEMORY when the device
 * fails (the sequences in the batch are then in an undefined state: clear them). */
b158_status b158_session_decode(b158_session *s, const b158_batch *batch);

/* Runs n tokens of sequence 0 at its current position: b158_session_decode with the logits
 * of the last token, or of every token with all_logits. Errors as b158_session_decode. */
b158_status b158_session_eval(b158_session *s, const b158_token *tokens, int n);

/* Logits (n_vocab floats) of token i of the last eval / decode call, if it asked for them,
 * else NULL; i < 0 = the last token that did. Valid until the next eval / decode. */
const float *b158_session_logits(const b158_session *s, int i);

/* The greedy next token after token i (i < 0: the last that asked for logits) of the last
 * eval / decode call: the lowest index of the largest logit, NaN never counting (a row of NaN
 * gives 0); -1 where that token asked for nothing. From the device in a greedy call, else from
 * the host's logits. */
b158_token b158_session_argmax(const b158_session *s, int i);

int b158_session_n_ctx(const b158_session *s);
int b158_session_n_seq(const b158_session *s);
/* Tokens held by sequence seq (its next position); -1 for an id outside [0, n_seq). */
int b158_session_seq_pos(const b158_session *s, b158_seq_id seq);
/* Empties sequence seq so the slot can serve a new one (nothing of the old one remains
 * visible to it). B158_ERR_INVALID_ARG for an id outside [0, n_seq); B158_ERR_OPENCL where the
 * step queued ahead (above) failed on the device. */
b158_status b158_session_seq_clear(b158_session *s, b158_seq_id seq);
int b158_session_pos(const b158_session *s); /* b158_session_seq_pos of sequence 0 */
void b158_session_reset(b158_session *s);    /* every sequence back to position 0 */

/* Where the fused decode layer's time goes (a one-token step's block in one launch, GPU
 * variant), or the GEMV chain's (a block's GEMVs after its attention in one launch), from
 * timestamps their work-groups write: only on a runtime created with profile set and a device
 * whose kernels read a clock (NVIDIA's %globaltimer through inline PTX, cl_khr_kernel_clock),
 * else blocks stays 0. Summed over the launches since the session began or
 * b158_session_stage_reset; parts in b158_stage_part_name order. The fused layer's parts are
 * each group's (mean, fastest, slowest); the chain's are its four stages' (output, gate|up,
 * down, the next block's q|k|v; the last block has no q|k|v) critical path, in mean: the stage
 * before's end (the launch's first start) to its first job's start of work, that to its last
 * job's rows, those to its tail's end (the flag the next stage waits for), with min / max each
 * job's own wait, rows and tail. */
#define B158_STAGE_PARTS 14
#define B158_CHAIN_PARTS 12 /* the chain's: 3 a stage */
typedef struct b158_stage_profile {
    int chain;       /* 0: the fused layer's parts; 1: the GEMV chain's (12 of them) */
    int clock_ns;    /* 1: ticks are nanoseconds; 0: device clock ticks of no stated length */
    int groups;      /* work-groups of each launch (the chain: jobs of a block) */
    uint64_t blocks; /* launches measured */
    double mean[B158_STAGE_PARTS]; /* ticks of each part, mean over the groups, summed */
    double min[B158_STAGE_PARTS];  /* the fastest group's, summed (of a grid barrier: the
                                      last group to arrive, so the barrier's own cost) */
    double max[B158_STAGE_PARTS];  /* the slowest group's, summed */
    double span;                   /* first group's start to last group's end, summed */
    double gap;                    /* a block's last end to the next block's first start in
                                      the same step, summed over gaps */
    uint64_t gaps;
} b158_stage_profile;
const char *b158_stage_part_name(int chain, int part);
/* Copies the totals into *out (zeros where there are none). */
void b158_session_stage_profile(const b158_session *s, b158_stage_profile *out);
void b158_session_stage_reset(b158_session *s);

/* ---- sampling --------------------------------------------------------------------------- */

typedef struct b158_sampler_params {
    float temp;           /* 0 = greedy (argmax); default 0.8 */
    int top_k;            /* keep the k most likely; 0 = all; default 40 */
    float top_p;          /* nucleus mass; 1 = off; default 0.95 */
    float min_p;          /* drop tokens below min_p * p(max); 0 = off; default 0.05 */
    float repeat_penalty; /* divide positive / multiply negative logits of recent tokens; 1 = off */
    int repeat_last_n;    /* how many recent tokens the penalties look at; default 64 */
    uint64_t seed;        /* random seed; the same seed reproduces the same text */
    /* OpenAI's and llama.cpp's: a recent token's logit less frequency_penalty times its count
     * in the window and presence_penalty once (after the repeat penalty); 0 = off (default) */
    float frequency_penalty, presence_penalty;
} b158_sampler_params;

b158_sampler_params b158_sampler_default_params(void);
/* Whether p's pick is always the argmax of the logits (temp 0, no penalty): then a device can
 * pick the token itself (b158_session_decode's picks) without the sampler. */
int b158_sampler_params_greedy(const b158_sampler_params *p);

typedef struct b158_sampler b158_sampler;
/* A sampler over n_vocab logits (NULL params = the defaults). Errors: B158_ERR_INVALID_ARG
 * (out NULL, n_vocab <= 0, a parameter out of its range), B158_ERR_HOST_MEMORY. */
b158_status b158_sampler_create(const b158_sampler_params *params, int n_vocab, b158_sampler **out);
void b158_sampler_free(b158_sampler *s);
/* Picks the next token from logits (not modified) and remembers it for the penalties. */
b158_token b158_sampler_sample(b158_sampler *s, const float *logits);
/* Tells the sampler about tokens it did not pick (the prompt), for the penalties. */
void b158_sampler_accept(b158_sampler *s, b158_token token);

#ifdef __cplusplus
}
#endif
#endif
