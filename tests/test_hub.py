"""Hub push: which files go up, with which repository metadata; no network (HfApi methods are replaced by fakes)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import CommitInfo, HfApi, RepoUrl
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from groupvit.cli.push import main as push_main
from groupvit.hub.push import IGNORE_PATTERNS, files_to_upload, push_folder_to_hub, upload_patterns
from groupvit.hub.remote_code import remote_code_files

REPO_ID = "me/groupvit-tiny"
COMMIT_URL = f"https://huggingface.co/{REPO_ID}/commit/0123456789abcdef0123456789abcdef01234567"
# What a GroupViT training run leaves next to the model, and whether it should go up.
EXTRA_FILES = {
    "README.md": True,
    "results.json": True,
    "notes/eval.txt": True,
    "training_args.bin": False,
    "pytorch_model.bin": False,
    "optimizer.pt": False,
    "rng_state_0.pth": False,
    "last.ckpt": False,
    "random_states_0.pkl": False,
    "checkpoint-500/model.safetensors": False,
    "checkpoint-500/config.json": False,
    "runs/checkpoint-9/config.json": False,
    "runs/events.out.tfevents.1700000000.host": False,
    "train.py": False,  # only the generated remote-code modules go up, no other Python file
    "notes/modeling_groupvit.py": False,
    ".git/config": False,
}
SAVED_FILES = ["config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "tokenizer_config.json"]
REMOTE_CODE = sorted(remote_code_files())
EXPECTED_UPLOAD = sorted([*SAVED_FILES, *REMOTE_CODE, *(name for name, up in EXTRA_FILES.items() if up)])


@pytest.fixture()
def model_folder(tmp_path, tiny_checkpoint) -> Path:
    """A copy of the tiny saved model plus training leftovers."""
    folder = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, folder)
    assert sorted(p.name for p in folder.iterdir()) == SAVED_FILES
    for name in EXTRA_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("---\nlicense: apache-2.0\n---\n" if name == "README.md" else "x")
    return folder


@pytest.fixture()
def hub_calls(monkeypatch) -> list[tuple[str, dict]]:
    """Replace the network methods of HfApi; record (method, arguments) and resolve what upload_folder would send."""
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def create_branch(self, repo_id, **kwargs):
        calls.append(("create_branch", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs):
        # huggingface_hub's resolution: every file, relative POSIX path, filter_repo_objects with the given patterns
        # plus its default .git/.cache exclusions
        root = Path(kwargs["folder_path"])
        listing = sorted(p.relative_to(root).as_posix() for p in root.glob("**/*") if p.is_file())
        ignore = [*kwargs["ignore_patterns"], *DEFAULT_IGNORE_PATTERNS]
        files = list(filter_repo_objects(listing, allow_patterns=kwargs["allow_patterns"], ignore_patterns=ignore))
        calls.append(("upload_folder", {**kwargs, "files": files}))
        return CommitInfo(
            commit_url=COMMIT_URL, commit_message=kwargs["commit_message"], commit_description="", oid="0" * 40
        )

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_pushes_only_safetensors_configs_and_card(model_folder, hub_calls):
    commit = push_folder_to_hub(model_folder, REPO_ID, revision="v1", private=True, commit_message="Tiny GroupViT")
    assert commit.commit_url == COMMIT_URL
    assert [name for name, _ in hub_calls] == ["create_repo", "create_branch", "upload_folder"]
    _, repo = hub_calls[0]
    assert repo == {"repo_id": REPO_ID, "repo_type": "model", "private": True, "exist_ok": True}
    _, branch = hub_calls[1]
    assert branch == {"repo_id": REPO_ID, "branch": "v1", "repo_type": "model", "exist_ok": True}
    _, upload = hub_calls[2]
    assert upload["files"] == EXPECTED_UPLOAD == files_to_upload(model_folder)
    assert upload["repo_id"] == REPO_ID and upload["repo_type"] == "model"
    assert upload["revision"] == "v1" and upload["commit_message"] == "Tiny GroupViT" and upload["create_pr"] is False
    assert Path(upload["folder_path"]) == model_folder
    assert upload["allow_patterns"] == upload_patterns() and upload["ignore_patterns"] == list(IGNORE_PATTERNS)
    assert not any(name.endswith((".bin", ".pt", ".pth", ".ckpt")) for name in upload["files"])


def test_default_branch_needs_no_branch_and_repo_is_public_by_default(model_folder, hub_calls):
    push_folder_to_hub(model_folder, REPO_ID)
    assert [name for name, _ in hub_calls] == ["create_repo", "upload_folder"]
    assert hub_calls[0][1]["private"] is False
    assert hub_calls[1][1]["revision"] is None and hub_calls[1][1]["commit_message"] == "Upload GroupViT model"
    assert hub_calls[1][1]["create_pr"] is False
    push_folder_to_hub(model_folder, REPO_ID, revision="main", create_pr=True)
    assert [name for name, _ in hub_calls[2:]] == ["create_repo", "upload_folder"]
    assert hub_calls[3][1]["create_pr"] is True


class _StopBeforeNetwork(Exception):
    pass


def test_real_upload_folder_selects_the_same_files(model_folder, monkeypatch):
    """huggingface_hub's own upload_folder runs up to its file selection, then stops before any network access."""
    selected = []
    prepare = HfApi._prepare_upload_folder_additions

    def prepare_and_stop(self, *args, **kwargs):
        selected.append(sorted(op.path_in_repo for op in prepare(self, *args, **kwargs)))
        raise _StopBeforeNetwork

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: RepoUrl(f"https://huggingface.co/{repo_id}"))
    monkeypatch.setattr(HfApi, "_validate_yaml", lambda self, content, **kwargs: None)  # a Hub API call
    monkeypatch.setattr(HfApi, "_prepare_upload_folder_additions", prepare_and_stop)
    for _ in range(2):  # the second call checks that upload_folder's in-place pattern edits do not leak
        with pytest.raises(_StopBeforeNetwork):
            push_folder_to_hub(model_folder, REPO_ID)
    assert selected == [EXPECTED_UPLOAD, EXPECTED_UPLOAD]


def test_folder_with_only_bin_weights_is_refused(model_folder, hub_calls):
    (model_folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="only pickled weights"):
        push_folder_to_hub(model_folder, REPO_ID)
    (model_folder / "pytorch_model.bin").unlink()
    with pytest.raises(ValueError, match="no model.safetensors"):
        push_folder_to_hub(model_folder, REPO_ID)
    assert hub_calls == []


def test_sharded_safetensors_are_accepted(model_folder, hub_calls):
    (model_folder / "model.safetensors").rename(model_folder / "model-00001-of-00001.safetensors")
    (model_folder / "model.safetensors.index.json").write_text("{}")
    push_folder_to_hub(model_folder, REPO_ID)
    files = hub_calls[-1][1]["files"]
    assert "model-00001-of-00001.safetensors" in files and "model.safetensors.index.json" in files


def test_invalid_requests_fail_before_any_call(tmp_path, model_folder, hub_calls):
    with pytest.raises(ValueError, match="not a directory"):
        push_folder_to_hub(tmp_path / "missing", REPO_ID)
    (model_folder / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        push_folder_to_hub(model_folder, REPO_ID)
    (model_folder / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="create_pr"):
        push_folder_to_hub(model_folder, REPO_ID, revision="dev", create_pr=True)
    assert hub_calls == []


def test_push_main(model_folder, hub_calls, capsys):
    argv = [str(model_folder), "--repo_id", REPO_ID, "--revision", "dev", "--private", "--commit_message", "hello"]
    assert push_main(argv) == 0
    assert capsys.readouterr().out.strip() == COMMIT_URL
    assert hub_calls[0][1]["private"] is True and hub_calls[1][1]["branch"] == "dev"
    assert hub_calls[2][1]["commit_message"] == "hello" and hub_calls[2][1]["revision"] == "dev"

    assert push_main([str(model_folder), "--repo_id", REPO_ID, "--dry_run"]) == 0
    assert capsys.readouterr().out.split() == EXPECTED_UPLOAD
    assert len(hub_calls) == 3  # a dry run calls nothing

    (model_folder / "model.safetensors").unlink()
    assert push_main([str(model_folder), "--repo_id", REPO_ID]) == 2  # one line on stderr (was 1 before)
    with pytest.raises(SystemExit):
        push_main([str(model_folder)])  # --repo_id is required


def test_push_makes_the_folder_hub_native_and_dry_run_writes_nothing(model_folder, hub_calls, capsys):
    assert push_main([str(model_folder), "--repo_id", REPO_ID, "--dry_run"]) == 0
    assert capsys.readouterr().out.split() == EXPECTED_UPLOAD  # the remote code is listed before it is written
    assert [p.name for p in model_folder.glob("*.py")] == ["train.py"]
    assert json.loads((model_folder / "config.json").read_text()).get("auto_map") is None

    push_folder_to_hub(model_folder, REPO_ID)
    assert sorted(p.name for p in model_folder.glob("*.py")) == sorted([*REMOTE_CODE, "train.py"])
    config = json.loads((model_folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_groupvit.GroupViTModel"
    assert list(config["custom_pipelines"]) == ["zero-shot-image-segmentation"]
    processor = json.loads((model_folder / "processor_config.json").read_text())
    assert processor["auto_map"] == {"AutoProcessor": "processing_groupvit.GroupViTProcessor"}
    assert set(REMOTE_CODE) <= set(hub_calls[-1][1]["files"])
