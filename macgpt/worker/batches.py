"""Token streams and batches: a seeded, resumable order over fixed-length chunks.

The training text is one stream of token ids. Each epoch cuts it into ``block_size + 1`` long
chunks at a random offset and visits them in a random order; both come from a generator seeded
with (seed, epoch), so the position ``(epoch, index)`` alone restores the data order exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from macgpt.worker.progress import Reporter
from macgpt.worker.tokenizer import IM_END, BPETokenizer

ENCODE_SLICE = 2048  # texts per encode_batch call


class DataTooShort(ValueError):
    pass


def token_stream(tokenizer: BPETokenizer, texts: tuple[str, ...] | list[str],
                 progress: Reporter | None = None) -> torch.Tensor:
    """All texts as one id stream; a newline separates texts that do not end in <|im_end|>.
    Encoded a slice at a time so that ``progress`` hears of a long corpus as it goes."""
    joined = [t if t.endswith(IM_END) else t + "\n" for t in texts]
    ids: list[int] = []
    for start in range(0, len(joined), ENCODE_SLICE):
        for chunk in tokenizer.encode_batch(joined[start:start + ENCODE_SLICE]):
            ids.extend(chunk)
        if progress is not None:
            progress.advance(len(joined[start:start + ENCODE_SLICE]))
    if progress is not None:
        progress.finish()
    return torch.tensor(ids, dtype=torch.long)


class Batcher:
    def __init__(self, stream: torch.Tensor, block_size: int, seed: int) -> None:
        if stream.numel() < 2 * block_size + 1:
            raise DataTooShort(
                f"the training data has {stream.numel()} tokens; block_size {block_size} needs at "
                f"least {2 * block_size + 1}: add text or lower --block-size"
            )
        self.stream = stream
        self.block_size = block_size
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self._order_epoch = -1
        self._starts = torch.empty(0, dtype=torch.long)
        self._offsets = torch.arange(block_size + 1)

    def _order(self) -> torch.Tensor:
        if self._order_epoch != self.epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            offset = int(torch.randint(self.block_size, (1,), generator=g))
            n = (self.stream.numel() - 1 - offset) // self.block_size
            starts = offset + self.block_size * torch.arange(n)
            self._starts = starts[torch.randperm(n, generator=g)]
            self._order_epoch = self.epoch
        return self._starts

    def chunks_per_epoch(self) -> int:
        return (self.stream.numel() - 1) // self.block_size

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        picked: list[torch.Tensor] = []
        need = batch_size
        while need:
            starts = self._order()
            take = starts[self.index : self.index + need]
            picked.append(take)
            need -= take.numel()
            self.index += take.numel()
            if self.index >= starts.numel():
                self.epoch += 1
                self.index = 0
        starts = picked[0] if len(picked) == 1 else torch.cat(picked)
        rows = self.stream[starts.unsqueeze(1) + self._offsets]
        return rows[:, :-1], rows[:, 1:]

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self.seed = int(state.get("seed", self.seed))
        self._order_epoch = -1


def eval_batches(
    stream: torch.Tensor, block_size: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Every token of a stream once as a target: consecutive chunks, then the shorter tail."""
    n = (stream.numel() - 1) // block_size
    if n:
        full = stream[: n * block_size + 1]
        x = full[:-1].view(n, block_size)
        y = full[1:].view(n, block_size)
        for i in range(0, n, batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
    tail = stream[n * block_size :]
    if tail.numel() > 1:
        yield tail[:-1].unsqueeze(0), tail[1:].unsqueeze(0)
