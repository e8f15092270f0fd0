"""Our AdamW runs torch's fused kernel: bit-for-bit the updates of torch.optim.AdamW(fused=True);
the foreach fallback matches torch's foreach AdamW; the state round-trips."""

from __future__ import annotations

import torch

from macgpt.worker.adamw import AdamW


def models(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    a = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    b = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    b.load_state_dict(a.state_dict())
    return a, b


def groups(m: torch.nn.Module) -> list[dict]:
    return [{"params": [p for p in m.parameters() if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in m.parameters() if p.dim() < 2], "weight_decay": 0.0}]


def train(m: torch.nn.Module, opt, steps: int = 7, start: int = 0, total: int | None = None) -> None:
    """Steps ``start..steps-1`` of a run of ``total`` steps (data and learning rate by step)."""
    total = total or steps
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        x = torch.randn(5, 8, generator=g)
        if i < start:
            continue
        for group in opt.param_groups:
            group["lr"] = 1e-2 * (i + 1) / total
        m(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def test_bitwise_equal_to_torch_fused_adamw() -> None:
    a, b = models()
    ours = AdamW(groups(a), lr=1e-2, betas=(0.9, 0.95))
    theirs = torch.optim.AdamW(groups(b), lr=1e-2, betas=(0.9, 0.95), fused=True)
    train(a, ours)
    train(b, theirs)
    assert ours.fused is True
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_foreach_fallback_matches_torch() -> None:
    a, b = models(3)
    ours = AdamW(groups(a), lr=1e-2, betas=(0.9, 0.99))
    ours.fused = False
    theirs = torch.optim.AdamW(groups(b), lr=1e-2, betas=(0.9, 0.99), foreach=True)
    train(a, ours)
    train(b, theirs)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5)


def test_state_dict_round_trip_continues_exactly() -> None:
    a, b = models(5)
    full = AdamW(groups(a), lr=1e-2, betas=(0.9, 0.99))
    train(a, full, 10)
    first = AdamW(groups(b), lr=1e-2, betas=(0.9, 0.99))
    train(b, first, 4, total=10)
    resumed = AdamW(groups(b), lr=1.0, betas=(0.5, 0.5))
    resumed.load_state_dict(first.state_dict())
    assert resumed.param_groups[0]["betas"] == (0.9, 0.99)
    train(b, resumed, 10, start=4)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
