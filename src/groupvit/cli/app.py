"""A Gradio page for zero-shot segmentation: upload an image, type labels, see the image annotated with each label.

`groupvit app` and `python app/app.py` (the Hugging Face Space entry) serve it; both call :func:`main`. The page runs
the `zero-shot-image-segmentation` pipeline, so it shows exactly what `pipeline(...)` returns.

    groupvit app                          # the shipped demo model (or a random stand-in), http://127.0.0.1:7860
    groupvit app --model nvidia/groupvit-gcc-yfcc --port 8080

Gradio is an optional dependency (`pip install "groupvit[app]"`); this module imports it only inside the functions
that build the page, so that :class:`SegmentationApp` (the page's callback) can be used and tested without it. The
page uses Gradio's own components: `gr.AnnotatedImage` for the result (one highlight per label, with a legend) and
`gr.Error` pop-ups for input it cannot use (:func:`gradio_handler`).

Example:
    ```python
    >>> import PIL.Image
    >>> import groupvit
    >>> from transformers import pipeline
    >>> from groupvit.cli.app import SegmentationApp
    >>> model = groupvit.GroupViTModel(groupvit.GroupViTConfig.from_preset("groupvit-tiny"))
    >>> segmenter = pipeline(
    ...     "zero-shot-image-segmentation", model=model, processor=groupvit.GroupViTProcessor.from_bundled(32)
    ... )
    >>> app = SegmentationApp(segmenter)
    >>> (picture, masks), colors, status = app.segment(PIL.Image.new("RGB", (48, 40)), "cat, dog", 0.5, True, "{}")
    >>> picture.width >= 48, len(masks) >= 1, sorted(colors)
    (True, True, ['background', 'cat', 'dog'])
    >>> app.segment(None, "cat", 0.5, True, "a photo of a {}.")
    Traceback (most recent call last):
    ...
    groupvit.cli.app.InputError: upload an image or pick an example first.

    ```
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import PIL.Image

from groupvit.cli import argument_parser
from groupvit.processing_groupvit import to_rgb_image
from groupvit.segmentation.visualization import label_colors

if TYPE_CHECKING:  # pragma: no cover
    import gradio
    from transformers import Pipeline

logger = logging.getLogger(__name__)

__all__ = [
    "MAX_IMAGE_SIDE",
    "MAX_LABELS",
    "MAX_UPLOAD_BYTES",
    "TEMPLATES",
    "InputError",
    "SegmentationApp",
    "build_demo",
    "default_examples",
    "gradio_handler",
    "main",
    "parse_labels",
    "write_examples",
]

MAX_IMAGE_SIDE = 4096
"""Largest image side (px) the page segments; checked on the file's header, before the pixels are decoded."""
MAX_UPLOAD_BYTES = 20 * 2**20
"""Largest upload (bytes): Gradio refuses bigger files, and the callback checks again."""
MAX_LABELS = 32
# prompt templates offered in the dropdown (the first is the default); the list is from CLIP's ImageNet prompts
TEMPLATES = (
    "a photo of a {}.",
    "itap of a {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "a bad photo of a {}.",
    "a cropped photo of the {}.",
    "a rendering of a {}.",
    "{}",
)
# the results are shown with their long side between these (px); see _for_display
_DISPLAY_SIDE = 384
_MAX_DISPLAY_SIDE = 1024
_EXAMPLE_SPEC = "objects"
_EXAMPLE_SIZE = 64


class InputError(ValueError):
    """Input the page rejects with a message (no image, bad labels, an image too large)."""


def parse_labels(text: str | None) -> list[str]:
    """Split comma-separated label names, e.g. `"cat, dog ,grass"` -> `["cat", "dog", "grass"]`.

    Blank entries (`"cat,,dog"`, a trailing comma) are dropped.

    Raises:
        InputError: No label, more than :data:`MAX_LABELS`, or what
            :func:`groupvit.segmentation.protocols.validate_labels` refuses (the rule of the pipeline and the CLI:
            e.g. "Cat" and "cat", the same prompt once the CLIP tokenizer lower-cases).
    """
    from groupvit.segmentation.protocols import validate_labels

    labels = [label.strip() for label in (text or "").split(",")]
    labels = [label for label in labels if label]
    if not labels:
        raise InputError('type at least one label, e.g. "cat, dog, grass".')
    if len(labels) > MAX_LABELS:
        raise InputError(f"at most {MAX_LABELS} labels, got {len(labels)}.")
    try:
        return validate_labels(labels)
    except ValueError as error:
        raise InputError(str(error)) from error


def _check_side(width: int, height: int) -> None:
    if max(width, height) > MAX_IMAGE_SIDE:
        raise InputError(
            f"the image is {width}x{height} px; the largest side may be at most {MAX_IMAGE_SIDE} px. "
            "Resize it and try again."
        )


def _check_image(image: Any) -> PIL.Image.Image:
    """The uploaded image as RGB (through the package's one image-to-RGB routine), within the page's limits.

    An upload arrives as the path of Gradio's copy of the file: its size in bytes and its dimensions (from the
    header) are checked before any pixel is decoded, so a small file that decompresses to a huge image costs
    nothing. Messages never show the server-side path.
    """
    if image is None:
        raise InputError("upload an image or pick an example first.")
    if isinstance(image, (str, os.PathLike)):  # Gradio's copy of an upload (type="filepath")
        path = Path(image)
        if str(image).startswith(("http://", "https://")) or not path.is_file():
            raise InputError("the upload is not a file on the server; upload the image again.")
        size = path.stat().st_size
        if size > MAX_UPLOAD_BYTES:
            raise InputError(f"the file is {size:,} bytes; the page takes at most {MAX_UPLOAD_BYTES:,} bytes.")
        try:
            with PIL.Image.open(path) as lazy:  # reads the header only
                _check_side(*lazy.size)
            return to_rgb_image(path, max_pixels=MAX_IMAGE_SIDE**2)
        except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
            if isinstance(error, InputError):
                raise
            logger.info("unreadable upload %s: %s", path, error)
            raise InputError("the file cannot be read as an image (PNG, JPEG, WebP, ...).") from None
    if not isinstance(image, (PIL.Image.Image, np.ndarray)):  # no URLs from the page
        raise InputError(f"expected an image, got {type(image).__name__}.")
    height, width = (image.height, image.width) if isinstance(image, PIL.Image.Image) else image.shape[:2]
    _check_side(width, height)
    return to_rgb_image(image)


def _for_display(image: PIL.Image.Image) -> PIL.Image.Image:
    """The image scaled so that its long side lies in `[_DISPLAY_SIDE, _MAX_DISPLAY_SIDE]`: small images are enlarged
    (nearest, so pixels stay sharp) to keep the legend legible, large ones shrunk to keep the page's PNGs small."""
    long_side = max(image.size)
    if _DISPLAY_SIDE <= long_side <= _MAX_DISPLAY_SIDE:
        return image
    scale = (_DISPLAY_SIDE if long_side < _DISPLAY_SIDE else _MAX_DISPLAY_SIDE) / long_side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resample = PIL.Image.Resampling.NEAREST if scale > 1 else PIL.Image.Resampling.BILINEAR
    return image.resize(size, resample)


class SegmentationApp:
    """The page's callback around a `zero-shot-image-segmentation` pipeline; usable without Gradio.

    Args:
        segmenter: The pipeline (see :mod:`groupvit.segmentation.pipeline`).
        options: Extra pipeline arguments for every call (default: the model's
            :func:`groupvit.cli.shipped_model.inference_options` with its `settings`, i.e. the whole image at the
            training resolution for models trained below 224 px, or the short side its `demo.json` validated).
        settings: The model's settings from :func:`groupvit.cli.shipped_model.resolve_model`; their background
            threshold is the page's initial value (each call passes the page's own).
    """

    def __init__(
        self, segmenter: Pipeline, options: dict[str, Any] | None = None, settings: dict[str, Any] | None = None
    ) -> None:
        self.segmenter = segmenter
        if options is None:
            from groupvit.cli.shipped_model import inference_options

            options = inference_options(int(segmenter.model.config.vision_config.image_size), settings)
            options.pop("background_threshold", None)
        self.options = dict(options)
        # the pipeline keeps per-call state (label embeddings), so calls from Gradio's worker threads take turns
        self._lock = threading.Lock()

    def segment(
        self,
        image: Any,
        labels_text: str | None,
        background_threshold: float | None,
        use_background: bool,
        template: str | None,
    ) -> tuple[tuple[PIL.Image.Image, list[tuple[np.ndarray, str]]], dict[str, str], str]:
        """Segment `image` into the comma-separated labels.

        Args:
            image: The path of the uploaded file (as the page passes it), a PIL image or an `(H, W, 3)` array (None
                when nothing was uploaded).
            labels_text: Comma-separated label names.
            background_threshold: Threshold of the background class in `[0, 1]`.
            use_background: Add the background class; False ignores `background_threshold`.
            template: Prompt template with `{}` for the label.

        Returns:
            The value of a `gradio.AnnotatedImage` (the image scaled for display, and one `(mask, label)` pair per
            label found, the mask a float array of the display size with 1 inside), its `color_map` (label -> hex
            colour; a label keeps its colour across runs) and a Markdown status line: what was found, with each
            label's pixel share.

        Raises:
            InputError: Input the page cannot use (no image, no or duplicate labels, an image too large, a template
                without `{}`); the message names the problem and never a server path.
        """
        picture = _check_image(image)
        labels = parse_labels(labels_text)
        if use_background and background_threshold is None:
            raise InputError("choose a background threshold or untick the background class.")
        threshold = float(background_threshold) if use_background else None
        template = (template or "").strip() or TEMPLATES[0]  # checked by the pipeline
        start = time.perf_counter()
        try:
            with self._lock:
                entries = self.segmenter(
                    picture,
                    candidate_labels=labels,
                    hypothesis_template=template,
                    background_threshold=threshold,
                    **self.options,
                )
        except ValueError as error:  # the pipeline's own validation (e.g. a label "background", a bad template)
            raise InputError(str(error)) from None
        return self._render(picture, labels, threshold is not None, entries, time.perf_counter() - start)

    def _render(
        self,
        image: PIL.Image.Image,
        labels: list[str],
        with_background: bool,
        entries: list[dict[str, Any]],
        seconds: float,
    ) -> tuple[tuple[PIL.Image.Image, list[tuple[np.ndarray, str]]], dict[str, str], str]:
        from groupvit.segmentation.protocols import BACKGROUND_LABEL

        # colours follow the candidate order (background last), so a label keeps its colour across runs
        names = [*labels, BACKGROUND_LABEL] if with_background else list(labels)
        background_index = len(labels) if with_background else None
        colors = label_colors(len(names), background_index)
        color_map = {name: "#{:02x}{:02x}{:02x}".format(*(int(c) for c in colors[i])) for i, name in enumerate(names)}
        display = _for_display(image)
        annotations, found = [], []
        for entry in entries:
            mask = np.asarray(entry["mask"]) > 127  # (H, W) at the image's size
            shown = PIL.Image.fromarray(mask).resize(display.size, PIL.Image.Resampling.NEAREST)
            annotations.append((np.asarray(shown, dtype=np.float32), entry["label"]))  # (h, w) at the display size
            found.append(f"{entry['label']} {100 * float(mask.mean()):.1f} %")
        present = {entry["label"] for entry in entries}
        missing = [label for label in labels if label not in present]
        status = (
            f"**{len(labels) - len(missing)} of {len(labels)} labels found** in the {image.width}x{image.height} "
            f"image ({seconds:.2f} s): " + ", ".join(found)
        )
        if missing:
            status += f". Not found: {', '.join(missing)}."
        return (display, annotations), color_map, status


def gradio_handler(app: SegmentationApp) -> Any:
    """The page's callback: :meth:`SegmentationApp.segment` with its errors as `gradio.Error` pop-ups.

    Bad input becomes a `gradio.Error` with the input's message; an unexpected failure is logged with its stack trace
    on the server and shown as `gradio.Error` with the exception's type only (its text may hold server paths).

    Returns:
        A function of the page's inputs returning the `gradio.AnnotatedImage` update and the status Markdown.
    """
    import gradio as gr

    def segment(*inputs: Any) -> tuple[Any, str]:
        try:
            annotated, color_map, status = app.segment(*inputs)
        except InputError as error:
            raise gr.Error(_sentence(str(error)), title="Cannot segment this", print_exception=False) from None
        except Exception as error:  # noqa: BLE001 - the page shows a message, the log keeps the stack trace
            logger.exception("segmentation failed")
            raise gr.Error(
                f"Segmentation failed on the server ({type(error).__name__}); its log has the details.",
                print_exception=False,
            ) from None
        return gr.AnnotatedImage(value=annotated, color_map=color_map), status

    return segment


def _sentence(message: str) -> str:
    """`"duplicate label x"` -> `"Duplicate label x."`"""
    message = message.strip()
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "!", "?")) else message + "."


def write_examples(directory: str | Path, num_examples: int = 4) -> list[Path]:
    """Write the first `num_examples` images of the synthetic `objects` test split as PNGs, `example_{i}.png`.

    The images are deterministic (see :mod:`groupvit.data.synthetic`); `app/examples/` holds the same four.

    Returns:
        The paths written, in order.
    """
    from groupvit.data.synthetic import make_split

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, sample in enumerate(make_split(_EXAMPLE_SPEC, "test", num_examples, _EXAMPLE_SIZE)):
        path = directory / f"example_{index}.png"
        if path.is_symlink():  # replace the link itself, never write through it
            path.unlink()
        sample.image.save(path, optimize=True)
        paths.append(path)
    return paths


def default_examples() -> list[Path]:
    """The synthetic examples written to a new private directory (`tempfile.mkdtemp`: mode 0700, a fresh name), so
    that no other user can plant files or links where the page writes."""
    return write_examples(tempfile.mkdtemp(prefix="groupvit-app-examples-"))


def _example_labels() -> str:
    from groupvit.data.synthetic import get_spec

    return ", ".join(get_spec(_EXAMPLE_SPEC).class_names)


def _load_pipeline(model: str, device: str | None) -> tuple[Pipeline, dict[str, Any], str]:
    from transformers import pipeline

    from groupvit.cli.shipped_model import DEMO_NAME, demo_directory, resolve_model
    from groupvit.segmentation.pipeline import TASK

    path, settings = resolve_model(model)
    if model == DEMO_NAME and Path(path) != demo_directory():
        note = (
            "⚠️ This checkout has no trained demo model: a **randomly initialised** model stands in, so the "
            "segments are noise. Pass `--model` to use a trained one."
        )
    else:
        note = f"Model: `{_public_name(model)}`"
    return pipeline(TASK, model=path, device=device or "cpu"), settings, note


def _public_name(name: str) -> str:
    """A model's name for the page: a Hub id as is, a local folder by its last component (no server paths)."""
    path = Path(name)
    return path.name if path.is_absolute() or path.exists() or name.startswith((".", "~")) else name


def build_demo(
    model: str | Pipeline = "demo",
    examples: Sequence[str | Path] | None = None,
    device: str | None = None,
    options: dict[str, Any] | None = None,
    default_labels: str | None = None,
    background_threshold: float | None = None,
) -> gradio.Blocks:
    """Build the page (not launched).

    Args:
        model: A model directory, Hub id, `"demo"` (the shipped demo model, or a random stand-in with a warning on
            the page) or a ready `zero-shot-image-segmentation` pipeline.
        examples: Image files offered as examples (default: four synthetic test images written to a temporary
            directory by :func:`write_examples`; an empty list shows none).
        device: Torch device for a model loaded here (default cpu).
        options: Extra pipeline arguments (see :class:`SegmentationApp`).
        default_labels: Initial text of the labels box (default: the synthetic `objects` classes).
        background_threshold: Initial background threshold (default: the model's `demo.json` setting, else 0.5).

    Returns:
        A `gradio.Blocks`; call `.launch()` on it.
    """
    import gradio as gr

    if isinstance(model, str):
        segmenter, settings, note = _load_pipeline(model, device)
    else:
        name = getattr(getattr(model, "model", None), "name_or_path", "") or type(model).__name__
        segmenter, settings, note = model, {}, f"Model: `{_public_name(name)}`"
    if background_threshold is None:
        background_threshold = float(settings.get("background_threshold", 0.5))
    if examples is None:
        examples = default_examples()
    app = SegmentationApp(segmenter, options=options, settings=settings)

    with gr.Blocks(title="GroupViT zero-shot segmentation", analytics_enabled=False) as demo:
        gr.Markdown(
            "# GroupViT: zero-shot segmentation\n"
            "Semantic segmentation from text supervision ([Xu et al., CVPR 2022](https://arxiv.org/abs/2202.11094)): "
            "type the names of what to find, comma-separated. Every pixel goes to the best-matching label, or to "
            "*background* when no label scores above the threshold.\n\n" + note
        )
        with gr.Row():
            with gr.Column():
                # a file path, so that the callback checks the size before decoding (see _check_image)
                image = gr.Image(type="filepath", label="Image", elem_id="input-image", height=320)
                labels = gr.Textbox(
                    value=default_labels if default_labels is not None else _example_labels(),
                    label="Labels (comma-separated)",
                    placeholder="cat, dog, grass",
                    elem_id="labels",
                )
                with gr.Row():
                    use_background = gr.Checkbox(value=True, label="Background class", elem_id="use-background")
                    threshold = gr.Slider(
                        0.0, 1.0, value=background_threshold, step=0.05, label="Background threshold"
                    )
                template = gr.Dropdown(
                    choices=list(TEMPLATES),
                    value=TEMPLATES[0],
                    allow_custom_value=True,
                    label="Prompt template ({} is the label)",
                    elem_id="template",
                )
                submit = gr.Button("Segment", variant="primary", elem_id="submit")
                if examples:
                    gr.Examples(examples=[[str(path)] for path in examples], inputs=[image], cache_examples=False)
            with gr.Column():
                status = gr.Markdown(elem_id="status")
                result = gr.AnnotatedImage(label="Segments", format="png", show_legend=True, elem_id="overlay")
        use_background.change(lambda on: gr.update(interactive=on), inputs=use_background, outputs=threshold)
        inputs = [image, labels, threshold, use_background, template]
        handler = gradio_handler(app)
        submit.click(handler, inputs=inputs, outputs=[result, status], api_name="segment")
        labels.submit(handler, inputs=inputs, outputs=[result, status], api_name=False)
    return demo


def parse_args(argv: list[str] | None = None, examples: Sequence[str | Path] | None = None) -> argparse.Namespace:
    """Arguments of `groupvit app`."""
    parser = argument_parser(
        "groupvit app",
        description="Serve a web page for zero-shot segmentation: upload an image, type labels, see the masks.",
    )
    parser.add_argument("--model", default="demo", help='model directory or Hub id (default "demo": the shipped one)')
    parser.add_argument(
        "--host", default=None, help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--examples", nargs="*", metavar="IMAGE", help="example images (default: synthetic ones)")
    parser.add_argument("--labels", default=None, help="initial labels text (default: the synthetic classes)")
    args = parser.parse_args(argv)
    if args.examples is None and examples is not None:
        args.examples = list(examples)
    return args


def main(argv: list[str] | None = None, examples: Sequence[str | Path] | None = None) -> int:
    """Entry point of `groupvit app` (and of `app/app.py`, which passes its bundled `examples`).

    Returns:
        0 once the server stops (Ctrl-C), 2 without gradio.
    """
    args = parse_args(argv, examples)
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        print('groupvit app: error: the page needs gradio: pip install "groupvit[app]"', file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    demo = build_demo(args.model, examples=args.examples, device=args.device, default_labels=args.labels)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=MAX_UPLOAD_BYTES)
    return 0
