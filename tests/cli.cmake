b158_add_test(test-cli SOURCES test-cli.c SUITES run chat perplexity sampler bench)
# the programs under test must be built first
add_dependencies(test-cli b158-cl-run b158-cl-perplexity b158-gen-model b158-cl-bench
                 b158-vocab-from-tiktoken)
