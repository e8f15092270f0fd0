"""Muon: orthogonalisation, the update rule against its definition, batching, state round trip."""

from __future__ import annotations

import pytest
import torch

from macgpt.worker.muon import Muon, newton_schulz


@pytest.mark.parametrize("shape", [(32, 32), (96, 32), (32, 128), (7, 13)])
def test_newton_schulz_brings_every_singular_value_near_one(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    # singular values spread over two orders of magnitude (five quintic steps lift anything above ~1/500 of the norm)
    u, _ = torch.linalg.qr(torch.randn(shape[0], shape[0]))
    v, _ = torch.linalg.qr(torch.randn(shape[1], shape[1]))
    k = min(shape)
    s = torch.logspace(-2, 0, k)
    g = u[:, :k] @ torch.diag(s) @ v[:, :k].T
    before = torch.linalg.svdvals(g)
    after = torch.linalg.svdvals(newton_schulz(g))
    assert before.max() / before.min() > 99
    assert after.min() > 0.6 and after.max() < 1.25, after
    # the singular vectors are kept: the result points the same way as u v^T
    polar = u[:, :k] @ v[:, :k].T
    cos = (newton_schulz(g) * polar).sum() / (newton_schulz(g).norm() * polar.norm())
    assert cos > 0.95


def test_batched_iteration_equals_one_matrix_at_a_time() -> None:
    torch.manual_seed(1)
    stack = torch.randn(5, 48, 16)
    batched = newton_schulz(stack)
    for i in range(5):
        assert torch.allclose(batched[i], newton_schulz(stack[i]), atol=1e-5)


def test_bfloat16_iteration_stays_close_to_float32() -> None:
    torch.manual_seed(2)
    g = torch.randn(3, 64, 32)
    a, b = newton_schulz(g), newton_schulz(g, dtype=torch.bfloat16)
    assert b.dtype == torch.float32 and (a - b).norm() / a.norm() < 0.05


def test_one_step_matches_the_published_rule() -> None:
    torch.manual_seed(3)
    w = torch.randn(24, 8, requires_grad=True)
    start = w.detach().clone()
    opt = Muon([w], lr=0.1, momentum=0.9, ns_dtype=torch.float32)  # the rule, not bf16's rounding
    grads = [torch.randn(24, 8) for _ in range(2)]
    buf = torch.zeros(24, 8)
    expected = start.clone()
    for g in grads:
        w.grad = g.clone()
        opt.step()
        buf = 0.9 * buf + 0.1 * g
        nesterov = 0.1 * g + 0.9 * buf
        expected -= 0.1 * (24 / 8) ** 0.5 * newton_schulz(nesterov)
    assert torch.allclose(w.detach(), expected, atol=1e-5)
    assert not torch.equal(w.detach(), start)


def test_refuses_vectors() -> None:
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.zeros(3, requires_grad=True)], lr=0.1)


def test_state_round_trip_continues_bit_for_bit() -> None:
    torch.manual_seed(4)
    shapes = [(16, 8), (16, 8), (8, 32)]  # two share a shape: one batched group
    data = [[torch.randn(*s) for s in shapes] for _ in range(6)]

    def run(params: list[torch.Tensor], opt: Muon, steps: range) -> None:
        for i in steps:
            for p, g in zip(params, data[i], strict=True):
                p.grad = g.clone()
            opt.step()

    init = [torch.randn(*s) for s in shapes]
    a = [t.clone().requires_grad_() for t in init]
    opt_a = Muon(a, lr=0.05)
    run(a, opt_a, range(6))
    b = [t.clone().requires_grad_() for t in init]
    opt_b = Muon(b, lr=0.05)
    run(b, opt_b, range(3))
    saved = opt_b.state_dict()
    c = [t.detach().clone().requires_grad_() for t in b]
    opt_c = Muon(c, lr=999.0, momentum=0.1)  # group settings come back from the state
    opt_c.load_state_dict(saved)
    assert opt_c.param_groups[0]["lr"] == 0.05 and opt_c.param_groups[0]["momentum"] == 0.95
    run(c, opt_c, range(3, 6))
    assert all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    with pytest.raises(ValueError, match="does not match"):
        Muon(c[:2], lr=0.1).load_state_dict(saved)
