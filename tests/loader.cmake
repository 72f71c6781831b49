b158_add_test(test-loader SOURCES test-loader.c SUITES roundtrip greedy_across_types malformed scale_tensors)
