"""The `groupvit` command line (groupvit.cli): dispatch and `groupvit segment`."""

import json
import socket
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from groupvit import cli

SMALL = ["--short_side", "32", "--window", "32", "--stride", "16", "--device", "cpu"]


def write_image(path, width: int, height: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def test_top_level_help_lists_the_subcommands(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for name in ("segment", "demo", "pretrain", "evaluate", "push"):
        assert name in text


def test_segment_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["segment", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--labels", "--model", "--output", "--background_threshold", "--template", "--mode"):
        assert flag in text


def test_unknown_and_unavailable_subcommands(capsys, monkeypatch):
    assert cli.main(["frobnicate"]) == 2
    assert "unknown subcommand 'frobnicate'" in capsys.readouterr().err
    monkeypatch.setitem(cli.SUBCOMMANDS, "later", cli.Subcommand("groupvit._not_written_yet", "main", "a hook"))
    assert cli.main(["later", "--flag"]) == 2
    assert "groupvit._not_written_yet" in capsys.readouterr().err
    with pytest.raises(ValueError, match="already exists"):
        cli.register_subcommand("segment", "x", "main", "dup")


def test_segment_writes_overlays_masks_and_a_table(tiny_checkpoint, tmp_path, capsys):
    first = write_image(tmp_path / "first.png", 57, 31, seed=0)
    second = write_image(tmp_path / "second.jpg", 40, 40, seed=1)
    out = tmp_path / "out"
    argv = ["segment", first, second, "--labels", "cat, dog,grass", "--model", tiny_checkpoint, "--output", str(out)]
    assert cli.main([*argv, "--background_threshold", "0.9", "--template", "a photo of a {}.", *SMALL]) == 0
    for stem, size in (("first", (57, 31)), ("second", (40, 40))):
        overlay = PIL.Image.open(out / f"{stem}_overlay.png")
        assert overlay.width == size[0] and overlay.height > size[1]  # legend below
        # one label map and one JSON per image, no per-label mask files (which were empty for absent labels)
        label_map = PIL.Image.open(out / f"{stem}_labels.png")
        assert label_map.mode == "L" and label_map.size == size
        summary = json.loads((out / f"{stem}.json").read_text())
        assert summary["labels"] == ["cat", "dog", "grass", "background"] and summary["background_index"] == 3
        values = np.asarray(label_map)
        shares = [100 * float((values == i).mean()) for i in range(4)]
        assert summary["pixel_percent"] == pytest.approx(shares)
        assert all(0.0 <= score <= 1.0 for score in summary["scores"])
    assert not list(out.glob("*_mask_*"))
    table = capsys.readouterr().out
    assert "first.png (57x31)" in table and "pixels %" in table
    tables: list[dict[str, float]] = []
    for line in table.splitlines():
        if not line.startswith("  "):
            tables.append({})  # "<image> (WxH)" header
        elif "pixels %" not in line:
            label, share = line.split()
            tables[-1][label] = float(share)
    assert len(tables) == 2
    shares = tables[0]
    assert set(shares) == {"cat", "dog", "grass", "background"}
    assert sum(shares.values()) == pytest.approx(100.0, abs=0.05)


def test_segment_with_a_protocol(tiny_checkpoint, tmp_path, capsys):
    image = write_image(tmp_path / "street.png", 48, 32)
    assert (
        cli.main(
            ["segment", image, "--protocol", "voc", "--model", tiny_checkpoint, "--output", str(tmp_path), *SMALL]
        )
        == 0
    )
    summary = json.loads((tmp_path / "street.json").read_text())
    assert "table" in summary["labels"] and summary["labels"][-1] == "background" and len(summary["labels"]) == 21
    assert "monitor" in capsys.readouterr().out


def test_segment_rejects_bad_arguments(tiny_checkpoint, tmp_path, capsys):
    image = write_image(tmp_path / "a.png", 32, 32)
    too_long = ["--labels", "cat," + "very " * 80 + "long"]
    for extra in (["--labels", "cat,cat"], ["--labels", "cat", "--background_threshold", "2"], [], too_long):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["segment", image, "--model", tiny_checkpoint, *extra])
        assert exit_info.value.code == 2
    argv = ["segment", str(tmp_path / "missing.png"), "--labels", "cat", "--model", tiny_checkpoint, *SMALL]
    assert cli.main([*argv, "--output", str(tmp_path)]) == 2
    assert "missing.png" in capsys.readouterr().err


def test_segment_accepts_the_shipped_demo_model_by_name(tmp_path, capsys):
    from groupvit.data.synthetic import make_split

    image = tmp_path / "test0.png"
    make_split("objects", "test", 1, 64, 0)[0].image.save(image)
    argv = ["segment", str(image), "--model", "demo", "--labels", "sun,fish", "--output", str(tmp_path)]
    assert cli.main([*argv, "--background_threshold", "0.9", "--mode", "whole"]) == 0
    assert PIL.Image.open(tmp_path / "test0_labels.png").size == (64, 64)
    assert "test0.png (64x64)" in capsys.readouterr().out


def test_segment_with_the_demo_model_uses_its_validated_settings_as_the_demo_and_app_do(tmp_path):
    """`groupvit segment --model demo` takes the demo model's inference options (short side and background threshold
    from its demo.json, the whole image) from the same owner as `groupvit demo` and `groupvit app`: its masks are the
    pipeline's with those options."""
    import json

    from transformers import pipeline

    from groupvit.cli.shipped_model import DEMO_SETTINGS, inference_options, resolve_model
    from groupvit.data.synthetic import make_split

    path, settings = resolve_model("demo")
    if (Path(path) / DEMO_SETTINGS).exists():  # the shipped model, not the random stand-in
        assert settings == json.loads((Path(path) / DEMO_SETTINGS).read_text())["options"]
    image = tmp_path / "test1.png"
    make_split("objects", "test", 2, 64, 0)[1].image.resize((96, 80)).save(image)
    labels = ["sun", "leaf", "fish"]
    assert (
        cli.main(["segment", str(image), "--model", "demo", "--labels", ",".join(labels), "--output", str(tmp_path)])
        == 0
    )
    # a background class, as in the demo and the app (the flag was not given)
    written_labels = json.loads((tmp_path / "test1.json").read_text())["labels"]
    assert written_labels == [*labels, "background"]
    label_map = np.asarray(PIL.Image.open(tmp_path / "test1_labels.png"))
    options = inference_options(64, settings)
    assert options == {"mode": "whole", "short_side": 64, **settings}
    entries = pipeline("zero-shot-image-segmentation", model=path, device="cpu")(
        str(image), candidate_labels=labels, **options
    )
    assert entries
    for entry in entries:
        written = (label_map == written_labels.index(entry["label"])).astype(np.uint8) * 255
        np.testing.assert_array_equal(written, np.asarray(entry["mask"]))
    # and the flags still win
    out = tmp_path / "no_background"
    argv = ["segment", str(image), "--model", "demo", "--labels", "sun,leaf", "--output", str(out), "--no_background"]
    assert cli.main(argv) == 0
    assert json.loads((out / "test1.json").read_text())["labels"] == ["sun", "leaf"]


@pytest.fixture()
def silent_url():
    """An http URL on a local server that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # the kernel completes the connections; nothing ever reads or writes
    yield f"http://127.0.0.1:{server.getsockname()[1]}/photo.png"
    server.close()


def test_segment_reports_each_failing_image_and_continues(tiny_checkpoint, tmp_path, capsys, silent_url, monkeypatch):
    good = write_image(tmp_path / "good.png", 40, 36)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(PIL.Image.open(good).tobytes()[:100])  # not an image file
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(open(write_image(tmp_path / "full.png", 64, 64), "rb").read()[:200])
    bomb = write_image(tmp_path / "bomb.png", 64, 64)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1500)  # 64x64 > 2x the limit: a decompression bomb
    out = tmp_path / "out"
    sources = [str(corrupt), silent_url, good, str(truncated), bomb]
    argv = ["segment", *sources, "--labels", "cat,dog", "--model", tiny_checkpoint, "--output", str(out)]
    start = time.perf_counter()
    assert cli.main([*argv, "--timeout", "0.5", *SMALL]) == 2
    assert time.perf_counter() - start < 30  # the silent URL did not hang the run
    err = capsys.readouterr().err
    assert f"{silent_url}: no answer within 0.5 s" in err
    assert "corrupt.png" in err and "cannot be read" in err
    assert "truncated.png" in err and "bomb.png" in err and "decompression bomb" in err
    assert "4 of 5 images failed" in err
    # the good image is written, nothing for the failures
    assert sorted(p.name for p in out.iterdir()) == ["good.json", "good_labels.png", "good_overlay.png"]


def test_segment_rejects_a_non_positive_timeout(tiny_checkpoint, tmp_path, capsys):
    image = write_image(tmp_path / "a.png", 32, 32)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["segment", image, "--labels", "cat", "--model", tiny_checkpoint, "--timeout", "0"])
    assert exit_info.value.code == 2
    assert "--timeout must be a positive number of seconds, got 0.0" in capsys.readouterr().err
