"""``lesionseg demo``: the project's main job on its own phantoms, from nothing to predicted masks.

The arguments of :func:`lesionseg.workflows.demo.run_demo`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lesionseg.workflows.demo import DEFAULT_BUNDLE, MIN_IMAGES, DemoFolderError, run_demo


def _at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"need a whole number >= {minimum}, got {text}")
        return value

    return parse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate phantoms, train DC-Net briefly through its bundle, evaluate and draw the results",
        description=(
            "The main job on built-in demo data: writes synthetic ultrasound phantoms, trains the bundle's "
            "network for a few epochs at a small size, evaluates it on the validation split and writes "
            "predicted masks, overlay pictures, per-image metrics and a summary into OUTPUT. A few minutes "
            "on 2 CPU cores with the defaults."
        ),
    )
    parser.add_argument("--output", type=Path, default=Path("demo_output"), help="output folder (default: %(default)s)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle folder (default: %(default)s)")
    parser.add_argument(
        "--num-images",
        type=_at_least(MIN_IMAGES),
        default=60,
        help=f"phantoms to generate, at least {MIN_IMAGES} (default: %(default)s)",
    )
    parser.add_argument("--epochs", type=_at_least(1), default=20, help="training epochs (default: %(default)s)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Adam learning rate; the paper's 3e-4 needs far more than a demo's epochs (default: %(default)s)",
    )
    parser.add_argument("--image-size", type=int, default=128, help="network input size (default: %(default)s)")
    parser.add_argument(
        "--features",
        type=int,
        nargs=5,
        default=(16, 32, 64, 128, 256),
        help="coupling-subnet widths; the published model uses 32 64 128 256 512 (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of phantoms, split and training")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        result = run_demo(
            args.output, args.bundle, args.num_images, args.epochs, args.learning_rate, args.image_size,
            args.features, args.seed,
        )  # fmt: skip
    except DemoFolderError as error:  # an OSError (a missing bundle) is reported by the command line's handler
        print(f"lesionseg demo: {error}", file=sys.stderr)
        return 1
    output, eval_dir = result.output, result.output / "evaluation"
    print(f"\ndemo finished in {result.summary['minutes']} min; validation images (mean ± std over images):\n")
    print(result.table)
    print(f"  results:      {output / 'results.md'}")
    print(f"  curves:       {output / 'training_curves.png'} (training loss, validation Dice per epoch)")
    print(f"  model:        {output / 'models' / 'model.pt'}")
    print(f"  predictions:  {eval_dir / 'predictions'}")
    print(f"  metrics:      {eval_dir / 'per_image.csv'}, {eval_dir / 'summary.json'}")
    print(f"  overlays:     {output / 'overlays.png'} (green: ground truth, yellow: prediction)")
    print(f"  TensorBoard:  tensorboard --logdir {output / 'train'}")
    return 0
