b158_add_test(test-shipped-model SOURCES test-shipped-model.c SUITES perplexity greedy)
add_dependencies(test-shipped-model b158-cl-run b158-cl-perplexity)
