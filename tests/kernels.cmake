b158_add_test(test-kernels SOURCES test-kernels.c
              SUITES half quantize ternary_gemv ternary_gemm rmsnorm rope attention glu add
                     embed f16_matvec f16_baseline clblast)
