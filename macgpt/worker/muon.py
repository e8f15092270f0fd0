"""Muon: momentum SGD whose update for each hidden weight matrix is orthogonalised by Newton–Schulz.

From Keller Jordan's description (kellerjordan.github.io/posts/muon): keep a momentum buffer,
take the Nesterov look-ahead ``lerp(grad, buffer, momentum)``, replace it by the nearest
semi-orthogonal matrix (all singular values near 1) with five steps of a quintic Newton–Schulz
iteration, scale by ``sqrt(max(1, rows / cols))`` and step. Only 2-D hidden matrices belong
here; embeddings, the head and gains go to AdamW.

Newton–Schulz is the optimizer's whole cost. Matrices of one shape are stacked and iterated as
one batched matmul, except in float32 on a CPU, where one at a time measured faster (bench/recipe.py:
fp32 stacked 1.07-1.32x of one by one; bf16 stacked 0.54x of bf16 one by one on a CPU with AMX).
It runs in bfloat16 where the hardware multiplies it natively (CUDA, MPS, CPUs with AVX-512 BF16
or AMX) and in float32 elsewhere, where bf16 is emulated and many times slower.
The state dict has torch's optimizer layout: ``{"state": {i: {"momentum_buffer"}}, ...}``.
"""

from __future__ import annotations

from typing import Any

import torch

from macgpt.worker.adamw import zero_grads

# Coefficients of the quintic iteration that pushes singular values in (0, 1] towards 1 fastest
# (they settle in roughly [0.7, 1.2], which trains as well as exact orthogonalisation).
NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5


def fast_dtype(device: torch.device) -> torch.dtype:
    """bfloat16 where matmuls run it natively, float32 otherwise."""
    if device.type in ("cuda", "mps"):
        return torch.bfloat16
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    return torch.bfloat16 if native else torch.float32


def newton_schulz(g: torch.Tensor, steps: int = NS_STEPS, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An approximately semi-orthogonal matrix near ``g`` (..., rows, cols); batched over leading dims."""
    x = g.to(dtype)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the smaller Gram matrix
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # every singular value <= 1
    a, b, c = NS_COEFFS
    for _ in range(steps):
        gram = x @ x.mT
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c) if gram.dim() == 3 else b * gram + c * gram @ gram
        x = torch.baddbmm(x, poly, x, beta=a) if x.dim() == 3 else a * x + poly @ x
    if tall:
        x = x.mT
    return x.to(g.dtype)


class Muon:
    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.95, nesterov: bool = True,
                 weight_decay: float = 0.0, ns_dtype: torch.dtype | None = None) -> None:
        params = list(params)
        if any(p.dim() != 2 for p in params):
            raise ValueError("Muon takes 2-D weight matrices only; give the others to AdamW")
        self.param_groups = [{"params": params, "lr": lr, "momentum": momentum, "nesterov": nesterov,
                              "weight_decay": weight_decay}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self.ns_dtype = ns_dtype

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self.param_groups[0]["params"], set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        g = self.param_groups[0]
        by_shape: dict[tuple[int, ...], list[torch.Tensor]] = {}
        for p in g["params"]:
            if p.grad is not None:
                by_shape.setdefault(tuple(p.shape), []).append(p)
        for shape, params in by_shape.items():
            updates = []
            for p in params:
                if p not in self.state:
                    self.state[p] = {"momentum_buffer": torch.zeros_like(p)}
                buf = self.state[p]["momentum_buffer"]
                buf.lerp_(p.grad, 1 - g["momentum"])
                updates.append(p.grad.lerp(buf, g["momentum"]) if g["nesterov"] else buf)
            dtype = self.ns_dtype or fast_dtype(params[0].device)
            if params[0].device.type == "cpu" and dtype == torch.float32:  # measured (bench/recipe.py):
                ortho = [newton_schulz(u, dtype=dtype) for u in updates]  # stacking fp32 is slower on a CPU
            else:  # one batched kernel per shape instead of one launch per matrix
                ortho = list(newton_schulz(torch.stack(updates), dtype=dtype).unbind(0))
            scale = max(1.0, shape[0] / shape[1]) ** 0.5
            if g["weight_decay"]:
                torch._foreach_mul_(params, 1 - g["lr"] * g["weight_decay"])
            torch._foreach_add_(params, ortho, alpha=-g["lr"] * scale)

    def state_dict(self) -> dict[str, Any]:
        params = self.param_groups[0]["params"]
        index = {p: i for i, p in enumerate(params)}
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        return {"state": {index[p]: {k: v.clone() for k, v in s.items()} for p, s in self.state.items()},
                "param_groups": [{**group, "params": list(range(len(params)))}]}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        params = self.param_groups[0]["params"]
        groups = sd["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(params):
            raise ValueError("Muon state does not match the model's hidden matrices")
        self.param_groups[0].update({k: v for k, v in groups[0].items() if k != "params"})
        self.state = {}
        for i, s in sd["state"].items():
            p = params[int(i)]
            if tuple(s["momentum_buffer"].shape) != tuple(p.shape):
                raise ValueError(f"Muon state {i}: shape {tuple(s['momentum_buffer'].shape)} vs {tuple(p.shape)}")
            self.state[p] = {"momentum_buffer": s["momentum_buffer"].to(p).clone()}
