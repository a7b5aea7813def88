"""One-shot preparation of TaiChiNet's easy and hard lesion parts (Wang et al., IEEE JBHI 2024, Sec. IV-C,
Eq. 23–24, Fig. 6–7).

"The one-shot preparation means that E_p and H_p are only mined once per dataset": a U-Net++ with deep
supervision is trained once on the training section, and for every training image

    E_p = Out(1) ∩ GT                    (Eq. 23, the easy part: what even the shallowest head finds)
    H_p = (Out(4) ∩ GT) ∩ ¬E_p           (Eq. 24, the hard part: what only the deepest head adds)

"with coarse outputs at the first level and fine outputs at the fourth level". With MONAI's
``BasicUNetPlusPlus(deep_supervision=True)``, whose outputs are ``[X^{0,1}, X^{0,2}, X^{0,3}, X^{0,4}]``
(after 1×1 heads), Out(1) is ``outputs[0]``, the head on node X^{0,1} of the depth-1 sub-network (one
down-sampling), and Out(4) is ``outputs[-1]``, the head on X^{0,4} of the full-depth network (four
down-samplings).

The parts are written as PNG masks (0/255) at the size of each source mask into a preparation folder,
beside a MONAI datalist whose training items gain ``easy`` and ``hard`` keys (paths relative to the JSON,
see :func:`lesionseg.data.datalist.read_prepared_datalist`). A later run reuses them when they match the
dataset (:func:`check_preparation`). The bundle's ``configs/prepare.yaml`` is the workflow;
:class:`EasyHardPreparation` holds its logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine
from monai.data import DataLoader, Dataset
from PIL import Image

from lesionseg.data.datalist import PART_KEYS, read_datalist_entry, read_prepared_datalist, write_datalist
from lesionseg.data.io import DataError, PathLike, read_mask
from lesionseg.engines.precision import Precision, resolve_precision

__all__ = [
    "DATALIST_FILENAME",
    "WEIGHTS_FILENAME",
    "easy_hard_parts",
    "with_parts",
    "check_preparation",
    "require_preparation",
    "part_shares",
    "EasyHardPreparation",
]

logger = logging.getLogger(__name__)

#: the datalist the preparation writes into its folder
DATALIST_FILENAME = "datalist.json"
#: the trained U-Net++ (a plain state dict), kept beside the parts it made
WEIGHTS_FILENAME = "unetplusplus.pt"

_COMMAND = (
    "python -m monai.bundle run --config_file configs/prepare.yaml --dataset_dir {dataset} --prepare_dir {folder}"
)


def easy_hard_parts(shallow: Any, deep: Any, ground_truth: Any) -> tuple[Any, Any]:
    """The easy and hard parts of a lesion, Eq. 23–24: ``E_p = Out(1) ∩ GT``, ``H_p = (Out(4) ∩ GT) ∖ E_p``.

    Args:
        shallow: binarised shallowest output Out(1) (non-zero is lesion), numpy array or tensor.
        deep: binarised deepest output Out(4), same shape.
        ground_truth: lesion mask GT, same shape.

    Returns:
        ``(easy, hard)``, boolean, disjoint, both inside ``ground_truth``.

    Raises:
        ValueError: the shapes differ.

    Example:
        >>> import numpy as np
        >>> gt = np.array([1, 1, 1, 1, 0, 0], bool)
        >>> easy, hard = easy_hard_parts(np.array([1, 1, 0, 0, 1, 0]), np.array([0, 1, 1, 0, 0, 1]), gt)
        >>> easy.astype(int).tolist(), hard.astype(int).tolist()
        ([1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0])
    """
    if not (tuple(shallow.shape) == tuple(deep.shape) == tuple(ground_truth.shape)):
        raise ValueError(
            f"Out(1) {tuple(shallow.shape)}, Out(4) {tuple(deep.shape)} and the ground truth "
            f"{tuple(ground_truth.shape)} must have one shape"
        )
    ground_truth = ground_truth > 0
    easy = (shallow > 0) & ground_truth
    hard = (deep > 0) & ground_truth & ~easy
    return easy, hard


def with_parts(items: Sequence[Mapping], datalist: PathLike) -> list[dict]:
    """The training items with the ``easy`` and ``hard`` masks a preparation's datalist gives their images.

    Items are matched by their image file (resolved), so their order and other keys are kept.

    Args:
        items: the training data dicts (``image``, ``label``...), e.g. a training dataset's ``data``.
        datalist: the preparation's datalist (:func:`~lesionseg.data.datalist.read_prepared_datalist` reads its
            training section).

    Raises:
        ValueError: naming the datalist and the image, when an item's image has no parts in it (the parts were
            made for another training section: redo them with ``force``).
    """
    datalist = Path(datalist)
    parts = {}
    for prepared in read_prepared_datalist(datalist, "training"):
        parts[str(Path(prepared["image"]).resolve())] = {key: prepared[key] for key in PART_KEYS if key in prepared}
    merged = []
    for item in items:
        found = parts.get(str(Path(item["image"]).resolve()))
        if not found or set(found) != set(PART_KEYS):
            raise ValueError(
                f"{datalist}: no easy/hard parts for the training image {item['image']}; the parts were made for "
                "another training section (make them again with force=True)"
            )
        merged.append({**item, **found})
    return merged


def _signature(items: Sequence[Mapping]) -> list[tuple[str, tuple[str, ...]]]:
    # the items' image and mask files, resolved and order-free: what "the same section" means
    def resolved(value: object) -> tuple[str, ...]:
        values = value if isinstance(value, (list, tuple)) else [value]
        return tuple(str(Path(v).resolve()) for v in values)

    return sorted((resolved(item["image"])[0], resolved(item.get("label", ()))) for item in items)


def check_preparation(
    prepare_dir: PathLike, training: Sequence[Mapping], validation: Sequence[Mapping] = ()
) -> str | None:
    """Why the easy/hard parts in ``prepare_dir`` cannot be reused for these sections, or ``None`` if they can.

    They can when the datalist exists, its training and validation sections list the same image and mask
    files as ``training`` and ``validation`` (in any order) and every training item's easy and hard masks
    exist. The masks' contents are not compared: after editing masks in place, redo with ``force``.

    Args:
        prepare_dir: the preparation folder.
        training: the training section's data dicts (``image``, ``label``).
        validation: the validation section's data dicts.
    """
    path = Path(prepare_dir) / DATALIST_FILENAME
    if not path.is_file():
        return f"{path} not found"
    try:
        prepared = {section: read_prepared_datalist(path, section) for section in ("training", "validation")}
    except DataError as error:
        return str(error)
    for section, expected in (("training", training), ("validation", validation)):
        if _signature(prepared[section]) != _signature(expected):
            return (
                f"{path}: its {section} section ({len(prepared[section])} items) is not the dataset's "
                f"({len(expected)} items)"
            )
    for item in prepared["training"]:
        for key in PART_KEYS:
            if key not in item:
                return f"{path}: training item {item['image']} has no {key!r} mask"
            if not Path(item[key]).is_file():
                return f"{item[key]}: {key} mask not found"
    return None


def require_preparation(
    prepare_dir: PathLike,
    training: Sequence[Mapping],
    validation: Sequence[Mapping] = (),
    dataset_dir: PathLike | None = None,
) -> Path:
    """The preparation's datalist, after checking with :func:`check_preparation` that it can be used.

    For workflows that cannot make the parts themselves (one process per GPU would race on the files).

    Args:
        prepare_dir: the preparation folder.
        training: the training section's data dicts (``image``, ``label``).
        validation: the validation section's data dicts.
        dataset_dir: the dataset, for the command in the message.

    Raises:
        FileNotFoundError: the datalist is missing; the message names it and the command that makes it.
        ValueError: the parts do not match the dataset; the message says why and how to redo them.
    """
    path = Path(prepare_dir) / DATALIST_FILENAME
    problem = check_preparation(prepare_dir, training, validation)
    if problem is None:
        return path
    command = _COMMAND.format(dataset=dataset_dir if dataset_dir is not None else "DIR", folder=prepare_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: easy/hard parts not found; make them first (one process):\n  {command}")
    raise ValueError(
        f"easy/hard parts in {prepare_dir} cannot be used: {problem}; redo them with\n  {command} --force True"
    )


def part_shares(datalist: PathLike) -> dict[str, tuple[float, float]]:
    """How much of each training lesion the prepared easy and hard parts cover: ``case -> (|E_p| / |G_p|,
    |H_p| / |G_p|)``, for the lesion images of a preparation's datalist (normal images are left out).

    Eq. 21-22 add Dice + BCE against the step's part to those against the whole lesion G_p, so where a part
    covers little of its lesion the two targets disagree; :func:`lesionseg.metrics.breakdown.dice_by_share`
    sets these shares beside a model's Dice on the same images. Cases are :func:`lesionseg.data.grouping.case_id`
    (``per_image.csv``'s ``case``).

    Args:
        datalist: the preparation's datalist (``prepare_dir/datalist.json``).

    Raises:
        DataError: naming the file, when the datalist or a mask cannot be read, or a part's size differs from
            its mask's.
    """
    from lesionseg.data.grouping import case_id

    shares = {}
    for item in read_prepared_datalist(datalist):
        lesion = read_mask(item["label"]) > 0
        total = int(lesion.sum())
        if total == 0:
            continue
        covered = []
        for key in PART_KEYS:
            part = read_mask(item[key]) > 0
            if part.shape != lesion.shape:
                raise DataError(item[key], f"{key} part of size {part.shape} for a mask of size {lesion.shape}")
            covered.append(int((part & lesion).sum()) / total)
        shares[case_id(item)] = (covered[0], covered[1])
    return shares


def _unique_names(items: Sequence[Mapping]) -> list[str]:
    # mask file names: the image stem, made unique by the item index where two images share a stem
    stems = [Path(item["image"]).stem for item in items]
    seen: set[str] = set()
    names = []
    for index, stem in enumerate(stems):
        names.append(stem if stem not in seen else f"{stem}__{index}")
        seen.add(stem)
    return names


def _resize_nearest(mask: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    # (1, h, w) boolean map at the network's size -> (H, W) at the source size, nearest neighbour
    return F.interpolate(mask[None].float(), size=tuple(size), mode="nearest-exact")[0, 0] > 0.5


class EasyHardPreparation:
    """
    TaiChiNet's one-shot training preparation (Sec. IV-C, Fig. 6): train a deep-supervision network once,
    then write the easy part E_p and hard part H_p (Eq. 23–24, :func:`easy_hard_parts`) of every training
    image and a datalist that training reads (:func:`~lesionseg.data.datalist.read_prepared_datalist`).

    :meth:`run` first checks (:func:`check_preparation`) whether ``prepare_dir`` already holds parts made
    for these training and validation sections; if so it reuses them without training. Otherwise (or with
    ``force``) it runs ``trainer``, saves the network as ``unetplusplus.pt`` (plain state dict), predicts
    every training image through ``preprocessing`` (no augmentation), thresholds the probabilities of the
    shallowest and deepest outputs at the network's size, resizes them with nearest neighbour to the size
    of the source mask and intersects them with it there, so that E_p and H_p are exactly inside the
    ground truth at every size the masks are later resized to with nearest neighbour. The datalist is
    written last: an interrupted preparation leaves none and is redone.

    Files in ``prepare_dir``: ``datalist.json`` (``training`` items gain ``easy`` and ``hard``, the
    ``validation`` section is copied, ``preparation`` records the recipe and statistics), ``easy/`` and
    ``hard/`` (``<image stem>.png``, 0/255, the source mask's size) and ``unetplusplus.pt``.

    Args:
        trainer: trains ``network`` on the training section (MONAI ``SupervisedTrainer``).
        training_data: the training section's data dicts (``image``, ``label``, other keys kept).
        prepare_dir: folder to write to; it must not lie inside the dataset.
        preprocessing: deterministic transform from a data dict to ``image`` at the network's size (a
            (1, H, W) tensor), as in training but without augmentation.
        validation_data: the validation section's data dicts, copied into the datalist.
        network: the network ``trainer`` trains; ``None`` uses ``trainer.network``. In eval mode it must
            return its deep-supervision outputs, shallowest first, as ``BasicUNetPlusPlus`` does.
        dataset_dir: the dataset's folder (or datalist), recorded; when a folder, ``prepare_dir`` may not
            be inside it.
        threshold: probability above which an output pixel is lesion.
        easy_output: index of Out(1) in the outputs (0: X^{0,1} of ``BasicUNetPlusPlus``).
        hard_output: index of Out(4) in the outputs (-1: X^{0,4}).
        batch_size: images per forward pass when mining.
        num_workers: data-loading processes when mining.
        amp: float16 autocast when mining on CUDA (when ``precision`` is not given).
        force: retrain and rewrite even when reusable parts exist.
        recipe: settings to record with the parts (epochs, size...); on reuse a different recipe is
            reported, not acted on.
        precision: the precision of the mining forward pass, a :class:`lesionseg.engines.Precision` or a
            setting (``"fp32"``, ``"bf16"``, ``"fp16"``, ``"auto"``); replaces ``amp``.

    Raises:
        ValueError: ``training_data`` is empty, or ``prepare_dir`` lies inside the dataset.
        TypeError: ``force`` is not a bool.
    """

    def __init__(
        self,
        trainer: Engine,
        training_data: Sequence[Mapping],
        prepare_dir: PathLike,
        preprocessing: Callable[[Mapping], Mapping],
        validation_data: Sequence[Mapping] = (),
        network: nn.Module | None = None,
        dataset_dir: PathLike | None = None,
        threshold: float = 0.5,
        easy_output: int = 0,
        hard_output: int = -1,
        batch_size: int = 1,
        num_workers: int = 0,
        amp: bool = False,
        force: bool = False,
        recipe: Mapping[str, Any] | None = None,
        precision: Precision | str | None = None,
    ) -> None:
        if len(training_data) == 0:
            raise ValueError("training_data is empty: the preparation needs the training section's images")
        if not isinstance(force, bool):
            # the bundle command line reads booleans as Python literals; "--force true" gives the string "true"
            raise TypeError(f"force must be True or False, got {force!r} (on the command line: --force True)")
        self.trainer = trainer
        self.training_data = list(training_data)
        self.validation_data = list(validation_data)
        self.prepare_dir = Path(prepare_dir)
        self.preprocessing = preprocessing
        self.network = network if network is not None else trainer.network
        self.dataset_dir = None if dataset_dir is None else Path(dataset_dir)
        self.threshold = threshold
        self.easy_output = easy_output
        self.hard_output = hard_output
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.amp = amp
        self.precision = precision
        self.force = force
        self.recipe = dict(recipe or {})
        self._check_location()

    @property
    def datalist_path(self) -> Path:
        """The datalist :meth:`run` writes (or reuses)."""
        return self.prepare_dir / DATALIST_FILENAME

    def _check_location(self) -> None:
        # the dataset stays untouched: no preparation folder inside it or inside a folder of its images
        folder = self.prepare_dir.resolve()
        roots = {Path(item["image"]).resolve().parent for item in self.training_data}
        if self.dataset_dir is not None and self.dataset_dir.is_dir():
            roots.add(self.dataset_dir.resolve())
        for root in sorted(roots):
            if folder.is_relative_to(root):
                raise ValueError(
                    f"prepare_dir {self.prepare_dir} lies inside the dataset folder {root}; "
                    "choose a folder outside the dataset (the default is <bundle_root>/easy_hard)"
                )

    def run(self) -> Path:
        """Make the easy/hard parts, or reuse them; return the datalist."""
        problem = check_preparation(self.prepare_dir, self.training_data, self.validation_data)
        if problem is None and not self.force:
            self._log_reuse()
            return self.datalist_path
        logger.info(
            "easy/hard parts: %s; training the U-Net++ on %d images, then mining %s",
            "force=True, making them again" if problem is None else problem,
            len(self.training_data),
            self.prepare_dir,
        )
        self.prepare_dir.mkdir(parents=True, exist_ok=True)
        self.datalist_path.unlink(missing_ok=True)
        self.trainer.run()
        torch.save(self.network.state_dict(), self.prepare_dir / WEIGHTS_FILENAME)
        training, statistics = self._mine()
        self._write_datalist(training, statistics)
        logger.info("easy/hard parts written: %s; datalist %s", _describe(statistics), self.datalist_path)
        return self.datalist_path

    def _log_reuse(self) -> None:
        recorded = read_datalist_entry(self.datalist_path, "preparation", {})
        logger.info(
            "easy/hard parts in %s match the dataset's training (%d) and validation (%d) images: reusing them "
            "without training (force=True makes them again); %s",
            self.prepare_dir,
            len(self.training_data),
            len(self.validation_data),
            _describe(recorded.get("statistics", {})),
        )
        recorded_recipe = recorded.get("recipe", {})
        changed = {key: value for key, value in self.recipe.items() if recorded_recipe.get(key) != value}
        if changed:
            logger.warning(
                "the reused parts were made with %s, not %s; force=True makes them with the current recipe",
                {key: recorded_recipe.get(key) for key in changed},
                changed,
            )

    def _mine(self) -> tuple[list[dict], dict[str, float]]:
        folders = {key: self.prepare_dir / key for key in PART_KEYS}
        for folder in folders.values():
            folder.mkdir(exist_ok=True)
            for stale in folder.glob("*.png"):
                stale.unlink()
        for index, item in enumerate(self.training_data):
            if "label" not in item:
                raise DataError(item["image"], f"training item {index} has no 'label' mask")
        loader = DataLoader(
            Dataset(self.training_data, transform=self.preprocessing),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.num_workers,
        )
        device = next(self.network.parameters()).device
        names = _unique_names(self.training_data)
        training, easy_fractions, hard_fractions = [], [], []
        empty_easy = empty_hard = 0
        self.network.eval()
        with torch.no_grad():
            for batch in loader:
                images = batch["image"].to(device)
                if self.precision is None:
                    autocast = torch.autocast(device.type, enabled=self.amp)
                else:
                    autocast = resolve_precision(self.precision, device).autocast(device.type)
                with autocast:
                    outputs = self.network(images)
                if not isinstance(outputs, (list, tuple)) or len(outputs) < 2:
                    raise TypeError(
                        "the network must return its deep-supervision outputs, shallowest first "
                        "(e.g. BasicUNetPlusPlus(deep_supervision=True)), got "
                        f"{type(outputs).__name__}"
                    )
                shallow = torch.sigmoid(outputs[self.easy_output].float()).cpu() > self.threshold
                deep = torch.sigmoid(outputs[self.hard_output].float()).cpu() > self.threshold
                if shallow.shape[1] != 1:
                    raise ValueError(f"expected one lesion channel in the network's outputs, got {shallow.shape[1]}")
                for shallow_map, deep_map in zip(shallow, deep):
                    index = len(training)
                    item = self.training_data[index]
                    ground_truth = torch.from_numpy(read_mask(item["label"]) > 0)
                    easy, hard = easy_hard_parts(
                        _resize_nearest(shallow_map, ground_truth.shape),
                        _resize_nearest(deep_map, ground_truth.shape),
                        ground_truth,
                    )
                    parts = {}
                    for key, part in zip(PART_KEYS, (easy, hard)):
                        parts[key] = f"{key}/{names[index]}.png"
                        mask = Image.fromarray(part.numpy().astype(np.uint8) * np.uint8(255))
                        mask.save(folders[key] / f"{names[index]}.png")
                    training.append({**item, **parts})
                    lesion = int(ground_truth.sum())
                    if lesion > 0:
                        easy_fractions.append(int(easy.sum()) / lesion)
                        hard_fractions.append(int(hard.sum()) / lesion)
                        empty_easy += not bool(easy.any())
                        empty_hard += not bool(hard.any())
        statistics = {
            "images": len(training),
            "lesion_images": len(easy_fractions),
            "mean_easy_fraction": float(np.mean(easy_fractions)) if easy_fractions else 0.0,
            "mean_hard_fraction": float(np.mean(hard_fractions)) if hard_fractions else 0.0,
            "empty_easy": empty_easy,
            "empty_hard": empty_hard,
        }
        return training, statistics

    def _write_datalist(self, training: Sequence[Mapping], statistics: Mapping[str, float]) -> None:
        # image and label paths relative to the folder; the easy/hard paths (written by _mine) already are
        write_datalist(
            self.datalist_path,
            {"training": training, "validation": self.validation_data},
            description="TaiChiNet easy-to-hard training data: training items with their easy part E_p "
            "(Eq. 23) and hard part H_p (Eq. 24) mined by a deep-supervision U-Net++ (one-shot preparation)",
            metadata={
                "preparation": {
                    "dataset": None if self.dataset_dir is None else str(self.dataset_dir.resolve()),
                    "threshold": self.threshold,
                    "easy_output": self.easy_output,
                    "hard_output": self.hard_output,
                    "recipe": self.recipe,
                    "statistics": dict(statistics),
                }
            },
        )


def _describe(statistics: Mapping[str, float]) -> str:
    if not statistics:
        return "no statistics recorded"
    easy, hard = statistics["mean_easy_fraction"], statistics["mean_hard_fraction"]
    return (
        f"{statistics['images']} training images, {statistics['lesion_images']} with a lesion: mean |E_p|/|GT| "
        f"{easy:.3f}, mean |H_p|/|GT| {hard:.3f} (the rest, {1 - easy - hard:.3f}, missed by both heads); "
        f"E_p empty in {statistics['empty_easy']}, H_p empty in {statistics['empty_hard']}"
    )
