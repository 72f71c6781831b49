"""Exports a trained BitNet b1.58 checkpoint to GGUF (arch bitnet-25, TQ2_0) plus expected outputs.

Writes <gguf> and <gguf without .gguf>.expected.json, then reads the file back to check every
tensor, and computes the reference numbers from the weights as read back from the file (F16
embedding, fp16 TQ2_0 scales), so the C engine can reproduce them.

    python tools/train/export_gguf.py --ckpt /tmp/b158-train/best.pt \
        --tokenizer /tmp/b158-train/tokenizer.json --out models/shakespeare-bitnet.gguf
"""

import argparse
import json
import math
import os
import sys

import gguf
import numpy as np
import regex
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitnet_model import RMS_EPS, BitNet, Config, weight_quant  # noqa: E402
from train import DEFAULT_DATA, EOT, split_text  # noqa: E402

ARCH = "bitnet-25"
QK = 256  # TQ2_0 block size
GPT2_PAT = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
SLICE_CHARS = 8192
PROMPT = "ROMEO:"
N_GREEDY = 32


# ---------------------------------------------------------------------------------------------
# GPT-2 byte-level BPE, written from the GGUF vocabulary only (what the C engine will see)


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Gpt2Bpe:
    def __init__(self, tokens, merges):
        self.ids = {t: i for i, t in enumerate(tokens)}
        self.tokens = tokens
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
        self.b2u = bytes_to_unicode()
        self.u2b = {v: k for k, v in self.b2u.items()}
        self.cache = {}

    def _bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        parts = list(word)
        while len(parts) > 1:
            best, best_i = None, -1
            for i in range(len(parts) - 1):
                r = self.ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best is None or r < best):
                    best, best_i = r, i
            if best is None:
                break
            parts[best_i: best_i + 2] = [parts[best_i] + parts[best_i + 1]]
        self.cache[word] = parts
        return parts

    def encode(self, text):
        out = []
        for pre in GPT2_PAT.findall(text):
            word = "".join(self.b2u[b] for b in pre.encode("utf-8"))
            out.extend(self.ids[p] for p in self._bpe(word))
        return out

    def decode(self, ids):
        return bytes(self.u2b[c] for i in ids for c in self.tokens[i]).decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------
# TQ2_0 packing


def pack_tq2_0(w_t, d):
    """w_t: (n_out, n_in) int codes in {-1,0,1}; d: fp16 scale for every block. -> uint8 rows."""
    n_out, n_in = w_t.shape
    assert n_in % QK == 0, f"row length {n_in} is not a multiple of {QK}"
    c = (w_t.astype(np.int8) + 1).astype(np.uint8).reshape(-1, 2, 4, 32)  # (blk, g, l, m)
    qs = np.zeros((c.shape[0], 2, 32), dtype=np.uint8)
    for lane in range(4):
        qs |= c[:, :, lane, :] << np.uint8(2 * lane)
    dd = np.full((c.shape[0], 1), d, dtype=np.float16).view(np.uint8)
    blocks = np.concatenate([qs.reshape(-1, 64), dd], axis=1)  # 66 bytes each
    return blocks.reshape(n_out, (n_in // QK) * 66)


# ---------------------------------------------------------------------------------------------
# export


def load_vocab(tok_path):
    with open(tok_path, "r", encoding="utf-8") as f:
        tj = json.load(f)
    model = tj["model"]
    assert model["type"] == "BPE"
    vocab = dict(model["vocab"])
    for at in tj.get("added_tokens", []):
        vocab[at["content"]] = at["id"]
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        tokens[i] = t
    assert all(t is not None for t in tokens)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def write_gguf(path, cfg, sd, tokens, merges, name):
    eot = tokens.index(EOT)
    w = gguf.GGUFWriter(path, ARCH)
    w.add_name(name)
    w.add_custom_alignment(32)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_TQ2_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(cfg.n_ctx)
    w.add_embedding_length(cfg.n_embd)
    w.add_block_count(cfg.n_layer)
    w.add_feed_forward_length(cfg.n_ff)
    w.add_head_count(cfg.n_head)
    w.add_head_count_kv(cfg.n_head_kv)
    w.add_layer_norm_rms_eps(RMS_EPS)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t == EOT else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_add_bos_token(False)

    expect = {}  # name -> float32 array the file must dequantize to (numpy row-major shape)
    emb = sd["token_embd.weight"].float().numpy().astype(np.float16)
    w.add_tensor("token_embd.weight", emb)
    expect["token_embd.weight"] = emb.astype(np.float32)
    on = sd["output_norm.weight"].float().numpy().astype(np.float32)
    w.add_tensor("output_norm.weight", on)
    expect["output_norm.weight"] = on
    for i in range(cfg.n_layer):
        for t in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_sub_norm",
                  "ffn_norm", "ffn_gate", "ffn_up", "ffn_down", "ffn_sub_norm"):
            src = sd[f"blocks.{i}.{t}.weight"].float()
            dst = f"blk.{i}.{t}.weight"
            if t.endswith("norm"):
                a = src.numpy().astype(np.float32)
                w.add_tensor(dst, a)
                expect[dst] = a
            else:
                w_t, gamma = weight_quant(src)
                w_t = w_t.numpy().astype(np.int8)
                d = np.float16(gamma.item())
                w.add_tensor(dst, pack_tq2_0(w_t, d), raw_dtype=gguf.GGMLQuantizationType.TQ2_0)
                expect[dst] = w_t.astype(np.float32) * np.float32(d)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return expect


def field_value(r, key):
    f = r.fields[key]
    return f.contents()


def verify_gguf(path, cfg, expect, tokens, merges):
    """Reads the file back and checks metadata and that every tensor decodes to `expect`."""
    r = gguf.GGUFReader(path)
    kv = {
        "general.architecture": ARCH,
        f"{ARCH}.context_length": cfg.n_ctx,
        f"{ARCH}.embedding_length": cfg.n_embd,
        f"{ARCH}.block_count": cfg.n_layer,
        f"{ARCH}.feed_forward_length": cfg.n_ff,
        f"{ARCH}.attention.head_count": cfg.n_head,
        f"{ARCH}.attention.head_count_kv": cfg.n_head_kv,
        f"{ARCH}.rope.dimension_count": cfg.head_dim,
        f"{ARCH}.vocab_size": cfg.vocab_size,
        "general.alignment": 32,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt2",
        "tokenizer.ggml.add_bos_token": False,
    }
    for k, v in kv.items():
        got = field_value(r, k)
        assert got == v, f"{k}: {got!r} != {v!r}"
    assert abs(field_value(r, f"{ARCH}.attention.layer_norm_rms_epsilon") - RMS_EPS) < 1e-12
    assert field_value(r, f"{ARCH}.rope.freq_base") == cfg.rope_theta
    assert field_value(r, "tokenizer.ggml.tokens") == tokens
    assert field_value(r, "tokenizer.ggml.merges") == merges
    assert len(r.tensors) == len(expect)
    got = {}
    for t in r.tensors:
        ref = expect[t.name]
        ne = [int(x) for x in t.shape]  # GGUF ne order: ne[0] is the contiguous dimension
        assert ne == list(ref.shape[::-1]), f"{t.name}: ne {ne} vs {ref.shape}"
        if t.name.endswith("norm.weight"):
            assert t.tensor_type == gguf.GGMLQuantizationType.F32
        elif t.name == "token_embd.weight":
            assert t.tensor_type == gguf.GGMLQuantizationType.F16
        else:
            assert t.tensor_type == gguf.GGMLQuantizationType.TQ2_0, t.tensor_type
            assert t.data_offset % 32 == 0
        deq = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ref.shape).astype(np.float32)
        assert np.array_equal(deq, ref), f"{t.name}: dequantized tensor differs"
        got[t.name] = (deq, t.tensor_type)
    print(f"verified {len(r.tensors)} tensors and metadata in {path}", flush=True)
    return got


def reference_model(cfg, got):
    """BitNet with exactly the file's weights and the engine's integer BitLinear."""
    model = BitNet(cfg)
    sd = {"token_embd.weight": got["token_embd.weight"][0],
          "output_norm.weight": got["output_norm.weight"][0]}
    for i in range(cfg.n_layer):
        for t in ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm"):
            sd[f"blocks.{i}.{t}.weight"] = got[f"blk.{i}.{t}.weight"][0]
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=False)
    for i, t, lin in model.bitlinears():
        deq = got[f"blk.{i}.{t}.weight"][0]
        scale = np.abs(deq).max()  # every block holds the same d
        w_t = np.round(deq / scale) if scale > 0 else deq
        assert np.array_equal(w_t * scale, deq)
        lin.weight.data.copy_(torch.from_numpy(deq))
        lin.freeze(torch.from_numpy(w_t.astype(np.float32)), torch.tensor(scale, dtype=torch.float32))
    model.eval()
    return model


@torch.no_grad()
def chunked_ppl(model, tokens, n_ctx):
    """llama-perplexity style: consecutive n_ctx chunks, no BOS; two scorings per chunk."""
    n_chunk = len(tokens) // n_ctx
    first = n_ctx // 2
    nll_a = nll_b = nll_all = 0.0
    per_chunk = []
    for c in range(n_chunk):
        x = torch.tensor(tokens[c * n_ctx:(c + 1) * n_ctx]).view(1, -1)
        logp = F.log_softmax(model(x)[0].double(), dim=-1)
        tgt = x[0, 1:]
        lp = logp[:-1].gather(1, tgt[:, None])[:, 0]  # lp[j] = log p(token j+1 | tokens 0..j)
        a = -lp[first:].sum().item()  # llama.cpp: tokens first+1 .. n_ctx-1
        b = -lp[first - 1:].sum().item()  # tokens first .. n_ctx-1
        nll_a += a
        nll_b += b
        nll_all += -lp.sum().item()
        per_chunk.append(a / (n_ctx - 1 - first))
    n_a = n_chunk * (n_ctx - 1 - first)
    n_b = n_chunk * (n_ctx - first)
    return {
        "n_tokens": len(tokens),
        "n_ctx": n_ctx,
        "n_chunk": n_chunk,
        "ppl": math.exp(nll_a / n_a),
        "n_scored": n_a,
        "ppl_second_half_incl_mid": math.exp(nll_b / n_b),
        "n_scored_second_half_incl_mid": n_b,
        "ppl_all_positions": math.exp(nll_all / (n_chunk * (n_ctx - 1))),
        "chunk_mean_nll": per_chunk,
    }


@torch.no_grad()
def greedy(model, ids, n):
    ids = list(ids)
    out, margins, top5 = [], [], None
    for step in range(n):
        logits = model(torch.tensor(ids).view(1, -1))[0, -1]
        v, i = logits.topk(5)
        if step == 0:
            top5 = [[int(a), float(b)] for a, b in zip(i, v)]
        out.append(int(i[0]))
        margins.append(float(v[0] - v[1]))
        ids.append(int(i[0]))
    return out, margins, top5


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default="models/shakespeare-bitnet.gguf")
    ap.add_argument("--name", default="shakespeare-bitnet-b1.58")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    ck = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    cfg = Config(**ck["config"])
    tokens, merges = load_vocab(args.tokenizer)
    assert len(tokens) == cfg.vocab_size

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    expect = write_gguf(args.out, cfg, ck["model"], tokens, merges, args.name)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {size} bytes", flush=True)
    assert size < 10 * 1024 * 1024
    got = verify_gguf(args.out, cfg, expect, tokens, merges)

    # the GGUF-only tokenizer must agree with the HF one it was trained as
    from tokenizers import Tokenizer
    hf = Tokenizer.from_file(args.tokenizer)
    bpe = Gpt2Bpe(tokens, merges)
    train_text, val_text = split_text(args.data)
    val_ids = bpe.encode(val_text)
    assert val_ids == hf.encode(val_text).ids, "GPT-2 BPE reference differs from HF tokenizers"
    assert bpe.decode(val_ids) == val_text
    slice_text = val_text[:SLICE_CHARS]
    slice_ids = bpe.encode(slice_text)
    prompt_ids = bpe.encode(PROMPT)
    assert slice_ids == hf.encode(slice_text).ids and prompt_ids == hf.encode(PROMPT).ids

    model = reference_model(cfg, got)
    n_ctx = cfg.n_ctx
    full = chunked_ppl(model, val_ids, n_ctx)
    print(f"val full: ppl {full['ppl']:.4f} over {full['n_chunk']} chunks", flush=True)
    sl = chunked_ppl(model, slice_ids, n_ctx)
    print(f"val slice: ppl {sl['ppl']:.4f} over {sl['n_chunk']} chunks", flush=True)
    gen, margins, top5 = greedy(model, prompt_ids, N_GREEDY)
    text = bpe.decode(gen)
    print(f"greedy {PROMPT!r} -> {gen}\n{PROMPT}{text}", flush=True)

    with open(args.data, "rb") as f:
        n_bytes = len(f.read())
    n_train = len(train_text)
    expected = {
        "model": os.path.basename(args.out),
        "model_bytes": size,
        "checkpoint_step": ck.get("step"),
        "forward": ("float32 PyTorch with the file's weights: F16 embedding (tied LM head), "
                    "F32 norms, BitLinear y = (sum_k W_t[n,k] * q[k]) * d / s with q int8 per-token "
                    "absmax (s = 127 / max(max|x|, 1e-5), round half to even, clamp -128..127) and "
                    "d the tensor's fp16 TQ2_0 scale"),
        "scoring": ("llama-perplexity: tokenize the text without BOS (add_bos_token false), cut into "
                    "n_chunk = floor(n_tokens / n_ctx) consecutive chunks of n_ctx tokens (the tail is "
                    "dropped), run each chunk from an empty KV cache; 'ppl' = exp(mean NLL) of tokens "
                    "n_ctx/2+1 .. n_ctx-1 of each chunk, each predicted from all previous tokens of the "
                    "chunk (logits at positions n_ctx/2 .. n_ctx-2; n_ctx/2 - 1 tokens per chunk, as "
                    "llama.cpp's perplexity does). 'ppl_second_half_incl_mid' also scores token n_ctx/2 "
                    "(n_ctx/2 per chunk); 'ppl_all_positions' scores tokens 1 .. n_ctx-1."),
        "data": {
            "file": "tests/data/text/tinyshakespeare.txt",
            "file_bytes": n_bytes,
            "encoding": "ASCII (characters == bytes)",
            "train": f"characters [0, {n_train})",
            "validation": f"characters [{n_train}, {n_bytes})",
        },
        "val_full": {"text": f"characters [{n_train}, {n_bytes}) (the whole validation split)", **full},
        "val_slice": {"text": f"characters [{n_train}, {n_train + SLICE_CHARS}) (first {SLICE_CHARS} "
                              f"validation characters, tokenized on their own)",
                      **sl, "token_ids": slice_ids},
        "greedy": {
            "prompt": PROMPT,
            "prompt_ids": prompt_ids,
            "bos": False,
            "n_predict": N_GREEDY,
            "ids": gen,
            "text": text,
            "top1_top2_logit_margin": margins,
            "first_step_top5": top5,
        },
        "tokenizer": {"model": "gpt2", "pre": "gpt2", "eot_id": tokens.index(EOT),
                      "n_merges": len(merges)},
    }
    exp_path = os.path.splitext(args.out)[0] + ".expected.json"
    with open(exp_path, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {exp_path}", flush=True)


if __name__ == "__main__":
    main()
