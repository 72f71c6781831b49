/* The engine's kernels: each with its cl_kernels/ file, their ids, and the parameters that the
 * launch wrappers (host/ops.h) and the plain-C references (host/ref.h) share. */
#ifndef B158_HOST_KERNELS_H
#define B158_HOST_KERNELS_H

/* Every kernel the engine launches, with the cl_kernels/ file that defines it (several, joined
 * in order, where it uses other files' functions). Kernels are
 * created on first use and kept by the runtime; nothing is built on the hot path. */
#define B158_KERNEL_LIST(X)                                                                        \
    X(QUANTIZE_ROWS, "quantize_rows", "quantize.cl")                                               \
    X(DEQUANTIZE_ROWS, "dequantize_rows", "quantize.cl")                                           \
    X(DEQUANTIZE_ROWS_HALF, "dequantize_rows_half", "quantize.cl")                                 \
    X(TERNARY_GEMV_CPU, "ternary_gemv_cpu", "ternary.cl")                                          \
    X(TERNARY_GEMV_AVX512, "ternary_gemv_avx512", "ternary.cl")                                    \
    X(TERNARY_GEMV_GPU, "ternary_gemv_gpu", "ternary.cl")                                          \
    X(TERNARY_GEMM_CPU, "ternary_gemm_cpu", "ternary.cl")                                          \
    X(TERNARY_GEMM_AVX512, "ternary_gemm_avx512", "ternary.cl")                                    \
    X(TERNARY_GEMM_VNNI, "ternary_gemm_vnni", "ternary.cl")                                        \
    X(TERNARY_GEMM_GPU, "ternary_gemm_gpu", "ternary.cl")                                          \
    X(RMSNORM, "rmsnorm", "norm.cl")                                                               \
    X(RMSNORM_QUANTIZE, "rmsnorm_quantize", "norm.cl")                                             \
    X(ROPE_KV_STORE, "rope_kv_store", "rope.cl")                                                   \
    X(ATTENTION, "attention", "attention.cl")                                                      \
    X(GLU_NORM_QUANTIZE, "glu_norm_quantize", "elementwise.cl")                                    \
    X(EMBED, "embed_rows", "embed.cl")                                                             \
    X(F16_MATVEC, "f16_matvec", "f16-matmul.cl")                                                   \
    X(F16_GEMM, "f16_gemm", "f16-matmul.cl")                                                       \
    X(F16_GEMV_Q8, "f16_gemv_q8", "f16-matmul.cl")                                                 \
    X(F16_TO_F32, "f16_to_f32", "f16-matmul.cl")                                                   \
    X(ARGMAX_ROWS, "argmax_rows", "sample.cl")                                                     \
    X(DECODE_LAYER, "ternary_decode_layer", "ternary.cl attention.cl decode.cl")                   \
    X(GEMV_CHAIN, "ternary_gemv_chain", "ternary.cl attention.cl decode.cl")                       \
    X(GEMV_CHAIN_SEQ, "ternary_gemv_chain_seq", "ternary.cl attention.cl decode.cl")

enum b158_kernel_id {
#define B158_KID(id, name, file) B158_K_##id,
    B158_KERNEL_LIST(B158_KID)
#undef B158_KID
        B158_KERNEL_COUNT
};

/* Name of a kernel in messages and profiling totals ("ternary_gemv_cpu"). */
const char *b158_kernel_name(enum b158_kernel_id id);

/* Elements per packed row: K rounded up to the 256-element block of cl_kernels/ternary.cl. */
static inline int b158_ternary_k_pad(int k)
{
    return (k + 255) / 256 * 256;
}

enum b158_rope_mode { B158_ROPE_NEOX = 0, B158_ROPE_INTERLEAVED = 1 };
enum b158_act { B158_ACT_SILU = 0, B158_ACT_RELU2 = 1 };

#endif
