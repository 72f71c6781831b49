#!/usr/bin/env python3
"""Draws the JSON of `b158-cl-bench --preset ... -o json` (or -m FILE) as a PNG chart: device
memory, decode latency and prompt throughput of the FP16 baseline and the ternary engine per
model, with the ratios the paper reports.

    build/bin/b158-cl-bench --preset 700M,2B-4T -o json > bench.json
    python3 tools/plot_bench.py bench.json -o bench.png
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def gb(engine):
    return (engine["mem_weights"] + engine["mem_kv_cache"] + engine["mem_scratch"]) / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="output of b158-cl-bench -o json")
    ap.add_argument("-o", "--out", default="bench.png", help="PNG to write")
    args = ap.parse_args()
    with open(args.json) as f:
        data = json.load(f)
    models = data.get("models", [])
    if not models:
        sys.exit("error: no models in %s (was it written by b158-cl-bench -o json in model mode?)"
                 % args.json)
    names = [m["name"] for m in models]
    panels = [
        ("device memory (GB)", [gb(m["fp16"]) for m in models], [gb(m["ternary"]) for m in models],
         "memory_ratio"),
        ("decode latency (ms/token)", [m["fp16"]["tg_ms_per_token"] for m in models],
         [m["ternary"]["tg_ms_per_token"] for m in models], "latency_ratio"),
        ("prompt processing (tokens/s)", [m["fp16"]["pp_tokens_per_s"] for m in models],
         [m["ternary"]["pp_tokens_per_s"] for m in models], None),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    x = range(len(names))
    w = 0.38
    for ax, (title, fp16, tern, ratio_key) in zip(axes, panels):
        ax.bar([i - w / 2 for i in x], fp16, w, label="FP16 baseline", color="#8c8c8c")
        ax.bar([i + w / 2 for i in x], tern, w, label="b1.58 (ternary)", color="#2b7bba")
        ax.set_xticks(list(x))
        ax.set_xticklabels(names)
        ax.set_title(title)
        if ratio_key:
            for i, m in enumerate(models):
                ax.annotate("%.2fx" % m[ratio_key], (i, max(fp16[i], tern[i])),
                            ha="center", va="bottom", fontsize=9)
        ax.margins(y=0.15)
    axes[0].legend(loc="upper left", fontsize=9)
    fig.suptitle("b158-cl %s on %s (%s), pp %d / tg %d, %s" % (
        data.get("build", "?"), data.get("device", "?"), data.get("driver", "?"),
        data.get("pp", 0), data.get("tg", 0), data.get("date", "")), fontsize=10)
    fig.text(0.5, 0.01, "FP16 matmuls: %s" % data.get("fp16_path", "?"), ha="center", fontsize=8)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(args.out, dpi=110)
    print("wrote %s" % args.out)


if __name__ == "__main__":
    main()
