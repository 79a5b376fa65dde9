"""Atomic Accelerate checkpoints: write to a temporary directory, rename into place, keep the last N, resume."""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories of interrupted saves are ignored)."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := CHECKPOINT_PATTERN.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if (p / TRAINER_STATE).exists()]


def resolve_checkpoint(output_dir: str | Path, resume_from_checkpoint: str | None) -> Path | None:
    """`"latest"` -> the newest complete checkpoint (None if there is none yet); a path -> itself, checked."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not (path / TRAINER_STATE).exists():
        raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint!r} is not a complete checkpoint directory")
    return path


def save_checkpoint(accelerator: Any, output_dir: str | Path, state: dict[str, Any], total_limit: int | None) -> Path:
    """Save the Accelerate state atomically: write into a temporary directory, then rename it into place.

    A run killed mid-save leaves only a `.tmp-checkpoint-*` directory, which `list_checkpoints` ignores and the next
    save removes. Every process must call this (each writes its RNG state).
    """
    root = Path(output_dir)
    final = root / f"checkpoint-{state['step']}"
    tmp = root / f".tmp-checkpoint-{state['step']}"
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
