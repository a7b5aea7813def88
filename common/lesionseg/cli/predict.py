"""``lesionseg predict``: segment a person's own images with a trained bundle or an exported model.

The arguments of :class:`lesionseg.workflows.predict.FolderPrediction`, which documents what is written where.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.data.io import DataError
from lesionseg.engines.finite import check_threshold
from lesionseg.workflows.predict import FolderPrediction, format_summary, parse_overrides
from lesionseg.workflows.predictor import ModelError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment your own images (a file or a folder) with a trained bundle or an exported model",
        description=(
            "Segment every image of INPUT with a bundle's trained network (its models/model.pt, or "
            "--checkpoint) or an exported TorchScript model (--model). Reads PNG, JPEG, BMP, TIFF (8/16-bit, "
            "gray or colour), NIfTI and DICOM, any size; writes each mask at the source's size and geometry "
            "(PNG for pictures, NIfTI with the source affine for NIfTI/DICOM), an overlay picture, optionally "
            "the probability map, a per-file CSV and a summary."
        ),
    )
    source = parser.add_argument_group("model")
    source.add_argument(
        "--bundle",
        type=Path,
        metavar="DIR",
        help="bundle folder (e.g. bundles/dcnet_bundle); a TorchScript file here is taken as --model",
    )
    source.add_argument(
        "--checkpoint", type=Path, metavar="FILE", help="weights for the bundle's network instead of models/model.pt"
    )
    source.add_argument(
        "--model",
        type=Path,
        metavar="FILE",
        help="exported TorchScript model (python -m monai.bundle ckpt_export); preprocessing from --bundle, "
        "else from the inference config embedded in the file",
    )
    source.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="set a config id before the network is built, VALUE in YAML, e.g. "
        "'network_def#features=[16,32,64,128,256]' or 'image_size=[128,128]' (repeatable); only ids predict reads "
        "(network_def, ckpt_dir, image_key, preprocessing, image_size, precision and those they refer to)",
    )
    parser.add_argument("--input", type=Path, required=True, metavar="PATH", help="an image file or a folder of images")
    parser.add_argument("--output", type=Path, required=True, metavar="DIR", help="folder to write the results into")
    parser.add_argument("--recursive", action="store_true", help="also read the sub-folders of an input folder")
    parser.add_argument("--probabilities", action="store_true", help="also write the lesion probability maps")
    parser.add_argument(
        "--ground-truth",
        type=Path,
        metavar="PATH",
        help="a mask file (for one input file) or a folder of masks matched by name: '<stem>.*', "
        "'<stem>_mask.*' (BUSI's '_mask_1'... merged), '_label', '_seg', '_segmentation' or '_gt', in the "
        "sub-folder that mirrors the image's, else in one folder at its place (docs/predict.md); outlined in green",
    )
    parser.add_argument("--device", metavar="DEVICE", help="cpu, cuda or cuda:N (default: cuda when there is one)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "auto"),
        help="precision of the network's forward pass: fp32, bf16, fp16 (CUDA only) or auto (bf16 where the device "
        "runs it natively, see the README); default: the bundle's `precision` setting (DC-Net auto, TaiChiNet fp32)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the network with torch.compile: about a minute at the first image, then faster images "
        "(benchmarks/compile_speed.py); for long runs over thousands of images (a CPU needs a C++ compiler)",
    )
    parser.add_argument(
        "--threshold",
        type=probability_threshold,
        default=0.5,
        help="probability a lesion pixel reaches, strictly between 0 and 1 (default: 0.5)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier run in --output (inputs are never written over)",
    )
    parser.set_defaults(func=run)


def probability_threshold(text: str) -> float:
    """``argparse`` type of ``--threshold``: :func:`check_threshold`, refused with argparse's usage message."""
    try:
        return check_threshold(text, "--threshold")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--threshold: ")) from None


def run(args: argparse.Namespace) -> int:
    try:
        overrides = parse_overrides(args.override)
        prediction = FolderPrediction(
            args.input, args.output, args.bundle, args.checkpoint, args.model, overrides, args.device, args.precision,
            args.recursive, args.probabilities, args.ground_truth, args.threshold, args.overwrite, args.compile,
        )  # fmt: skip
        prediction.create_output()
    except (ModelError, DataError, FileNotFoundError, ValueError) as error:
        print(f"lesionseg predict: {error}", file=sys.stderr)
        return 2
    summary = prediction.run()
    try:
        prediction.write_tables(summary)
    except (OSError, DataError) as error:
        print(format_summary(summary, prediction.output))
        print(f"lesionseg predict: cannot write the tables: {error}", file=sys.stderr)
        return 1
    print(format_summary(summary, prediction.output))
    return 1 if summary["failed"] else 0
