"""Trains a byte-level BPE tokenizer and a small BitNet b1.58 model on Tiny Shakespeare.

Deterministic for a given seed and thread count. Writes <out>/tokenizer.json,
<out>/ckpt.pt (final step), <out>/best.pt (lowest validation perplexity) and prints
validation perplexity as it goes.

    nice -n 10 python tools/train/train.py --out /tmp/b158-train
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bitnet_model import BitNet, Config  # noqa: E402

EOT = "<|endoftext|>"
DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "text",
                            "tinyshakespeare.txt")


def split_text(path):
    """First 90% of the characters train, last 10% validation."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    n_train = int(len(text) * 0.9)
    return text[:n_train], text[n_train:]


def train_tokenizer(train_text, vocab_size):
    """Standard GPT-2 byte-level BPE (GPT-2 regex, byte-to-unicode alphabet), EOT as id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([train_text], trainer=trainer)
    return tok


def encode(tok, text):
    return np.array(tok.encode(text).ids, dtype=np.int64)


@torch.no_grad()
def eval_ppl(model, tokens, n_ctx, batch=16):
    """Per-token perplexity over non-overlapping n_ctx windows, every position scored."""
    model.eval()
    n = (len(tokens) - 1) // n_ctx
    x = torch.from_numpy(tokens[: n * n_ctx]).view(n, n_ctx)
    y = torch.from_numpy(tokens[1: n * n_ctx + 1]).view(n, n_ctx)
    nll, cnt = 0.0, 0
    for i in range(0, n, batch):
        logits = model(x[i: i + batch])
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y[i: i + batch].reshape(-1),
                               reduction="sum").item()
        cnt += y[i: i + batch].numel()
    model.train()
    return math.exp(nll / cnt)


def save(path, model, cfg, log, args, elapsed):
    torch.save({"config": cfg.to_dict(), "model": model.state_dict(), "log": list(log),
                "args": vars(args), "train_seconds": elapsed, "step": log[-1]["step"],
                "torch": torch.__version__}, path)


def lr_at(step, args):
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    p = (step - args.warmup) / max(1, args.steps - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", required=True, help="output folder (tokenizer.json, ckpt.pt)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-head", type=int, default=8)
    ap.add_argument("--n-head-kv", type=int, default=2)
    ap.add_argument("--n-ff", type=int, default=768)
    ap.add_argument("--n-ctx", type=int, default=256)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=1400)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bench", type=int, default=0, help="time this many steps and exit")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    train_text, val_text = split_text(args.data)
    tok = train_tokenizer(train_text, args.vocab)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    train_tok = encode(tok, train_text)
    val_tok = encode(tok, val_text)
    print(f"chars train {len(train_text)} val {len(val_text)}; vocab {tok.get_vocab_size()}; "
          f"tokens train {len(train_tok)} val {len(val_tok)}", flush=True)

    cfg = Config(vocab_size=tok.get_vocab_size(), n_ctx=args.n_ctx, n_embd=args.n_embd,
                 n_layer=args.n_layer, n_head=args.n_head, n_head_kv=args.n_head_kv,
                 n_ff=args.n_ff, dropout=args.dropout)
    model = BitNet(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {cfg.to_dict()}; params {n_params}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    gen = torch.Generator().manual_seed(args.seed)
    data = torch.from_numpy(train_tok)
    offs = torch.arange(args.n_ctx)
    log = []
    best = float("inf")
    t0 = time.time()
    steps = args.bench or args.steps
    for step in range(steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(0, len(data) - args.n_ctx - 1, (args.batch,), generator=gen)
        x = data[ix[:, None] + offs]
        y = data[ix[:, None] + offs + 1]
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, cfg.vocab_size), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 20 == 0:
            print(f"step {step} loss {loss.item():.4f} lr {lr:.2e} "
                  f"{time.time() - t0:.0f}s", flush=True)
        last = step == steps - 1
        if not args.bench and ((step + 1) % args.eval_every == 0 or last):
            ppl = eval_ppl(model, val_tok, cfg.n_ctx)
            el = time.time() - t0
            log.append({"step": step + 1, "train_loss": loss.item(), "val_ppl": ppl,
                        "elapsed_s": el})
            print(f"== step {step + 1} val ppl {ppl:.3f} (loss {math.log(ppl):.4f}) "
                  f"{el:.0f}s", flush=True)
            if ppl < best:
                best = ppl
                save(os.path.join(args.out, "best.pt"), model, cfg, log, args, el)
    el = time.time() - t0
    print(f"{steps} steps in {el:.1f}s ({el / steps:.3f} s/step)", flush=True)
    if args.bench:
        return
    save(os.path.join(args.out, "ckpt.pt"), model, cfg, log, args, el)
    with open(os.path.join(args.out, "train_log.json"), "w") as f:
        json.dump({"args": vars(args), "log": log, "train_seconds": el}, f, indent=1)


if __name__ == "__main__":
    main()
