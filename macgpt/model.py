"""The GPT network: a small decoder-only transformer, with a KV cache for sampling. No I/O.

Two recipes (``ModelConfig.recipe``). "modern": pre-RMSNorm blocks, QK-norm and rotary position
embeddings in the attention, a ReLU² MLP, no biases, an untied output head and zero-initialised
output projections (the modded-nanogpt speedrun's choices). "classic": nanoGPT's pre-LayerNorm
blocks, GELU MLP, learned position embeddings and a head tied to the token embedding. Attention
runs through ``scaled_dot_product_attention`` in both. The configuration is a plain dataclass
stored in every checkpoint, so a checkpoint alone rebuilds the model.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from macgpt.config.schema import ModelConfig

# One layer's cache: (keys, values), each (batch, heads, time, head_dim).
LayerCache = tuple[torch.Tensor, torch.Tensor]


def uses_bias(cfg: ModelConfig) -> bool:
    return cfg.bias and cfg.recipe == "classic"


def rotary(x: torch.Tensor, start: int) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` (batch, time, ..., head_dim) by angles that grow with
    the position (``start`` is the first one). An odd head_dim leaves its last channel unrotated.
    One complex multiply does the rotation: far fewer kernels than the sin/cos form on a CPU."""
    t, d = x.size(1), x.size(-1)
    half = d // 2
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float32, device=x.device) / max(1, half))
    angles = torch.arange(start, start + t, dtype=torch.float32, device=x.device)[:, None] * freqs
    turn = torch.polar(torch.ones_like(angles), angles).view(t, *([1] * (x.dim() - 3)), half)
    pairs = x[..., : 2 * half] if d % 2 else x
    rotated = torch.view_as_real(torch.view_as_complex(pairs.float().contiguous().unflatten(-1, (half, 2))) * turn)
    rotated = rotated.flatten(-2).to(x.dtype)
    return torch.cat((rotated, x[..., 2 * half :]), dim=-1) if d % 2 else rotated


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.modern = cfg.recipe == "modern"
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=uses_bias(cfg))
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=uses_bias(cfg))
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self, x: torch.Tensor, cache: LayerCache | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        b, t, c = x.shape
        d = c // self.n_head
        qkv = self.qkv(x).view(b, t, 3, self.n_head, d)
        if self.modern:  # QK-norm, then rotary positions, on q and k at once (cached keys are stored rotated)
            start = cache[0].size(2) if cache is not None else 0
            q, k = rotary(F.rms_norm(qkv[:, :, :2], (d,)), start).unbind(2)
            v = qkv[:, :, 2]
        else:
            q, k, v = qkv.unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k = torch.cat((cache[0], k), dim=2)
            v = torch.cat((cache[1], v), dim=2)
        past = k.size(2) - t
        if past == 0:
            mask, causal = None, True
        elif t == 1:
            mask, causal = None, False  # one new query sees every cached key
        else:  # several new queries after a cached prefix: explicit causal mask
            mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            causal = False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_drop(self.proj(y)), (k, v)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=uses_bias(cfg))
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=uses_bias(cfg))
        self.drop = nn.Dropout(cfg.dropout)
        self.act = relu_squared if cfg.recipe == "modern" else F.gelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    return F.relu(x).square()


def norm(cfg: ModelConfig) -> nn.Module:
    if cfg.recipe == "modern":
        return nn.RMSNorm(cfg.n_embd)
    return nn.LayerNorm(cfg.n_embd, bias=cfg.bias)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.ln2 = norm(cfg)
        self.mlp = MLP(cfg)

    def forward(
        self, x: torch.Tensor, cache: LayerCache | None = None
    ) -> tuple[torch.Tensor, LayerCache]:
        a, new_cache = self.attn(self.ln1(x), cache)
        x = x + a
        return x + self.mlp(self.ln2(x)), new_cache


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig, device: torch.device | str | None = None) -> None:
        """``device="meta"`` builds the shapes without allocating (to check a checkpoint against them)."""
        super().__init__()
        self.cfg = cfg
        self.modern = cfg.recipe == "modern"
        with torch.device(device) if device is not None else contextlib.nullcontext():
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
            self.wpe = None if self.modern else nn.Embedding(cfg.block_size, cfg.n_embd)
            self.drop = nn.Dropout(cfg.dropout)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
            self.ln_f = norm(cfg)
            self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if not self.modern:
            self.head.weight = self.wte.weight  # tied input/output embeddings
        if str(device) != "meta":
            self._init_all()

    def _init_all(self) -> None:
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if not name.endswith("proj.weight"):
                continue
            if self.modern:  # every block starts as the identity; Muon moves them off zero at once
                nn.init.zeros_(p)
            else:  # GPT-2's scaled init keeps the residual stream's variance flat
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= sum(m.weight.numel() for m in (self.wte, self.wpe) if m is not None)
            n -= self.head.weight.numel() if self.modern else 0
        return n

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: list[LayerCache] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, list[LayerCache]]:
        """Logits for every position (or only the last when sampling without targets)."""
        t = idx.size(1)
        past = cache[0][0].size(2) if cache else 0
        if past + t > self.cfg.block_size:
            raise ValueError(f"sequence of {past + t} tokens exceeds block_size {self.cfg.block_size}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past, past + t, device=idx.device))
        else:
            x = F.rms_norm(x, (x.size(-1),))
        x = self.drop(x)
        new_cache: list[LayerCache] = []
        for i, block in enumerate(self.blocks):
            x, layer_cache = block(x, cache[i] if cache else None)
            new_cache.append(layer_cache)
        x = self.ln_f(x)
        if targets is None:
            return self.head(x[:, -1:, :]), None, new_cache
        logits = self.head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss, new_cache
