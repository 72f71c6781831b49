/* The CLBlast entry points in a build without CLBlast (CMake option B158_CLBLAST=OFF): each
 * refuses with one sentence saying so. */
#include "blas.h"

static b158_status refuse(const char *call, int line)
{
    return b158_fail_at(B158_ERR_UNSUPPORTED, __FILE__, line,
                        "%s: this build of b158-cl has no CLBlast (configured with "
                        "B158_CLBLAST=OFF or without libclblast-dev), so the CLBlast FP16 "
                        "baseline is unavailable; use the FP16-storage kernels (B158_WEIGHTS_FP16)",
                        call);
}

int b158_blas_available(void)
{
    return 0;
}

b158_status b158_hgemm_temp_bytes(b158_runtime *rt, int n_rows, int k, int m_rows, size_t *bytes)
{
    *bytes = 0;
    return refuse("hgemm", __LINE__);
}

b158_status b158_op_hgemm(b158_runtime *rt, const b158_buf *w, const b158_buf *x, const b158_buf *y,
                          int n_rows, int k, int m_rows, const b158_buf *temp)
{
    return refuse("hgemm", __LINE__);
}
