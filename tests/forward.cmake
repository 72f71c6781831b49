b158_add_test(test-forward SOURCES test-forward.c SUITES device_vs_reference decode_vs_prefill errors fp16_baseline
              fp16_baseline_clblast)
