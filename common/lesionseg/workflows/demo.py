"""The demo run (``lesionseg demo``): the project's main job on its own phantoms, from nothing to predicted masks
(:func:`run_demo`)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass
class DemoResult:
    """What :func:`run_demo` wrote.

    Attributes:
        output: the output folder.
        table: the paper-style results table (also in ``results.md``).
        summary: the lesion means on the validation images and the minutes taken (also in ``summary.json``).
    """

    output: Path
    table: str
    summary: dict


class DemoFolderError(ValueError):
    """The output folder holds a demo of other settings; the message names the folder."""


def run_demo(
    output: Path,
    bundle: Path = DEFAULT_BUNDLE,
    num_images: int = 60,
    epochs: int = 20,
    learning_rate: float = 1e-3,
    image_size: int = 128,
    features: Sequence[int] = (16, 32, 64, 128, 256),
    seed: int = 0,
) -> DemoResult:
    """Write phantoms (or reuse complete ones), train the bundle on them, evaluate it on the validation split, and
    write the overlay sheet, training curves, ``results.md`` and ``summary.json`` into ``output``.

    Args:
        output: the output folder (``phantoms/``, ``models/``, ``train/``, ``evaluation/`` and the results).
        bundle: the bundle folder.
        num_images: phantoms to generate (at least :data:`MIN_IMAGES`).
        epochs: training epochs.
        learning_rate: Adam learning rate.
        image_size: network input size (square).
        features: the coupling subnet's five widths.
        seed: seed of the phantoms, the split and the training.

    Raises:
        FileNotFoundError: naming ``bundle``, when it has no train or evaluate config (before anything is written).
        DemoFolderError: naming the folder, when ``output`` holds phantoms of another number or seed (a demo's
            results would name the asked-for ones).
    """
    from lesionseg.data.phantoms import write_phantom_dataset

    start = time.monotonic()
    for config in ("train", "evaluate"):  # a wrong --bundle fails now, not after the phantoms are written
        find_config(bundle, config)
    output = output.resolve()
    data_dir = output / "phantoms"
    manifest = data_dir / "phantoms.json"
    if not manifest.is_file():  # the manifest is written last: a complete dataset
        write_phantom_dataset(data_dir, num_images=num_images, seed=seed)
    else:
        made = json.loads(manifest.read_text())
        if (made.get("num_images"), made.get("seed")) != (num_images, seed):
            raise DemoFolderError(
                f"{data_dir}: holds {made.get('num_images')} phantoms of seed {made.get('seed')}, not the "
                f"{num_images} of seed {seed} asked for; use another output folder, or the same values"
            )
        logger.info("reusing the phantoms in %s", data_dir)
    overrides = {
        "dataset_dir": str(data_dir),
        "ckpt_dir": str(output / "models"),
        "output_dir": str(output / "train"),
        "max_epochs": epochs,
        "learning_rate": learning_rate,
        "image_size": [image_size, image_size],
        "network_def#features": list(features),
        "seed": seed,
        "split_seed": seed,
        "num_workers": 0,
    }
    epoch_log = output / "train" / "epochs.jsonl"
    run_workflow(bundle, ["train"], "train", overrides, before_run=epoch_log_attacher(epoch_log))
    eval_dir = output / "evaluation"
    run_workflow(bundle, ["train", "evaluate"], None, {**overrides, "output_dir": str(eval_dir)})
    _overlay_sheet(eval_dir / "predictions", output / "overlays.png")
    plot_training_curves(
        {"DC-Net": epoch_curves(epoch_log)}, output / "training_curves.png", title="lesionseg demo: DC-Net on phantoms"
    )
    evaluation = read_summary_json(eval_dir / "summary.json")
    table = _results_table(evaluation)
    write_text_atomically(
        output / "results.md",
        f"# lesionseg demo: DC-Net on {num_images} phantoms\n\n{epochs} epochs at {image_size}x"
        f"{image_size}, features {list(features)}, Adam {learning_rate}, seed {seed}; "
        f"validation images, metrics at each image's own size (mean ± std over images).\n\n{table}",
    )
    summary = {"validation": _lesion_means(evaluation), "minutes": round((time.monotonic() - start) / 60, 1)}
    write_text_atomically(output / "summary.json", json.dumps(summary, indent=2))
    return DemoResult(output, table, summary)
