"""Atomic, data-only Accelerate checkpoints: written to a temporary directory and renamed, keep-last-N, resume.

A checkpoint holds only data: `model.safetensors`, `optimizer.bin` and `random_states_{rank}.pkl` (tensors, numbers
and numpy RNG states, written by `accelerator.save_state`), `scheduler.json` and `trainer_state.json`. Nothing in it
is ever unpickled with code execution: before `accelerator.load_state` runs, every pickle-based file is loaded with
`torch.load(weights_only=True)`, and a file that needs more than that (a crafted `__reduce__`, a foreign object) or
cannot be read is refused with `UnsafeCheckpointError`, naming the file. The LR scheduler is therefore not registered
with `register_for_checkpointing` (Accelerate reloads those objects with `weights_only=False`); its state is JSON.
"""

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"
SCHEDULER_STATE = "scheduler.json"
PICKLE_SUFFIXES = (".pkl", ".bin", ".pt", ".pth")


class UnsafeCheckpointError(ValueError):
    """A checkpoint file that cannot be loaded as plain data (`torch.load(weights_only=True)`)."""


def ensure_writable_directory(path: str | Path, name: str = "output_dir") -> Path:
    """Create `path` if needed and prove that a file can be written in it, before any work is done.

    A run whose output folder is read-only, or whose path runs through a regular file, would otherwise fail at its
    first checkpoint or at the final save, after the training time is spent.

    Raises:
        ValueError: The folder cannot be created or written to; the message names `name` and the folder.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ValueError(f"{name}={str(directory)!r} is not a writable folder: {reason}") from error
    return directory


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


def load_data_only(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` (with Accelerate's allow-list for numpy RNG states), or a clear error.

    Raises:
        UnsafeCheckpointError: The file needs arbitrary unpickling (it could run code) or is unreadable.
    """
    from accelerate.utils import load

    try:
        return load(path, map_location="cpu", weights_only=True)
    except Exception as exn:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise UnsafeCheckpointError(
            f"Refusing checkpoint file {str(path)!r}: it does not load as plain data with "
            f"torch.load(weights_only=True) ({type(exn).__name__}: {str(exn).splitlines()[0][:300]}). A checkpoint "
            "written by this trainer holds only tensors, numbers and RNG states; this file is corrupt or was not "
            "written by it, and loading it fully could run code."
        ) from exn


def verify_checkpoint(checkpoint: str | Path, process_index: int = 0) -> None:
    """Check that every file of `checkpoint` is data only before anything in it is loaded.

    Raises:
        UnsafeCheckpointError: A pickle-based file does not load with `weights_only=True`, a JSON file does not parse,
            or the checkpoint was written by an older version that saved the scheduler as a full pickle.
    """
    checkpoint = Path(checkpoint)
    for path in sorted(checkpoint.iterdir()):
        if path.suffix in PICKLE_SUFFIXES:
            load_data_only(path)
        elif path.suffix == ".json":
            try:
                json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as exn:
                raise UnsafeCheckpointError(f"Checkpoint file {str(path)!r} is not valid JSON: {exn}") from exn
    if not (checkpoint / SCHEDULER_STATE).exists():
        raise UnsafeCheckpointError(
            f"Checkpoint {str(checkpoint)!r} has no {SCHEDULER_STATE} (written by an older version that pickled the "
            "LR scheduler into custom_checkpoint_0.pkl, which Accelerate reloads with full unpickling); it cannot be "
            "resumed safely"
        )
    rng_file = checkpoint / f"random_states_{process_index}.pkl"
    if rng_file.exists():
        missing = {"random_state", "numpy_random_seed", "torch_manual_seed"} - set(load_data_only(rng_file))
        if missing:
            raise UnsafeCheckpointError(f"Checkpoint file {str(rng_file)!r} lacks the RNG state(s) {sorted(missing)}")
    else:
        logger.warning(
            "Checkpoint %s has no %s: the RNG state of process %d is NOT restored (was it saved by fewer processes?); "
            "the resumed run will not reproduce an uninterrupted one",
            checkpoint,
            rng_file.name,
            process_index,
        )


def save_checkpoint(
    accelerator: Any, output_dir: str | Path, state: dict[str, Any], total_limit: int | None, scheduler: Any = None
) -> Path:
    """Save the Accelerate state atomically: write into a temporary directory, then rename it into place.

    A run killed mid-save leaves only a `.tmp-checkpoint-*` directory, which `list_checkpoints` ignores and the next
    save removes. Every process must call this (each writes its RNG state).

    Args:
        accelerator: The run's `Accelerator`.
        output_dir: Run directory; the checkpoint becomes `output_dir/checkpoint-{state["step"]}`.
        state: Trainer state (JSON-serialisable), written to `trainer_state.json`.
        total_limit: Keep at most this many checkpoints (None or 0: all).
        scheduler: LR scheduler whose `state_dict()` goes to `scheduler.json`.
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
        if scheduler is not None:
            (tmp / SCHEDULER_STATE).write_text(json.dumps(scheduler.state_dict(), indent=2))
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if total_limit:
            for old in list_checkpoints(root)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Any, checkpoint: str | Path, scheduler: Any = None) -> dict[str, Any]:
    """Verify `checkpoint` (see `verify_checkpoint`), restore model, optimizer, RNG and scheduler; return the state.

    Raises:
        UnsafeCheckpointError: See `verify_checkpoint`.
    """
    checkpoint = Path(checkpoint)
    verify_checkpoint(checkpoint, accelerator.process_index)
    accelerator.load_state(str(checkpoint))
    if scheduler is not None:
        scheduler.load_state_dict(json.loads((checkpoint / SCHEDULER_STATE).read_text()))
    return json.loads((checkpoint / TRAINER_STATE).read_text())
