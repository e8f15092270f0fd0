"""Token files and the data path built on them: exact contents, reuse, rebuild after truncation or
damage, the constant-memory order of big corpora, the evaluation sample, and the hold-out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from macgpt.config.job import build_spec
from macgpt.data.sources import texts_of
from macgpt.worker import dataprep
from macgpt.worker.batches import PERM_LIMIT, Batcher, Bijection, eval_batches, joined, token_stream
from macgpt.worker.tokencache import HEADER_SIZE, _Writer, build, open_tokens

from .conftest import REAL_CHAT
from .helpers import tokenizer


def events() -> tuple[list[tuple[str, dict]], object]:
    seen: list[tuple[str, dict]] = []
    return seen, lambda phase, **f: seen.append((phase, f))


def test_token_file_holds_exactly_the_in_memory_stream(tmp_path: Path) -> None:
    tok = tokenizer()
    texts = [t for t in texts_of(dataprep.corpora(build_spec("tiny")).train)]
    expected = token_stream(tok, texts)
    for vocab, itemsize in ((tok.vocab_size, 2), (70_000, 4)):
        out = tmp_path / f"t{itemsize}.tok"
        counts = build({"t": out}, (("t", joined(t)) for t in texts), tok.encode_batch, vocab, tok.sha256, {"t": "ab" * 32})
        assert counts == {"t": expected.numel()}
        assert out.stat().st_size == HEADER_SIZE + itemsize * expected.numel()
        tf, why = open_tokens(out, tok.sha256, "ab" * 32)
        assert why == "ok" and tf.itemsize == itemsize
        assert torch.equal(torch.from_numpy(tf.read(0, len(tf)).astype(np.int64)), expected)
        starts = torch.tensor([0, 5, 1000])
        assert torch.equal(tf.gather(starts, 9), expected[starts.unsqueeze(1) + torch.arange(9)])
        assert open_tokens(out, tok.sha256, "cd" * 32) == (None, "made for another tokenizer or corpus")


def test_cache_is_reused_and_rebuilt_after_truncation_or_damage(tmp_path: Path) -> None:
    spec = build_spec("tiny", {"vocab_size": 500}, data=[str(REAL_CHAT / "train.jsonl")],
                      eval_data=[str(REAL_CHAT / "eval.jsonl")])
    c = dataprep.corpora(spec)
    seen, emit = events()
    tok, origin = dataprep.tokenizer(spec, c, tmp_path / "job" / "tokenizer.json", tmp_path / "tokenizers", emit)
    assert origin == "trained" and seen and seen[-1][0] == "tokenizer"
    train, ev = dataprep.token_files(c, tok, tmp_path / "tokens", emit)
    assert any(p == "encode" and f.get("unit") == "MB" for p, f in seen)
    first = (train.path.stat().st_ino, ev.path.stat().st_ino)
    n_train = len(train)
    seen.clear()
    again, ev2 = dataprep.token_files(c, tok, tmp_path / "tokens", emit)
    assert (again.path.stat().st_ino, ev2.path.stat().st_ino) == first and not seen  # reused, not rebuilt
    with open(train.path, "r+b") as f:
        f.truncate(train.path.stat().st_size - 10)
    with open(ev.path, "r+b") as f:  # same size, one byte flipped
        f.seek(HEADER_SIZE + 3)
        byte = f.read(1)
        f.seek(HEADER_SIZE + 3)
        f.write(bytes([byte[0] ^ 0xFF]))
    rebuilt, ev3 = dataprep.token_files(c, tok, tmp_path / "tokens", emit)
    notes = [f["note"] for p, f in seen if "note" in f]
    assert any("truncated" in n for n in notes) and any("checksum" in n for n in notes), notes
    assert len(rebuilt) == n_train and open_tokens(ev3.path, tok.sha256, c.key("eval"))[1] == "ok"
    assert not [p for p in (tmp_path / "tokens").iterdir() if p.name.startswith(".")]  # no temp files left


def test_holdout_is_deterministic_disjoint_and_about_two_percent(tmp_path: Path) -> None:
    spec = build_spec("tiny", {"vocab_size": 500}, data=[str(REAL_CHAT / "train.jsonl")])
    c = dataprep.corpora(spec)
    assert c.holdout and c.eval is None
    texts = list(texts_of(c.train))
    held = [t for t in texts if dataprep.held_out(t)]
    assert 0.005 < len(held) / len(texts) < 0.05
    tok, _ = dataprep.tokenizer(spec, c, tmp_path / "tok.json", None, lambda *a, **k: None)
    train, ev = dataprep.token_files(c, tok, tmp_path / "tokens", lambda *a, **k: None)
    expected_eval = token_stream(tok, held)
    expected_train = token_stream(tok, [t for t in texts if not dataprep.held_out(t)])
    assert torch.equal(torch.from_numpy(ev.read(0, len(ev)).astype(np.int64)), expected_eval)
    assert torch.equal(torch.from_numpy(train.read(0, len(train)).astype(np.int64)), expected_train)
    assert dataprep.corpora(spec).key("eval") == c.key("eval")  # the same texts every time


def test_bijection_is_a_permutation_in_constant_memory() -> None:
    for n in (1, 2, 3, 17, 1000, 4097):
        assert sorted(Bijection(n, 7)[i] for i in range(n)) == list(range(n))
    assert [Bijection(1000, 7)[i] for i in range(10)] != [Bijection(1000, 8)[i] for i in range(10)]
    assert [Bijection(1000, 7)[i] for i in range(10)] != list(range(10))


def test_big_corpus_order_resumes_exactly_over_a_token_file(tmp_path: Path) -> None:
    block = 8
    n_tokens = (PERM_LIMIT + 1000) * block + 1
    w = _Writer(tmp_path / "big.tok", 2)
    w.write([list(np.random.default_rng(0).integers(0, 500, n_tokens))])
    w.finish("00" * 32, "11" * 32)
    tf, _ = open_tokens(tmp_path / "big.tok", "00" * 32, "11" * 32)
    a = Batcher(tf, block, seed=3)
    assert a.chunks_per_epoch() > PERM_LIMIT
    for _ in range(5):
        a.next_batch(32)
    assert isinstance(a._order(), Bijection)  # no full permutation of 260K chunks held
    saved = a.state()
    want = [a.next_batch(32) for _ in range(3)]
    b = Batcher(tf, block, seed=3)
    b.load_state(saved)
    for (x, y), (bx, by) in zip(want, [b.next_batch(32) for _ in range(3)], strict=True):
        assert torch.equal(x, bx) and torch.equal(y, by)
        assert torch.equal(x[:, 1:], y[:, :-1])


def test_eval_sample_is_bounded_fixed_and_spread(tmp_path: Path) -> None:
    stream = torch.arange(100_001)  # each id is its position
    full = sum(y.numel() for _, y in eval_batches(stream, 64, 16))
    assert full == 100_000
    picked = [x for x, _ in eval_batches(stream, 64, 16, limit=6400)]
    assert sum(x.numel() for x in picked) == 6400
    assert next(x for x, _ in eval_batches(stream, 64, 16, limit=6400)).tolist() == picked[0].tolist()
    firsts = torch.cat(picked)[:, 0].tolist()
    assert firsts[0] == 0 and firsts[-1] > 90_000  # spread over the whole stream, not its head


def test_tokenizer_sample_is_bounded_and_spread_over_the_whole_corpus(tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with open(big, "w", encoding="utf-8") as f:
        for i in range(40_000):
            f.write(json.dumps({"text": f"第{i:05d}行：床前明月光，疑是地上霜。"}, ensure_ascii=False) + "\n")
    spec = build_spec("tiny", {"tokenizer_sample_mb": 0.1}, data=[str(big)], eval_data=[str(REAL_CHAT / "eval.jsonl")])
    c = dataprep.corpora(spec)
    assert c.train.text_bytes > 10 * 100_000
    sample = list(dataprep._sample(c, 100_000))
    size = sum(len(t.encode()) for t in sample)
    assert 50_000 < size < 150_000, size
    rows = [int(t[1:6]) for t in sample]
    assert rows[0] < 200 and rows[-1] > 39_000 and rows == sorted(rows)
    assert list(dataprep._sample(c, 100_000)) == sample  # the same sample every time


def test_a_half_written_token_file_of_a_killed_builder_is_swept_and_a_live_ones_kept(tmp_path: Path) -> None:
    """A worker killed while encoding (cancel during preparation ends it at once) leaves its
    temporary file; the next build removes it unless its writer is still alive."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "tokens.bin"
    orphan = tmp_path / f".tokens.bin.tmp-{int(dead.stdout)}"
    live = tmp_path / f".tokens.bin.tmp-{os.getppid()}"
    orphan.write_bytes(b"x" * 1000)
    live.write_bytes(b"y")
    w = _Writer(target, 2)
    w.abort()
    assert not orphan.exists() and live.exists()
