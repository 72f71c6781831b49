"""Builds the Hugging Face conformance fixtures in tests/data/hf/<config>/.

For each configuration: a tiny random BitNetForCausalLM saved as transformers saves it (config.json
with quantization_config, model.safetensors, tokenizer.json), loaded back with
BitNetForCausalLM.from_pretrained (so transformers' own BitLinear / AutoBitLinear run), logits in
float32 eval mode for a fixed token sequence, then b158_convert.py to model.gguf. Also checks
model.gguf against a NumPy re-implementation of b158-cl's forward pass (the engine's math).

    TORCHDYNAMO_DISABLE=1 /work/venv-train/bin/python tools/convert/make_fixtures.py [--out tests/data/hf]

Writes model.gguf, tokens (one line of ids), logits (little-endian f32, n_tokens x n_vocab) and
greedy (the ids of transformers' greedy continuation of tokens, one line).

Also one 1bitLLM-layout checkpoint (ONEBITLLM: latent fp16, SentencePiece tokenizer.model), whose
logits come from onebitllm_forward (1bitLLM's modeling code is not in transformers), with
spm_cases (lines "text<TAB>ids", sentencepiece's ids without BOS) for the engine's tokenizer,
and one with bitnet-b1.58-2B-4T's kind of tokenizer.json (LLAMA3TOK: LLaMA-3's Split
pre-tokenizer, ignore_merges) with bpe_cases, the tokenizers library's ids.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # transformers' @torch.compile: run eagerly

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import b158_convert  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEXT = os.path.join(ROOT, "tests", "data", "text", "tinyshakespeare.txt")
N_TOKENS = 12
N_GREEDY = 8

CONFIGS = {
    # GQA 4/2, relu2, packed uint8 offline with transformers' BitLinear (divides by weight_scale)
    "gqa-relu2-bitlinear-tq2_0": dict(hidden=256, heads=4, kv=2, ff=512, layers=2, act="relu2",
                                      linear="bitlinear", mode="offline", type="tq2_0", tied=True),
    # MHA, silu (arch bitnet), latent float32 weights ternarized online, separate LM head
    "mha-silu-online-tq2_0": dict(hidden=256, heads=4, kv=4, ff=768, layers=2, act="silu",
                                  linear="autobitlinear", mode="online", type="tq2_0", tied=False),
    # hidden 320 (not a multiple of 256): I2_S; AutoBitLinear offline packed (multiplies)
    "h320-relu2-autobitlinear-i2_s": dict(hidden=320, heads=5, kv=1, ff=640, layers=2, act="relu2",
                                          linear="autobitlinear", mode="offline", type="i2_s",
                                          tied=True),
    # GQA, relu2, online latent bf16 weights, TQ1_0
    "gqa-relu2-online-bf16-tq1_0": dict(hidden=256, heads=8, kv=2, ff=512, layers=1, act="relu2",
                                        linear="autobitlinear", mode="online", type="tq1_0",
                                        tied=True, dtype="bf16"),
}


# A LLaMA-3-tokenizer checkpoint like microsoft/bitnet-b1.58-2B-4T: tokenizer.json with LLaMA-3's
# Split pre-tokenizer + ByteLevel and ignore_merges, BOS <|begin_of_text|>; bitlinear offline
# packed weights, relu2, GQA 4:1, tied embeddings. Its bpe_cases come from the tokenizers library.
LLAMA3TOK = {"llama3tok-gqa-relu2-bitlinear-tq2_0": dict(
    hidden=256, heads=8, kv=2, ff=512, layers=2, act="relu2", linear="bitlinear", mode="offline",
    type="tq2_0", tied=True, vocab=512, whole_words=8, seed=3003)}
# Meta-Llama-3's pre-tokenizer regex, as its tokenizer.json (and 2B-4T's) holds it
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
BPE_CASES = [
    "Hello world",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n",
    "Resolved. resolved.\n\n\nNo more talking on't; let it be done: away, away!\n",
    "digits 1234567 and 3.14159, 2025-01-31, 1000000 and 007 then 12 34 5",
    "don't I'LL we've THEY'RE it's you'd she'S we'Ll o'er 'tis (hark) \u00bfQu\u00e9?",
    "line one\r\nline two\r\n\r\nline three",
    "ROMEO:\n\tBut soft! what light through yonder window breaks?",
    "a  b   c    d\t\te \n  f",
    "   leading and trailing   ",
    " \n \n\n  \n",
    "caf\u00e9 na\u00efve \u00fcber \u2192 \u65e5\u672c\u8a9e \u041f\u0440\u0438\u0432\u0435\u0442 "
    "\u0645\u0631\u062d\u0628\u0627 \u0915\u094d\u0937",
    "\U0001f642 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f44d\U0001f3fd!! \u2764\ufe0f",
    "SICINIUS and BRUTUS: GLOUCESTER's people; Second Citizen, Marcius!",
    "x = f(a,b) -> [1, 22, 333]; // (c) 2024... ???",
]


def numbered_text():
    """The first 200 kB of the text, each non-empty line numbered ("12 First Citizen:"), so that
    the tokenizer learns digit merges; blank lines stay blank (".\n\n" stays as it is)."""
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()[:200000]
    out, n = [], 0
    for line in text.split("\n"):
        if line:
            n += 1
            line = f"{n} {line}"
        out.append(line)
    return "\n".join(out)


# Contractions as whole tokens (no merge path): LLaMA-3 cuts "I'LL" into "I" "'LL" (its
# contractions are case-insensitive) and GPT-2 into "I" "'" "LL"; with these tokens that shows.
CONTRACTION_TOKENS = ["'LL", "'S", "'ve"]


def make_llama3_tokenizer(path, vocab_size, n_whole):
    """A byte-level BPE with LLaMA-3's pre-tokenizer and ignore_merges, trained on
    numbered_text(); then n_whole whole-word tokens with no merge path (the most frequent
    pre-tokens BPE splits in three or more) and CONTRACTION_TOKENS complete the vocabulary, so
    that ignore_merges (a whole pre-token found in the vocabulary wins) changes the ids of the
    words that have one."""
    import regex
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    n_added = n_whole + len(CONTRACTION_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_added, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    text = numbered_text()
    tok.train_from_iterator([text], trainer)
    counts = {}
    for w in regex.findall(LLAMA3_REGEX, text):
        counts[w] = counts.get(w, 0) + 1
    whole = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
             if len(tok.encode(w, add_special_tokens=False).ids) >= 3][:n_whole]
    bos = tok.token_to_id(specials[0])
    tok.post_processor = processors.TemplateProcessing(single=f"{specials[0]} $A",
                                                       special_tokens=[(specials[0], bos)])
    tj = json.loads(tok.to_str())
    vocab = tj["model"]["vocab"]
    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for w in whole + CONTRACTION_TOKENS:
        vocab[bl.pre_tokenize_str(w)[0][0]] = len(vocab)
    assert len(vocab) == vocab_size, len(vocab)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=1)
    return Tokenizer.from_file(path), whole


def escape_case(text):
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")


def make_tokenizer(path, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    with open(TEXT, encoding="utf-8") as f:
        text = f.read()[:200000]
    tok.train_from_iterator([text], trainer)
    tok.save(path)
    return tok, text


# 1bitLLM's llama-style BitnetForCausalLM (bitnet_b1_58-large/3B; its modeling code is not in
# transformers): MHA, silu, latent fp16 weights, sub-norms inner_attn_ln / ffn_layernorm,
# SentencePiece tokenizer.model. The reference logits come from onebitllm_forward below.
ONEBITLLM = {"1bitllm-mha-silu-spm-tq2_0": dict(hidden=256, heads=4, ff=512, layers=2,
                                                 type="tq2_0", spm_vocab=384, seed=2002)}
SPM_CASES = [
    "Hello world",
    "ROMEO: But soft, what light through yonder window breaks?",
    " leading space and  two  spaces",
    "digits 1234567 and 3.14",
    "caf\u00e9 na\u00efve \u00fcber \u2192 \u65e5\u672c\u8a9e \U0001f642",
    "KING HENRY VI: O God! (thy sword)",
    "zzzz qqq xyzzy",
]


def make_spm_tokenizer(prefix, vocab_size):
    """A SentencePiece BPE model with Llama's trainer settings (identity normalization,
    add_dummy_prefix, byte_fallback, split_digits), trained on the first 200 kB of the text."""
    import sentencepiece as spm

    with open(TEXT, encoding="utf-8") as f:
        text = f.read()[:200000]
    lines = [ln for ln in text.split("\n") if ln.strip()]
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=prefix, vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2)
    return spm.SentencePieceProcessor(model_file=prefix + ".model")


def onebitllm_forward(sd, cfg, ids):
    """1bitLLM's BitnetForCausalLM forward in float32 (its modeling_bitnet.py / utils_quant.py):
    BitLinear = nn.Linear with weight_quant (s = 1 / max(mean|W|, 1e-5), round(W s).clamp(-1, 1)
    / s) and activation_quant (per token, s = 127 / max(max|x|, 1e-5), round(x s).clamp(-128,
    127) / s); RMSNorm is outside BitLinear: input_layernorm -> q,k,v; inner_attn_ln -> o_proj;
    post_attention_layernorm -> gate,up; ffn_layernorm on silu(gate) * up -> down_proj."""
    H, nh, L = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_hidden_layers"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    hd = H // nh
    W = {k: v.float() for k, v in sd.items()}

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def weight_quant(w):
        s = 1 / w.abs().mean().clamp(min=1e-5)
        return (w * s).round().clamp(-1, 1) / s

    def act_quant(x):
        s = 127 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
        return (x * s).round().clamp(-128, 127) / s

    def bitlinear(x, name):
        return torch.nn.functional.linear(act_quant(x), weight_quant(W[name]))

    n = len(ids)
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    emb = torch.cat([torch.outer(torch.arange(n).float(), inv)] * 2, dim=-1)
    cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]

    def rope(x):  # llama rotate_half
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin

    mask = torch.full((n, n), float("-inf")).triu(1)
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, W[p + "input_layernorm.weight"])
        q = rope(bitlinear(h, p + "self_attn.q_proj.weight").view(n, nh, hd)).transpose(0, 1)
        k = rope(bitlinear(h, p + "self_attn.k_proj.weight").view(n, nh, hd)).transpose(0, 1)
        v = bitlinear(h, p + "self_attn.v_proj.weight").view(n, nh, hd).transpose(0, 1)
        att = torch.softmax(q @ k.transpose(1, 2) / hd ** 0.5 + mask, dim=-1) @ v
        a = rms(att.transpose(0, 1).reshape(n, H), W[p + "self_attn.inner_attn_ln.weight"])
        x = x + bitlinear(a, p + "self_attn.o_proj.weight")
        h = rms(x, W[p + "post_attention_layernorm.weight"])
        f = torch.nn.functional.silu(bitlinear(h, p + "mlp.gate_proj.weight")) \
            * bitlinear(h, p + "mlp.up_proj.weight")
        f = rms(f, W[p + "mlp.ffn_layernorm.weight"])
        x = x + bitlinear(f, p + "mlp.down_proj.weight")
    return rms(x, W["model.norm.weight"]) @ W["lm_head.weight"].T


def greedy_continuation(last_logits, ids):
    """N_GREEDY greedy tokens after ids (full recompute per step) and each step's top-2 margin."""
    greedy, margins, seq = [], [], list(ids)
    for _ in range(N_GREEDY):
        top = last_logits(seq).topk(2)
        greedy.append(int(top.indices[0]))
        margins.append(float(top.values[0] - top.values[1]))
        seq.append(greedy[-1])
    return greedy, margins


def write_fixture(out_dir, hf_dir, c, name, ids, logits, greedy):
    """Converts the checkpoint and writes model.gguf, tokens, logits and greedy; returns the GGUF path."""
    os.makedirs(out_dir, exist_ok=True)
    gguf_path = os.path.join(out_dir, "model.gguf")
    b158_convert.convert(hf_dir, gguf_path, c["type"], "auto", name=f"hf-fixture-{name}")
    with open(os.path.join(out_dir, "tokens"), "w") as f:
        f.write(" ".join(str(i) for i in ids) + "\n")
    logits.astype("<f4").tofile(os.path.join(out_dir, "logits"))
    with open(os.path.join(out_dir, "greedy"), "w") as f:
        f.write(" ".join(str(i) for i in greedy) + "\n")
    return gguf_path


def build_1bitllm(name, c, out_dir, seed):
    from safetensors.torch import save_file

    work = tempfile.mkdtemp(prefix=f"b158-hf-{name}-")
    sp = make_spm_tokenizer(os.path.join(work, "tokenizer"), c["spm_vocab"])
    n_vocab, H, ff = sp.vocab_size(), c["hidden"], c["ff"]
    cfg = {"architectures": ["BitnetForCausalLM"], "model_type": "llama", "vocab_size": n_vocab,
           "hidden_size": H, "intermediate_size": ff, "num_hidden_layers": c["layers"],
           "num_attention_heads": c["heads"], "num_key_value_heads": c["heads"],
           "hidden_act": "silu", "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
           "rope_theta": 10000.0, "tie_word_embeddings": False, "bos_token_id": 1,
           "eos_token_id": 2, "pad_token_id": None, "attention_bias": False,
           "input_bits": 8, "weight_bits": 1, "torch_dtype": "float16"}
    torch.manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(n_vocab, H).half()}
    shapes = {"self_attn.q_proj": (H, H), "self_attn.k_proj": (H, H), "self_attn.v_proj": (H, H),
              "self_attn.o_proj": (H, H), "mlp.gate_proj": (ff, H), "mlp.up_proj": (ff, H),
              "mlp.down_proj": (H, ff)}
    norms = {"input_layernorm": H, "self_attn.inner_attn_ln": H, "post_attention_layernorm": H,
             "mlp.ffn_layernorm": ff}
    for l in range(c["layers"]):
        for m, shp in shapes.items():
            sd[f"model.layers.{l}.{m}.weight"] = (torch.randn(*shp) * 0.05).half()
        for m, d in norms.items():
            sd[f"model.layers.{l}.{m}.weight"] = torch.empty(d).uniform_(0.5, 1.5).half()
    sd["model.norm.weight"] = torch.empty(H).uniform_(0.5, 1.5).half()
    sd["lm_head.weight"] = torch.randn(n_vocab, H).half()
    hf_dir = os.path.join(work, "hf")
    os.makedirs(hf_dir)
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    save_file({k: v.contiguous() for k, v in sd.items()},
              os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(os.path.join(work, "tokenizer.model"), os.path.join(hf_dir, "tokenizer.model"))
    with open(os.path.join(hf_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                   "eos_token": "</s>", "unk_token": "<unk>"}, f)

    ids = ([sp.bos_id()] + sp.encode("ROMEO: But soft, what light"))[:N_TOKENS]
    assert len(ids) >= 8, ids
    with torch.no_grad():
        logits = onebitllm_forward(sd, cfg, ids).numpy()
        greedy, margins = greedy_continuation(lambda seq: onebitllm_forward(sd, cfg, seq)[-1], ids)
    gguf_path = write_fixture(out_dir, hf_dir, c, name, ids, logits, greedy)
    with open(os.path.join(out_dir, "spm_cases"), "w", encoding="utf-8") as f:
        for text in SPM_CASES:
            assert "\n" not in text and "\t" not in text
            f.write(text + "\t" + " ".join(str(i) for i in sp.encode(text)) + "\n")
    ref = engine_forward(gguf_path, ids)
    err = np.abs(ref - logits).max() / np.abs(logits).max()
    ref16 = engine_forward(gguf_path, ids, f16_kv=True)
    err16 = np.abs(ref16 - logits).max() / np.abs(logits).max()
    agree = int((ref.argmax(-1) == logits.argmax(-1)).sum())
    # the engine's greedy continuation (FP16 KV cache) must equal the reference's
    eng = engine_forward(gguf_path, ids + greedy[:-1], f16_kv=True)[len(ids) - 1:].argmax(-1)
    n_same = next((i for i, (a, b) in enumerate(zip(eng, greedy)) if a != b), len(greedy))
    print(f"{name}: NumPy engine math (FP16 KV) greedy {n_same}/{len(greedy)} equal", flush=True)
    print(f"{name}: NumPy engine math vs 1bitLLM forward: nerr {err:.3e} (FP16 KV cache: "
          f"{err16:.3e}), argmax {agree}/{len(ids)}, greedy {greedy}, smallest top-2 margin "
          f"{min(margins):.3f}", flush=True)
    shutil.rmtree(work)
    return err


def build(name, c, out_dir, tok_path, ids, seed, bos=0, eos=0, extra_files=None):
    from safetensors.torch import save_file
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import pack_weights

    torch.manual_seed(seed)
    n_vocab = c.get("vocab", 320)
    cfg = BitNetConfig(vocab_size=n_vocab, hidden_size=c["hidden"], intermediate_size=c["ff"],
                       num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
                       num_key_value_heads=c["kv"], hidden_act=c["act"],
                       max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                       tie_word_embeddings=c["tied"], bos_token_id=bos, eos_token_id=eos)
    model = BitNetForCausalLM(cfg).float().eval()
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("norm.weight") or "layernorm" in k:
            v = torch.empty_like(v).uniform_(0.5, 1.5)
        elif "embed_tokens" in k or "lm_head" in k:
            # F16 in the GGUF: make the values exactly F16 so that storage adds no error
            v = torch.randn_like(v).half().float()
        else:
            v = torch.randn_like(v) * 0.05
        sd[k] = v
    if c["tied"]:
        sd.pop("lm_head.weight", None)
    qc = {"quant_method": "bitnet", "linear_class": c["linear"], "quantization_mode": c["mode"]}
    dt = torch.bfloat16 if c.get("dtype") == "bf16" else torch.float32
    packed = {}
    for k, v in sd.items():
        if "_proj" not in k:
            packed[k] = v.to(dt) if dt != torch.float32 else v
            continue
        if c["mode"] == "online":
            packed[k] = v.to(dt)
            continue
        gamma = v.abs().mean().clamp(min=1e-5)
        w_t = (v / gamma).round().clamp(-1, 1)
        packed[k] = pack_weights(w_t.clone().to(torch.int8))
        ws = (1.0 / gamma) if c["linear"] == "bitlinear" else gamma
        packed[k[:-len("weight")] + "weight_scale"] = ws.reshape(1).to(dt)
    hf_dir = tempfile.mkdtemp(prefix=f"b158-hf-{name}-")
    cfg_d = cfg.to_dict()
    cfg_d["quantization_config"] = qc
    cfg_d["architectures"] = ["BitNetForCausalLM"]
    cfg_d["torch_dtype"] = "bfloat16" if dt == torch.bfloat16 else "float32"
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        json.dump(cfg_d, f, indent=1)
    save_file({k: v.contiguous() for k, v in packed.items()},
              os.path.join(hf_dir, "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(tok_path, os.path.join(hf_dir, "tokenizer.json"))
    for fname, content in (extra_files or {}).items():
        with open(os.path.join(hf_dir, fname), "w", encoding="utf-8") as f:
            json.dump(content, f)

    # transformers' own forward pass on the saved checkpoint, in float32
    hf = BitNetForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = hf(torch.tensor([ids])).logits[0].float().numpy()
        greedy, margins = greedy_continuation(
            lambda seq: hf(torch.tensor([seq])).logits[0, -1].float(), ids)
    gguf_path = write_fixture(out_dir, hf_dir, c, name, ids, logits, greedy)
    ref = engine_forward(gguf_path, ids)
    err = np.abs(ref - logits).max() / np.abs(logits).max()
    ref16 = engine_forward(gguf_path, ids, f16_kv=True)
    err16 = np.abs(ref16 - logits).max() / np.abs(logits).max()
    agree = int((ref.argmax(-1) == logits.argmax(-1)).sum())
    print(f"{name}: NumPy engine math vs transformers: nerr {err:.3e} (FP16 KV cache: {err16:.3e}), argmax {agree}/{len(ids)}, "
          f"greedy {greedy}, smallest top-2 margin {min(margins):.3f}", flush=True)
    shutil.rmtree(hf_dir)
    return err


def build_llama3tok(name, c, out_dir):
    """The LLaMA-3-tokenizer fixture: build() with make_llama3_tokenizer's tokenizer.json, then
    bpe_cases (lines "text<TAB>ids", text with \\ \\n \\r \\t escaped, the tokenizers library's
    ids without BOS). Checks that the cases tell the pre-tokenizers apart: the same vocabulary
    with GPT-2's pre-tokenizer and without ignore_merges (what b158-cl did with the "gpt2" that
    b158_convert.py used to write) must give other ids on most of them."""
    from tokenizers import Tokenizer, pre_tokenizers

    work = tempfile.mkdtemp(prefix=f"b158-hf-{name}-")
    tok_path = os.path.join(work, "tokenizer.json")
    tok, whole = make_llama3_tokenizer(tok_path, c["vocab"], c["whole_words"])
    with open(tok_path, encoding="utf-8") as f:
        tj = json.load(f)
    assert tj["model"]["ignore_merges"] is True and tj["pre_tokenizer"]["type"] == "Sequence"
    tj["model"]["ignore_merges"] = False
    no_im = Tokenizer.from_str(json.dumps(tj))
    gpt2 = Tokenizer.from_str(json.dumps(tj))  # and no ignore_merges: b158-cl's "gpt2"
    gpt2.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)

    def enc(t, text):
        return t.encode(text, add_special_tokens=False).ids

    cases = [(text, enc(tok, text)) for text in BPE_CASES]
    by_pre = sum(enc(gpt2, t) != want for t, want in cases)
    by_im = sum(enc(no_im, t) != want for t, want in cases)
    assert by_pre >= len(cases) // 2 and by_im >= 3, (by_pre, by_im)
    for text, want in cases:  # the ids decode back to the text (byte-level BPE is lossless)
        assert tok.decode(want) == text, text
    ids = tok.encode("ROMEO: But soft, what light through yonder window breaks?\n\n").ids
    ids = ids[:N_TOKENS]
    bos, eos = tok.token_to_id("<|begin_of_text|>"), tok.token_to_id("<|end_of_text|>")
    assert ids[0] == bos and len(ids) == N_TOKENS, ids
    tcfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>",
            "model_max_length": 64, "tokenizer_class": "PreTrainedTokenizerFast"}
    err = build(name, c, out_dir, tok_path, ids, seed=c["seed"], bos=bos, eos=eos,
                extra_files={"tokenizer_config.json": tcfg})
    with open(os.path.join(out_dir, "bpe_cases"), "w", encoding="utf-8") as f:
        for text, want in cases:
            f.write(escape_case(text) + "\t" + " ".join(str(i) for i in want) + "\n")
    print(f"{name}: {len(cases)} bpe_cases, {by_pre} with other ids under GPT-2's pre-tokenizer, "
          f"{by_im} without ignore_merges; whole-word tokens {whole}", flush=True)
    shutil.rmtree(work)
    return err


# ---------------------------------------------------------------------------------------------
# b158-cl's forward pass in NumPy, from the GGUF (REFERENCE.md s.1), for cross-checks


def read_gguf(path):
    """(kv dict, {name: (type id, ne list, raw uint8 array)}): a minimal GGUF v3 reader that,
    unlike gguf.GGUFReader, also passes type 36 (I2_S) through."""
    import struct

    buf = np.memmap(path, dtype=np.uint8, mode="r")
    pos = 0

    def rd(fmt):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def rstr():
        nonlocal pos
        n = rd("Q")
        v = bytes(buf[pos:pos + n]).decode("utf-8")
        pos += n
        return v

    fmts = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}

    def rval(t):
        if t == 8:
            return rstr()
        if t == 9:
            et, n = rd("I"), rd("Q")
            return [rval(et) for _ in range(n)]
        return rd(fmts[t])

    assert bytes(buf[:4]) == b"GGUF"
    pos = 4
    rd("I")
    n_t, n_kv = rd("Q"), rd("Q")
    kv = {}
    for _ in range(n_kv):
        k = rstr()
        kv[k] = rval(rd("I"))
    infos = []
    for _ in range(n_t):
        name = rstr()
        nd = rd("I")
        ne = [rd("Q") for _ in range(nd)]
        infos.append((name, ne, rd("I"), rd("Q")))
    align = kv.get("general.alignment", 32)
    base = (pos + align - 1) // align * align
    ends = sorted(o for *_, o in infos) + [len(buf) - base]
    tensors = {}
    for name, ne, t, off in infos:
        nxt = min(e for e in ends if e > off)
        tensors[name] = (t, ne, np.asarray(buf[base + off:base + nxt]))
    return kv, tensors


def engine_forward(path, ids, trace=None, f16_kv=False):
    import gguf

    kvs, tensors = read_gguf(path)
    arch = kvs["general.architecture"]
    kv = lambda k: kvs[f"{arch}.{k}"]  # noqa: E731
    n_embd, n_head, n_kv = kv("embedding_length"), kv("attention.head_count"), kv("attention.head_count_kv")
    eps, theta, n_layer = kv("attention.layer_norm_rms_epsilon"), kv("rope.freq_base"), kv("block_count")
    relu2 = arch == "bitnet-25" or kvs.get("bitnet.hidden_activation") == "relu2"
    T = {}
    for name, (tt, ne, raw) in tensors.items():
        if tt == 36:
            n = ne[0] * ne[1]
            q = raw[:n // 4].reshape(-1, 32)
            c = np.stack([(q >> 6) & 3, (q >> 4) & 3, (q >> 2) & 3, q & 3], axis=1).reshape(-1)
            d = raw[n // 4:n // 4 + 4].copy().view("<f4")[0]
            T[name] = ((c.astype(np.float32) - 1).reshape(ne[1], ne[0]), np.float32(d))
            continue
        qt = gguf.GGMLQuantizationType(tt)
        bs, ts = gguf.GGML_QUANT_SIZES[qt]
        nb = int(np.prod(ne)) // bs * ts
        a = gguf.quants.dequantize(raw[:nb].reshape(ne[1] if len(ne) > 1 else 1, -1), qt)
        a = a.astype(np.float32).reshape(ne[::-1])
        if name.startswith("blk.") and not name.endswith("norm.weight"):
            d = np.float32(np.abs(a).max())
            T[name] = (np.round(a / d) if d > 0 else a, d)
        else:
            T[name] = a
    hd = n_embd // n_head
    if f"{arch}.attention.key_length" in kvs:
        hd = kv("attention.key_length")

    def rms(x, w):
        x = x.astype(np.float32)
        return (x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(eps))) * w

    def bitlinear(x, name):
        w_t, d = T[name]
        s = np.float32(127) / np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-5))
        q = np.clip(np.rint(x * s), -128, 127)
        return (q.astype(np.float64) @ w_t.T.astype(np.float64)).astype(np.float32) * d / s

    n = len(ids)
    half = hd // 2
    inv = 1.0 / (theta ** (np.arange(half, dtype=np.float64) * 2 / hd))
    ang = np.arange(n)[:, None] * inv[None, :]
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)

    def rope(x):  # (n, heads, hd) NEOX: i with i + hd/2
        x1, x2 = x[..., :half], x[..., half:]
        c, s = cos[:, None, :], sin[:, None, :]
        return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)

    x = T["token_embd.weight"][ids]
    for l in range(n_layer):
        p = f"blk.{l}."
        h = rms(x, T[p + "attn_norm.weight"])
        q = rope(bitlinear(h, p + "attn_q.weight").reshape(n, n_head, hd))
        k = rope(bitlinear(h, p + "attn_k.weight").reshape(n, n_kv, hd))
        v = bitlinear(h, p + "attn_v.weight").reshape(n, n_kv, hd)
        if f16_kv:  # b158-cl's KV cache stores K (after RoPE) and V as FP16
            k, v = k.astype(np.float16).astype(np.float32), v.astype(np.float16).astype(np.float32)
        g = n_head // n_kv
        att = np.zeros((n, n_head, hd), dtype=np.float32)
        for hh in range(n_head):
            sc = q[:, hh] @ k[:, hh // g].T / np.sqrt(hd)
            sc = np.where(np.tril(np.ones((n, n), bool)), sc, -np.inf)
            sc = np.exp(sc - sc.max(-1, keepdims=True))
            att[:, hh] = (sc / sc.sum(-1, keepdims=True)) @ v[:, hh // g]
        a = rms(att.reshape(n, -1), T[p + "attn_sub_norm.weight"])
        x = x + bitlinear(a, p + "attn_output.weight")
        h = rms(x, T[p + "ffn_norm.weight"])
        gt = bitlinear(h, p + "ffn_gate.weight")
        gt = np.maximum(gt, 0) ** 2 if relu2 else gt / (1 + np.exp(-gt))
        f = rms(gt * bitlinear(h, p + "ffn_up.weight"), T[p + "ffn_sub_norm.weight"])
        x = x + bitlinear(f, p + "ffn_down.weight")
        if trace is not None:
            trace.append(x.copy())
    out = T.get("output.weight", T["token_embd.weight"])
    return rms(x, T["output_norm.weight"]) @ out.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "hf"))
    ap.add_argument("--only", help="comma-separated configuration names")
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = tempfile.mkdtemp(prefix="b158-hf-tok-")
    tok_path = os.path.join(work, "tokenizer.json")
    tok, text = make_tokenizer(tok_path, 320)
    ids = tok.encode("ROMEO: But soft, what light").ids[:N_TOKENS]
    assert len(ids) >= 8, ids
    for i, (name, c) in enumerate(CONFIGS.items()):
        if args.only and name not in args.only.split(","):
            continue
        build(name, c, os.path.join(args.out, name), tok_path, ids, seed=1000 + i)
    shutil.rmtree(work)
    for i, (name, c) in enumerate(ONEBITLLM.items()):
        if args.only and name not in args.only.split(","):
            continue
        build_1bitllm(name, c, os.path.join(args.out, name), seed=c["seed"])
    for name, c in LLAMA3TOK.items():
        if args.only and name not in args.only.split(","):
            continue
        build_llama3tok(name, c, os.path.join(args.out, name))


if __name__ == "__main__":
    main()
