"""Text generation: temperature, top-k, top-p, repetition penalty, a KV cache, streamed output.

Sampling draws from its own seeded ``torch.Generator``, never from the global RNG, so a
generation test in the middle of training leaves the training run bit-for-bit unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

import torch

from macgpt import protocol
from macgpt.model import GPT, LayerCache
from macgpt.worker.tokenizer import BPETokenizer


class PromptError(ValueError):
    pass


_D = protocol.SAMPLE_DEFAULTS


@dataclass(frozen=True)
class SampleParams:
    max_new_tokens: int = _D["max_new_tokens"]
    temperature: float = _D["temperature"]
    top_k: int = _D["top_k"]
    top_p: float = _D["top_p"]
    repetition_penalty: float = _D["repetition_penalty"]
    seed: int = 0
    stop_at_im_end: bool = True

    def __post_init__(self) -> None:
        """The control protocol's ranges, wherever the values come from (CLI, daemon, generation test)."""
        spec = protocol.COMMANDS["sample"]
        for f in fields(self):
            if f.name in spec:
                try:
                    spec[f.name].check("sample", f.name, getattr(self, f.name))
                except protocol.ProtocolError as e:
                    raise ValueError(e.message) from None


@dataclass
class SampleResult:
    text: str  # the prompt followed by the generated text
    completion: str
    tokens: int
    prompt_tokens: int
    truncated_prompt: bool
    stopped: str  # "im_end" or "length"


def _penalize(logits: torch.Tensor, history: list[int], penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: make every token already in the text less likely."""
    if penalty == 1.0 or not history:
        return logits
    seen_ids = torch.tensor(history)
    seen = logits[seen_ids]
    logits[seen_ids] = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def _truncate(logits: torch.Tensor, p: SampleParams) -> torch.Tensor:
    """Temperature, then keep the top-k tokens and the nucleus of mass top-p."""
    logits = logits / p.temperature
    if 0 < p.top_k < logits.numel():
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs > p.top_p  # the top token always stays
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return logits


@torch.no_grad()
def generate_ids(
    model: GPT,
    prompt_ids: list[int],
    params: SampleParams,
    stop_id: int | None,
    on_token: Callable[[int], None] | None = None,
    use_cache: bool = True,
    utf8: tuple[list[list[bool]], list[list[int]]] | None = None,
) -> tuple[list[int], str]:
    """New token ids after ``prompt_ids`` (which must fit the context) and why generation stopped.

    With ``utf8`` (a tokenizer's ``utf8_table``), a token that would break a character is never
    chosen: a byte-level model otherwise emits stray bytes that decode to U+FFFD.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    block = model.cfg.block_size
    g = torch.Generator(device="cpu").manual_seed(params.seed)
    seq = list(prompt_ids)
    out: list[int] = []
    cache: list[LayerCache] | None = None
    pending = seq  # tokens not yet in the cache
    stopped = "length"
    masks = [~torch.tensor(row) for row in utf8[0]] if utf8 is not None else None
    state = 0  # the UTF-8 validator's state after the text so far (a prompt ends on a whole character)
    try:
        for _ in range(params.max_new_tokens):
            if not use_cache:
                window = torch.tensor([seq[-block:]], device=device)
                logits, _, _ = model(window)
            else:
                if cache is not None and cache[0][0].size(2) + len(pending) > block:
                    cache, pending = None, seq[-(block // 2) :]  # slide: re-read the last half
                logits, _, cache = model(torch.tensor([pending], device=device), cache=cache)
            logits = _penalize(logits[0, -1].float().cpu(), seq, params.repetition_penalty)
            if masks is not None:
                logits = logits.masked_fill(masks[state], float("-inf"))
            if params.temperature == 0:
                nxt = int(torch.argmax(logits))
            else:
                probs = torch.softmax(_truncate(logits, params), dim=-1)
                if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
                    raise ValueError("sampling produced no valid probabilities (non-finite logits)")
                nxt = int(torch.multinomial(probs, 1, generator=g))
            if params.stop_at_im_end and nxt == stop_id:
                stopped = "im_end"
                break
            if utf8 is not None:
                state = utf8[1][state][nxt]
            seq.append(nxt)
            out.append(nxt)
            pending = [nxt]
            if on_token is not None:
                on_token(nxt)
    finally:
        model.train(was_training)
    return out, stopped


def sample_text(
    model: GPT,
    tokenizer: BPETokenizer,
    prompt: str,
    params: SampleParams,
    on_text: Callable[[str], None] | None = None,
    use_cache: bool = True,
) -> SampleResult:
    """Generate a continuation of ``prompt``; ``on_text`` receives whole characters as they form."""
    if not prompt or not prompt.strip():
        raise PromptError("the prompt is empty")
    ids = tokenizer.encode(prompt)
    limit = model.cfg.block_size - 1
    truncated = len(ids) > limit
    if truncated:
        ids = ids[-limit:]
    stream = tokenizer.stream_decoder()
    parts: list[str] = []

    def emit(token_id: int) -> None:
        piece = stream.feed(token_id)
        if piece:
            parts.append(piece)
            if on_text is not None:
                on_text(piece)

    new_ids, stopped = generate_ids(model, ids, params, tokenizer.im_end_id, emit, use_cache,
                                   tokenizer.utf8_table())
    tail = stream.flush()
    if tail:
        parts.append(tail)
        if on_text is not None:
            on_text(tail)
    completion = "".join(parts)
    return SampleResult(
        text=tokenizer.decode(ids) + completion if truncated else prompt + completion,
        completion=completion,
        tokens=len(new_ids),
        prompt_tokens=len(ids),
        truncated_prompt=truncated,
        stopped=stopped,
    )
