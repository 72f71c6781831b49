/* CLBlast's HGEMM / HGEMV for the FP16 baseline (host/blas.c), on devices with cl_khr_fp16. */
#ifndef B158_HOST_BLAS_H
#define B158_HOST_BLAS_H

#include <stddef.h>

#include "runtime.h"

/* Nonzero when this build has CLBlast (CMake option B158_CLBLAST); without it every call
 * below returns B158_ERR_UNSUPPORTED (host/blas-none.c). */
int b158_blas_available(void);

/* All FP16: y[m][n] = sum_k w[n][k] x[m][k] for m < m_rows, n < n_rows. One row is CLBlast's
 * HGEMV, more its HGEMM with the caller's temp buffer (b158_hgemm_temp_bytes; none for one
 * row). Timed as "clblast_hgemv" / "clblast_hgemm" in the runtime's profiling totals.
 * B158_ERR_UNSUPPORTED on a device without cl_khr_fp16; B158_ERR_INVALID_ARG for a bad shape or
 * a missing or small buffer; B158_ERR_DEVICE_MEMORY, B158_ERR_BUILD or B158_ERR_OPENCL when
 * CLBlast fails. */
b158_status b158_op_hgemm(b158_runtime *rt, const b158_buf *w, const b158_buf *x, const b158_buf *y,
                          int n_rows, int k, int m_rows, const b158_buf *temp);
/* Bytes of the temp buffer HGEMM needs at this shape (0 for one row). */
b158_status b158_hgemm_temp_bytes(b158_runtime *rt, int n_rows, int k, int m_rows, size_t *bytes);

#endif
