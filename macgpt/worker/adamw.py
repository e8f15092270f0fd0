"""AdamW on PyTorch's fused kernel, without ``torch.optim``.

It runs the very kernel ``torch.optim.AdamW(fused=True)`` runs (``torch._fused_adamw_``), so the
updates are bit-for-bit the same. It exists because constructing any ``torch.optim`` optimizer
imports ``torch._dynamo``: over two seconds of start-up on a laptop, for a compiler we never
use. Where the fused kernel is missing (some devices or builds), the same update runs as
``torch._foreach_*`` operations. The state dict has torch's AdamW layout.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def zero_grads(params: list[torch.Tensor], set_to_none: bool = True) -> None:
    for p in params:
        if set_to_none:
            p.grad = None
        elif p.grad is not None:
            p.grad.zero_()


class AdamW:
    def __init__(self, groups: list[dict[str, Any]], lr: float, betas: tuple[float, float], eps: float = 1e-8) -> None:
        self.param_groups = [
            {"params": list(g["params"]), "lr": lr, "betas": betas, "eps": eps, "weight_decay": g["weight_decay"]}
            for g in groups
        ]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        self.fused: bool | None = None  # decided at the first step

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self._params(), set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for g in self.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if not params:
                continue
            for p in params:
                if p not in self.state:
                    self.state[p] = {"step": torch.zeros((), device=p.device), "exp_avg": torch.zeros_like(p),
                                     "exp_avg_sq": torch.zeros_like(p)}
            states = [self.state[p] for p in params]
            grads = [p.grad for p in params]
            exp_avgs = [s["exp_avg"] for s in states]
            exp_avg_sqs = [s["exp_avg_sq"] for s in states]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)
            beta1, beta2 = g["betas"]
            if self.fused is not False:
                try:
                    torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=g["lr"], beta1=beta1,
                                        beta2=beta2, weight_decay=g["weight_decay"], eps=g["eps"], amsgrad=False,
                                        maximize=False)
                    self.fused = True
                    continue
                except (RuntimeError, NotImplementedError, AttributeError):
                    if self.fused:
                        raise
                    self.fused = False
            _foreach_adamw(params, grads, exp_avgs, exp_avg_sqs, steps, g["lr"], beta1, beta2, g["weight_decay"], g["eps"])

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    def state_dict(self) -> dict[str, Any]:
        index = {p: i for i, p in enumerate(self._params())}
        groups, start = [], 0
        for g in self.param_groups:
            groups.append({**{k: v for k, v in g.items() if k != "params"},
                           "params": list(range(start, start + len(g["params"])))})
            start += len(g["params"])
        state = {index[p]: {k: v.clone() for k, v in s.items()} for p, s in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        params = self._params()
        if len(sd["param_groups"]) != len(self.param_groups):
            raise ValueError("optimizer state has a different number of parameter groups")
        for g, saved in zip(self.param_groups, sd["param_groups"], strict=True):
            if len(saved["params"]) != len(g["params"]):
                raise ValueError("optimizer state does not match the model's parameters")
            g.update({k: (tuple(v) if k == "betas" else v) for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, s in sd["state"].items():
            p = params[int(i)]
            self.state[p] = {"step": s["step"].to(p.device, torch.float32).clone(), "exp_avg": s["exp_avg"].to(p).clone(),
                             "exp_avg_sq": s["exp_avg_sq"].to(p).clone()}


def _foreach_adamw(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor], steps: list[torch.Tensor], lr: float, beta1: float, beta2: float,
    weight_decay: float, eps: float,
) -> None:
    """The same update as the fused kernel, with foreach operations (decoupled weight decay)."""
    if weight_decay:
        torch._foreach_mul_(params, 1 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    for p, m, v, step in zip(params, exp_avgs, exp_avg_sqs, steps, strict=True):
        n = float(step)
        bias1, bias2 = 1 - beta1**n, 1 - beta2**n
        denom = (v.sqrt() / math.sqrt(bias2)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / bias1)
