"""`groupvit export-onnx`: export the image and text towers to ONNX and check them against PyTorch."""

from __future__ import annotations

import argparse
import sys

from groupvit.cli import argument_parser, report_error
from groupvit.cli.shipped_model import resolve_model
from groupvit.segmentation.onnx import _MIN_OPSET, DEFAULT_OPSET, METADATA_FILE, export_onnx


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argument_parser(
        "groupvit export-onnx",
        description="Export GroupViT's image and text towers to ONNX (with the processor and the logit scale), and "
        "check them against PyTorch with ONNX Runtime.",
    )
    parser.add_argument("--model", required=True, help="model directory, Hub id, or 'demo' (the shipped model)")
    parser.add_argument("--output", required=True, help="directory to write the ONNX files into")
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, >= {_MIN_OPSET} (default: %(default)s)"
    )
    parser.add_argument(
        "--image_size",
        type=int,
        default=None,
        help="side of the traced dummy image (default: the config's); any multiple of the patch size works later",
    )
    parser.add_argument(
        "--atol", type=float, default=1e-4, help="validation tolerance, absolute and relative (default: %(default)s)"
    )
    parser.add_argument("--no_validate", action="store_true", help="skip the ONNX Runtime vs PyTorch comparison")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """`groupvit export-onnx --model PATH_OR_ID --output DIR [--opset N] [--image_size S] [--no_validate]`.

    Prints where the files went and, unless `--no_validate`, the largest absolute error of every output.

    Returns:
        0 on success, 2 when the model cannot be found (a missing folder, an unknown or offline Hub id), 1 when the
        export fails or ONNX Runtime and PyTorch differ beyond the tolerance.
    """
    args = _parse_args(argv)
    try:
        model, _ = resolve_model(args.model)
    except ValueError as error:
        return report_error("groupvit export-onnx", error)
    try:
        export = export_onnx(
            model,
            args.output,
            opset=args.opset,
            image_size=args.image_size,
            validate=not args.no_validate,
            atol=args.atol,
            rtol=args.atol,
        )
    except (ValueError, OSError, ImportError) as error:
        print(f"groupvit export-onnx: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {export.image_model.name}, {export.text_model.name} and {METADATA_FILE} to {export.directory}")
    if export.parity is not None:
        print(f"ONNX Runtime vs PyTorch, max abs error (atol {args.atol:g}):")
        for name, error in export.parity.items():
            print(f"  {name:<14} {error:.3g}")
    return 0
