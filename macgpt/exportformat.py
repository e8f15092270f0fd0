"""An exported model directory without torch: ``model.safetensors`` + ``tokenizer.json`` +
``config.json`` (+ ``README.md``). ``check_dir`` reads the safetensors header and refuses any
tensor whose byte range, size or dtype does not add up, before a single tensor is allocated; the
CLI calls it so a wrong ``--model DIR`` fails at once."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from macgpt.ckptformat import CheckpointError

WEIGHTS, TOKENIZER, CONFIG, README = "model.safetensors", "tokenizer.json", "config.json", "README.md"
FORMAT = "macgpt-export"
VERSION = 1
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
MAX_HEADER = 16 * 1024 * 1024


@dataclass(frozen=True)
class Header:
    tensors: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape)
    metadata: dict[str, str]


def read_header(path: Path) -> Header:
    """Parse and check a safetensors header: every tensor's bytes lie inside the file, match its
    dtype and shape, and together cover the data exactly."""
    where = str(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{where}: too short to be a safetensors file")
            (n,) = struct.unpack("<Q", head)
            size = Path(path).stat().st_size
            if n > MAX_HEADER or n > size - 8:
                raise CheckpointError(f"{where}: header length {n} does not fit a file of {size} bytes")
            raw = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"{where}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{where}: the safetensors header is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: the safetensors header is not a map")
    metadata = raw.pop("__metadata__", {}) or {}
    data_bytes, tensors, spans = size - 8 - n, {}, []
    for name, t in raw.items():
        try:
            dtype, shape, (start, end) = t["dtype"], tuple(int(s) for s in t["shape"]), t["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{where}: tensor {name!r}: malformed header entry {t!r}"[:300]) from None
        if dtype not in DTYPE_BYTES:
            raise CheckpointError(f"{where}: tensor {name!r}: unsupported dtype {dtype!r}")
        want = math.prod(shape) * DTYPE_BYTES[dtype]
        if not (0 <= start <= end <= data_bytes) or end - start != want:
            raise CheckpointError(f"{where}: tensor {name!r}: {dtype}{list(shape)} needs {want} bytes, the header "
                                  f"gives [{start}, {end}) of {data_bytes} data bytes")
        tensors[name] = (dtype, shape)
        spans.append((start, end))
    if sum(e - s for s, e in spans) != data_bytes:
        raise CheckpointError(f"{where}: the tensors cover {sum(e - s for s, e in spans)} of {data_bytes} data bytes")
    return Header(tensors, {str(k): str(v) for k, v in metadata.items()})


def read_config(d: Path) -> dict[str, Any]:
    path = Path(d) / CONFIG
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{d}: is a directory, not a checkpoint file nor an exported model (no {CONFIG}); "
                              "make one with `macgpt export JOB --out DIR`") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT or cfg.get("version") != VERSION:
        raise CheckpointError(f"{path}: not a {FORMAT} version {VERSION} config")
    if not isinstance(cfg.get("model_config"), dict):
        raise CheckpointError(f"{path}: field 'model_config' is missing or not a map")
    return cfg


def check_dir(d: Path) -> tuple[dict[str, Any], Header]:
    """The config and the weights' header of an export directory, or CheckpointError saying what is wrong."""
    cfg = read_config(d)
    if not (Path(d) / TOKENIZER).is_file():
        raise CheckpointError(f"{d}: {TOKENIZER} is missing")
    return cfg, read_header(Path(d) / WEIGHTS)


def readme(cfg: dict[str, Any], job: dict[str, Any] | None, last: dict[str, Any] | None) -> str:
    """How the model was trained, for a person who finds the directory later."""
    lines = [f"# {cfg.get('name') or 'macgpt model'}", "",
             f"A GPT trained by macgpt for {cfg.get('step')} steps; exported from `{cfg.get('source')}`.", "",
             "Load it again with `macgpt sample PROMPT --model THIS_DIR` or `macgpt evaluate --model THIS_DIR`.", "",
             "## Model", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in cfg["model_config"].items()]
    if job:
        train = job.get("train") or {}
        lines += ["", "## Training", "", f"preset `{job.get('config')}`; data: "
                  + (", ".join(f"`{Path(p).name}`" for p in job.get("data") or []) or "the built-in 200 texts"), "",
                  "| field | value |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in train.items()]
    if last:
        lines += ["", "## Result", ""]
        if last.get("loss") is not None:
            lines.append(f"- train loss at step {last.get('step')}: {last['loss']:.4f}")
        if last.get("eval_loss") is not None:
            lines.append(f"- eval loss: {last['eval_loss']:.4f} (perplexity {last.get('perplexity') or 0:.1f})")
    lines += ["", "Files: `model.safetensors` (weights), `tokenizer.json` (Hugging Face tokenizers BPE), "
              "`config.json` (the model configuration as macgpt stores it).", ""]
    return "\n".join(lines)


def verify_model(path: Path) -> None:
    """A ``--model`` argument: an export directory or a sealed checkpoint file, checked without torch."""
    from macgpt.ckptformat import verify_file

    if Path(path).is_dir():
        check_dir(Path(path))
    else:
        verify_file(Path(path))
