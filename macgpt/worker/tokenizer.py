"""Byte-level BPE tokenizer (HuggingFace ``tokenizers``), saved as JSON, and a streaming decoder.

Byte-level means every UTF-8 input has an encoding: no unknown tokens, whatever the script.
The chat markers ``<|im_start|>`` and ``<|im_end|>`` are special tokens, never split. A trained
tokenizer is cached under the home by (corpus hash, vocab size), so a new job on the same data
reuses it instead of training again.
"""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Iterable, Sized
from functools import cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from macgpt.fsutil import atomic_write_bytes
from macgpt.worker.progress import Reporter, counted

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (IM_START, IM_END)


@cache
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's table that maps each byte to a printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class BPETokenizer:
    def __init__(self, tok: Tokenizer) -> None:
        self._tok = tok
        self.json = tok.to_str()
        self.sha256 = hashlib.sha256(self.json.encode("utf-8")).hexdigest()
        decoder = _byte_decoder()
        self._bytes: list[bytes] = []
        for i in range(tok.get_vocab_size()):
            piece = tok.id_to_token(i)
            if piece in SPECIAL_TOKENS:
                self._bytes.append(piece.encode("utf-8"))
            else:
                self._bytes.append(bytes(decoder[ch] for ch in piece))
        self.im_end_id = tok.token_to_id(IM_END)
        self.im_start_id = tok.token_to_id(IM_START)
        self._utf8_table: tuple[list[list[bool]], list[list[int]]] | None = None

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, progress: Reporter | None = None) -> BPETokenizer:
        """Trained on ``texts`` as they stream by (an iterator keeps memory flat on a big sample)."""
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        length = len(texts) if isinstance(texts, Sized) else None
        tok.train_from_iterator(counted(texts, progress), trainer, length=length)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        return cls(Tokenizer.from_str(text))

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        return cls.from_json(path.read_text(encoding="utf-8"))

    def save(self, path: Path) -> None:
        atomic_write_bytes(path, self.json.encode("utf-8"))

    @property
    def vocab_size(self) -> int:
        return len(self._bytes)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str] | tuple[str, ...]) -> list[list[int]]:
        # the fast variant computes no character offsets (we never use them): the same ids, ~25 % sooner
        return [e.ids for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def decode(self, ids: list[int]) -> str:
        return b"".join(self._bytes[i] for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> StreamDecoder:
        return StreamDecoder(self)

    def utf8_table(self) -> tuple[list[list[bool]], list[list[int]]]:
        """For each UTF-8 validator state (``UTF8_STATES``; 0: between characters), which tokens may
        come next without breaking a character, and the state after each; sampling masks the rest."""
        if self._utf8_table is None:
            n = len(UTF8_STATES)
            allowed = [[False] * self.vocab_size for _ in range(n)]
            after = [[0] * self.vocab_size for _ in range(n)]
            for token, data in enumerate(self._bytes):
                for state in range(n):
                    end = _utf8_walk(state, data)
                    if end is not None:
                        allowed[state][token], after[state][token] = True, end
            self._utf8_table = (allowed, after)
        return self._utf8_table


# States of a UTF-8 validator: (continuation bytes owed, the range the next byte must fall in).
# After E0, ED, F0 and F4 the first continuation byte has a narrower range (no overlong forms,
# no surrogates, nothing past U+10FFFF); later ones are always 80-BF.
UTF8_STATES = ((0, 0, 0), (1, 0x80, 0xBF), (2, 0x80, 0xBF), (3, 0x80, 0xBF),
               (2, 0xA0, 0xBF), (2, 0x80, 0x9F), (3, 0x90, 0xBF), (3, 0x80, 0x8F))
_LEAD = {**{b: 1 for b in range(0xC2, 0xE0)}, **{b: 2 for b in range(0xE1, 0xF0)}, 0xE0: 4, 0xED: 5,
         0xF0: 6, 0xF1: 3, 0xF2: 3, 0xF3: 3, 0xF4: 7}


def _utf8_walk(state: int, data: bytes) -> int | None:
    """The validator's state after ``data``, or None where the bytes cannot be valid UTF-8."""
    for b in data:
        owed, lo, hi = UTF8_STATES[state]
        if owed:
            if not lo <= b <= hi:
                return None
            state = owed - 1  # the generic state owing one byte fewer
        elif b >= 0x80:
            state = _LEAD.get(b, -1)
            if state < 0:
                return None
    return state


class StreamDecoder:
    """Turns token ids into text as they come, holding back the bytes of an unfinished character.

    Bytes that can never form a character (sampling avoids them; see ``utf8_table``), and an
    unfinished character at the very end, are dropped rather than shown as U+FFFD.
    """

    def __init__(self, tokenizer: BPETokenizer) -> None:
        self._tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="ignore")

    def feed(self, token_id: int) -> str:
        return self._utf8.decode(self._tok.token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


def load_or_train(
    texts: Iterable[str], corpus_sha: str, vocab_size: int, job_path: Path, cache_dir: Path | None,
    progress: Reporter | None = None,
) -> tuple[BPETokenizer, str]:
    """The job's tokenizer: the job's own file, else the shared cache, else a new one.

    Returns the tokenizer and where it came from ('job', 'cache' or 'trained').
    """
    if job_path.exists():
        return BPETokenizer.load(job_path), "job"
    cached = cache_dir / f"{corpus_sha[:32]}-v{vocab_size}.json" if cache_dir else None
    if cached is not None and cached.exists():
        try:
            tok = BPETokenizer.load(cached)
        except Exception:  # a damaged cache entry is only a cache miss
            tok = None
        if tok is not None:
            job_path.parent.mkdir(parents=True, exist_ok=True)
            tok.save(job_path)
            return tok, "cache"
    tok = BPETokenizer.train(texts, vocab_size, progress)
    job_path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(job_path)
    if cached is not None:
        os.makedirs(cached.parent, exist_ok=True)
        tok.save(cached)
    return tok, "trained"
