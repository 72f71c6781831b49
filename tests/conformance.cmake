b158_add_test(test-conformance SOURCES test-conformance.c SUITES cpu_ref opencl)
