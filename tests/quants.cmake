# Weight codecs of the GGUF loader (host/quants.c): no OpenCL device needed.
b158_add_test(test-quants SOURCES test-quants.c
              SUITES names tq2_0 tq1_0 tq_scales i2_s float tables malformed)
