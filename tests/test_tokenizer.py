"""Byte-level BPE: no unknown tokens, special tokens whole, streamed decoding, reuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from macgpt.data import BUILTIN_TRAIN, builtin_path
from macgpt.data.texts import load_corpus
from macgpt.worker.tokenizer import IM_END, IM_START, BPETokenizer, load_or_train

from .conftest import REAL_CHAT

SAMPLES = [
    "你好，世界！",
    "Mixed 中文 and English, 日本語もある, 한국어도, العربية",
    "emoji 🤖🎉👩‍👩‍👧 and rare 𠀋𪚥 characters",
    "tabs\tand\nnewlines  spaces",
    f"{IM_START}问题{IM_END} {IM_START}回答{IM_END}",
]


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(load_corpus([builtin_path(BUILTIN_TRAIN)]).texts, 2000)


def test_vocab_size_and_special_tokens(tok: BPETokenizer) -> None:
    assert tok.vocab_size == 2000
    ids = tok.encode(f"{IM_START}你好{IM_END}")
    assert ids[0] == tok.im_start_id and ids[-1] == tok.im_end_id


@pytest.mark.parametrize("text", SAMPLES)
def test_round_trip_any_utf8(tok: BPETokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_unseen_characters_of_the_real_eval_set_round_trip(tok: BPETokenizer) -> None:
    texts = [line for line in (REAL_CHAT / "eval.jsonl").read_text(encoding="utf-8").splitlines()[:500]]
    for t in texts:
        assert tok.decode(tok.encode(t)) == t


@pytest.mark.parametrize("text", SAMPLES)
def test_stream_decoding_never_shows_a_broken_character(tok: BPETokenizer, text: str) -> None:
    stream = tok.stream_decoder()
    pieces = [stream.feed(i) for i in tok.encode(text)] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_token_bytes_split_characters(tok: BPETokenizer) -> None:
    # A rare character is several byte tokens: decoding one alone gives no partial character.
    ids = tok.encode("𪚥")
    assert len(ids) > 1
    stream = tok.stream_decoder()
    assert stream.feed(ids[0]) == ""


def test_training_is_deterministic_and_hash_identifies_it(tok: BPETokenizer) -> None:
    again = BPETokenizer.train(load_corpus([builtin_path(BUILTIN_TRAIN)]).texts, 2000)
    assert again.sha256 == tok.sha256
    other = BPETokenizer.train(load_corpus([builtin_path(BUILTIN_TRAIN)]).texts, 1000)
    assert other.sha256 != tok.sha256


def test_reuse_job_file_then_cache(tmp_path: Path) -> None:
    corpus = load_corpus([builtin_path(BUILTIN_TRAIN)])
    cache = tmp_path / "cache"
    a, origin = load_or_train(corpus.texts, corpus.sha256, 500, tmp_path / "a" / "tokenizer.json", cache)
    assert origin == "trained"
    _, origin = load_or_train(corpus.texts, corpus.sha256, 500, tmp_path / "a" / "tokenizer.json", cache)
    assert origin == "job"
    b, origin = load_or_train(corpus.texts, corpus.sha256, 500, tmp_path / "b" / "tokenizer.json", cache)
    assert origin == "cache" and b.sha256 == a.sha256
    _, origin = load_or_train(corpus.texts, corpus.sha256, 600, tmp_path / "c" / "tokenizer.json", cache)
    assert origin == "trained"


def test_saved_as_json_not_pickle(tmp_path: Path, tok: BPETokenizer) -> None:
    tok.save(tmp_path / "t.json")
    raw = (tmp_path / "t.json").read_text(encoding="utf-8")
    assert raw.lstrip().startswith("{")
    assert BPETokenizer.load(tmp_path / "t.json").sha256 == tok.sha256


def test_batch_encoding_gives_the_ids_of_one_by_one_encoding(tok: BPETokenizer) -> None:
    """The batch path (``encode_batch_fast``, no offsets) writes the token files: same ids as ``encode``."""
    import json

    texts = [json.loads(line)["text"] for line in (REAL_CHAT / "eval.jsonl").open(encoding="utf-8")][:200]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
