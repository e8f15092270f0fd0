"""Starting a new job from another model's weights (`submit --init-from`): the model's shape and
tokenizer come with the weights; the optimizer, step count and schedule start fresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from macgpt.config.schema import ModelConfig, from_dict
from macgpt.worker import checkpoint


def load_init(path: str, job_dir: Path) -> tuple[dict[str, Any], ModelConfig]:
    """The checkpoint at ``path`` and its model shape; its tokenizer becomes the job's own
    (written once, so a restarted worker finds it)."""
    state = checkpoint.load_file(Path(path))
    tok_path = job_dir / "tokenizer.json"
    if not tok_path.exists():
        tok_path.write_text(state["tokenizer_json"], encoding="utf-8")
    return state, from_dict(ModelConfig, state["model_config"])
