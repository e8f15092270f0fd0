"""The network and sampling: KV cache equivalence, seeded reproducibility, stopping, prompts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from macgpt.config.estimate import count_params
from macgpt.config.presets import PRESETS
from macgpt.config.schema import ModelConfig
from macgpt.model import GPT
from macgpt.worker.sampling import PromptError, SampleParams, _truncate, generate_ids, sample_text

from .helpers import tokenizer, trainer


@pytest.mark.parametrize("name", list(PRESETS))
def test_param_count_estimate_matches_the_module(name: str) -> None:
    cfg = dataclasses.replace(PRESETS[name].model, vocab_size=777)
    model = GPT(cfg)
    assert count_params(cfg) == (model.num_params(non_embedding=True), model.num_params())


@pytest.mark.parametrize("name", list(PRESETS))
def test_param_count_estimate_matches_the_classic_module(name: str) -> None:
    cfg = dataclasses.replace(PRESETS[name].model, vocab_size=777, recipe="classic")
    assert count_params(cfg) == (GPT(cfg).num_params(non_embedding=True), GPT(cfg).num_params())


def test_output_head_is_tied_in_the_classic_recipe_only() -> None:
    classic = GPT(ModelConfig(vocab_size=300, recipe="classic"))
    assert classic.head.weight.data_ptr() == classic.wte.weight.data_ptr()
    modern = GPT(ModelConfig(vocab_size=300))
    assert modern.head.weight.data_ptr() != modern.wte.weight.data_ptr() and modern.wpe is None
    # zero-initialised output projections: every block starts as the identity
    assert all(not p.detach().any() for n, p in modern.named_parameters() if n.endswith("proj.weight"))
    assert not any(n.endswith("bias") for n, _ in modern.named_parameters())


def test_meta_construction_has_the_real_shapes_without_storage() -> None:
    cfg = ModelConfig(vocab_size=300, n_layer=2, n_embd=32, n_head=4)
    meta, real = GPT(cfg, device="meta"), GPT(cfg)
    assert {k: v.shape for k, v in meta.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}
    assert all(p.is_meta for p in meta.parameters())


@pytest.mark.parametrize("recipe", ["modern", "classic"])
def test_kv_cache_gives_the_same_logits_as_a_full_pass(recipe: str) -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=300, n_layer=2, n_embd=32, n_head=4, block_size=32, recipe=recipe))
    for p in model.parameters():  # away from the zero init, so every block does something
        p.data.add_(0.05 * torch.randn_like(p))
    model.eval()
    idx = torch.randint(0, 300, (1, 20))
    with torch.no_grad():
        full, _, _ = model(idx)
        _, _, cache = model(idx[:, :12])
        step_logits = None
        for t in range(12, 20):
            step_logits, _, cache = model(idx[:, t : t + 1], cache=cache)
        part, _, _ = model(idx[:, 15:20], cache=model(idx[:, :15])[2])
    assert torch.allclose(full[0, -1], step_logits[0, -1], atol=1e-5)
    assert torch.allclose(full[0, -1], part[0, -1], atol=1e-5)


def test_context_overflow_is_refused() -> None:
    model = GPT(ModelConfig(vocab_size=300, block_size=8))
    with pytest.raises(ValueError, match="exceeds block_size 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_rotary_attention_depends_on_relative_positions_only() -> None:
    from macgpt.model import rotary

    torch.manual_seed(5)
    q, k = torch.randn(1, 6, 2, 13), torch.randn(1, 6, 2, 13)  # (batch, time, heads, odd head_dim)

    def scores(start: int) -> torch.Tensor:
        return rotary(q, start).transpose(1, 2) @ rotary(k, start).transpose(1, 2).mT

    assert torch.allclose(scores(0), scores(1000), atol=1e-3)  # far past any context window
    assert not torch.allclose(scores(0), q.transpose(1, 2) @ k.transpose(1, 2).mT, atol=1e-3)
    assert torch.equal(rotary(q, 7)[..., 12], q[..., 12])  # the odd channel is left alone
    assert torch.allclose(rotary(q, 0)[:, 0], q[:, 0], atol=1e-6)  # position 0 is no rotation


@pytest.mark.parametrize("recipe", ["modern", "classic"])
def test_cached_and_uncached_sampling_agree_past_the_context(recipe: str) -> None:
    """Once the context is full, the KV cache slides: it re-reads the last half of the window and
    goes on from there. Every token it picks, before and after each slide, is the one a full
    recomputation over that same window picks (greedy; a near-tie within float noise agrees too).
    Without the cache each step reads the last block_size tokens: the same until the first slide."""
    torch.manual_seed(11)
    model, prompt, block = GPT(ModelConfig(vocab_size=300, block_size=16, recipe=recipe)), [5, 6, 7], 16
    with torch.no_grad():  # random weights everywhere: what it picks depends on the whole window
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    params = SampleParams(max_new_tokens=40, temperature=0.0, repetition_penalty=1.0, stop_at_im_end=False)
    cached, _ = generate_ids(model, prompt, params, None, use_cache=True)
    plain, _ = generate_ids(model, prompt, params, None, use_cache=False)
    assert len(cached) == len(plain) == 40
    seq, start, slides = list(prompt), 0, []
    model.eval()
    with torch.no_grad():
        for i, token in enumerate(cached):
            if len(seq) - start > block:  # the cache is full: it keeps only the last half, re-read
                start = len(seq) - block // 2
                slides.append(i)
            logits = model(torch.tensor([seq[start:]]))[0][0, -1]
            assert logits[token] >= logits.max() - 1e-4, f"token {i} (window from {start}) differs"
            seq.append(token)
    assert slides[0] == block + 1 - len(prompt) and len(slides) >= 3  # it slid, several times
    assert cached[:slides[0]] == plain[:slides[0]]


def test_seeded_sampling_is_reproducible_and_seed_sensitive() -> None:
    tr = trainer()
    for _ in range(30):
        tr.train_step()
    r1 = tr.sample("你好，", SampleParams(max_new_tokens=30, seed=7, stop_at_im_end=False))
    r2 = tr.sample("你好，", SampleParams(max_new_tokens=30, seed=7, stop_at_im_end=False))
    r3 = tr.sample("你好，", SampleParams(max_new_tokens=30, seed=8, stop_at_im_end=False))
    assert r1.text == r2.text and r1.text.startswith("你好，")
    assert r1.text != r3.text


def test_sampling_leaves_the_global_rng_alone() -> None:
    tr = trainer()
    state = torch.get_rng_state()
    tr.sample("你好，", SampleParams(max_new_tokens=10, seed=3))
    assert torch.equal(state, torch.get_rng_state())


def test_stops_at_im_end() -> None:
    tok = tokenizer()
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=32, recipe="classic"))  # LayerNorm's bias
    with torch.no_grad():  # make <|im_end|> overwhelmingly likely
        model.head.weight[tok.im_end_id] += 5.0
        model.ln_f.bias.fill_(1.0)
        model.ln_f.weight.fill_(0.0)
    r = sample_text(model, tok, "你好", SampleParams(max_new_tokens=20, temperature=0.0))
    assert r.stopped == "im_end" and r.tokens == 0 and r.text == "你好"


def test_prompt_rules() -> None:
    tok = tokenizer()
    model = GPT(ModelConfig(vocab_size=tok.vocab_size, block_size=16))
    with pytest.raises(PromptError, match="empty"):
        sample_text(model, tok, "   ", SampleParams())
    r = sample_text(model, tok, "很长的提示" * 20, SampleParams(max_new_tokens=3, stop_at_im_end=False))
    assert r.truncated_prompt and r.prompt_tokens == 15 and r.tokens == 3


def test_top_k_and_top_p_filters() -> None:
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    k2 = _truncate(logits.clone(), SampleParams(temperature=1.0, top_k=2, top_p=1.0))
    assert torch.isinf(k2[2:]).all() and torch.isfinite(k2[:2]).all()
    p = _truncate(logits.clone(), SampleParams(temperature=1.0, top_k=0, top_p=0.5))
    assert torch.isfinite(p[0]) and torch.isinf(p[1:]).all()  # the top token holds 64% of the mass
    one = _truncate(logits.clone(), SampleParams(temperature=1.0, top_k=0, top_p=0.0))
    assert torch.isfinite(one).sum() == 1


def test_sampled_text_never_holds_a_broken_character() -> None:
    tr = trainer()  # untrained: its choices are close to random, so stray bytes are likely
    params = SampleParams(max_new_tokens=300, temperature=2.0, top_k=0, top_p=1.0, seed=11, stop_at_im_end=False)
    free, _ = generate_ids(tr.model, tr.tokenizer.encode("你好，"), params, None)
    raw = b"".join(tr.tokenizer.token_bytes(i) for i in free)
    assert "\ufffd" in raw.decode("utf-8", errors="replace")  # without the constraint it breaks
    table = tr.tokenizer.utf8_table()
    kept, _ = generate_ids(tr.model, tr.tokenizer.encode("你好，"), params, None, utf8=table)
    data = b"".join(tr.tokenizer.token_bytes(i) for i in kept)
    state = 0
    for i in kept:
        state = table[1][state][i]
    if state:  # the last character is unfinished: drop it from its lead byte on
        data = data[: max(k for k, b in enumerate(data) if b >= 0xC0)]
    data.decode("utf-8")  # strict: every character whole (a tail may be unfinished)
    for seed in range(5):
        text = tr.sample("你好，", dataclasses.replace(params, seed=seed)).text
        assert "\ufffd" not in text and text.startswith("你好，")
