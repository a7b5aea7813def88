"""``lesionseg demo``: the project's main job on its own phantoms, from nothing to predicted masks."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from PIL import Image

from lesionseg.engines.training_log import epoch_curves, epoch_log_attacher
from lesionseg.metrics import read_summary_json
from lesionseg.metrics.plots import plot_training_curves
from lesionseg.metrics.tables import format_table
from lesionseg.utils.files import replacing, write_text_atomically
from lesionseg.workflows.bundle import find_config, run_workflow

logger = logging.getLogger(__name__)

DEFAULT_BUNDLE = Path("bundles") / "dcnet_bundle"
#: the fewest phantoms whose validation fifth (the bundle's val_fraction, stratified by class) holds an image
MIN_IMAGES = 5


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


def _overlay_sheet(predictions_dir: Path, output_png: Path, num: int = 8) -> None:
    """Tile the first overlay pictures into one PNG a person can glance at."""
    overlays = sorted(predictions_dir.glob("*_overlay.png"))[:num]
    if not overlays:
        return
    tile = 192
    columns = min(4, len(overlays))
    rows = -(-len(overlays) // columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), "black")
    for index, path in enumerate(overlays):
        picture = Image.open(path).convert("RGB")
        picture.thumbnail((tile, tile))
        sheet.paste(picture, ((index % columns) * tile, (index // columns) * tile))
    with replacing(output_png) as temporary:
        sheet.save(temporary)


def _lesion_means(summary: dict) -> dict[str, float]:
    """The mean of each metric over the images with a lesion, from the evaluate workflow's summary."""
    lesion = summary["lesion"]
    return {name: round(float(value["mean"]), 4) for name, value in lesion.items() if isinstance(value, dict)}


def _results_table(summary: dict) -> str:
    """The paper-style table (mean ± std over the validation images) of lesion, normal and all images."""
    rows = {group: summary[group] for group in ("lesion", "normal", "all") if summary.get(group, {}).get("n")}
    return format_table(rows, label="images") if rows else "no validation images were evaluated\n"


def run(args: argparse.Namespace) -> int:
    from lesionseg.data.phantoms import write_phantom_dataset

    start = time.monotonic()
    for config in ("train", "evaluate"):  # a wrong --bundle fails now, not after the phantoms are written
        find_config(args.bundle, config)
    output = args.output.resolve()
    data_dir = output / "phantoms"
    if not (data_dir / "phantoms.json").is_file():  # the manifest is written last: a complete dataset
        write_phantom_dataset(data_dir, num_images=args.num_images, seed=args.seed)
    else:
        logger.info("reusing the phantoms in %s", data_dir)
    overrides = {
        "dataset_dir": str(data_dir),
        "ckpt_dir": str(output / "models"),
        "output_dir": str(output / "train"),
        "max_epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "image_size": [args.image_size, args.image_size],
        "network_def#features": list(args.features),
        "seed": args.seed,
        "split_seed": args.seed,
        "num_workers": 0,
    }
    epoch_log = output / "train" / "epochs.jsonl"
    run_workflow(args.bundle, ["train"], "train", overrides, before_run=epoch_log_attacher(epoch_log))
    eval_dir = output / "evaluation"
    run_workflow(args.bundle, ["train", "evaluate"], None, {**overrides, "output_dir": str(eval_dir)})
    _overlay_sheet(eval_dir / "predictions", output / "overlays.png")
    plot_training_curves(
        {"DC-Net": epoch_curves(epoch_log)}, output / "training_curves.png", title="lesionseg demo: DC-Net on phantoms"
    )
    evaluation = read_summary_json(eval_dir / "summary.json")
    table = _results_table(evaluation)
    write_text_atomically(
        output / "results.md",
        f"# lesionseg demo: DC-Net on {args.num_images} phantoms\n\n{args.epochs} epochs at {args.image_size}x"
        f"{args.image_size}, features {list(args.features)}, Adam {args.learning_rate}, seed {args.seed}; "
        f"validation images, metrics at each image's own size (mean ± std over images).\n\n{table}",
    )
    summary = {"validation": _lesion_means(evaluation), "minutes": round((time.monotonic() - start) / 60, 1)}
    write_text_atomically(output / "summary.json", json.dumps(summary, indent=2))
    print(f"\ndemo finished in {summary['minutes']} min; validation images (mean ± std over images):\n\n{table}")
    print(f"  results:      {output / 'results.md'}")
    print(f"  curves:       {output / 'training_curves.png'} (training loss, validation Dice per epoch)")
    print(f"  model:        {output / 'models' / 'model.pt'}")
    print(f"  predictions:  {eval_dir / 'predictions'}")
    print(f"  metrics:      {eval_dir / 'per_image.csv'}, {eval_dir / 'summary.json'}")
    print(f"  overlays:     {output / 'overlays.png'} (green: ground truth, yellow: prediction)")
    print(f"  TensorBoard:  tensorboard --logdir {output / 'train'}")
    return 0
