"""Phantom datasets on disk: written in the BUSI layout with a manifest, replaced whole, drawn on contact sheets."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from lesionseg import __version__
from lesionseg.data.phantoms.config import KINDS, PhantomConfig
from lesionseg.data.phantoms.render import make_phantom
from lesionseg.utils.files import replacing, reraise_naming

__all__ = ["write_phantom_dataset", "contact_sheet"]

_MANIFEST = "phantoms.json"
#: name prefix of the hidden folder a dataset is written to before it is moved into place
_STAGING_PREFIX = ".phantoms."
_CASE_IMAGE = re.compile(r"^.+ \(\d+\)\.png$")


def write_phantom_dataset(
    output_dir: str | Path,
    num_images: int = 100,
    seed: int = 0,
    config: PhantomConfig | None = None,
    size: tuple[int, int] | None = None,
    normal_fraction: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a phantom dataset in the layout of BUSI (Al-Dhabyani et al., Data in Brief 28, 2020).

    Layout: ``<kind>/<kind> (n).png`` (8-bit grayscale) with ``<kind> (n)_mask.png`` (0/255; all zero for
    ``normal``), numbered from 1 per class. A second lesion goes to ``<kind> (n)_mask_1.png`` while
    ``_mask.png`` holds the first one only, as in BUSI, so readers must merge all ``_mask*`` files. A
    manifest ``phantoms.json`` (seed, configuration, counts) sits beside the class folders.

    The class counts are exact (``normal_fraction`` and ``malignant_fraction`` rounded), shuffled by the
    seed, and each image has its own child seed, so the same arguments give byte-identical files.

    Args:
        output_dir: folder to create; it must be empty or absent unless ``overwrite``.
        num_images: number of images over all classes.
        seed: seed of the whole dataset.
        config: generator settings (:class:`PhantomConfig` defaults when None).
        size: fixed ``(height, width)``, overriding the size ranges of ``config``.
        normal_fraction: fraction of normal images, overriding ``config.normal_fraction``.
        overwrite: replace the phantom dataset a previous run wrote to ``output_dir``: its BUSI-layout PNG
            files and manifest are replaced or deleted, other files are kept. A folder without this
            generator's ``phantoms.json`` is refused even then (it may hold real images).
        progress: show a progress bar on an interactive terminal.

    The dataset is first written to a hidden folder inside ``output_dir`` and moved into place once it is
    complete, so a failed run (disk full, interrupted) leaves the previous dataset, or nothing, as it was.

    Returns:
        ``output_dir`` as a :class:`~pathlib.Path`.

    Raises:
        FileExistsError: ``output_dir`` is not empty and ``overwrite`` is False, or it holds no phantom
            dataset of this generator.
        ValueError: ``num_images`` < 1, or a bad size or fraction.
        OSError: writing failed (e.g. no space left); ``filename`` is ``output_dir``.
    """
    output_dir = Path(output_dir)
    if num_images < 1:
        raise ValueError(f"num_images: need at least 1, got {num_images}")
    config = config or PhantomConfig()
    if size is not None:
        if len(size) != 2:
            raise ValueError(f"size: expected (height, width), got {size}")
        config = dataclasses.replace(config, height=int(size[0]), width=int(size[1]))
    if normal_fraction is not None:
        config = dataclasses.replace(config, normal_fraction=float(normal_fraction))
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"{output_dir}: exists and is not a folder")
    if output_dir.is_dir() and any(p for p in output_dir.iterdir() if not _is_staging(p)):
        if not overwrite:
            raise FileExistsError(
                f"{output_dir}: folder is not empty; choose another, or replace the phantoms a previous run "
                "wrote there with overwrite=True (on the command line: --overwrite)"
            )
        _check_previous_dataset(output_dir)

    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = None
    try:
        staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, suffix=".tmp", dir=output_dir))
        _write_dataset(staging, num_images, seed, config, progress)
        _move_into_place(staging, output_dir)
    except BaseException as error:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(output_dir, ignore_errors=True)
        if isinstance(error, OSError):  # the staging folder is gone: name the folder the user asked for
            reraise_naming(error, output_dir)
        raise
    for leftover in output_dir.glob(f"{_STAGING_PREFIX}*.tmp"):  # of this run and of killed ones
        shutil.rmtree(leftover, ignore_errors=True)
    return output_dir


def _write_dataset(output_dir: Path, num_images: int, seed: int, config: PhantomConfig, progress: bool) -> dict:
    """Write the images, masks and manifest of :func:`write_phantom_dataset` to the empty ``output_dir``."""
    seed_sequence = np.random.SeedSequence(seed)
    dataset_rng = np.random.default_rng(seed_sequence)
    kinds = _class_list(num_images, config)
    dataset_rng.shuffle(kinds)
    image_seeds = seed_sequence.spawn(num_images)
    counts = dict.fromkeys(KINDS, 0)
    two_lesion_images = 0
    for kind in KINDS:
        (output_dir / kind).mkdir(parents=True, exist_ok=True)
    for kind, image_seed in tqdm(
        list(zip(kinds, image_seeds)), desc="phantoms", unit="image", disable=None if progress else True
    ):
        rng = np.random.default_rng(image_seed)
        height = int(rng.integers(config.height_range[0], config.height_range[1] + 1))
        width = int(rng.integers(config.width_range[0], config.width_range[1] + 1))
        phantom = make_phantom(rng, height, width, kind, config)
        counts[kind] += 1
        stem = output_dir / kind / f"{kind} ({counts[kind]})"
        Image.fromarray(phantom.image).save(f"{stem}.png")
        masks = phantom.lesion_masks or (np.zeros(phantom.image.shape, dtype=bool),)
        for index, lesion in enumerate(masks):
            suffix = "_mask" if index == 0 else f"_mask_{index}"
            Image.fromarray(lesion.astype(np.uint8) * np.uint8(255)).save(f"{stem}{suffix}.png")
        two_lesion_images += len(phantom.lesion_masks) > 1
    manifest = {
        "generator": "lesionseg.data.phantoms",
        "version": __version__,
        "seed": seed,
        "num_images": num_images,
        "counts": counts,
        "two_lesion_images": two_lesion_images,
        "config": dataclasses.asdict(config),
    }
    (output_dir / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def contact_sheet(
    dataset_dir: str | Path,
    output_png: str | Path,
    num: int = 16,
    columns: int = 4,
    seed: int = 0,
) -> Path:
    """Draw a grid of images from a BUSI-layout folder with their lesion outlines in green.

    Works on phantoms and on real BUSI alike: images are read as grayscale, the mask of a case is the union
    of all its ``_mask*`` files (> 0). Cases are picked at random (by ``seed``) taking the classes in turn,
    so every class present is shown; each tile is captioned with its file name and size.

    Args:
        dataset_dir: folder holding ``<class>/<class> (n).png`` files.
        output_png: PNG file to write (its folder is created).
        num: number of images on the sheet (fewer when the folder has fewer).
        columns: images per row.
        seed: which images are picked.

    Returns:
        ``output_png`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: ``dataset_dir`` is not a folder or holds no BUSI-layout image.
        ValueError: ``num`` or ``columns`` < 1, or a mask whose size differs from its image (names the file).
    """
    from matplotlib.figure import Figure  # imported here: only the sheet needs matplotlib

    dataset_dir, output_png = Path(dataset_dir), Path(output_png)
    if num < 1 or columns < 1:
        raise ValueError(f"num, columns: need at least 1 each, got {num}, {columns}")
    if not dataset_dir.is_dir():
        raise FileNotFoundError(f"{dataset_dir}: not a folder")
    by_class = {}
    for class_dir in sorted(path for path in dataset_dir.iterdir() if path.is_dir()):
        cases = sorted(path for path in class_dir.glob("*.png") if _CASE_IMAGE.match(path.name))
        if cases:
            by_class[class_dir.name] = cases
    if not by_class:
        raise FileNotFoundError(f"{dataset_dir}: no '<class>/<class> (n).png' image found")

    rng = np.random.default_rng(seed)
    queues = {name: [cases[i] for i in rng.permutation(len(cases))] for name, cases in by_class.items()}
    chosen: list[Path] = []
    while len(chosen) < num and any(queues.values()):
        for queue in queues.values():
            if queue and len(chosen) < num:
                chosen.append(queue.pop(0))

    rows = math.ceil(len(chosen) / columns)
    figure = Figure(figsize=(3.0 * columns, 2.6 * rows), dpi=110, layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image_path in zip(axes.flat, chosen):
        image, mask = _read_case(image_path)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
        if mask.any():
            ax.contour(mask, levels=[0.5], colors=["lime"], linewidths=0.9)
        ax.set_title(f"{image_path.stem}  {image.shape[1]}x{image.shape[0]}", fontsize=8)
    with replacing(output_png) as temporary:  # a failed write keeps an earlier sheet whole
        figure.savefig(temporary, format=output_png.suffix.lstrip(".") or "png")
    return output_png


def _class_list(num_images: int, config: PhantomConfig) -> list[str]:
    normal = round(num_images * config.normal_fraction)
    malignant = round((num_images - normal) * config.malignant_fraction)
    return ["normal"] * normal + ["malignant"] * malignant + ["benign"] * (num_images - normal - malignant)


def _is_staging(path: Path) -> bool:
    """A hidden folder :func:`write_phantom_dataset` writes into before moving the files into place."""
    return path.name.startswith(_STAGING_PREFIX) and path.name.endswith(".tmp") and path.is_dir()


def _check_previous_dataset(output_dir: Path) -> None:
    """Refuse to overwrite a folder that does not hold this generator's manifest: its PNGs may be real data."""
    manifest = output_dir / _MANIFEST
    try:
        generator = json.loads(manifest.read_text()).get("generator")
    except (OSError, ValueError, AttributeError):
        generator = None
    if generator != "lesionseg.data.phantoms":
        raise FileExistsError(
            f"{output_dir}: holds no phantom dataset written by lesionseg (no {_MANIFEST} of the generator); "
            "overwrite (--overwrite) replaces only phantoms, so that real images in BUSI layout are never "
            "deleted: choose an empty or new folder"
        )


def _previous_dataset(output_dir: Path) -> list[Path]:
    """The files a previous :func:`write_phantom_dataset` could have written, and nothing else."""
    files = []
    for kind in KINDS:
        files += (output_dir / kind).glob(f"{kind} (*).png")
        files += (output_dir / kind).glob(f"{kind} (*)_mask*.png")
    return sorted(set(files))


def _move_into_place(staging: Path, output_dir: Path) -> None:
    """Rename the complete dataset in ``staging`` into ``output_dir``, then delete what is left of an older one.

    Renames within one file system cannot run out of space; the manifest goes last, so a folder with the new
    manifest holds the whole new dataset.
    """
    previous = set(_previous_dataset(output_dir))
    for kind in KINDS:  # every class folder, as the dataset's layout has them, even an empty one
        (output_dir / kind).mkdir(exist_ok=True)
    for path in _previous_dataset(staging):
        target = output_dir / path.relative_to(staging)
        os.replace(path, target)
        previous.discard(target)
    for path in previous:
        path.unlink(missing_ok=True)
    os.replace(staging / _MANIFEST, output_dir / _MANIFEST)


def _read_case(image_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Grayscale image and the union of the ``_mask*`` files (> 0) of one BUSI-layout case."""
    with Image.open(image_path) as picture:
        image = np.asarray(picture.convert("L"))
    mask = np.zeros(image.shape, dtype=bool)
    for mask_path in sorted(image_path.parent.glob(f"{glob.escape(image_path.stem)}_mask*.png")):
        with Image.open(mask_path) as picture:
            layer = np.asarray(picture.convert("L")) > 0
        if layer.shape != image.shape:
            raise ValueError(f"{mask_path}: mask is {layer.shape[::-1]} pixels (W x H), its image {image.shape[::-1]}")
        mask |= layer
    return image, mask
