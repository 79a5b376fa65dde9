"""The Gradio page: its callback (results and the messages for bad input, no browser), the Space files, and the page
itself driven in headless Chromium with Playwright."""

import configparser
import importlib.metadata
import importlib.util
import io
import os
import re
import socket
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import yaml
from transformers import pipeline

from groupvit.cli import SUBCOMMANDS
from groupvit.cli import app as app_module
from groupvit.cli import main as cli_main
from groupvit.cli.app import MAX_IMAGE_SIDE, InputError, SegmentationApp, parse_labels, write_examples
from groupvit.cli.app import main as app_main
from groupvit.cli.shipped_model import demo_directory
from groupvit.data.synthetic import make_split
from groupvit.segmentation.pipeline import TASK

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
# the README's picture of the page; the browser test refreshes it only when asked to (tests never write the tree)
DOCS_SCREENSHOT = ROOT / "docs" / "app_screenshot.png"
REFRESH_SCREENSHOT = "GROUPVIT_REFRESH_SCREENSHOT"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TEMPLATE = "a photo of a {}."


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint):
    return pipeline(TASK, model=tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def app(segmenter) -> SegmentationApp:
    return SegmentationApp(segmenter)


@pytest.fixture(scope="module")
def image() -> PIL.Image.Image:
    return make_split("objects", "test", 1, 64)[0].image


def _hex(color) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(c) for c in color))


def test_segment_returns_annotations_colors_and_status(app, image):
    from groupvit.segmentation.visualization import label_colors

    (picture, annotations), color_map, status = app.segment(image, "sun, leaf ,fish,", 0.5, True, "itap of a {}.")
    assert isinstance(picture, PIL.Image.Image) and picture.mode == "RGB"
    assert picture.size == (384, 384)  # upscaled for display (nearest)
    assert 1 <= len(annotations) <= 4  # the three labels and background, those that win pixels
    masks = []
    for mask, label in annotations:
        assert label in ("sun", "leaf", "fish", "background")
        assert mask.shape == (384, 384) and mask.dtype == np.float32 and set(np.unique(mask)) <= {0.0, 1.0}
        masks.append(mask)
    assert np.array_equal(np.sum(masks, axis=0), np.ones((384, 384)))  # every pixel has exactly one label
    # the colours are the package's label colours, in candidate order with background last
    colors = label_colors(4, 3)
    assert color_map == {name: _hex(colors[i]) for i, name in enumerate(["sun", "leaf", "fish", "background"])}
    assert re.match(r"\*\*\d of 3 labels found\*\* in the 64x64 image \(\d+\.\d\d s\): ", status)
    shares = {name: float(share) for name, share in re.findall(r"(\w+) (\d+\.\d) %", status)}
    assert sum(shares.values()) == pytest.approx(100.0, abs=0.3)
    for mask, label in annotations:  # the status' shares are the masks' (nearest upscaling by 6: exact)
        assert shares[label] == pytest.approx(100 * mask.mean(), abs=0.06)


def test_the_page_runs_at_the_short_side_the_model_settings_validated(segmenter, image, monkeypatch):
    # the demo model's demo.json names the resolution its threshold was validated at; `groupvit segment` uses it
    # (inference_options), so the page must too, or it shows another model's behaviour than the CLI
    from groupvit.cli.shipped_model import inference_options

    settings = {"short_side": 96, "background_threshold": 0.3}
    page = SegmentationApp(segmenter, settings=settings)
    size = segmenter.model.config.vision_config.image_size
    cli_options = inference_options(size, settings)
    assert page.options["short_side"] == 96 and "background_threshold" not in page.options
    assert {**page.options, "background_threshold": 0.3} == cli_options
    seen = []
    monkeypatch.setattr(page, "segmenter", lambda picture, **kwargs: seen.append(kwargs) or [])
    page.segment(image, "sun, leaf", 0.4, True, TEMPLATE)
    assert seen[0]["short_side"] == 96 and seen[0]["background_threshold"] == 0.4


def test_without_background_every_pixel_gets_a_label(app, image):
    (_, annotations), color_map, status = app.segment(image, "background, sun", 0.9, False, TEMPLATE)
    assert set(color_map) == {"background", "sun"}  # "background" is a label here
    assert {label for _, label in annotations} <= {"background", "sun"}


def test_large_image_is_accepted_up_to_the_limit(app):
    (picture, annotations), _, _ = app.segment(
        PIL.Image.new("RGB", (MAX_IMAGE_SIDE, 8), (90, 140, 60)), "grass", 0.5, True, None
    )
    assert picture.size == (1024, 2) and annotations  # shrunk for display


BAD_INPUT = [
    (None, "cat", True, TEMPLATE, "upload an image or pick an example first."),
    ("ok", "", True, TEMPLATE, "type at least one label"),
    ("ok", " , ,", True, TEMPLATE, "type at least one label"),
    ("ok", "cat, dog, Cat", True, TEMPLATE, "duplicate candidate label 'Cat' (the same prompt as 'cat'"),
    ("ok", ",".join(f"l{i}" for i in range(40)), True, TEMPLATE, "at most 32 labels, got 40."),
    ("huge", "cat", True, TEMPLATE, f"the largest side may be at most {MAX_IMAGE_SIDE} px"),
    ("ok", "cat", True, "a photo of a cat.", 'must contain "{}"'),
    ("ok", "cat, background", True, TEMPLATE, "'background' is reserved for the background class"),
    ("text", "cat", True, TEMPLATE, "the upload is not a file on the server"),
    ("url", "cat", True, TEMPLATE, "the upload is not a file on the server"),
    ("number", "cat", True, TEMPLATE, "expected an image, got int."),
]


def _bad_images(image):
    return {
        "ok": image,
        "huge": PIL.Image.new("RGB", (MAX_IMAGE_SIDE + 1, 8)),
        "text": "cat.jpg",
        "url": "http://127.0.0.1:9/cat.png",
        "number": 7,
        None: None,
    }


@pytest.mark.parametrize(("image_arg", "labels", "use_background", "template", "message"), BAD_INPUT)
def test_bad_input_raises_input_error(app, image, image_arg, labels, use_background, template, message):
    with pytest.raises(InputError) as error:
        app.segment(_bad_images(image)[image_arg], labels, 0.5, use_background, template)
    assert message.lower() in str(error.value).lower()


@pytest.mark.parametrize(("image_arg", "labels", "use_background", "template", "message"), BAD_INPUT[:4])
def test_page_handler_turns_bad_input_into_a_gradio_error(
    app, image, image_arg, labels, use_background, template, message
):
    gr = pytest.importorskip("gradio")
    handler = app_module.gradio_handler(app)
    with pytest.raises(gr.Error) as error:
        handler(_bad_images(image)[image_arg], labels, 0.5, use_background, template)
    assert message.lower() in error.value.message.lower() and error.value.message[0].isupper()


def test_page_handler_returns_an_annotated_image_update(app, image):
    gr = pytest.importorskip("gradio")
    update, status = app_module.gradio_handler(app)(image, "sun, leaf", 0.5, True, TEMPLATE)
    assert isinstance(update, gr.AnnotatedImage) and "labels found" in status
    assert set(update.color_map) == {"sun", "leaf", "background"}


def test_unexpected_failure_is_a_gradio_error_without_its_text(image, caplog):
    gr = pytest.importorskip("gradio")

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory in /srv/secret/model")

    with pytest.raises(gr.Error) as error:
        app_module.gradio_handler(SegmentationApp(broken, options={}))(image, "cat", 0.5, True, TEMPLATE)
    assert error.value.message == "Segmentation failed on the server (RuntimeError); its log has the details."
    assert "/srv/secret" in caplog.text  # the operator's log keeps it


def test_page_shows_no_server_paths(tiny_checkpoint, tmp_path):
    pytest.importorskip("gradio")
    from groupvit.cli.app import build_demo

    for model in (tiny_checkpoint, pipeline(TASK, model=tiny_checkpoint, device="cpu")):
        demo = build_demo(model, examples=[])
        texts = [str(getattr(block, "value", "")) for block in demo.blocks.values()]
        assert any(f"Model: `{Path(tiny_checkpoint).name}`" in text for text in texts)
        assert not any(str(Path(tiny_checkpoint).parent) in text for text in texts)
        assert any(type(block).__name__ == "AnnotatedImage" for block in demo.blocks.values())
        demo.close()


def test_uploads_are_checked_on_the_header_before_decoding(app, image, tmp_path, monkeypatch):
    """The page passes Gradio's copy of the upload as a path: bytes and dimensions are checked before any pixel is
    decoded (a small PNG of a huge image costs nothing), and messages never show the server path."""
    ok = tmp_path / "upload_ok.png"
    image.save(ok)
    (picture, annotations), _, status = app.segment(str(ok), "sun, leaf", 0.5, True, TEMPLATE)
    assert picture is not None and annotations, status
    huge = tmp_path / "upload_huge.png"
    PIL.Image.new("1", (8000, 8000)).save(huge)  # 8000x8000 of zeros: a few KB on disk
    assert huge.stat().st_size < 100_000
    decoded = []
    original_load = PIL.ImageFile.ImageFile.load
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: decoded.append(1) or original_load(self))
    with pytest.raises(InputError, match="8000x8000 px; the largest side may be at most 4096 px"):
        app.segment(str(huge), "cat", 0.5, True, TEMPLATE)
    assert decoded == []  # refused from the header
    monkeypatch.setattr(app_module, "MAX_UPLOAD_BYTES", 100)
    with pytest.raises(InputError, match="the page takes at most 100 bytes"):
        app.segment(str(ok), "cat", 0.5, True, TEMPLATE)
    assert decoded == []
    monkeypatch.setattr(app_module, "MAX_UPLOAD_BYTES", 20 * 2**20)
    corrupt = tmp_path / "upload_corrupt.png"
    corrupt.write_bytes(ok.read_bytes()[:60])
    for path in (corrupt, tmp_path / "missing.png"):
        with pytest.raises(InputError) as error:
            app.segment(str(path), "cat", 0.5, True, TEMPLATE)
        assert str(tmp_path) not in str(error.value) and "upload_corrupt" not in str(error.value)


def test_examples_go_to_a_new_private_directory_and_never_through_links(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # a file planted by another user where the page used to write its examples
    planted = tmp_path / "groupvit-app-examples"
    planted.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (planted / "example_0.png").symlink_to(victim)
    first, second = app_module.default_examples(), app_module.default_examples()
    assert victim.read_text() == "keep me"
    assert first[0].parent != planted and first[0].parent != second[0].parent
    assert (first[0].parent.stat().st_mode & 0o777) == 0o700
    assert [p.name for p in first] == [f"example_{i}.png" for i in range(4)]
    # write_examples replaces a link with a file and leaves the link's target alone
    write_examples(planted)
    assert victim.read_text() == "keep me" and not (planted / "example_0.png").is_symlink()


def test_parse_labels():
    assert parse_labels(" cat,dog ,, grass ,") == ["cat", "dog", "grass"]
    with pytest.raises(InputError, match="at least one label"):
        parse_labels(None)


def test_bundled_examples_are_the_synthetic_test_images(tmp_path):
    committed = sorted((APP / "examples").glob("*.png"))
    assert [path.name for path in committed] == [f"example_{i}.png" for i in range(4)]
    assert sum(path.stat().st_size for path in committed) < 50_000
    for fresh, stored in zip(write_examples(tmp_path), committed, strict=True):
        assert np.array_equal(np.asarray(PIL.Image.open(fresh)), np.asarray(PIL.Image.open(stored)))


def test_space_files():
    text = (APP / "README.md").read_text()
    header = yaml.safe_load(text.split("---")[1])
    assert header["sdk"] == "gradio" and (APP / header["app_file"]).is_file()
    assert {"title", "emoji", "colorFrom", "colorTo", "sdk_version", "license"} <= set(header)
    if importlib.util.find_spec("gradio") is not None:
        assert header["sdk_version"] == importlib.metadata.version("gradio")
    # the Space installs the package by name (its dependencies come with it), and gradio; nothing points outside
    # the Space's folder (`-e ..`) or at the network (`git+https://`)
    from packaging.requirements import Requirement

    lines = [line.strip() for line in (APP / "requirements.txt").read_text().splitlines()]
    requirements = {Requirement(line).name: Requirement(line) for line in lines if line and line[0] not in "#-"}
    assert {"groupvit", "gradio", "torch"} <= set(requirements)
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    assert requirements["groupvit"].specifier.contains(setup["metadata"]["version"])
    assert not any(".." in line or "git+" in line for line in lines if not line.startswith("#"))


def test_space_app_imports_only_the_installed_package():
    import ast

    tree = ast.parse((APP / "app.py").read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in ([alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module])
    }
    assert imported == {"sys", "pathlib", "groupvit"}
    assert "sys.path" not in (APP / "app.py").read_text()
    assert not (APP / "groupvit").exists() and not (APP / "src").exists()


def test_cli_has_the_app_subcommand(capsys):
    assert (SUBCOMMANDS["app"].module, SUBCOMMANDS["app"].function) == ("groupvit.cli.app", "main")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["app", "--help"])
    assert exit_info.value.code == 0 and "--model" in capsys.readouterr().out


def test_app_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail
    assert app_main(["--model", "unused"]) == 2
    assert 'pip install "groupvit[app]"' in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_page_in_headless_chromium(tiny_checkpoint, tmp_path):
    """Drives the page; `GROUPVIT_REFRESH_SCREENSHOT=1 pytest -m slow tests/test_app.py -k chromium` also writes its
    screenshot to docs/app_screenshot.png (otherwise it goes to a temporary directory)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian: apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None or importlib.util.find_spec("gradio") is None:
        pytest.skip('playwright or gradio is not installed (pip install -e ".[dev,app]")')
    from playwright.sync_api import sync_playwright

    from groupvit.cli.app import build_demo

    # the trained demo model once one ships (a meaningful screenshot), else the tiny random one (fast)
    if (demo_directory() / "model.safetensors").exists():
        model = "demo"
    else:
        model = pipeline(TASK, model=tiny_checkpoint, device="cpu")  # its own copy: renamed for the page
        model.model.name_or_path = "groupvit-tiny with random weights (test model: the segments are noise)"
    examples = sorted((APP / "examples").glob("*.png"))
    screenshot = DOCS_SCREENSHOT if os.environ.get(REFRESH_SCREENSHOT) == "1" else tmp_path / "app_screenshot.png"
    demo = build_demo(model, examples=examples, default_labels="sun, leaf")
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
                page.locator("#input-image input[type=file]").set_input_files(str(examples[3]))
                page.locator("#input-image img").first.wait_for()
                page.locator("#labels textarea").fill("sun, leaf, brick, ball, fish, flower, tree, mushroom")
                page.locator("#submit").click()
                page.wait_for_function(
                    "() => { const img = document.querySelector('#overlay img');"
                    " return img !== null && img.complete && img.naturalWidth > 0; }"
                )
                source = page.locator("#overlay img").first.get_attribute("src")
                response = page.request.get(source if "://" in source else f"http://127.0.0.1:{port}{source}")
                assert response.ok, response.status
                overlay = PIL.Image.open(io.BytesIO(response.body()))
                # the AnnotatedImage's base image (PNG, scaled for display); its legend lists the labels found
                assert overlay.format == "PNG" and overlay.size == (384, 384)
                status = page.locator("#status").inner_text()
                assert "labels found" in status
                found = [name for name in ("sun", "leaf", "brick", "ball") if f"{name} " in status]
                assert found and found[0] in page.locator("#overlay").inner_text()
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    assert PIL.Image.open(screenshot).size[0] == 1280
