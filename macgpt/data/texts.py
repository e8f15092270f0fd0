"""Small corpora held in memory: every text of some validated files (the built-in set, tests).

Big corpora are never held like this; the worker streams them (``sources.texts_of``) into a token
cache. Pure standard library.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from macgpt.data.sources import Manifest, validate
from macgpt.errors import DataError

__all__ = ["Corpus", "DataError", "load_corpus"]


@dataclass(frozen=True)
class Corpus:
    texts: tuple[str, ...]
    files: tuple[str, ...]
    manifest: Manifest | None = None

    @property
    def sha256(self) -> str:
        """Identity of the text content (for tokenizer reuse across jobs)."""
        h = hashlib.sha256()
        for t in self.texts:
            h.update(t.encode("utf-8"))
            h.update(b"\x00")
        return h.hexdigest()

    @property
    def chars(self) -> int:
        return sum(len(t) for t in self.texts)


def load_corpus(paths: list[str | Path]) -> Corpus:
    """All texts of the given files and directories, in order; DataError listing every problem."""
    texts: list[str] = []
    manifest = validate(paths, on_text=texts.append)
    return Corpus(tuple(texts), tuple(f.path for f in manifest.files), manifest)
