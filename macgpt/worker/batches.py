"""Token streams and batches: a seeded, resumable order over fixed-length chunks.

The training text is one stream of token ids (in memory, or a token file read by windows). Each
epoch cuts it into ``block_size + 1`` long chunks at a random offset and visits them in a random
order; both come from a generator seeded with (seed, epoch), so the position ``(epoch, index)``
alone restores the data order exactly. Small corpora use a full permutation; above
``PERM_LIMIT`` chunks a seeded Feistel bijection gives the order in constant memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch

from macgpt.worker.tokencache import TensorTokens, TokenFile, as_tokens
from macgpt.worker.tokenizer import IM_END, BPETokenizer

PERM_LIMIT = 1 << 18  # chunks; a full permutation of this many costs 2 MB
ROUNDS = 4


class DataTooShort(ValueError):
    pass


def joined(text: str) -> str:
    """A text as it enters the stream: a newline ends texts that do not end in <|im_end|>."""
    return text if text.endswith(IM_END) else text + "\n"


def token_stream(tokenizer: BPETokenizer, texts: tuple[str, ...] | list[str]) -> torch.Tensor:
    """All texts as one in-memory id stream (small corpora)."""
    ids: list[int] = []
    for chunk in tokenizer.encode_batch([joined(t) for t in texts]):
        ids.extend(chunk)
    return torch.tensor(ids, dtype=torch.long)


class Bijection:
    """A seeded permutation of ``range(n)`` computed per index: a balanced Feistel network on the
    next even power of two, cycle-walking back into range (at most ~4 rounds on average)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.half = max(1, ((n - 1).bit_length() + 1) // 2)
        self.mask = (1 << self.half) - 1
        digest = hashlib.sha256(f"macgpt-order-{seed}".encode()).digest()
        self.keys = [int.from_bytes(digest[8 * r : 8 * r + 8], "little") for r in range(ROUNDS)]

    def _round(self, x: int, key: int) -> int:
        x = (x * 0x9E3779B97F4A7C15 + key) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
        return (x * 0xBF58476D1CE4E5B9) >> 32 & self.mask

    def __getitem__(self, i: int) -> int:
        x = i
        while True:
            left, right = x >> self.half, x & self.mask
            for key in self.keys:
                left, right = right, left ^ self._round(right, key)
            x = (left << self.half) | right
            if x < self.n:
                return x

    def take(self, start: int, count: int) -> torch.Tensor:
        return torch.tensor([self[i] for i in range(start, min(self.n, start + count))], dtype=torch.long)


class _Perm:
    def __init__(self, n: int, g: torch.Generator) -> None:
        self.n = n
        self.order = torch.randperm(n, generator=g)

    def take(self, start: int, count: int) -> torch.Tensor:
        return self.order[start : start + count]


class Batcher:
    def __init__(self, stream: torch.Tensor | TokenFile | TensorTokens, block_size: int, seed: int) -> None:
        self.tokens = as_tokens(stream)
        if len(self.tokens) < 2 * block_size + 1:
            raise DataTooShort(
                f"the training data has {len(self.tokens)} tokens; block_size {block_size} needs at "
                f"least {2 * block_size + 1}: add text or lower --block-size"
            )
        self.block_size = block_size
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._order_epoch = -1
        self._offset = 0
        self._perm: _Perm | Bijection = Bijection(1, seed)

    def _order(self) -> _Perm | Bijection:
        if self._order_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._offset = int(torch.randint(self.block_size, (1,), generator=g))
            n = (len(self.tokens) - 1 - self._offset) // self.block_size
            self._perm = _Perm(n, g) if n <= PERM_LIMIT else Bijection(n, self.seed * 1_000_003 + self.epoch)
            self._order_epoch = self.epoch
        return self._perm

    def chunks_per_epoch(self) -> int:
        return (len(self.tokens) - 1) // self.block_size

    def next_batch(self, batch_size: int, rows: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``batch_size`` chunks of the order; only rows ``[lo, hi)`` of them are read (a
        rank's share: the order advances by the whole batch on every rank)."""
        picked: list[torch.Tensor] = []  # start positions, each with its own epoch's offset
        need = batch_size
        while need:
            order = self._order()
            take = order.take(self.index, need)
            picked.append(self._offset + self.block_size * take)
            need -= take.numel()
            self.index += take.numel()
            if self.index >= order.n:
                self.epoch += 1
                self.index = 0
        starts = picked[0] if len(picked) == 1 else torch.cat(picked)
        if rows is not None:
            starts = starts[rows[0] : rows[1]]
        windows = self.tokens.gather(starts, self.block_size + 1)
        return windows[:, :-1], windows[:, 1:]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.seed = int(state.get("seed", self.seed))
        self._order_epoch = -1


def eval_batches(
    stream: torch.Tensor | TokenFile | TensorTokens, block_size: int, batch_size: int, limit: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every token of a stream once as a target (consecutive chunks, then the shorter tail), or,
    when ``limit`` > 0 and the stream is longer, about ``limit`` target tokens in chunks spread
    evenly over it (the same chunks every time)."""
    tokens = as_tokens(stream)
    total = len(tokens)
    n = (total - 1) // block_size
    if limit and n * block_size > limit:
        m = max(1, limit // block_size)
        starts = torch.tensor([(i * n // m) * block_size for i in range(m)], dtype=torch.long)
        tail = False
    else:
        starts = torch.arange(n, dtype=torch.long) * block_size
        tail = True
    for i in range(0, starts.numel(), batch_size):
        rows = tokens.gather(starts[i : i + batch_size], block_size + 1)
        yield rows[:, :-1], rows[:, 1:]
    if tail:
        rest = torch.from_numpy(tokens.read(n * block_size, total - n * block_size).astype("int64"))
        if rest.numel() > 1:
            yield rest[:-1].unsqueeze(0), rest[1:].unsqueeze(0)
