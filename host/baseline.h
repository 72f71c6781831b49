/* The FP16 baseline engine behind one seam: the blocks' matrices as dense FP16 W_t * scale,
 * applied to the ternary engine's int8 activations through b158-cl's FP16-storage kernels
 * (B158_WEIGHTS_FP16) or CLBlast's HGEMM / HGEMV (B158_WEIGHTS_FP16_CLBLAST). The model and the
 * forward pass reach it only through these functions. */
#ifndef B158_HOST_BASELINE_H
#define B158_HOST_BASELINE_H

#include "model.h"

/* B158_OK when rt can hold and run weights in mode, else B158_ERR_UNSUPPORTED saying why (the
 * CLBlast mode needs a build with CLBlast and a device with cl_khr_fp16). */
b158_status b158_baseline_check(const b158_runtime *rt, b158_weight_mode mode);

/* Uploads t as a dense FP16 matrix of t->n rows of t->k (W_t * scale), counted as weights. */
b158_status b158_baseline_upload(b158_runtime *rt, const b158_tpack *t, b158_buf *out);

/* A session's scratch for the baseline; shapes (rows, cols) for n_batch rows of up to width. */
typedef struct b158_baseline {
    b158_weight_mode mode;
    b158_buf xf;        /* FP16-storage kernels: FP32 input (n_batch, width) */
    b158_buf xh, yh;    /* CLBlast: FP16 input (n_batch, width), FP16 output (n_batch, width) */
    b158_buf blas_temp; /* CLBlast: HGEMM's temp buffer for the largest of the model's shapes */
} b158_baseline;

/* Allocates the scratch for model m (uploaded to rt in a baseline mode) and builds what the
 * mode runs: its kernels, and CLBlast's routines (called once at m's shapes, so no token pays
 * for their compilation). Free with b158_baseline_free also after a failure. */
b158_status b158_baseline_create(b158_runtime *rt, const b158_model *m, int n_batch, int width,
                                 b158_baseline *out);
void b158_baseline_free(b158_runtime *rt, b158_baseline *b);

/* Whether the baseline reads the int8 input (q8 / s of b158_op_quantize) itself for n rows:
 * one token on the FP16-storage kernels (f16_gemv_q8). Then b158_baseline_input has nothing to
 * do and b158_baseline_linear takes a tail. */
int b158_baseline_reads_q8(const b158_baseline *b, int n);

/* Converts one BitLinear input, q8 / s from b158_op_quantize (n rows of width k, row stride
 * b158_ternary_k_pad(k)), to the baseline's input: once per input, before the matmuls that
 * share it (nothing where b158_baseline_reads_q8). */
b158_status b158_baseline_input(b158_runtime *rt, const b158_baseline *b, const b158_buf *q8,
                                const b158_buf *s, int k, int n);

/* y (+)= w . x for the n rows of width k of the input q8 / s (as last given to
 * b158_baseline_input), w a dense matrix from b158_baseline_upload; y (n rows of w's row count)
 * FP32, added to with accumulate. With norm (only where b158_baseline_reads_q8) the tail of
 * b158_op_ternary_gemv follows: the next matmul's int8 input over norm->q / norm->s. */
b158_status b158_baseline_linear(b158_runtime *rt, const b158_baseline *b, const b158_buf *w, int k,
                                 const b158_buf *q8, const b158_buf *s, const b158_buf *y, int n,
                                 int accumulate, const b158_gemv_norm *norm);

#endif
