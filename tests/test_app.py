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


def test_segment_returns_overlay_masks_and_status(app, image):
    picture, gallery, status = app.segment(image, "sun, leaf ,fish,", 0.5, True, "itap of a {}.")
    assert isinstance(picture, PIL.Image.Image) and picture.mode == "RGB"
    assert picture.width == 384 and picture.height > 384  # upscaled for display, legend strip below
    assert 1 <= len(gallery) <= 4  # the three labels and background, those that win pixels
    for cutout, caption in gallery:
        assert cutout.size == (384, 384)
        assert re.fullmatch(r"(sun|leaf|fish|background): \d+\.\d % of pixels, score -?\d+\.\d\d", caption)
    assert re.match(r"\*\*\d of 3 labels found\*\* in the 64x64 image \(\d+\.\d\d s\): ", status)
    shares = [float(share) for share in re.findall(r"(\d+\.\d) %", status)]
    assert sum(shares) == pytest.approx(100.0, abs=0.3)


def test_without_background_every_pixel_gets_a_label(app, image):
    _, gallery, status = app.segment(image, "background, sun", 0.9, False, TEMPLATE)  # "background" is a label here
    assert "Error" not in status
    assert {caption.split(":")[0] for _, caption in gallery} <= {"background", "sun"}


def test_large_image_is_accepted_up_to_the_limit(app):
    picture, _, status = app.segment(
        PIL.Image.new("RGB", (MAX_IMAGE_SIDE, 8), (90, 140, 60)), "grass", 0.5, True, None
    )
    assert picture is not None, status


@pytest.mark.parametrize(
    ("image_arg", "labels", "use_background", "template", "message"),
    [
        (None, "cat", True, TEMPLATE, "Upload an image or pick an example first."),
        ("ok", "", True, TEMPLATE, "Type at least one label"),
        ("ok", " , ,", True, TEMPLATE, "Type at least one label"),
        ("ok", "cat, dog, Cat", True, TEMPLATE, "Duplicate candidate label 'Cat' (the same prompt as 'cat'"),
        ("ok", ",".join(f"l{i}" for i in range(40)), True, TEMPLATE, "At most 32 labels, got 40."),
        ("huge", "cat", True, TEMPLATE, f"the largest side may be at most {MAX_IMAGE_SIDE} px"),
        ("ok", "cat", True, "a photo of a cat.", 'The prompt template must contain "{}"'),
        ("ok", "cat, background", True, TEMPLATE, "'background' is reserved for the background class"),
        ("text", "cat", True, TEMPLATE, "The upload is not a file on the server"),
        ("url", "cat", True, TEMPLATE, "The upload is not a file on the server"),
        ("number", "cat", True, TEMPLATE, "Expected an image, got int."),
    ],
)
def test_bad_input_shows_a_message(app, image, image_arg, labels, use_background, template, message):
    images = {
        "ok": image,
        "huge": PIL.Image.new("RGB", (MAX_IMAGE_SIDE + 1, 8)),
        "text": "cat.jpg",
        "url": "http://127.0.0.1:9/cat.png",
        "number": 7,
        None: None,
    }
    picture, gallery, status = app.segment(images[image_arg], labels, 0.5, use_background, template)
    assert picture is None and gallery == []
    assert status.startswith("**Error:** ") and message in status
    assert "Traceback" not in status


def test_unexpected_failure_is_a_message_not_a_traceback(image):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    picture, gallery, status = SegmentationApp(broken, options={}).segment(image, "cat", 0.5, True, TEMPLATE)
    assert (picture, gallery) == (None, [])
    assert status == "**Error:** segmentation failed (RuntimeError: out of memory)."


def test_uploads_are_checked_on_the_header_before_decoding(app, image, tmp_path, monkeypatch):
    """The page passes Gradio's copy of the upload as a path: bytes and dimensions are checked before any pixel is
    decoded (a small PNG of a huge image costs nothing), and messages never show the server path."""
    ok = tmp_path / "upload_ok.png"
    image.save(ok)
    picture, gallery, status = app.segment(str(ok), "sun, leaf", 0.5, True, TEMPLATE)
    assert picture is not None and gallery, status
    huge = tmp_path / "upload_huge.png"
    PIL.Image.new("1", (8000, 8000)).save(huge)  # 8000x8000 of zeros: a few KB on disk
    assert huge.stat().st_size < 100_000
    decoded = []
    original_load = PIL.ImageFile.ImageFile.load
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: decoded.append(1) or original_load(self))
    picture, _, status = app.segment(str(huge), "cat", 0.5, True, TEMPLATE)
    assert picture is None and "8000x8000 px; the largest side may be at most 4096 px" in status
    assert decoded == []  # refused from the header
    monkeypatch.setattr(app_module, "MAX_UPLOAD_BYTES", 100)
    picture, _, status = app.segment(str(ok), "cat", 0.5, True, TEMPLATE)
    assert picture is None and "the page takes at most 100 bytes" in status and decoded == []
    monkeypatch.setattr(app_module, "MAX_UPLOAD_BYTES", 20 * 2**20)
    corrupt = tmp_path / "upload_corrupt.png"
    corrupt.write_bytes(ok.read_bytes()[:60])
    for path in (corrupt, tmp_path / "missing.png"):
        picture, _, status = app.segment(str(path), "cat", 0.5, True, TEMPLATE)
        assert picture is None and status.startswith("**Error:** ")
        assert str(tmp_path) not in status and "upload_corrupt" not in status


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
    # the Space installs the package's dependencies from its own requirements.txt
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    required = {
        re.split(r"[<>=!~ ]", line.strip())[0].lower() for line in setup["options"]["install_requires"].split()
    }
    required.discard("")
    lines = (APP / "requirements.txt").read_text().splitlines()
    listed = {re.split(r"[<>=!~ ]", line)[0].lower() for line in lines if line and not line.startswith(("#", "-"))}
    assert {name.replace("-", "_") for name in required} <= {name.replace("-", "_") for name in listed}
    assert "gradio" in listed


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
                page.locator("#input-image input[type=file]").set_input_files(str(examples[1]))
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
                assert overlay.format == "PNG" and overlay.width == 384 and overlay.height > 384
                assert "labels found" in page.locator("#status").inner_text()
                page.locator("#masks img").first.wait_for()
                page.screenshot(path=str(screenshot), full_page=True)
            finally:
                browser.close()
    finally:
        demo.close()
    assert PIL.Image.open(screenshot).size[0] == 1280
