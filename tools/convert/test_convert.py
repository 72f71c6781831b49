"""Tests of b158_convert.py: pre-tokenizer detection and bad input (one error line, no traceback,
exit 1, no output file). A developer-run test (it needs the Python packages of
tools/requirements.txt; ctest's C tests do not):

    /work/venv-train/bin/python tools/convert/test_convert.py [-v]

Every checkpoint is a tiny synthetic one (1 layer, n_embd 256, 260 tokens) written here.
"""

import contextlib
import copy
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import b158_convert  # noqa: E402

CONVERTER = os.path.join(HERE, "b158_convert.py")

# the pre-tokenizer regexes as tokenizer.json files hold them (written out here, independently
# of the converter's table)
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_CPP = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
              r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# Qwen2's: a pre-tokenizer b158-cl does not implement
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
         r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def byte_level(use_regex):
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
            "use_regex": use_regex}


def split_pre(regex):
    """The pre_tokenizer of Meta-Llama-3's (and bitnet-b1.58-2B-4T's) tokenizer.json."""
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        byte_level(False)]}


GPT2_PRE = byte_level(True)
LLAMA3_PRE = split_pre(LLAMA3)


def byte_alphabet():
    """GPT-2's byte-to-character map, in byte order."""
    cps = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, n = {}, 0
    for b in range(256):
        if b in cps:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return [out[b] for b in range(256)]


def tokenizer_json(pre, ignore_merges):
    vocab = {c: i for i, c in enumerate(byte_alphabet())}
    vocab["Ġt"] = 256
    vocab["he"] = 257
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 258, "content": "<|begin_of_text|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None, "pre_tokenizer": pre, "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": ignore_merges,
                  "vocab": vocab, "merges": [["Ġ", "t"], ["h", "e"]]},
    }


CONFIG = {"architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "vocab_size": 260,
          "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 1,
          "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_act": "relu2",
          "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "tie_word_embeddings": True, "bos_token_id": 258, "eos_token_id": 258,
          "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                  "quantization_mode": "online"}}


def tensors(n_layer=1):
    rng = np.random.default_rng(7)
    h, ff, kv = 256, 256, 128
    t = {"model.embed_tokens.weight": rng.standard_normal((260, h), dtype=np.float32),
         "model.norm.weight": np.ones(h, np.float32)}
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h),
              "self_attn.v_proj": (kv, h), "self_attn.o_proj": (h, h),
              "mlp.gate_proj": (ff, h), "mlp.up_proj": (ff, h), "mlp.down_proj": (h, ff)}
    for i in range(n_layer):
        for m, shp in shapes.items():
            t[f"model.layers.{i}.{m}.weight"] = rng.standard_normal(shp, dtype=np.float32) * 0.05
        for m, d in (("input_layernorm", h), ("post_attention_layernorm", h),
                     ("self_attn.attn_sub_norm", h), ("mlp.ffn_sub_norm", ff)):
            t[f"model.layers.{i}.{m}.weight"] = np.ones(d, np.float32)
    return t


def write_checkpoint(d, cfg=None, pre=LLAMA3_PRE, ignore_merges=True, sharded=False):
    from safetensors.numpy import save_file

    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(CONFIG if cfg is None else cfg, f)
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_json(pre, ignore_merges), f, ensure_ascii=False)
    t = tensors()
    if not sharded:
        save_file(t, os.path.join(d, "model.safetensors"))
        return
    names = sorted(t)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half],
              "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for fname, part in shards.items():
        save_file({k: t[k] for k in part}, os.path.join(d, fname))
        weight_map.update({k: fname for k in part})
    write_index(d, weight_map)


def write_index(d, weight_map):
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)


def read_index(d):
    with open(os.path.join(d, "model.safetensors.index.json")) as f:
        return json.load(f)["weight_map"]


def gguf_pre(path):
    import gguf

    field = gguf.GGUFReader(path).fields["tokenizer.ggml.pre"]
    return bytes(field.parts[field.data[0]]).decode()


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="b158-convert-test-")
        self.ckpt = os.path.join(self.tmp, "ckpt")
        self.out = os.path.join(self.tmp, "out.gguf")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def run_main(self, *extra, hf_dir=None):
        """(exit status, stderr lines) of b158_convert.main, in this process."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = b158_convert.main([hf_dir or self.ckpt, "-o", self.out, *extra])
        return rc, err.getvalue().splitlines()

    def assert_refused(self, *words, hf_dir=None, extra=()):
        """One error line holding every word, exit 1, no output file (nor a partial one)."""
        rc, lines = self.run_main(*extra, hf_dir=hf_dir)
        self.assertEqual(rc, 1, lines)
        errors = [ln for ln in lines if not ln.startswith("warning: ")]
        self.assertEqual(len(errors), 1, lines)
        self.assertTrue(errors[0].startswith("b158-convert: error: "), errors[0])
        self.assertNotIn("unexpected", errors[0])  # a named check, not the catch-all
        for w in words:
            self.assertIn(w, errors[0])
        self.assertFalse(os.path.exists(self.out))
        self.assertFalse(os.path.exists(self.out + ".partial"))
        return errors[0]

    def edit_config(self, **changes):
        cfg = copy.deepcopy(CONFIG)
        cfg.update(changes)
        with open(os.path.join(self.ckpt, "config.json"), "w") as f:
            json.dump(cfg, f)


class PreTokenizer(Base):
    """tokenizer.ggml.pre from the parsed tokenizer.json (the regex string, not JSON text)."""

    def test_detect(self):
        detect = b158_convert.detect_pre_tokenizer
        self.assertEqual(detect(GPT2_PRE), ("gpt2", None))
        self.assertEqual(detect(split_pre(GPT2)), ("gpt2", None))
        self.assertEqual(detect(split_pre(LLAMA3)), ("llama-bpe", None))
        self.assertEqual(detect(split_pre(LLAMA3_CPP)), ("llama-bpe", None))
        # through JSON text, where every backslash is doubled: the bug this guards against
        text = json.dumps({"pre_tokenizer": split_pre(LLAMA3)})
        self.assertIn("\\\\p{L}", text)
        self.assertEqual(detect(json.loads(text)["pre_tokenizer"])[0], "llama-bpe")

    def test_detect_unknown(self):
        detect = b158_convert.detect_pre_tokenizer
        llama3_removed = split_pre(LLAMA3)
        llama3_removed["pretokenizers"][0]["behavior"] = "Removed"
        llama3_twice = split_pre(LLAMA3)
        llama3_twice["pretokenizers"][1]["use_regex"] = True
        prefix = byte_level(True)
        prefix["add_prefix_space"] = True
        for pre in (split_pre(QWEN2), split_pre(LLAMA3[:-4]), llama3_removed, llama3_twice,
                    prefix, byte_level(False), None, {"type": "Metaspace"},
                    {"type": "Sequence", "pretokenizers": [{"type": "Digits"}, GPT2_PRE]}):
            name, why = detect(pre)
            self.assertIsNone(name, pre)
            self.assertTrue(why, pre)

    def test_llama3_checkpoint(self):
        write_checkpoint(self.ckpt, pre=LLAMA3_PRE, ignore_merges=True)
        rc, lines = self.run_main()
        self.assertEqual((rc, lines), (0, []))
        self.assertEqual(gguf_pre(self.out), "llama-bpe")

    def test_gpt2_checkpoint(self):
        write_checkpoint(self.ckpt, pre=GPT2_PRE, ignore_merges=False)
        rc, lines = self.run_main()
        self.assertEqual((rc, lines), (0, []))
        self.assertEqual(gguf_pre(self.out), "gpt-2")

    def test_unknown_is_an_error_unless_forced(self):
        write_checkpoint(self.ckpt, pre=split_pre(QWEN2), ignore_merges=False)
        self.assert_refused("pre-tokenizer", "--pre")
        rc, lines = self.run_main("--pre", "gpt2")
        self.assertEqual(rc, 0, lines)
        self.assertEqual(len(lines), 1, lines)
        self.assertTrue(lines[0].startswith("warning: --pre gpt2"), lines)
        self.assertEqual(gguf_pre(self.out), "gpt-2")

    def test_ignore_merges_mismatch_warns(self):
        write_checkpoint(self.ckpt, pre=LLAMA3_PRE, ignore_merges=False)
        rc, lines = self.run_main()
        self.assertEqual(rc, 0, lines)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("ignore_merges", lines[0])


class BadInput(Base):
    def setUp(self):
        super().setUp()
        write_checkpoint(self.ckpt)

    def test_good_checkpoint_converts(self):
        self.assertEqual(self.run_main(), (0, []))

    def test_zero_heads(self):
        self.edit_config(num_attention_heads=0)
        self.assert_refused("num_attention_heads", "positive integer")

    def test_string_hidden_size(self):
        self.edit_config(hidden_size="256")
        self.assert_refused("hidden_size", "positive integer")

    def test_other_bad_numbers(self):
        for key, value, word in (("num_key_value_heads", 3, "multiple"),
                                 ("rms_norm_eps", float("nan"), "finite"),
                                 ("rope_theta", True, "finite"), ("vocab_size", -1, "positive"),
                                 ("head_dim", 63, "odd"), ("num_hidden_layers", 2.0, "integer")):
            with self.subTest(key=key):
                self.edit_config(**{key: value})
                self.assert_refused(key if key != "head_dim" else "head dimension", word)

    def test_config_list(self):
        with open(os.path.join(self.ckpt, "config.json"), "w") as f:
            json.dump([CONFIG], f)
        self.assert_refused("config.json", "list")

    def test_config_not_json(self):
        with open(os.path.join(self.ckpt, "config.json"), "wb") as f:
            f.write(b"\xff\xfe{")
        self.assert_refused("config.json", "not a JSON file")

    def test_config_directory(self):
        os.remove(os.path.join(self.ckpt, "config.json"))
        os.mkdir(os.path.join(self.ckpt, "config.json"))
        self.assert_refused("config.json", "not a regular file")

    def test_checkpoint_path_is_a_file(self):
        self.assert_refused("not a directory", hf_dir=os.path.join(self.ckpt, "config.json"))

    def test_bad_fields(self):
        for key, value in (("quantization_config", "bitnet"), ("rope_scaling", [1]),
                           ("architectures", "BitNetForCausalLM"), ("hidden_act", 2),
                           ("tie_word_embeddings", "yes")):
            with self.subTest(key=key):
                self.edit_config(**{key: value})
                self.assert_refused(key)

    def test_bad_tokenizer_json(self):
        path = os.path.join(self.ckpt, "tokenizer.json")
        tj = tokenizer_json(LLAMA3_PRE, True)
        for change, word in ((lambda t: t["model"].update(vocab=["a"]), "vocab"),
                             (lambda t: t["model"].update(merges=[1, 2]), "merges"),
                             (lambda t: t.update(added_tokens=[{"id": 1}]), "added_tokens"),
                             (lambda t: t["model"]["vocab"].update(x=999), "vocab_size")):
            with self.subTest(word=word):
                bad = copy.deepcopy(tj)
                change(bad)
                with open(path, "w") as f:
                    json.dump(bad, f)
                self.assert_refused(word)

    def test_existing_output_kept_on_error(self):
        with open(self.out, "w") as f:
            f.write("an older file")
        self.edit_config(num_attention_heads=0)
        rc, lines = self.run_main()
        self.assertEqual(rc, 1)
        with open(self.out) as f:
            self.assertEqual(f.read(), "an older file")

    def test_layer_count_against_checkpoint(self):
        self.edit_config(num_hidden_layers=2)
        self.assert_refused("num_hidden_layers = 2", "N = 0..0")

    def huge_layer_count(self, value):
        """The converter in a child process: an error line, and its peak memory (bytes)."""
        self.edit_config(num_hidden_layers=value)
        p = subprocess.Popen([sys.executable, CONVERTER, self.ckpt, "-o", self.out],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        with p.stderr:
            err = p.stderr.read().decode()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("num_hidden_layers", err)
        self.assertFalse(os.path.exists(self.out))
        return usage.ru_maxrss * 1024

    def test_billion_layers(self):
        # 1e9 in JSON is a float; 1000000000 an integer that used to plan 11e9 tensors (10+ GB)
        self.huge_layer_count(1e9)
        peak = self.huge_layer_count(1000000000)
        self.assertLess(peak, 1 << 30, f"peak RSS {peak / 2**20:.0f} MiB")


class WeightMap(Base):
    """weight_map file names stay inside the checkpoint folder."""

    def setUp(self):
        super().setUp()
        write_checkpoint(self.ckpt, sharded=True)
        self.wm = read_index(self.ckpt)
        self.first = sorted(self.wm)[0]

    def point_first_at(self, fname):
        wm = dict(self.wm)
        wm[self.first] = fname
        write_index(self.ckpt, wm)

    def test_sharded_converts(self):
        self.assertEqual(self.run_main(), (0, []))

    def test_parent_path(self):
        self.point_first_at("../../etc/passwd")
        self.assert_refused("../../etc/passwd", "outside the checkpoint folder")

    def test_absolute_path(self):
        self.point_first_at("/etc/passwd")
        self.assert_refused("/etc/passwd", "outside the checkpoint folder")

    def test_symlink_escaping(self):
        outside = os.path.join(self.tmp, "elsewhere.safetensors")
        shard = self.wm[self.first]
        shutil.move(os.path.join(self.ckpt, shard), outside)
        os.symlink(outside, os.path.join(self.ckpt, shard))
        self.assert_refused(shard, "outside the checkpoint folder")

    def test_huggingface_cache_layout(self):
        # hub cache: models--org--name/snapshots/REV/FILE -> ../../blobs/HASH
        repo = os.path.join(self.tmp, "models--org--name")
        snap = os.path.join(repo, "snapshots", "0123abc")
        os.makedirs(os.path.join(repo, "blobs"))
        os.makedirs(snap)
        for i, fname in enumerate(sorted(os.listdir(self.ckpt))):
            shutil.move(os.path.join(self.ckpt, fname), os.path.join(repo, "blobs", f"h{i}"))
            os.symlink(os.path.join("..", "..", "blobs", f"h{i}"), os.path.join(snap, fname))
        rc, lines = self.run_main(hf_dir=snap)
        self.assertEqual((rc, lines), (0, []))

    def test_missing_shard(self):
        self.point_first_at("model-00003-of-00002.safetensors")
        self.assert_refused("model-00003-of-00002.safetensors", "no such file")

    def test_tensor_not_in_shard_header(self):
        other = [f for f in set(self.wm.values()) if f != self.wm[self.first]][0]
        self.point_first_at(other)
        self.assert_refused(other, "lacks 1 tensors", self.first)

    def test_not_safetensors(self):
        with open(os.path.join(self.ckpt, "junk.safetensors"), "wb") as f:
            f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
        self.point_first_at("junk.safetensors")
        self.assert_refused("junk.safetensors")


if __name__ == "__main__":
    unittest.main()
