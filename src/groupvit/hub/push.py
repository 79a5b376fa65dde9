"""Pushing a saved GroupViT folder to the Hugging Face Hub, safetensors weights only.

A training output folder holds more than the model: optimizer and scheduler states (`*.pt`, `*.bin`), intermediate
`checkpoint-*/` folders, pickled training arguments. [`push_folder_to_hub`] uploads only what a user needs to load
the model, as an allowlist ([`ALLOW_PATTERNS`]) minus a denylist ([`IGNORE_PATTERNS`]), and refuses a folder whose
weights are not in safetensors. Before uploading it makes the folder Hub-native
([`groupvit.hub.remote_code.write_remote_code`]): the package's modules as remote code, `auto_map` and
`custom_pipelines` in `config.json`, the AutoProcessor `auto_map`, so that the repository also loads without
`groupvit` installed (`trust_remote_code=True`). `groupvit push` is `groupvit.cli.push`.

Example:
    ```python
    >>> from groupvit.hub.push import files_to_upload, push_folder_to_hub
    >>> files_to_upload("outputs/groupvit-s")  # doctest: +SKIP
    ['README.md', 'config.json', 'configuration_groupvit.py', 'model.safetensors', 'modeling_groupvit.py', ...]
    >>> push_folder_to_hub("outputs/groupvit-s", "me/groupvit-s", private=True)  # doctest: +SKIP
    ```
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from groupvit.hub.remote_code import remote_code_files, write_remote_code

__all__ = [
    "ALLOW_PATTERNS",
    "IGNORE_PATTERNS",
    "files_to_upload",
    "push_folder_to_hub",
    "upload_patterns",
]

logger = logging.getLogger(__name__)

ALLOW_PATTERNS: tuple[str, ...] = ("*.safetensors", "*.json", "*.txt", "*.md")
"""Files that go up: safetensors weights (and their index), configs, tokenizer and processor files, results, the
model card (README.md) and other Markdown; plus the generated remote-code modules (see [`upload_patterns`])."""
IGNORE_PATTERNS: tuple[str, ...] = ("*.bin", "*.pt", "*.pth", "*.ckpt", "checkpoint-*/**", "**/checkpoint-*/**")
"""Files that never go up, even when allowed: pickled weights and training states, intermediate checkpoints."""

DEFAULT_COMMIT_MESSAGE = "Upload GroupViT model"
_WEIGHTS = "model.safetensors"
_SHARDED_WEIGHTS_INDEX = "model.safetensors.index.json"
_PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def upload_patterns() -> list[str]:
    """[`ALLOW_PATTERNS`] plus the names of the remote-code files (only those `.py` files, no other script)."""
    return [*ALLOW_PATTERNS, *sorted(remote_code_files())]


def files_to_upload(folder: str | os.PathLike) -> list[str]:
    """The files of `folder` that [`push_folder_to_hub`] uploads, as repository paths.

    They are resolved the way `HfApi.upload_folder` resolves its patterns: every file under the folder, relative
    POSIX path, filtered by `huggingface_hub.utils.filter_repo_objects` with [`upload_patterns`] and
    [`IGNORE_PATTERNS`] plus huggingface_hub's own `.git`/`.cache` exclusions. The remote-code files are listed
    even before [`push_folder_to_hub`] writes them into the folder.

    Args:
        folder: A folder written by `save_pretrained`.

    Returns:
        Sorted repository paths.
    """
    root = Path(folder)
    paths = sorted(path.relative_to(root).as_posix() for path in root.glob("**/*") if path.is_file())
    ignore = [*IGNORE_PATTERNS, *DEFAULT_IGNORE_PATTERNS]
    selected = filter_repo_objects(paths, allow_patterns=upload_patterns(), ignore_patterns=ignore)
    return sorted({*selected, *remote_code_files()})


def _check_folder(folder: Path) -> None:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json; save the model with save_pretrained() first")
    if (folder / _WEIGHTS).is_file() or (folder / _SHARDED_WEIGHTS_INDEX).is_file():
        return
    if any((folder / name).is_file() for name in _PICKLED_WEIGHTS):
        raise ValueError(
            f"{folder} holds only pickled weights (pytorch_model.bin); only safetensors weights are pushed. Re-save "
            "them with model.save_pretrained(folder) (safetensors is the default) and push again."
        )
    raise ValueError(f"{folder} has no {_WEIGHTS} (or {_SHARDED_WEIGHTS_INDEX}); nothing to push")


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    token: str | None = None,
    create_pr: bool = False,
) -> CommitInfo:
    """Make a saved model folder Hub-native, then upload it to a Hub model repository (created if needed).

    The folder is changed in place first ([`groupvit.hub.remote_code.write_remote_code`]: remote-code `.py` files,
    `auto_map` / `custom_pipelines` in `config.json`, the processor's `auto_map`), so that it loads the same way
    locally and from the Hub, with `groupvit` installed or with `trust_remote_code=True`.

    Args:
        folder: A folder written by `save_pretrained` (weights in `model.safetensors`, possibly sharded).
        repo_id: Target repository, `"namespace/name"`.
        revision: Branch to commit to; created from `main` when missing. Default: the default branch.
        private: Create the repository as private. An existing repository keeps its visibility.
        commit_message: Commit title.
        token: Hub token; default: the `HF_TOKEN` environment variable or the cached login.
        create_pr: Open a pull request against the default branch instead of committing to it.

    Returns:
        The commit's information (`.commit_url`, `.oid`, `.pr_url` when `create_pr`).

    Raises:
        ValueError: If the folder has no config, no safetensors weights (or only `pytorch_model.bin`), a config that
            is not a GroupViT one, or `create_pr` is combined with a `revision`.
    """
    folder = Path(folder)
    _check_folder(folder)
    if create_pr and revision not in (None, "main"):
        raise ValueError("create_pr opens a pull request against the default branch; do not pass a revision with it")
    written = write_remote_code(folder)
    logger.info("Wrote the remote code into %s: %s", folder, ", ".join(written))
    files = files_to_upload(folder)
    logger.info("Pushing %d files from %s to %s: %s", len(files), folder, repo_id, ", ".join(files))

    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    repo_id = getattr(repo_url, "repo_id", None) or repo_id  # the Hub may resolve the namespace
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=folder,
        repo_type="model",
        revision=revision,
        commit_message=commit_message,
        create_pr=create_pr,
        # lists, fresh on each call: upload_folder appends its defaults to ignore_patterns in place
        allow_patterns=upload_patterns(),
        ignore_patterns=list(IGNORE_PATTERNS),
    )
