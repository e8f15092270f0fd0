"""The training step and its knobs: determinism, exact resume in-process, accumulation, threads."""

from __future__ import annotations

import math

import pytest
import torch

from macgpt.config.schema import TrainConfig
from macgpt.worker.batches import Batcher
from macgpt.worker.trainer import lr_at

from .helpers import trainer


def weights(tr) -> list[torch.Tensor]:
    return [p.detach().clone() for p in tr.model.parameters()]


def test_loss_falls_and_eval_reports_perplexity() -> None:
    tr = trainer(batch_size=8, lr=1e-2)
    first = tr.train_step()
    for _ in range(60):
        tr.train_step()
    assert first > 6.0 and tr.recent_loss < first - 0.5
    ev = tr.evaluate()
    assert ev["tokens"] > 1000 and math.isclose(ev["perplexity"], math.exp(ev["loss"]), rel_tol=1e-9)


def test_same_seed_same_weights_and_other_seed_differs() -> None:
    a, b, c = trainer(seed=3), trainer(seed=3), trainer(seed=4)
    for _ in range(10):
        a.train_step(), b.train_step(), c.train_step()
    assert all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(weights(a), weights(c), strict=True))


@pytest.mark.parametrize("recipe", ["modern", "classic"])
def test_resume_from_state_is_bit_exact_with_dropout(recipe: str) -> None:
    model = {"dropout": 0.1, "recipe": recipe}
    full = trainer(model=model)
    for _ in range(20):
        full.train_step()
    part = trainer(model=model)
    for _ in range(8):
        part.train_step()
    saved = part.state_dict()
    assert saved["model_config"]["recipe"] == recipe
    resumed = trainer(model=model, seed=999)  # everything comes from the state
    torch.manual_seed(12345)  # whatever the global RNG did meanwhile
    resumed.load_state_dict(saved)
    for _ in range(12):
        resumed.train_step()
    assert all(torch.equal(x, y) for x, y in zip(weights(full), weights(resumed), strict=True))
    assert resumed.avg_loss == full.avg_loss


def test_modern_recipe_gives_muon_the_hidden_matrices_and_adamw_the_rest() -> None:
    tr = trainer(preset="small")
    names = {id(p): n for n, p in tr.model.named_parameters()}
    muon = [names[id(p)] for p in tr.optimizer.muon.param_groups[0]["params"]]
    adamw = [names[id(p)] for g in tr.optimizer.adamw.param_groups for p in g["params"]]
    assert sorted(muon) == sorted(n for n, p in tr.model.named_parameters() if n.startswith("blocks.") and p.dim() == 2)
    assert {"wte.weight", "head.weight", "ln_f.weight"} <= set(adamw) and not set(muon) & set(adamw)
    assert len(muon) + len(adamw) == len(list(tr.model.parameters()))
    tr.train_step()
    groups = tr.optimizer.param_groups
    assert groups[-1]["muon"] and groups[-1]["lr"] / groups[0]["lr"] == pytest.approx(tr.cfg.muon_lr / tr.cfg.lr)
    with pytest.raises(ValueError, match="classic"):
        tr.optimizer.load_state_dict(trainer(preset="small", model={"recipe": "classic"}).optimizer.state_dict())


@pytest.mark.parametrize("recipe", ["modern", "classic"])
def test_micro_batches_train_the_same_model(recipe: str) -> None:
    whole, split = trainer(batch_size=8, model={"recipe": recipe}), trainer(batch_size=8, model={"recipe": recipe})
    assert split.set_micro_batch(3) == 2  # the largest divisor of 8 not above 3
    if recipe == "modern":  # bf16 Newton-Schulz (on CPUs that multiply it natively) would round the
        for tr in (whole, split):  # last-bit difference of a summed gradient up to 1e-3
            tr.optimizer.muon.ns_dtype = torch.float32
    for _ in range(10):
        whole.train_step(), split.train_step()
    for x, y in zip(weights(whole), weights(split), strict=True):
        assert torch.allclose(x, y, atol=1e-5, rtol=1e-4)


def test_thread_knob() -> None:
    tr = trainer()
    assert tr.set_threads(1) == 1 == torch.get_num_threads()
    assert tr.set_threads(2) == 2 == torch.get_num_threads()
    tr.train_step()


def test_lr_schedule() -> None:
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == 0.1 and lr_at(9, cfg) == 1.0
    assert math.isclose(lr_at(10, cfg), 1.0) and math.isclose(lr_at(100, cfg), 0.1)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 100))


def test_batcher_order_is_a_function_of_seed_and_position() -> None:
    stream = torch.arange(1000)
    a = Batcher(stream, 16, seed=1)
    batches = [a.next_batch(5)[0] for _ in range(30)]  # crosses epochs
    b = Batcher(stream, 16, seed=1)
    b.load_state({"epoch": 0, "index": 0})
    for _ in range(17):
        b.next_batch(5)
    state = b.state()
    c = Batcher(stream, 16, seed=1)
    c.load_state(state)
    assert torch.equal(c.next_batch(5)[0], batches[17])
    x, y = batches[0], a.next_batch(1)[1]
    assert torch.equal(x[:, 1:], x[:, :-1] + 1) and y.shape == (1, 16)


def test_a_batch_across_an_epoch_boundary_reads_each_chunk_at_its_own_epochs_offset() -> None:
    """Each epoch cuts the stream at a random offset; a batch that spans two epochs must take the
    first part's windows at the old epoch's offset (a shared offset read past the end: a crash)."""
    n, block, seed = 1000, 16, 5
    b = Batcher(torch.arange(n), block, seed)
    expected: list[int] = []
    for epoch in range(4):
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        offset = int(torch.randint(block, (1,), generator=g))
        chunks = (n - 1 - offset) // block
        expected += (offset + block * torch.randperm(chunks, generator=g)).tolist()
    got: list[int] = []
    while len(got) < len(expected) - 13:
        x, y = b.next_batch(13)  # 13 divides no epoch's chunk count here: batches span epochs
        assert x.shape == (13, block) and torch.equal(y, x + 1)  # whole windows of the stream
        got += x[:, 0].tolist()
    assert got == expected[: len(got)]
