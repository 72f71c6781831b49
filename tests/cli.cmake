b158_add_test(test-cli SOURCES test-cli.c SUITES run perplexity sampler)
# the programs under test must be built first
add_dependencies(test-cli b158-cl-run b158-cl-perplexity b158-gen-model)
