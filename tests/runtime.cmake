b158_add_test(test-runtime SOURCES test-runtime.c SUITES devices build memory)
