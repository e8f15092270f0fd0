"""Starting a new job from another model's weights (`submit --init-from`): the model's shape and
tokenizer come with the weights; the optimizer, step count and schedule start fresh.

The file is trusted no more than a ``--model`` file: its config is checked against its tensors and
its size (``modelfile.check_tensors``, on the meta device) before the trainer builds anything, so a
small file claiming a huge model is refused instead of allocated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from macgpt.ckptformat import CheckpointError
from macgpt.config.schema import ConfigError, ModelConfig, stored_model_config
from macgpt.fsutil import atomic_write_text
from macgpt.worker import checkpoint, modelfile


class InitFromError(ConfigError):
    """The ``--init-from`` file cannot start this job: the worker fails it (no retry helps)."""


def load_init(path: str, job_dir: Path) -> tuple[dict[str, Any], ModelConfig]:
    """The checkpoint at ``path`` and its model shape, checked against its tensors and the file's
    size before anything is built; its tokenizer becomes the job's own (written once, atomically,
    so a restarted worker finds it whole). ``InitFromError`` names the file and what is wrong."""
    file = Path(path)
    try:
        state = checkpoint.load_file(file)
        cfg = stored_model_config(state["model_config"])
        modelfile.check_tensors(cfg, state.get("model"), file.stat().st_size, str(file))
        tokenizer_json = state["tokenizer_json"]
        if not isinstance(tokenizer_json, str):
            raise CheckpointError(f"{file}: 'tokenizer_json' is a {type(tokenizer_json).__name__}, not a string")
    except (CheckpointError, ConfigError, KeyError, TypeError, OSError) as e:
        detail = f"field {e} missing" if isinstance(e, KeyError) else str(e)
        raise InitFromError(f"--init-from: {detail}") from None
    tok_path = job_dir / "tokenizer.json"
    if not tok_path.exists():
        atomic_write_text(tok_path, tokenizer_json)  # never a half-written tokenizer
    return state, cfg
