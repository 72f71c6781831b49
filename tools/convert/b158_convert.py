"""b158-convert: a Hugging Face BitNet b1.58 checkpoint directory to a b158-cl GGUF file.

    python tools/convert/b158_convert.py HF_DIR -o OUT.gguf [--type tq2_0|i2_s|tq1_0]
                                         [--arch auto|bitnet-25|bitnet] [--pre gpt2|llama-bpe]

Reads config.json, the safetensors (one file or a sharded index) tensor by tensor through
safe_open, and tokenizer.json (byte-level BPE, written as llama.cpp's "gpt2" vocabulary, with
tokenizer.ggml.pre "gpt-2" or "llama-bpe" from the parsed pre_tokenizer; any other is an error
unless --pre names one) or, without a byte-level tokenizer.json, tokenizer.model
(SentencePiece, read with the sentencepiece package and written as llama.cpp's "llama"
vocabulary: pieces, scores, piece types, bos / eos / unk / pad ids, add_bos_token /
add_eos_token from tokenizer_config.json (default true / false), add_space_prefix from the
model's normalizer spec). The output is written tensor by tensor too, so memory stays near the
largest single tensor. Input is checked before anything is sized from it (config.json types and
ranges, num_hidden_layers against the model.layers.N tensors, index file names inside the
checkpoint folder); bad input is one "b158-convert: error:" line and exit status 1.

Layouts:
- BitNetForCausalLM (transformers, model_type "bitnet"): arch bitnet-25 when hidden_act is
  relu2, bitnet (with bitnet.hidden_activation) otherwise. Its quantization_config says how the
  BitLinear weights are stored; what transformers' integrations/bitnet.py does decides the
  conversion:
    linear_class bitlinear (offline only): uint8 weight [out/4, in], byte [r][c] bits 2i..2i+1
      hold row r + i*out/4 as code w+1; y = (W_t . q) / (s * weight_scale): scale 1/weight_scale.
    linear_class autobitlinear, offline: the same packed weight (or an unpacked float ternary
      weight), y = (W_t . x_q) * weight_scale: scale weight_scale.
    autobitlinear, online: latent float weights, ternarized at every forward as
      scale = 1 / max(mean|W|, 1e-5), W_t = clamp(round(W * scale), -1, 1), weight W_t / scale.
- 1bitLLM's llama-style BitnetForCausalLM (bitnet_b1_58-large/3B): latent fp16 weights,
  ternarized like the online mode above; sub-norms self_attn.inner_attn_ln and
  mlp.ffn_layernorm. Written as arch bitnet.
The LM head (lm_head, never quantized in transformers) and the embedding are F16; norms F32.
"""

import argparse
import json
import math
import os
import re
import sys

import numpy as np

QK = 256  # TQ1_0 / TQ2_0 block
TYPE_IDS = {"tq1_0": 34, "tq2_0": 35, "i2_s": 36}

# The pre-tokenizer regexes b158-cl implements, as tokenizer.json holds them once parsed (single
# backslashes), by the tokenizer.ggml.pre name llama.cpp gives them. GPT-2's is also what a
# ByteLevel pre-tokenizer with use_regex applies. LLaMA-3's comes in two spellings: Meta's
# tokenizer.json (case-insensitive contractions) and llama.cpp's (the cases spelled out).
PRE_PATTERNS = {
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+": "gpt2",
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "llama-bpe",
}
PRE_NAMES = ("gpt2", "llama-bpe")
# tokenizer.ggml.pre as llama.cpp spells it (llama-vocab.cpp): GPT-2's is "gpt-2"
GGUF_PRE = {"gpt2": "gpt-2"}


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# reading the checkpoint


def checkpoint_file(hf_dir, name, what=None):
    """The path of the file `name` of the checkpoint folder, or a ConvertError when the name is
    absolute, climbs out with '..', or resolves (through symlinks) outside the folder. The one
    outside place allowed is the Hugging Face cache's blob store: a snapshot folder
    .../snapshots/REV/ holds symlinks to ../../blobs/HASH. None when no such file exists."""
    what = what or name
    if not isinstance(name, str) or not name or "\0" in name:
        raise ConvertError(f"{hf_dir}: {what}: {name!r} is not a file name")
    norm = os.path.normpath(name)
    if os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep):
        raise ConvertError(f"{hf_dir}: {what} names '{name}', outside the checkpoint folder")
    path = os.path.join(hf_dir, norm)
    if not os.path.lexists(path):
        return None
    real = os.path.realpath(path)
    roots = [os.path.realpath(hf_dir)]
    snapshots = os.path.dirname(os.path.abspath(hf_dir))
    if os.path.basename(snapshots) == "snapshots":
        roots.append(os.path.realpath(os.path.join(snapshots, "..", "blobs")))
    if not any(real.startswith(r + os.sep) for r in roots):
        raise ConvertError(f"{path} resolves to {real}, outside the checkpoint folder (copy the "
                           "file into the folder instead of linking it)")
    if not os.path.exists(real):
        return None
    if not os.path.isfile(real):
        raise ConvertError(f"{path} is not a regular file")
    return path


def read_json(hf_dir, name, kind=dict):
    """A JSON file of the checkpoint folder (None when absent); its top level must be a kind."""
    path = checkpoint_file(hf_dir, name)
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            v = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConvertError(f"{path}: not a JSON file ({e})") from None
    if not isinstance(v, kind):
        raise ConvertError(f"{path}: the top level is a JSON {type(v).__name__}, expected an "
                           f"{'object' if kind is dict else kind.__name__}")
    return v


LAYER_TENSOR = re.compile(r"model\.layers\.(\d+)\.")


class Checkpoint:
    """Tensors of a safetensors checkpoint (single file or sharded), opened lazily. Only the
    safetensors headers are read here: every name the index lists must be in its shard's header."""

    def __init__(self, hf_dir):
        from safetensors import safe_open

        self.dir = hf_dir
        self.handles = {}
        self._open = safe_open
        index = read_json(hf_dir, "model.safetensors.index.json")
        if index is not None:
            where = index.get("weight_map")
            if not isinstance(where, dict) or not where:
                raise ConvertError(f"{hf_dir}/model.safetensors.index.json: no weight_map object")
            for k, shard in where.items():
                if not isinstance(shard, str):
                    raise ConvertError(f"{hf_dir}/model.safetensors.index.json: weight_map['{k}'] "
                                       "is not a file name")
            self.where = dict(where)
            for shard in sorted(set(self.where.values())):
                checkpoint_file(hf_dir, shard, "model.safetensors.index.json weight_map")
            for shard in sorted(set(self.where.values())):
                in_header = set(self._handle(shard).keys())
                missing = [k for k, v in self.where.items() if v == shard and k not in in_header]
                if missing:
                    raise ConvertError(f"{os.path.join(hf_dir, shard)} lacks {len(missing)} "
                                       "tensors that model.safetensors.index.json puts there, "
                                       f"e.g. {missing[0]}")
            return
        single = "model.safetensors"
        if checkpoint_file(hf_dir, single) is None:
            files = sorted(f for f in os.listdir(hf_dir) if f.endswith(".safetensors"))
            if len(files) != 1:
                bins = [f for f in os.listdir(hf_dir) if f.endswith(".bin")]
                hint = " (pytorch .bin checkpoints are not read: re-save with safe_serialization)" if bins else ""
                raise ConvertError(f"{hf_dir}: no model.safetensors or model.safetensors.index.json{hint}")
            single = files[0]
        self.where = {k: single for k in self._handle(single).keys()}

    def _handle(self, fname):
        if fname not in self.handles:
            path = checkpoint_file(self.dir, fname, "model.safetensors.index.json weight_map")
            if path is None:
                raise ConvertError(f"{os.path.join(self.dir, fname)}: no such file (named by "
                                   "model.safetensors.index.json)")
            try:
                self.handles[fname] = self._open(path, framework="pt")
            except Exception as e:  # safetensors raises its own error type for a bad header
                raise ConvertError(f"{path}: not a readable safetensors file ({e})") from None
        return self.handles[fname]

    def names(self):
        return list(self.where)

    def has(self, name):
        return name in self.where

    def layers(self):
        """The N of every model.layers.N.* tensor, as a set."""
        return {int(m.group(1)) for m in map(LAYER_TENSOR.match, self.where) if m}

    def get(self, name):
        if name not in self.where:
            raise ConvertError(f"tensor {name} missing from the checkpoint")
        try:
            return self._handle(self.where[name]).get_tensor(name)
        except Exception as e:  # a truncated file or an unknown dtype
            raise ConvertError(f"{name} in {self.where[name]}: not readable ({e})") from None

    def shape(self, name):
        return list(self._handle(self.where[name]).get_slice(name).get_shape())


# ---------------------------------------------------------------------------------------------
# ternary weights as transformers computes them


def unpack_hf(packed, n_out):
    """transformers' unpack_weights: rows [i*R, (i+1)*R) come from bits 2i..2i+1, code w+1."""
    import torch

    r = packed.shape[0]
    if 4 * r != n_out:
        raise ConvertError(f"packed weight has {r} rows: transformers' BitLinear needs out_features "
                           f"({n_out}) = 4 * rows")
    p = packed.to(torch.uint8)
    out = torch.empty((4 * r, packed.shape[1]), dtype=torch.int8)
    for i in range(4):
        out[i * r:(i + 1) * r] = ((p >> (2 * i)) & 3).to(torch.int8) - 1
    if bool((out > 1).any()):
        raise ConvertError("packed weight holds code 3 (not ternary)")
    return out


def ternarize_online(w):
    """AutoBitLinear online / 1bitLLM weight_quant: (W_t int8, dequantization scale)."""
    import torch

    w = w.float()
    scale = 1.0 / w.abs().mean().clamp_(min=1e-5)
    w_t = (w * scale).round().clamp(-1, 1).to(torch.int8)
    # transformers uses W_t / scale: the scale that multiplies W_t is 1/scale as float32
    return w_t, float(np.float32(1.0) / np.float32(scale.item()))


def exact_ternary(w, name):
    """A float weight that must already be {-a, 0, +a}: (W_t, a)."""
    import torch

    w = w.float()
    a = w.abs().max().item()
    if a == 0:
        return torch.zeros(w.shape, dtype=torch.int8), 0.0
    w_t = torch.round(w / a)
    if not torch.equal(w_t * a, w):
        raise ConvertError(f"{name}: offline float weight is not ternary ({{-a, 0, +a}})")
    return w_t.to(torch.int8), 1.0


# ---------------------------------------------------------------------------------------------
# GGUF encodings of W_t (int8 {-1,0,1}, shape (n_out, k)) with one scale per tensor


def encode_tq2_0(w_t, d):
    n_out, k = w_t.shape
    c = (w_t.astype(np.int16) + 1).astype(np.uint8).reshape(-1, 2, 4, 32)  # (blk, g, l, m)
    qs = np.zeros((c.shape[0], 2, 32), dtype=np.uint8)
    for lane in range(4):
        qs |= c[:, :, lane, :] << np.uint8(2 * lane)
    dd = np.full((c.shape[0], 1), d, dtype=np.float16).view(np.uint8)
    return np.concatenate([qs.reshape(-1, 64), dd], axis=1).reshape(n_out, (k // QK) * 66)


def encode_tq1_0(w_t, d):
    import gguf

    n_out, k = w_t.shape
    blocks = gguf.quants.quantize(w_t.astype(np.float32), gguf.GGMLQuantizationType.TQ1_0)
    blocks = blocks.reshape(-1, 54)
    blocks[:, 52:54] = np.full((blocks.shape[0], 1), d, dtype=np.float16).view(np.uint8)
    return blocks.reshape(n_out, (k // QK) * 54)


def encode_i2_s(w_t, d):
    """bitnet.cpp's x86 I2_S: 128-element blocks of the flattened tensor, byte i*32+p holds
    elements p, p+32, p+64, p+96 in bits 7..6, 5..4, 3..2, 1..0; f32 scale at n/4; n/4+32 bytes."""
    c = (w_t.reshape(-1).astype(np.int16) + 1).astype(np.uint8).reshape(-1, 4, 32)
    q = (c[:, 0] << 6) | (c[:, 1] << 4) | (c[:, 2] << 2) | c[:, 3]
    tail = np.zeros(32, dtype=np.uint8)
    tail[:4] = np.array([d], dtype="<f4").view(np.uint8)
    return np.concatenate([q.reshape(-1), tail])


def ternary_nbytes(ttype, n_out, k):
    if ttype == "tq2_0":
        return n_out * (k // QK) * 66
    if ttype == "tq1_0":
        return n_out * (k // QK) * 54
    return n_out * k // 4 + 32


def check_ternary_shape(ttype, name, n_out, k):
    if ttype in ("tq2_0", "tq1_0") and k % QK:
        raise ConvertError(f"{name}: {k} inputs per row is not a multiple of {QK}, which "
                           f"{ttype.upper()} needs; use --type i2_s")
    if ttype == "i2_s" and (n_out * k) % 128:
        raise ConvertError(f"{name}: {n_out}x{k} elements is not a multiple of 128, which I2_S "
                           f"needs; no supported ternary type fits this shape")


# ---------------------------------------------------------------------------------------------
# layouts


SUFFIXES = [  # GGUF name, module path under model.layers.N, kind
    ("attn_norm", "input_layernorm", "norm"),
    ("attn_q", "self_attn.q_proj", "linear"),
    ("attn_k", "self_attn.k_proj", "linear"),
    ("attn_v", "self_attn.v_proj", "linear"),
    ("attn_output", "self_attn.o_proj", "linear"),
    ("attn_sub_norm", None, "norm"),
    ("ffn_norm", "post_attention_layernorm", "norm"),
    ("ffn_gate", "mlp.gate_proj", "linear"),
    ("ffn_up", "mlp.up_proj", "linear"),
    ("ffn_down", "mlp.down_proj", "linear"),
    ("ffn_sub_norm", None, "norm"),
]
SUB_NORMS = {
    "hf": {"attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"},
    "1bitllm": {"attn_sub_norm": "self_attn.inner_attn_ln", "ffn_sub_norm": "mlp.ffn_layernorm"},
}


def cfg_int(cfg, key, default=None):
    """A positive integer field of config.json (default when absent or null)."""
    v = cfg.get(key)
    if v is None:
        v = default
    if v is None:
        raise ConvertError(f"config.json has no {key}")
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConvertError(f"config.json {key} = {json.dumps(v)}: expected a positive integer")
    return v


def cfg_float(cfg, key, default):
    """A finite positive number field of config.json (default when absent or null)."""
    v = cfg.get(key)
    if v is None:
        v = default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConvertError(f"config.json {key} = {json.dumps(v)}: expected a finite positive "
                           "number")
    return float(v)


def cfg_typed(cfg, key, kinds, what):
    """A field of config.json that must be absent, null or of the given types."""
    v = cfg.get(key)
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if v is not None and (isinstance(v, bool) != (bool in kinds) or not isinstance(v, kinds)):
        raise ConvertError(f"config.json {key} = {json.dumps(v)}: expected {what}")
    return v


def read_hparams(cfg):
    """The model dimensions from config.json, each checked (types, > 0, head counts that divide)."""
    n_embd = cfg_int(cfg, "hidden_size")
    n_head = cfg_int(cfg, "num_attention_heads")
    n_head_kv = cfg_int(cfg, "num_key_value_heads", n_head)
    if n_head % n_head_kv:
        raise ConvertError(f"config.json num_attention_heads {n_head} is not a multiple of "
                           f"num_key_value_heads {n_head_kv}")
    if cfg.get("head_dim") is None and n_embd % n_head:
        raise ConvertError(f"config.json hidden_size {n_embd} is not a multiple of "
                           f"num_attention_heads {n_head} (and there is no head_dim)")
    head_dim = cfg_int(cfg, "head_dim", n_embd // n_head)
    if head_dim % 2:
        raise ConvertError(f"head dimension {head_dim} is odd: RoPE rotates pairs")
    return {
        "n_embd": n_embd, "n_layer": cfg_int(cfg, "num_hidden_layers"), "n_head": n_head,
        "n_head_kv": n_head_kv, "head_dim": head_dim, "n_ff": cfg_int(cfg, "intermediate_size"),
        "n_vocab": cfg_int(cfg, "vocab_size"), "eps": cfg_float(cfg, "rms_norm_eps", 1e-6),
        "theta": cfg_float(cfg, "rope_theta", 10000.0),
        "n_ctx": cfg_int(cfg, "max_position_embeddings", 2048),
    }


def describe(cfg, ckpt, arch_req):
    """Works out layout, arch and the BitLinear storage; raises ConvertError for anything else."""
    archs = cfg_typed(cfg, "architectures", list, "a list of class names") or []
    mtype = cfg_typed(cfg, "model_type", str, "a string") or ""
    names = set(ckpt.names())
    if "BitNetForCausalLM" in archs or mtype == "bitnet":
        layout = "hf"
    elif "BitnetForCausalLM" in archs or "model.layers.0.self_attn.inner_attn_ln.weight" in names:
        layout = "1bitllm"
    else:
        raise ConvertError(f"unknown layout: architectures {archs}, model_type '{mtype}' (expected "
                           "BitNetForCausalLM from transformers or 1bitLLM's BitnetForCausalLM)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise ConvertError(f"config {key} = true: b158-cl's graph has no biases")
    rs = cfg_typed(cfg, "rope_scaling", dict, "an object or null")
    if rs and rs.get("rope_type", rs.get("type", "default")) != "default":
        raise ConvertError(f"rope_scaling {rs} is not supported (plain RoPE only)")
    act = cfg_typed(cfg, "hidden_act", str, "a string") or ("relu2" if layout == "hf" else "silu")
    if act not in ("relu2", "silu"):
        raise ConvertError(f"hidden_act '{act}' is not supported (relu2 or silu)")

    qc = cfg_typed(cfg, "quantization_config", dict, "an object")
    if layout == "hf":
        if not qc:
            mode = "online"  # plain BitNetForCausalLM: nn.Linear, treated as latent weights
            sys.stderr.write("warning: no quantization_config; transformers would run the linear "
                             "layers in full precision; ternarizing them with absmean\n")
        else:
            if qc.get("quant_method") != "bitnet":
                raise ConvertError(f"quantization_config quant_method '{qc.get('quant_method')}' "
                                   "is not bitnet")
            if qc.get("use_rms_norm"):
                raise ConvertError("quantization_config use_rms_norm = true (an extra RMSNorm inside "
                                   "every BitLinear) is not supported")
            extra = [m for m in (qc.get("modules_to_not_convert") or []) if m != "lm_head"]
            if extra:
                raise ConvertError(f"modules_to_not_convert {extra}: b158-cl needs every block "
                                   "linear ternary")
            lc = qc.get("linear_class", "bitlinear")
            qm = qc.get("quantization_mode", "offline")
            if lc == "bitlinear":
                mode = "bitlinear"  # transformers' BitLinear is offline-only
            elif lc == "autobitlinear":
                mode = "online" if qm == "online" else "autobitlinear"
            else:
                raise ConvertError(f"linear_class '{lc}' is unknown")
    else:
        if qc:
            raise ConvertError("1bitLLM layout with a quantization_config is unknown")
        mode = "online"

    if arch_req == "auto":
        arch = "bitnet-25" if (layout == "hf" and act == "relu2") else "bitnet"
    else:
        arch = arch_req
        if arch == "bitnet-25" and act != "relu2":
            raise ConvertError(f"--arch bitnet-25 always uses relu2 but hidden_act is '{act}'; "
                               "use --arch bitnet")
    return layout, arch, act, mode


# ---------------------------------------------------------------------------------------------
# tokenizer


def has_type(node, name):
    """Whether a parsed tokenizer.json component (or one nested in a Sequence) has type name."""
    if isinstance(node, dict):
        return node.get("type") == name or any(has_type(v, name) for v in node.values())
    if isinstance(node, list):
        return any(has_type(v, name) for v in node)
    return False


def short(v, n=80):
    t = json.dumps(v, ensure_ascii=False)
    return t if len(t) <= n else t[:n] + "..."


def detect_pre_tokenizer(pre):
    """(tokenizer.ggml.pre name, None) for a tokenizer.json pre_tokenizer that b158-cl implements,
    or (None, what it is). Compares the parsed components and the regex string itself:
      GPT-2:   ByteLevel (use_regex true: GPT-2's regex), or Split(GPT-2's regex) + ByteLevel;
      LLaMA-3: Sequence [Split(LLaMA-3's regex, Isolated), ByteLevel(use_regex false)], as
               Meta-Llama-3's and bitnet-b1.58-2B-4T's tokenizer.json have it.
    The ByteLevel step must not add a prefix space (b158-cl never does)."""
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" \
        else [pre]
    if not isinstance(steps, list) or not steps or not all(isinstance(x, dict) for x in steps):
        return None, short(pre)
    kinds = "+".join(str(x.get("type")) for x in steps)
    bl = steps[-1]
    if bl.get("type") != "ByteLevel":
        return None, f"{kinds} (not ending in ByteLevel)"
    if bl.get("add_prefix_space", True):
        return None, f"{kinds} with add_prefix_space = true"
    if len(steps) == 1:
        if bl.get("use_regex", True):
            return "gpt2", None
        return None, "ByteLevel without a regex (no pre-tokenization)"
    if len(steps) != 2 or steps[0].get("type") != "Split":
        return None, kinds
    split = steps[0]
    pattern = split.get("pattern")
    regex = pattern.get("Regex") if isinstance(pattern, dict) else None
    if not isinstance(regex, str):
        return None, f"Split on {short(pattern)}"
    if split.get("behavior") != "Isolated" or split.get("invert", False):
        return None, f"Split (behavior {split.get('behavior')}, invert {split.get('invert')})"
    if bl.get("use_regex", True):
        return None, "Split followed by a ByteLevel that splits again (use_regex true)"
    name = PRE_PATTERNS.get(regex)
    if name is None:
        return None, f"Split on the regex {regex if len(regex) <= 70 else regex[:70] + '...'}"
    return name, None


def read_tokenizer(hf_dir, n_vocab, cfg, pre_force=None):
    tj = read_json(hf_dir, "tokenizer.json")
    model = tj.get("model") if tj is not None else None
    byte_level = isinstance(model, dict) and model.get("type") == "BPE" and (
        has_type(tj.get("pre_tokenizer"), "ByteLevel") or has_type(tj.get("decoder"), "ByteLevel"))
    spm_path = checkpoint_file(hf_dir, "tokenizer.model")
    if spm_path is not None and not byte_level:
        if pre_force:
            raise ConvertError("--pre applies to byte-level BPE vocabularies (tokenizer.json); "
                               "this checkpoint's is SentencePiece")
        return read_spm_tokenizer(hf_dir, spm_path, n_vocab, cfg)
    if tj is None:
        raise ConvertError(f"{hf_dir}: no tokenizer.json or tokenizer.model")
    if not isinstance(model, dict) or model.get("type") != "BPE":
        kind = model.get("type") if isinstance(model, dict) else short(model)
        raise ConvertError(f"tokenizer.json model type '{kind}' is not BPE")
    if not byte_level:
        raise ConvertError("tokenizer.json BPE is not byte-level (no ByteLevel pre-tokenizer)")

    pre_name, what = detect_pre_tokenizer(tj.get("pre_tokenizer"))
    if pre_force:
        if pre_name != pre_force:
            sys.stderr.write(f"warning: --pre {pre_force}: tokenizer.json's pre-tokenizer is "
                             f"{pre_name or what}; token ids may differ from the tokenizers "
                             "library's\n")
        pre_name = pre_force
    elif pre_name is None:
        raise ConvertError(f"tokenizer.json pre-tokenizer {what} is not one b158-cl implements "
                           "(GPT-2's ByteLevel regex, or LLaMA-3's Split regex + ByteLevel); "
                           "--pre gpt2 or --pre llama-bpe picks one anyway")
    # b158-cl, like llama.cpp, looks a whole LLaMA-3 pre-token up in the vocabulary before
    # merging (tokenizers' ignore_merges) and never does for GPT-2
    ignore_merges = bool(model.get("ignore_merges", False))
    if ignore_merges != (pre_name == "llama-bpe"):
        sys.stderr.write(f"warning: tokenizer.json has ignore_merges = {str(ignore_merges).lower()}"
                         f", but b158-cl with the {pre_name} pre-tokenizer "
                         f"{'does not' if ignore_merges else 'does'} look whole pre-tokens up "
                         "before merging; a few token ids may differ\n")
    if tj.get("normalizer") is not None:
        sys.stderr.write(f"warning: tokenizer.json has a normalizer "
                         f"({short(tj['normalizer'], 60)}) that b158-cl does not apply; token ids "
                         "may differ\n")

    vocab = model.get("vocab")
    if not isinstance(vocab, dict) or not all(isinstance(i, int) and not isinstance(i, bool)
                                              for i in vocab.values()):
        raise ConvertError("tokenizer.json model.vocab is not an object of token ids")
    vocab = dict(vocab)
    types = {}
    added = tj.get("added_tokens") or []
    for at in added if isinstance(added, list) else [None]:
        if not isinstance(at, dict) or not isinstance(at.get("content"), str) \
                or not isinstance(at.get("id"), int):
            raise ConvertError(f"tokenizer.json added_tokens entry {short(at)} has no content "
                               "and id")
        vocab[at["content"]] = at["id"]
        types[at["id"]] = 3 if at.get("special") else 4
    if not vocab or min(vocab.values()) < 0 or max(vocab.values()) >= n_vocab:
        lo, hi = (min(vocab.values()), max(vocab.values())) if vocab else (0, -1)
        raise ConvertError(f"tokenizer has ids {lo}..{hi} but vocab_size is {n_vocab}")
    tokens = [None] * n_vocab
    for t, i in vocab.items():
        tokens[i] = t
    toktypes = []
    for i in range(n_vocab):
        if tokens[i] is None:
            tokens[i] = f"[PAD{i}]"
            toktypes.append(5)
        else:
            toktypes.append(types.get(i, 1))
    merges = model.get("merges") or []
    if not isinstance(merges, list) or not all(
            isinstance(m, str) or (isinstance(m, list) and len(m) == 2
                                   and all(isinstance(x, str) for x in m)) for m in merges):
        raise ConvertError("tokenizer.json model.merges is not a list of pairs")
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]

    tc = _read_tokenizer_config(hf_dir)

    def tok_id(key):
        v = cfg.get(key + "_id")
        if v is None and isinstance(tc.get(key), str) and tc[key] in vocab:
            v = vocab[tc[key]]
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)
                              or not 0 <= v < n_vocab):
            raise ConvertError(f"{key} id {json.dumps(v)} is not a token id (vocab_size "
                               f"{n_vocab})")
        return v

    return {
        "model": "gpt2", "tokens": tokens, "types": toktypes, "merges": merges,
        "pre": GGUF_PRE.get(pre_name, pre_name),
        "bos": tok_id("bos_token"), "eos": tok_id("eos_token"),
        "add_bos": tc.get("add_bos_token"), "chat_template": tc.get("chat_template"),
        "eot": vocab.get("<|eot_id|>"),
    }


def _read_tokenizer_config(hf_dir):
    return read_json(hf_dir, "tokenizer_config.json") or {}


def _spm_proto_fields(blob):
    """(piece types in order, normalizer_spec.add_dummy_prefix or None) from a serialized
    sentencepiece ModelProto: a minimal protobuf wire-format reader (no protobuf package needed).
    ModelProto: 1 pieces {1 piece, 2 score, 3 type}, 3 normalizer_spec {3 add_dummy_prefix}."""

    def varint(b, i):
        v = shift = 0
        while True:
            c = b[i]
            i += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return v, i

    def fields(b):
        i = 0
        while i < len(b):
            key, i = varint(b, i)
            fno, wt = key >> 3, key & 7
            if wt == 0:
                v, i = varint(b, i)
            elif wt == 1:
                v, i = b[i:i + 8], i + 8
            elif wt == 2:
                n, i = varint(b, i)
                v, i = b[i:i + n], i + n
            elif wt == 5:
                v, i = b[i:i + 4], i + 4
            else:
                raise ConvertError(f"tokenizer.model: protobuf wire type {wt} is unknown")
            yield fno, v

    types, add_dummy_prefix = [], None
    for fno, v in fields(blob):
        if fno == 1:
            t = 1  # NORMAL is the default
            for f2, v2 in fields(v):
                if f2 == 3:
                    t = v2
            types.append(t)
        elif fno == 3:
            for f2, v2 in fields(v):
                if f2 == 3:
                    add_dummy_prefix = bool(v2)
    return types, add_dummy_prefix


def read_spm_tokenizer(hf_dir, spm_path, n_vocab, cfg):
    """SentencePiece tokenizer.model, written as llama.cpp's convert_hf_to_gguf.py writes SPM
    vocabularies (tokenizer.ggml.model "llama")."""
    try:
        import sentencepiece
    except ImportError as e:
        raise ConvertError("tokenizer.model needs the sentencepiece package "
                           "(pip install -r tools/requirements.txt)") from e
    sp = sentencepiece.SentencePieceProcessor()
    try:
        sp.LoadFromFile(spm_path)
    except (OSError, RuntimeError) as e:
        raise ConvertError(f"{spm_path}: not a SentencePiece model ({e})") from None
    n_sp = sp.vocab_size()
    if n_sp > n_vocab:
        raise ConvertError(f"tokenizer.model has {n_sp} pieces but vocab_size is {n_vocab}")
    with open(spm_path, "rb") as f:
        ptypes, add_dummy_prefix = _spm_proto_fields(f.read())
    if len(ptypes) != n_sp:
        raise ConvertError(f"tokenizer.model: {len(ptypes)} pieces in the proto, "
                           f"sentencepiece says {n_sp}")
    tokens, scores, toktypes = [], [], []
    for i in range(n_sp):
        tokens.append(sp.IdToPiece(i))
        scores.append(float(sp.GetScore(i)))
        # proto enum: NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6 (= GGUF's)
        toktypes.append(ptypes[i] if 1 <= ptypes[i] <= 6 else 1)
    for i in range(n_sp, n_vocab):  # padding, as llama.cpp does
        tokens.append(f"[PAD{i}]")
        scores.append(-1000.0)
        toktypes.append(5)
    vocab = {t: i for i, t in enumerate(tokens[:n_sp])}
    tc = _read_tokenizer_config(hf_dir)

    def tok_id(key, sp_id):
        v = tc.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str) and v in vocab:
            return vocab[v]
        v = cfg.get(key + "_id")
        if isinstance(v, list):
            v = v[0]
        if v is not None:
            return v
        return sp_id if sp_id >= 0 else None

    return {
        "model": "llama", "tokens": tokens, "types": toktypes, "scores": scores, "merges": [],
        "pre": "default",
        "bos": tok_id("bos_token", sp.bos_id()), "eos": tok_id("eos_token", sp.eos_id()),
        "unk": tok_id("unk_token", sp.unk_id()), "pad": tok_id("pad_token", sp.pad_id()),
        "add_bos": tc.get("add_bos_token", True), "add_eos": tc.get("add_eos_token", False),
        "add_space_prefix": True if add_dummy_prefix is None else add_dummy_prefix,
        "chat_template": tc.get("chat_template"), "eot": None,
    }


# ---------------------------------------------------------------------------------------------
# conversion


def convert(hf_dir, out, ttype="tq2_0", arch_req="auto", name=None, log=print, pre=None):
    import gguf
    import torch

    torch.set_num_threads(1)
    if not os.path.isdir(hf_dir):
        raise ConvertError(f"{hf_dir} is not a directory (give the checkpoint folder, the one "
                           "that holds config.json)")
    cfg = read_json(hf_dir, "config.json")
    if cfg is None:
        raise ConvertError(f"{hf_dir}: no config.json")
    archs = cfg_typed(cfg, "architectures", list, "a list of class names") or []
    if not ({"BitNetForCausalLM", "BitnetForCausalLM"} & set(map(str, archs))) \
            and cfg.get("model_type") not in ("bitnet", "llama"):
        raise ConvertError(f"unknown layout: architectures {archs}, model_type "
                           f"'{cfg.get('model_type')}' (expected BitNetForCausalLM from transformers "
                           "or 1bitLLM's BitnetForCausalLM)")
    hp = read_hparams(cfg)
    ckpt = Checkpoint(hf_dir)
    layout, arch, act, mode = describe(cfg, ckpt, arch_req)

    n_embd, n_layer, n_head, n_head_kv = hp["n_embd"], hp["n_layer"], hp["n_head"], hp["n_head_kv"]
    head_dim, n_ff, n_vocab = hp["head_dim"], hp["n_ff"], hp["n_vocab"]
    eps, theta, n_ctx = hp["eps"], hp["theta"], hp["n_ctx"]
    tied = bool(cfg_typed(cfg, "tie_word_embeddings", bool, "true or false"))
    if not ckpt.has("lm_head.weight"):
        tied = True
    # the layer count against the checkpoint first: nothing below is sized from config.json alone
    layers = ckpt.layers()
    if len(layers) != n_layer or max(layers) != n_layer - 1:  # distinct, >= 0: then 0..n-1
        have = sorted(layers)
        have = f"N = 0..{have[-1]}" if have and have[-1] == len(have) - 1 else f"N in {have[:8]}"
        raise ConvertError(f"config.json num_hidden_layers = {n_layer} but the checkpoint has "
                           f"model.layers.N tensors for {have if layers else 'no N'}")

    qd, kvd = n_head * head_dim, n_head_kv * head_dim
    lin_shape = {"attn_q": (qd, n_embd), "attn_k": (kvd, n_embd), "attn_v": (kvd, n_embd),
                 "attn_output": (n_embd, qd), "ffn_gate": (n_ff, n_embd), "ffn_up": (n_ff, n_embd),
                 "ffn_down": (n_embd, n_ff)}
    norm_len = {"attn_norm": n_embd, "ffn_norm": n_embd, "attn_sub_norm": n_embd,
                "ffn_sub_norm": n_ff}
    if layout == "1bitllm":
        norm_len["attn_sub_norm"] = qd

    # plan: (gguf name, source name, kind, shape)
    plan = [("token_embd.weight", "model.embed_tokens.weight", "f16", (n_vocab, n_embd))]
    for i in range(n_layer):
        for gname, mod, kind in SUFFIXES:
            mod = mod or SUB_NORMS[layout][gname]
            src = f"model.layers.{i}.{mod}.weight"
            shape = lin_shape[gname] if kind == "linear" else (norm_len[gname],)
            if kind == "linear":
                check_ternary_shape(ttype, f"blk.{i}.{gname}.weight", *shape)
            plan.append((f"blk.{i}.{gname}.weight", src, kind, shape))
    plan.append(("output_norm.weight", "model.norm.weight", "norm", (n_embd,)))
    if not tied:
        plan.append(("output.weight", "lm_head.weight", "f16", (n_vocab, n_embd)))
    used = set()
    for _, src, kind, shape in plan:
        if not ckpt.has(src):
            raise ConvertError(f"tensor {src} missing from the checkpoint")
        got = ckpt.shape(src)
        if kind == "linear" and mode in ("bitlinear", "autobitlinear") and len(got) == 2 \
                and got[0] * 4 == shape[0] and got[1] == shape[1]:
            pass  # packed uint8
        elif got != list(shape):
            raise ConvertError(f"{src}: shape {got}, expected {list(shape)} from config.json")
        used.add(src)
        if kind == "linear" and mode in ("bitlinear", "autobitlinear"):
            used.add(src[:-len("weight")] + "weight_scale")
    unknown = [n for n in ckpt.names() if n not in used and not n.endswith("rotary_emb.inv_freq")]
    if tied and "lm_head.weight" in unknown:
        unknown.remove("lm_head.weight")
    if unknown:
        raise ConvertError(f"unknown tensors in the checkpoint, e.g. {unknown[:4]}")
    # the vocabulary is read once the embedding has shown that vocab_size is real
    tok = read_tokenizer(hf_dir, n_vocab, cfg, pre)

    if tok["chat_template"] is not None and not isinstance(tok["chat_template"], str):
        raise ConvertError("tokenizer_config.json chat_template is not a string")
    # written under a temporary name: an error never leaves a partial file or removes an old one
    tmp = f"{out}.partial"
    w = gguf.GGUFWriter(tmp, arch)
    try:
        src_name = cfg.get("_name_or_path") if isinstance(cfg.get("_name_or_path"), str) else None
        w.add_name(name or src_name or os.path.basename(os.path.abspath(hf_dir)))
        w.add_custom_alignment(32)
        w.add_file_type({"tq2_0": gguf.LlamaFileType.MOSTLY_TQ2_0,
                         "tq1_0": gguf.LlamaFileType.MOSTLY_TQ1_0, "i2_s": 40}[ttype])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(n_ctx)
        w.add_embedding_length(n_embd)
        w.add_block_count(n_layer)
        w.add_feed_forward_length(n_ff)
        w.add_head_count(n_head)
        w.add_head_count_kv(n_head_kv)
        if head_dim != n_embd // n_head:
            w.add_key_length(head_dim)
            w.add_value_length(head_dim)
        w.add_layer_norm_rms_eps(eps)
        w.add_rope_freq_base(theta)
        w.add_rope_dimension_count(head_dim)
        w.add_vocab_size(n_vocab)
        if arch == "bitnet":
            w.add_string("bitnet.hidden_activation", act)
        w.add_tokenizer_model(tok["model"])
        w.add_tokenizer_pre(tok["pre"])
        w.add_token_list(tok["tokens"])
        if tok.get("scores") is not None:
            w.add_token_scores(tok["scores"])
        w.add_token_types(tok["types"])
        if tok["merges"]:
            w.add_token_merges(tok["merges"])
        if tok["bos"] is not None:
            w.add_bos_token_id(tok["bos"])
        if tok["eos"] is not None:
            w.add_eos_token_id(tok["eos"])
        if tok["eot"] is not None:
            w.add_eot_token_id(tok["eot"])
        if tok.get("unk") is not None:
            w.add_unk_token_id(tok["unk"])
        if tok.get("pad") is not None:
            w.add_pad_token_id(tok["pad"])
        if tok["add_bos"] is not None:
            w.add_add_bos_token(bool(tok["add_bos"]))
        if tok.get("add_eos") is not None:
            w.add_add_eos_token(bool(tok["add_eos"]))
        if tok.get("add_space_prefix") is not None:
            w.add_add_space_prefix(bool(tok["add_space_prefix"]))
        if tok["chat_template"]:
            w.add_chat_template(tok["chat_template"])

        ttype_id = TYPE_IDS[ttype]
        for gname, _, kind, shape in plan:
            if kind == "f16":
                w.add_tensor_info(gname, shape, np.dtype(np.float16), shape[0] * shape[1] * 2)
            elif kind == "norm":
                w.add_tensor_info(gname, shape, np.dtype(np.float32), shape[0] * 4)
            else:
                # float32 dtype so the writer takes the shape as elements, with the raw type id
                w.add_tensor_info(gname, shape, np.dtype(np.float32), ternary_nbytes(ttype, *shape),
                                  raw_dtype=ttype_id)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()

        n_zero = n_tern = 0
        for gname, src, kind, shape in plan:
            t = ckpt.get(src)
            if kind == "f16":
                write_chunked(w, t, shape)
            elif kind == "norm":
                w.write_tensor_data(t.float().numpy().astype(np.float32))
            else:
                w_t, d = linear_to_ternary(ckpt, src, t, shape, mode)
                n_zero += int((w_t == 0).sum())
                n_tern += w_t.size
                if not np.isfinite(d) or d < 0:
                    raise ConvertError(f"{src}: scale {d} is not a finite positive number")
                enc = {"tq2_0": encode_tq2_0, "tq1_0": encode_tq1_0, "i2_s": encode_i2_s}[ttype]
                w.write_tensor_data(enc(w_t, d))
            del t
        w.close()
        os.replace(tmp, out)
    except BaseException:
        for f in w.fout or []:
            f.close()
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    log(f"wrote {out}: arch {arch}, {n_layer} layers, {ttype.upper()} ({mode} BitLinear, "
        f"{layout} layout), {n_tern} ternary weights ({100.0 * n_zero / max(n_tern, 1):.1f}% zero), "
        f"{'tied' if tied else 'separate'} LM head, vocab {n_vocab} ({tok['pre']})")
    return arch


def linear_to_ternary(ckpt, src, t, shape, mode):
    """(W_t as int8 numpy (n_out, k), the float scale multiplying W_t) for one BitLinear."""
    import torch

    n_out = shape[0]
    if mode == "online":
        w_t, d = ternarize_online(t)
        return w_t.numpy(), d
    ws_name = src[:-len("weight")] + "weight_scale"
    ws = ckpt.get(ws_name).float().reshape(-1)
    if ws.numel() != 1:
        raise ConvertError(f"{ws_name}: {ws.numel()} values, expected one per tensor")
    ws = ws.item()
    if t.dtype == torch.uint8:
        w_t = unpack_hf(t, n_out)
        a = 1.0
    else:
        w_t, a = exact_ternary(t, src)
    if mode == "bitlinear":
        if ws == 0:
            raise ConvertError(f"{ws_name} is 0 (BitLinear divides by it)")
        d = a / ws  # BitLinear: y = (W_t . q) / (s * weight_scale)
    else:
        d = a * ws  # AutoBitLinear offline: y = F.linear(x_q, W) * weight_scale
    return w_t.numpy(), d


def write_chunked(w, t, shape, rows=8192):
    """A (possibly huge) float tensor to F16 in row chunks, through GGUFWriter's streaming
    state (what write_tensor_data does, without one full-size copy)."""
    import torch

    nbytes = shape[0] * shape[1] * 2
    if nbytes <= (64 << 20):
        w.write_tensor_data(t.to(torch.float16).numpy())
        return
    fout = w.fout[0]
    name = next(iter(w.tensors[0]))
    ti = w.tensors[0].pop(name)
    assert ti.nbytes == nbytes
    w.write_padding(fout, fout.tell())
    for r in range(0, shape[0], rows):
        t[r:r + rows].to(torch.float16).numpy().tofile(fout)
    w.write_padding(fout, nbytes)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="b158-convert", description=__doc__.splitlines()[0])
    ap.add_argument("hf_dir", help="checkpoint directory (config.json, *.safetensors, tokenizer.json)")
    ap.add_argument("-o", "--out", required=True, help="output GGUF file")
    ap.add_argument("--type", choices=sorted(TYPE_IDS), default="tq2_0",
                    help="ternary tensor type (default tq2_0; i2_s for rows not a multiple of 256)")
    ap.add_argument("--arch", choices=["auto", "bitnet-25", "bitnet"], default="auto")
    ap.add_argument("--name", help="general.name (default: the directory name)")
    ap.add_argument("--pre", choices=PRE_NAMES,
                    help="tokenizer.ggml.pre to write when tokenizer.json's pre-tokenizer is not "
                         "recognised (default: an error then)")
    ap.add_argument("--debug", action="store_true", help="a Python traceback on unexpected errors")
    args = ap.parse_args(argv)
    try:
        convert(args.hf_dir, args.out, args.type, args.arch, args.name, pre=args.pre)
    except ConvertError as e:
        sys.stderr.write(f"b158-convert: error: {e}\n")
        return 1
    except OSError as e:  # unreadable input, unwritable output
        sys.stderr.write(f"b158-convert: error: {e.filename or ''}{': ' if e.filename else ''}"
                         f"{e.strerror or e}\n")
        return 1
    except Exception as e:
        if args.debug:
            raise
        sys.stderr.write(f"b158-convert: error: unexpected {type(e).__name__}: {e} (a checkpoint "
                         "this converter does not understand; --debug shows where)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
