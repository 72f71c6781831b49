"""BitNet b1.58 decoder (GGUF arch bitnet-25) in PyTorch: QAT training graph and exact reference.

The same module runs in two modes:
  - training: latent float weights, absmean ternary weights and per-token int8 activations
    through a straight-through estimator (x + (quant(x) - x).detach());
  - reference (`exact=True` on the BitLinear layers): ternary codes and one scale per tensor
    are fixed (the values that go into the GGUF), activations are quantized to int8 and the
    matmul is computed as (integer sum) * w_scale / s, the way the C engine does it.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

RMS_EPS = 1e-5
WEIGHT_EPS = 1e-5  # W_t = clamp(round(W / (gamma + eps)), -1, 1)
ACT_EPS = 1e-5  # s = 127 / max(max|x|, eps)


@dataclass
class Config:
    vocab_size: int = 4096
    n_ctx: int = 256
    n_embd: int = 256
    n_layer: int = 4
    n_head: int = 8
    n_head_kv: int = 2
    n_ff: int = 768
    rope_theta: float = 10000.0
    dropout: float = 0.0  # training only; not part of the exported graph

    @property
    def head_dim(self):
        return self.n_embd // self.n_head

    def to_dict(self):
        return asdict(self)


def weight_quant(w):
    """Absmean ternarization: returns (codes in {-1,0,1} as float, gamma scalar tensor)."""
    gamma = w.abs().mean()
    w_t = (w / (gamma + WEIGHT_EPS)).round().clamp(-1, 1)
    return w_t, gamma


def act_quant(x):
    """Per-token absmax int8: returns (q as float integers, s per token with a trailing 1 dim)."""
    s = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=ACT_EPS)
    q = (x * s).round().clamp(-128, 127)
    return q, s


class BitLinear(nn.Module):
    """y = x W^T with ternary W (one scale) and int8 activations; no bias."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_out, n_in))
        nn.init.normal_(self.weight, std=0.02)
        self.exact = False
        # Set by freeze(): codes (-1/0/1 float) and the scale the engine uses.
        self.register_buffer("w_t", None, persistent=False)
        self.register_buffer("w_scale", None, persistent=False)

    def freeze(self, w_t, w_scale):
        self.w_t = w_t
        self.w_scale = w_scale
        self.exact = True

    def forward(self, x):
        if self.exact:
            q, s = act_quant(x)
            # Integer sums are exact in fp32 (|sum| <= 127 * K < 2^24).
            acc = q @ self.w_t.t()
            return acc * self.w_scale / s
        w = self.weight
        w_t, gamma = weight_quant(w)
        w_q = w + (w_t * gamma - w).detach()
        q, s = act_quant(x)
        x_q = x + (q / s - x).detach()
        return F.linear(x_q, w_q)


class RMSNorm(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * self.weight


def rope_cache(cfg, n_pos, device=None):
    """cos/sin tables (n_pos, head_dim/2): theta_i = pos * base^(-2i/head_dim)."""
    hd = cfg.head_dim
    inv = cfg.rope_theta ** (-torch.arange(0, hd // 2, dtype=torch.float64) * 2.0 / hd)
    ang = torch.arange(n_pos, dtype=torch.float64)[:, None] * inv[None, :]
    return ang.cos().float().to(device), ang.sin().float().to(device)


def apply_rope(x, cos, sin):
    """NEOX / rotate_half pairing: dim i with i + head_dim/2. x: (B, H, T, hd)."""
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        hd = cfg.head_dim
        self.attn_norm = RMSNorm(cfg.n_embd)
        self.attn_q = BitLinear(cfg.n_embd, cfg.n_head * hd)
        self.attn_k = BitLinear(cfg.n_embd, cfg.n_head_kv * hd)
        self.attn_v = BitLinear(cfg.n_embd, cfg.n_head_kv * hd)
        self.attn_sub_norm = RMSNorm(cfg.n_head * hd)
        self.attn_output = BitLinear(cfg.n_head * hd, cfg.n_embd)
        self.ffn_norm = RMSNorm(cfg.n_embd)
        self.ffn_gate = BitLinear(cfg.n_embd, cfg.n_ff)
        self.ffn_up = BitLinear(cfg.n_embd, cfg.n_ff)
        self.ffn_sub_norm = RMSNorm(cfg.n_ff)
        self.ffn_down = BitLinear(cfg.n_ff, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x, cos, sin):
        cfg = self.cfg
        B, T, _ = x.shape
        hd = cfg.head_dim
        # attention
        n1 = self.attn_norm(x)
        q = self.attn_q(n1).view(B, T, cfg.n_head, hd).transpose(1, 2)
        k = self.attn_k(n1).view(B, T, cfg.n_head_kv, hd).transpose(1, 2)
        v = self.attn_v(n1).view(B, T, cfg.n_head_kv, hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        # GQA: query head h reads kv head h // (n_head / n_head_kv), as llama.cpp does
        g = cfg.n_head // cfg.n_head_kv
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(hd))
        a = a.transpose(1, 2).reshape(B, T, cfg.n_head * hd)
        x = x + self.drop(self.attn_output(self.attn_sub_norm(a)))
        # feed-forward: relu(gate)^2 * up
        n2 = self.ffn_norm(x)
        f = F.relu(self.ffn_gate(n2)).square() * self.ffn_up(n2)
        x = x + self.drop(self.ffn_down(self.ffn_sub_norm(f)))
        return x


class BitNet(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.token_embd = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        nn.init.normal_(self.token_embd.weight, std=0.02)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)])
        self.output_norm = RMSNorm(cfg.n_embd)
        cos, sin = rope_cache(cfg, cfg.n_ctx)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, idx):
        T = idx.shape[1]
        if T > self.rope_cos.shape[0]:
            cos, sin = rope_cache(self.cfg, T, idx.device)
        else:
            cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.token_embd(idx)
        for blk in self.blocks:
            x = blk(x, cos, sin)
        x = self.output_norm(x)
        return x @ self.token_embd.weight.t()  # tied LM head

    def bitlinears(self):
        for i, blk in enumerate(self.blocks):
            for name in ("attn_q", "attn_k", "attn_v", "attn_output",
                         "ffn_gate", "ffn_up", "ffn_down"):
                yield i, name, getattr(blk, name)
