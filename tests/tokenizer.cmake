b158_add_test(test-tokenizer SOURCES test-tokenizer.c SUITES spm gpt2 llama_bpe api bench)
# the LLaMA-3 vocab is generated at test time by the converter; the CLI is tested too
add_dependencies(test-tokenizer b158-vocab-from-tiktoken b158-cl-tokenize)
