"""CLI errors: every flag is documented, and a missing model, an unknown protocol or an unreachable host gives one
line on stderr and exit status 2 (no traceback), for `segment`, `evaluate`, `demo`, `export-onnx` and `push`."""

import argparse

import numpy as np
import PIL.Image
import pytest

from groupvit import cli

MISSING = "/nonexistent/groupvit-model"
UNKNOWN_ID = "nobody-here/no-such-groupvit-model"


class _Captured(Exception):
    pass


def _parsers_of(name: str, monkeypatch) -> list[argparse.ArgumentParser]:
    """The parser(s) that `groupvit NAME` builds, caught when it parses (nothing else runs)."""
    seen: list[argparse.ArgumentParser] = []

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise _Captured

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(_Captured):
        cli.main([name])
    return seen


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_flag_of_every_subcommand_has_help(name, monkeypatch):
    if name == "app":
        pytest.importorskip("gradio")
    (parser,) = _parsers_of(name, monkeypatch)
    actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    assert actions
    undocumented = [a.option_strings or [a.dest] for a in actions if not (a.help and a.help.strip())]
    assert not undocumented, f"groupvit {name}: flags without help: {undocumented}"


def _one_error_line(capsys, prog: str, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1, err
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture()
def offline(monkeypatch, tmp_path):
    """An empty Hub cache and the Hub offline, so that an unknown id is never looked up on the network."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


@pytest.fixture()
def image(tmp_path) -> str:
    path = tmp_path / "photo.png"
    PIL.Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.mark.parametrize("model", [MISSING, UNKNOWN_ID, "./relative/model"])
def test_segment_missing_model_is_one_line(model, image, tmp_path, capsys, offline):
    argv = ["segment", image, "--labels", "cat,dog", "--model", model, "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    _one_error_line(capsys, "groupvit segment", repr(model))
    assert not (tmp_path / "out").exists()


def test_segment_unknown_protocol_is_one_line(image, tiny_checkpoint, capsys):
    assert cli.main(["segment", image, "--protocol", "vocc", "--model", tiny_checkpoint]) == 2
    _one_error_line(capsys, "groupvit segment", "vocc")


def test_segment_checks_images_before_the_model(tmp_path, capsys, monkeypatch):
    from groupvit.segmentation import GroupViTSegmenter

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded although no image can be read")

    monkeypatch.setattr(GroupViTSegmenter, "from_pretrained", no_loading)
    argv = ["segment", str(tmp_path / "missing.png"), "--labels", "cat", "--model", MISSING]
    assert cli.main(argv) == 2
    line = _one_error_line(capsys, "groupvit segment", "missing.png", "no such file")
    assert MISSING not in line


def test_segment_unreachable_url_is_reported_and_exits_2(tiny_checkpoint, tmp_path, capsys):
    url = "http://127.0.0.1:9/photo.png"  # the discard port: nothing listens, the connection is refused
    argv = ["segment", url, "--labels", "cat", "--model", tiny_checkpoint, "--output", str(tmp_path)]
    assert cli.main([*argv, "--timeout", "2", "--short_side", "32", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"groupvit segment: error: {url}:" in err


@pytest.mark.parametrize("model", [MISSING, UNKNOWN_ID])
def test_evaluate_missing_model_is_one_line(model, tmp_path, capsys, offline):
    argv = ["evaluate", "--model", model, "--num_samples", "2", "--output", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    _one_error_line(capsys, "groupvit evaluate", repr(model))


def test_evaluate_unknown_protocol_is_one_line(tiny_checkpoint, tmp_path, capsys):
    argv = ["evaluate", "--model", tiny_checkpoint, "--protocol", "vocc", "--dataset", str(tmp_path)]
    assert cli.main([*argv, "--output", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, "groupvit evaluate", "vocc")


@pytest.mark.parametrize("model", [MISSING, UNKNOWN_ID])
def test_demo_missing_model_is_one_line(model, tmp_path, capsys, offline):
    assert cli.main(["demo", "--model", model, "--num_test", "2", "--output", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, "groupvit demo", repr(model))


def test_demo_missing_image_is_one_line(tmp_path, capsys):
    assert cli.main(["demo", str(tmp_path / "nope.png"), "--output", str(tmp_path / "out")]) == 2
    _one_error_line(capsys, "groupvit demo", "nope.png")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("model", [MISSING, UNKNOWN_ID])
def test_export_onnx_missing_model_is_one_line(model, tmp_path, capsys, offline):
    assert cli.main(["export-onnx", "--model", model, "--output", str(tmp_path / "onnx")]) == 2
    _one_error_line(capsys, "groupvit export-onnx", repr(model))


def test_push_missing_folder_is_one_line(tmp_path, capsys):
    assert cli.main(["push", str(tmp_path / "no-folder"), "--repo_id", "me/model"]) == 2
    _one_error_line(capsys, "groupvit push", "no-folder")


def test_push_unreachable_hub_is_one_line(tiny_checkpoint, tmp_path, capsys, monkeypatch):
    import shutil

    from huggingface_hub import constants

    folder = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, folder)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert cli.main(["push", str(folder), "--repo_id", "me/model"]) == 2
    _one_error_line(capsys, "groupvit push", "cannot push to 'me/model'")
