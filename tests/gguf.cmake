b158_add_test(test-gguf SOURCES test-gguf.c SUITES readwrite hostile)
