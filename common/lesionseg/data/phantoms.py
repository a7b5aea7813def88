"""Synthetic breast-ultrasound phantoms: B-mode-like images with lesion masks, written in the BUSI layout.

The phantoms stand in for real data wherever real data cannot go (tests, demos, continuous integration) and
are built so that the segmentation problem of the DC-Net and TaiChiNet papers stays real:

- an echogenicity map of the breast in layers (skin, subcutaneous fat, fibroglandular tissue, retromammary
  fat, pectoralis muscle, chest wall with the occasional rib) whose boundaries undulate;
- background structures that are as dark as lesions (fat lobules, ducts, ribs, attenuation at depth) next
  to bright ones (Cooper's ligaments, fascia, glandular strands), so that intensity alone does not find the
  lesion;
- hypoechoic lesions: benign ones oval or gently lobulated, parallel to the skin, either anechoic cysts or
  solid and homogeneous, with posterior acoustic enhancement; malignant ones irregular or spiculated,
  heterogeneous, possibly taller than wide, with an echogenic halo and posterior acoustic shadowing;
- imaging physics: shadows and enhancement integrate attenuation along the beam (down the columns),
  time-gain compensation leaves depth-dependent gain, and fully developed speckle (a complex Gaussian field
  blurred by an anisotropic point-spread function, whose intensity is averaged over neighbouring looks as
  compounding scanners do) multiplies the echo, i.e. adds to it after log compression to a fixed dynamic
  range.

Everything is vectorised numpy/scipy and drawn from one :class:`numpy.random.Generator`, so one seed gives
byte-identical images. A 256 x 256 phantom takes about 40 ms of CPU time.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from lesionseg import __version__
from lesionseg.utils.files import replacing, reraise_naming

__all__ = ["KINDS", "PhantomConfig", "Phantom", "make_phantom", "write_phantom_dataset", "contact_sheet"]

#: the image classes of BUSI, in its folder names
KINDS = ("benign", "malignant", "normal")

_MANIFEST = "phantoms.json"
#: name prefix of the hidden folder a dataset is written to before it is moved into place
_STAGING_PREFIX = ".phantoms."
_CASE_IMAGE = re.compile(r"^.+ \(\d+\)\.png$")


@dataclass(frozen=True)
class PhantomConfig:
    """What the phantom generator draws from.

    Lengths of anatomy scale with the image height (the imaging depth); speckle is set in pixels.

    Args:
        height: image height in pixels, fixed or an inclusive ``(low, high)`` range drawn per image.
        width: image width in pixels, fixed or an inclusive ``(low, high)`` range drawn per image.
        normal_fraction: fraction of images without a lesion (class ``normal``, empty mask).
        malignant_fraction: fraction of the lesion images that are malignant; the rest are benign.
        two_lesion_fraction: fraction of the lesion images that hold two lesions.
        cyst_fraction: fraction of benign lesions that are anechoic cysts rather than solid masses.
        benign_radius: range of a benign lesion's radius, as a fraction of the image height (drawn
            log-uniformly: small lesions are the common ones).
        malignant_radius: range of a malignant lesion's radius, as a fraction of the image height.
        speckle: strength of the speckle; 1 is speckle as log compression to ``dynamic_range_db`` shows
            it, 0 none.
        speckle_sigma: ``(axial, lateral)`` standard deviation in pixels of the point-spread function that
            correlates the speckle; lateral resolution is the poorer one, so grains are wider than tall.
        dynamic_range_db: log-compression dynamic range mapped to the 0-255 display range.

    Example:
        >>> config = PhantomConfig(height=64, width=(80, 96), normal_fraction=0.5)
        >>> config.height_range, config.width_range
        ((64, 64), (80, 96))
    """

    height: int | tuple[int, int] = (160, 320)
    width: int | tuple[int, int] = (200, 400)
    normal_fraction: float = 0.17
    malignant_fraction: float = 0.33
    two_lesion_fraction: float = 0.08
    cyst_fraction: float = 0.4
    benign_radius: tuple[float, float] = (0.05, 0.25)
    malignant_radius: tuple[float, float] = (0.1, 0.33)
    speckle: float = 1.0
    speckle_sigma: tuple[float, float] = (0.7, 1.4)
    dynamic_range_db: float = 50.0

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # pairs read back from JSON come as lists
            if isinstance(getattr(self, field.name), list):
                object.__setattr__(self, field.name, tuple(getattr(self, field.name)))
        for name in ("height", "width"):
            low, high = _as_range(getattr(self, name))
            if not 16 <= low <= high:
                raise ValueError(f"PhantomConfig.{name}: need 16 <= low <= high pixels, got {getattr(self, name)}")
        for name in ("normal_fraction", "malignant_fraction", "two_lesion_fraction", "cyst_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"PhantomConfig.{name}: need a fraction in [0, 1], got {value}")
        for name in ("benign_radius", "malignant_radius"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high <= 0.4:
                raise ValueError(f"PhantomConfig.{name}: need 0 < low <= high <= 0.4, got {getattr(self, name)}")
        if self.speckle < 0:
            raise ValueError(f"PhantomConfig.speckle: need a value >= 0, got {self.speckle}")
        if min(self.speckle_sigma) <= 0:
            raise ValueError(f"PhantomConfig.speckle_sigma: need positive sigmas, got {self.speckle_sigma}")
        if self.dynamic_range_db <= 0:
            raise ValueError(f"PhantomConfig.dynamic_range_db: need a value > 0, got {self.dynamic_range_db}")

    @property
    def height_range(self) -> tuple[int, int]:
        return _as_range(self.height)

    @property
    def width_range(self) -> tuple[int, int]:
        return _as_range(self.width)


@dataclass(frozen=True)
class Phantom:
    """One synthetic B-mode image and its lesions.

    Args:
        image: ``(H, W)`` uint8 grayscale image.
        lesion_masks: one ``(H, W)`` bool mask per lesion (none for ``normal``); lesions do not overlap.
        kind: ``"benign"``, ``"malignant"`` or ``"normal"``.
    """

    image: np.ndarray
    lesion_masks: tuple[np.ndarray, ...]
    kind: str

    @property
    def mask(self) -> np.ndarray:
        """``(H, W)`` bool union of all lesion masks (all False for ``normal``)."""
        merged = np.zeros(self.image.shape, dtype=bool)
        for lesion in self.lesion_masks:
            merged |= lesion
        return merged


def make_phantom(
    rng: np.random.Generator,
    height: int,
    width: int,
    kind: str,
    config: PhantomConfig | None = None,
    num_lesions: int | None = None,
) -> Phantom:
    """Draw one phantom of the given class.

    ``benign``: an anechoic cyst or a solid oval/lobulated mass, wider than tall, with posterior acoustic
    enhancement. ``malignant``: an irregular or spiculated heterogeneous mass, possibly taller than wide,
    often with an echogenic halo and posterior shadowing. ``normal``: breast tissue only.

    Args:
        rng: source of all randomness; the same generator state gives the same phantom.
        height: image height in pixels (at least 16).
        width: image width in pixels (at least 16).
        kind: ``"benign"``, ``"malignant"`` or ``"normal"``.
        config: speckle, lesion size and class mix settings (:class:`PhantomConfig` defaults when None).
        num_lesions: 1 or 2 lesions for the lesion classes (0 for ``normal``); None draws two with
            probability ``config.two_lesion_fraction``.

    Example:
        >>> phantom = make_phantom(np.random.default_rng(0), 64, 80, "malignant")
        >>> phantom.image.shape, phantom.image.dtype.name, len(phantom.lesion_masks), bool(phantom.mask.any())
        ((64, 80), 'uint8', 1, True)
        >>> again = make_phantom(np.random.default_rng(0), 64, 80, "malignant")
        >>> bool(np.array_equal(phantom.image, again.image))
        True
    """
    config = config or PhantomConfig()
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if height < 16 or width < 16:
        raise ValueError(f"height, width: need at least 16 pixels each, got {height} x {width}")
    if kind == "normal":
        if num_lesions not in (None, 0):
            raise ValueError(f"num_lesions: a normal phantom has no lesion, got {num_lesions}")
        num_lesions = 0
    elif num_lesions is None:
        num_lesions = 2 if rng.random() < config.two_lesion_fraction else 1
    elif num_lesions not in (1, 2):
        raise ValueError(f"num_lesions: a {kind} phantom has 1 or 2 lesions, got {num_lesions}")

    shape = (height, width)
    anatomy = _Anatomy.draw(rng, shape)
    echo, gain = anatomy.tissue(rng)
    texture = _noise(rng, shape, [(0.02 * height, 0.03 * height)])[0]
    masks = []
    for band in range(num_lesions):  # each lesion gets its own band of columns, so lesions never overlap
        lesion = _Lesion.draw(rng, kind, anatomy, config, band=(band, num_lesions))
        masks.append(lesion.paint(rng, echo, gain, texture))
    return Phantom(image=_render(rng, echo, gain, config), lesion_masks=tuple(masks), kind=kind)


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


# ---------------------------------------------------------------------------------------------------------
# anatomy


@dataclass
class _Anatomy:
    """Layer boundaries (depth in pixels per column) and tissue levels of one breast image.

    Echo levels are in display units: 0 is the bottom and 1 the top of the dynamic range.
    """

    shape: tuple[int, int]
    skin: np.ndarray
    gland_top: np.ndarray
    gland_bottom: np.ndarray
    muscle_top: np.ndarray
    muscle_bottom: np.ndarray
    fat_level: float
    gland_level: float
    muscle_level: float
    deep_level: float

    @classmethod
    def draw(cls, rng: np.random.Generator, shape: tuple[int, int]) -> _Anatomy:
        height, width = shape
        tilt = rng.uniform(-0.08, 0.08) * np.linspace(-0.5, 0.5, width) * width

        def boundary(depth: float, wobble: float) -> np.ndarray:
            undulation = _smooth_curve(rng, width, rng.uniform(0.15, 0.4) * width)
            return depth * height + tilt + wobble * height * undulation

        skin = boundary(rng.uniform(0.015, 0.04), 0.004)
        gland_top = np.maximum(boundary(rng.uniform(0.12, 0.38), 0.04), skin + 0.06 * height)
        gland_bottom = np.maximum(gland_top + rng.uniform(0.2, 0.45) * height, boundary(0.5, 0.04))
        muscle_top = gland_bottom + rng.uniform(0.02, 0.08) * height
        muscle_bottom = muscle_top + rng.uniform(0.08, 0.2) * height + 0.02 * height * _smooth_curve(rng, width, width)
        return cls(
            shape=shape,
            skin=skin,
            gland_top=gland_top,
            gland_bottom=gland_bottom,
            muscle_top=muscle_top,
            muscle_bottom=muscle_bottom,
            fat_level=rng.uniform(0.3, 0.42),
            gland_level=rng.uniform(0.6, 0.76),
            muscle_level=rng.uniform(0.3, 0.42),
            deep_level=rng.uniform(0.12, 0.28),
        )

    def tissue(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Mean echo level of every pixel and the additive display gain, both before speckle."""
        height, width = self.shape
        depth = np.arange(height, dtype=np.float32)[:, None]
        # textures bend with the layers: their rows follow the undulation of the gland surface
        follow = self.gland_top - self.gland_top.mean()
        scales = [
            (0.015 * height, 0.07 * height),  # coarse: glandular versus fatty tissue
            (0.02 * height, 0.035 * height),  # mottle: tissue heterogeneity of every layer
            (0.5 + 0.004 * height, 0.035 * height),  # fine: horizontal streaks
            (0.4 + 0.002 * height, 0.05 * height),  # strands: thin bright fibrous lines
        ]
        coarse, mottle, fine, strands = _bend(_noise(rng, self.shape, scales), follow)

        fat = self.fat_level + 0.03 * coarse + 0.025 * fine
        gland = self.gland_level + 0.1 * coarse + 0.05 * fine + 0.2 * np.clip(strands - 0.9, 0, 1.5)
        islands = np.clip((-coarse - 0.9) * 2.5, 0, 1)  # fatty islands among the gland, as dark as fat
        gland += islands * (self.fat_level + 0.03 * fine - gland)
        muscle = self.muscle_level + 0.03 * coarse + 0.25 * np.clip(strands - 0.7, 0, 1.2)
        deep = self.deep_level + 0.04 * coarse + 0.03 * fine

        echo = np.where(depth < self.gland_top, fat, gland)
        echo = np.where(depth >= self.gland_bottom, fat, echo)
        echo = np.where(depth >= self.muscle_top, muscle, echo)
        echo = np.where(depth >= self.muscle_bottom, deep, echo).astype(np.float32)
        echo += rng.uniform(0.04, 0.08) * mottle
        echo[depth[:, 0] < self.skin.min() - 1] = rng.uniform(0.0, 0.15)  # coupling gel above the skin

        gain = self._gain(rng)
        self._paint_lobules(rng, echo)
        self._paint_ducts(rng, echo)
        self._paint_rib(rng, echo, gain)
        self._paint_lines(rng, echo)
        return echo, gain

    def _gain(self, rng: np.random.Generator) -> np.ndarray:
        """Imperfect time-gain compensation, fall-off at depth, shadows of dense tissue, probe lift-off."""
        height, width = self.shape
        depth = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
        columns = np.arange(width, dtype=np.float32)[None, :]
        tgc = 0.05 * _smooth_curve(rng, height, 0.2 * height)[:, None]
        falloff = rng.uniform(0.05, 0.3) * np.clip((depth - rng.uniform(0.5, 0.8)) / 0.35, 0, 1) ** 2
        gain = np.broadcast_to(tgc - falloff, self.shape).astype(np.float32)
        for _ in range(int(rng.poisson(1.2))):
            # dense fibrous tissue attenuates: a soft dark column from some depth down, as behind a cancer
            centre, spread = rng.uniform(0, width), rng.uniform(0.02, 0.06) * width + 1
            start = rng.uniform(0.15, 0.6)
            band = np.exp(-0.5 * ((columns - centre) / spread) ** 2) * np.clip((depth - start) / 0.1, 0, 1)
            gain -= rng.uniform(0.08, 0.25) * band
        lateral = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
        for edge in (lateral, 1 - lateral):
            if rng.random() < 0.3:  # one edge of the probe lifted off the skin: that side goes dark
                gain -= rng.uniform(0.15, 0.4) * np.clip(1 - edge / rng.uniform(0.04, 0.12), 0, 1) ** 1.5
        return gain

    def _paint_lobules(self, rng: np.random.Generator, echo: np.ndarray) -> None:
        """Fat lobules: dark oval blobs wrapped in bright septa, in the fat layer and among the gland."""
        height, width = self.shape
        lobules = []
        x = rng.uniform(-0.05, 0.05) * height
        while x < width:  # a row of lobules along the subcutaneous fat
            rx = rng.uniform(0.05, 0.13) * height
            column = int(np.clip(x, 0, width - 1))
            top, bottom = self.skin[column] + 0.03 * height, self.gland_top[column]
            ry = max(min(rng.uniform(0.35, 0.7) * rx, 0.5 * (bottom - top)), 1.5)
            lobules.append((rng.uniform(top + ry, max(bottom - ry, top + ry + 1)), x, ry, rx))
            x += rx * rng.uniform(1.4, 2.2)
        for _ in range(int(rng.integers(2, 8))):  # fatty lobules inside the gland and behind it
            column = int(rng.integers(0, width))
            rx = rng.uniform(0.04, 0.11) * height
            cy = rng.uniform(self.gland_top[column], self.muscle_top[column])
            lobules.append((cy, float(column), rng.uniform(0.3, 0.6) * rx, rx))
        for cy, cx, ry, rx in lobules:
            level = self.fat_level + rng.uniform(-0.1, 0.04)
            border = _Border.draw(rng, orders=(2, 3, 4), amplitude=0.06)
            window, rho, theta = _ellipse_frame(self.shape, cy, cx, ry, rx, rng.uniform(-0.25, 0.25), 1.3)
            q = rho / border(theta)
            inside = np.clip((1 - q) / 0.25 + 0.5, 0, 1)
            # the septum shows where the beam meets it squarely: top and bottom more than the sides
            septum = rng.uniform(0.15, 0.3) * np.exp(-0.5 * ((q - 1) * min(ry, rx) / 0.9) ** 2) * np.sin(theta) ** 2
            region = echo[window]
            region += inside * (level - region) + septum

    def _paint_ducts(self, rng: np.random.Generator, echo: np.ndarray) -> None:
        """Ducts: long thin anechoic tubes with bright walls, roughly parallel to the skin."""
        height, width = self.shape
        for _ in range(int(rng.poisson(1.0))):
            column = int(rng.integers(0, width))
            cy = rng.uniform(self.gland_top[column], self.gland_bottom[column])
            rx = rng.uniform(0.08, 0.2) * height
            ry = max(rng.uniform(0.02, 0.04) * height, 1.5)
            window, rho, _ = _ellipse_frame(self.shape, cy, column, ry, rx, rng.uniform(-0.15, 0.15), 1.6)
            wall = 0.2 * np.exp(-0.5 * ((rho - 1) * ry / 0.8) ** 2)
            lumen = np.clip((1 - rho) * ry / 2 + 0.5, 0, 1)
            region = echo[window]
            region += lumen * (rng.uniform(0.1, 0.25) - region) + wall * (1 - lumen)

    def _paint_rib(self, rng: np.random.Generator, echo: np.ndarray, gain: np.ndarray) -> None:
        """Sometimes a rib behind the chest wall: a dark oval with a bright front surface and a shadow."""
        height, width = self.shape
        if rng.random() >= 0.3 or self.muscle_bottom.mean() > 0.8 * height:
            return
        column = int(rng.integers(0, width))
        rx = rng.uniform(0.12, 0.25) * height
        ry = rng.uniform(0.05, 0.09) * height
        cy = self.muscle_bottom[column] + 1.2 * ry
        window, rho, theta = _ellipse_frame(self.shape, cy, column, ry, rx, rng.uniform(-0.1, 0.1), 1.2)
        inside = np.clip((1 - rho) * ry / 1.5 + 0.5, 0, 1)
        front = 0.5 * np.exp(-0.5 * ((rho - 1) * ry / 1.2) ** 2) * (theta < 0)
        region = echo[window]
        region += inside * (rng.uniform(0.08, 0.18) - region) + front
        # bone reflects nearly everything: below its centre line the columns it covers go dark
        gain[window] -= rng.uniform(0.2, 0.4) * inside * (theta > 0)

    def _paint_lines(self, rng: np.random.Generator, echo: np.ndarray) -> None:
        """Bright specular lines: skin, fasciae along the layer boundaries and Cooper's ligaments."""
        height, width = self.shape
        columns = np.arange(width, dtype=np.float32)
        curves, weights = [], []
        boundaries = [
            (self.skin, 1.0),
            (self.skin + rng.uniform(0.012, 0.025) * height, 0.6),
            (self.gland_top, 0.8),
            (self.muscle_top, 0.9),
            (self.muscle_bottom, 0.9),
        ]
        for curve, strength in boundaries:
            curves.append(np.stack([curve, columns], axis=1))
            weights.append(strength * np.clip(0.7 + 0.6 * _smooth_curve(rng, width, 0.05 * width), 0, 1))
        for _ in range(int(rng.integers(1, 6))):
            # Cooper's ligaments: arcs rising from the gland surface through the fat towards the skin
            column = rng.uniform(0, width - 1)
            start = np.array([self.gland_top[int(column)], column])
            rise = self.gland_top[int(column)] - self.skin[int(column)]
            end = start + [-rng.uniform(0.4, 1.0) * rise, rng.uniform(-1.5, 1.5) * rise]
            control = (start + end) / 2 + rng.normal(0, 0.25 * rise, 2)
            t = np.linspace(0, 1, int(3 * np.abs(end - start).sum()) + 8)[:, None]
            curves.append((1 - t) ** 2 * start + 2 * t * (1 - t) * control + t**2 * end)
            weights.append(np.clip(rng.uniform(0.4, 0.8) - 0.4 * t[:, 0] ** 2, 0, 1))
        echo += (0.95 - echo) * _draw_curves(self.shape, curves, weights, 0.8)


# ---------------------------------------------------------------------------------------------------------
# lesions


class _Border:
    """Closed border in polar form, ``r(theta) = 1 + sum_k a_k cos(k theta + phi_k) + spicules``, tabulated.

    Args:
        harmonics: rows ``(order, amplitude, phase)``.
        spikes: rows ``(direction, height, angular width)`` of narrow Gaussian spicules.
    """

    _ANGLES = np.linspace(-np.pi, np.pi, 1441)

    def __init__(self, harmonics: np.ndarray, spikes: np.ndarray) -> None:
        theta = self._ANGLES
        radius = 1 + (harmonics[:, 1:2] * np.cos(harmonics[:, 0:1] * theta + harmonics[:, 2:3])).sum(axis=0)
        offsets = np.angle(np.exp(1j * (theta - spikes[:, 0:1])))
        radius += (spikes[:, 1:2] * np.exp(-0.5 * (offsets / spikes[:, 2:3]) ** 2)).sum(axis=0)
        self.table = np.maximum(radius, 0.2)
        #: the farthest the border gets from the centre, in units of the ellipse radii
        self.reach = float(self.table.max())

    @classmethod
    def draw(
        cls,
        rng: np.random.Generator,
        orders: Sequence[int],
        amplitude: float,
        spikes: int = 0,
    ) -> _Border:
        """Random phases, amplitudes up to ``amplitude`` falling as 1/sqrt(order), ``spikes`` spicules."""
        order = np.asarray(orders, dtype=float)
        amplitudes = amplitude * rng.uniform(0.3, 1.0, order.size) / np.sqrt(order / order[0])
        harmonics = np.stack([order, amplitudes, rng.uniform(-np.pi, np.pi, order.size)], axis=1)
        spike_rows = np.stack(
            [rng.uniform(-np.pi, np.pi, spikes), rng.uniform(0.1, 0.35, spikes), rng.uniform(0.03, 0.09, spikes)],
            axis=1,
        )
        return cls(harmonics, spike_rows)

    def __call__(self, theta: np.ndarray) -> np.ndarray:
        return np.interp(theta, self._ANGLES, self.table).astype(np.float32)


@dataclass
class _Lesion:
    """One lesion: a rotated ellipse with an irregular border, its echo texture and its acoustic effects."""

    center: tuple[float, float]
    radii: tuple[float, float]
    angle: float
    border: _Border
    level: float
    heterogeneity: float
    margin: float
    attenuation: float
    halo: float
    capsule: float
    edge_shadow: float
    calcifications: int

    @classmethod
    def draw(
        cls, rng: np.random.Generator, kind: str, anatomy: _Anatomy, config: PhantomConfig, band: tuple[int, int]
    ) -> _Lesion:
        """A benign or malignant lesion inside column band ``band = (index, count)`` of the image."""
        height, width = anatomy.shape
        if kind == "benign":
            radius = math.exp(rng.uniform(*np.log(config.benign_radius))) * height
        else:
            radius = rng.uniform(*config.malignant_radius) * height
        if kind == "benign" and rng.random() < config.cyst_fraction:
            aspect = rng.uniform(0.5, 0.9)  # height / width: parallel to the skin
            params = dict(
                angle=rng.uniform(-0.25, 0.25),
                border=_Border.draw(rng, orders=(2, 3), amplitude=0.03),
                level=rng.uniform(0.0, 0.06),
                heterogeneity=0.01,
                margin=0.03,
                attenuation=-rng.uniform(0.15, 0.3),
                halo=0.0,
                capsule=rng.uniform(0.0, 0.15),
                edge_shadow=rng.uniform(0.05, 0.15) * (rng.random() < 0.6),
                calcifications=0,
            )
        elif kind == "benign":
            aspect = rng.uniform(0.45, 0.85)
            lobes = int(rng.integers(2, 6))
            params = dict(
                angle=rng.uniform(-0.3, 0.3),
                border=_Border.draw(rng, orders=(lobes, lobes + 1), amplitude=rng.uniform(0.03, 0.1)),
                level=rng.uniform(0.13, 0.3),
                heterogeneity=0.03,
                margin=0.05,
                attenuation=-rng.uniform(0.0, 0.15),
                halo=0.0,
                capsule=rng.uniform(0.0, 0.15) * (rng.random() < 0.5),
                edge_shadow=rng.uniform(0.05, 0.12) * (rng.random() < 0.4),
                calcifications=0,
            )
        else:
            aspect = rng.uniform(0.5, 1.3)  # taller than wide (non-parallel) is a sign of malignancy
            spiculated = rng.random() < 0.35
            params = dict(
                angle=rng.uniform(-0.5, 0.5),
                border=_Border.draw(
                    rng,
                    orders=range(2, 11),
                    amplitude=rng.uniform(0.06, 0.14),
                    spikes=int(rng.integers(4, 12)) if spiculated else 0,
                ),
                level=rng.uniform(0.07, 0.24),
                heterogeneity=0.08,
                margin=rng.uniform(0.06, 0.2),
                attenuation=rng.uniform(0.15, 0.45) if rng.random() < 0.75 else -rng.uniform(0.0, 0.1),
                halo=rng.uniform(0.08, 0.2) * (rng.random() < 0.5),
                capsule=0.0,
                edge_shadow=0.0,
                calcifications=int(rng.integers(2, 8)) if rng.random() < 0.3 else 0,
            )
        ry, rx = radius * math.sqrt(aspect), radius / math.sqrt(aspect)
        reach = params["border"].reach
        index, count = band
        band_left, band_right = index * width / count, (index + 1) * width / count
        top = anatomy.skin.max() + 0.04 * height
        # shrink the lesion until its farthest border point fits in its band and below the skin
        room = min((band_right - band_left) / 2, (height - top) / 2) - 2
        scale = min(1.0, max(room, 1.5) / (reach * max(rx, ry)))
        ry, rx = max(ry * scale, 1.5), max(rx * scale, 1.5)
        extent = reach * max(rx, ry)
        cx = rng.uniform(band_left + extent, max(band_right - extent, band_left + extent))
        # anywhere it fits below the skin, preferably in the upper part of the gland
        shallowest, deepest = top + extent, max(height - extent - 2, top + extent)
        low = float(np.clip(anatomy.gland_top.mean(), shallowest, deepest))
        cy = rng.uniform(low, min(low + 0.3 * height, deepest))
        return cls(center=(cy, cx), radii=(ry, rx), **params)

    def paint(
        self, rng: np.random.Generator, echo: np.ndarray, gain: np.ndarray, texture: np.ndarray
    ) -> np.ndarray:
        """Draw the lesion into ``echo``, its shadow or enhancement into ``gain``; return its mask."""
        height, width = echo.shape
        ry, rx = self.radii
        window, rho, theta = _ellipse_frame(echo.shape, *self.center, ry, rx, self.angle, 1.6 * self.border.reach)
        q = rho / self.border(theta)  # < 1 inside the border
        inside = q < 1
        if not inside.any():  # a lesion of a few pixels: keep at least its centre
            inside[np.unravel_index(np.argmin(q), q.shape)] = True
        weight = np.clip((1 - q) / (2 * self.margin) + 0.5, 0, 1)
        lesion_echo = self.level + self.heterogeneity * texture[window]
        halo_profile = np.exp(-0.5 * ((q - 1.15) / 0.08) ** 2) * (1 - weight)
        capsule_profile = np.exp(-0.5 * ((q - 1) * min(ry, rx) / 0.8) ** 2)
        region = echo[window]
        region += weight * (lesion_echo - region) + self.halo * halo_profile + self.capsule * capsule_profile
        rows, cols = np.nonzero(q < 0.8)
        if self.calcifications and rows.size:
            picks = rng.integers(0, rows.size, self.calcifications)
            region[rows[picks], cols[picks]] = rng.uniform(0.75, 0.95, self.calcifications)

        mask = np.zeros(echo.shape, dtype=bool)
        mask[window] = inside
        # posterior effects integrate the lesion's extra attenuation down each column (the beam direction);
        # below the thickest column the gain changes by the full -attenuation. Inside, there is nothing to
        # amplify in a cyst: the change applies outside the lesion only.
        excess = mask * np.float32(self.attenuation / max(int(mask.sum(axis=0).max()), 1))
        posterior = ndimage.gaussian_filter(np.cumsum(excess, axis=0), (1.0, 0.015 * height + 0.8))
        outside = np.ones(echo.shape, dtype=np.float32)
        outside[window] -= weight
        gain -= posterior * outside
        if self.edge_shadow:
            # refraction at the curved lateral edges casts thin dark streaks straight down
            rows, cols = np.nonzero(mask)
            columns = np.arange(width, dtype=np.float32)[None, :]
            depth = np.arange(height, dtype=np.float32)[:, None]
            for edge_col in (cols.min(), cols.max()):
                edge_row = rows[cols == edge_col].mean()
                streak = np.exp(-0.5 * ((columns - edge_col) / 2.0) ** 2)
                gain -= self.edge_shadow * streak * np.clip((depth - edge_row) / 3.0, 0, 1)
        return mask


# ---------------------------------------------------------------------------------------------------------
# rendering and drawing primitives


def _render(rng: np.random.Generator, echo: np.ndarray, gain: np.ndarray, config: PhantomConfig) -> np.ndarray:
    """Blur by the point-spread function, apply gain, add log-compressed speckle, quantise to uint8."""
    sigma = config.speckle_sigma
    level = ndimage.gaussian_filter(echo, sigma) + gain
    # fully developed speckle: a complex Gaussian field blurred by the point-spread function, whose intensity
    # (exponential, i.e. Rayleigh amplitude) scanners average over neighbouring looks (compounding); a
    # Gaussian average as wide as the point-spread function stands in for that (about four looks)
    real, imag = _noise(rng, echo.shape, [sigma, sigma])
    intensity = ndimage.gaussian_filter(real**2 + imag**2, sigma)
    speckle_db = 10 * np.log10(np.maximum(intensity, 1e-6))
    speckle_db -= speckle_db.mean()  # so that gain alone sets the mean level
    contrast = rng.uniform(0.75, 1.05)
    brightness = rng.uniform(-0.12, 0.04)
    display = contrast * level + brightness + config.speckle * speckle_db / config.dynamic_range_db
    return np.round(np.clip(display, 0.0, 1.0) * 255).astype(np.uint8)


def _as_range(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    low, high = value
    return int(low), int(high)


def _class_list(num_images: int, config: PhantomConfig) -> list[str]:
    normal = round(num_images * config.normal_fraction)
    malignant = round((num_images - normal) * config.malignant_fraction)
    return ["normal"] * normal + ["malignant"] * malignant + ["benign"] * (num_images - normal - malignant)


def _smooth_curve(rng: np.random.Generator, length: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-deviation random curve of ``length`` samples, correlated over about ``sigma``."""
    # drawn longer and cut, so that the two ends are not correlated through the wrap-around
    curve = ndimage.gaussian_filter1d(rng.standard_normal(length + int(4 * sigma) + 1), sigma, mode="wrap")[:length]
    return ((curve - curve.mean()) / max(float(curve.std()), 1e-6)).astype(np.float32)


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigmas: Sequence[Sequence[float]]) -> np.ndarray:
    """Zero-mean, unit-deviation periodic Gaussian random fields, filtered in the Fourier domain.

    Args:
        rng: source of the white noise.
        shape: ``(rows, columns)`` of each field.
        sigmas: one ``(rows, columns)`` pair per field: standard deviations in pixels of the Gaussian
            correlation.

    Returns:
        ``(len(sigmas), rows, columns)`` float32.
    """
    sigma = np.asarray(sigmas, dtype=np.float32)
    freq_rows = scipy.fft.fftfreq(shape[0]).astype(np.float32)
    freq_cols = scipy.fft.rfftfreq(shape[1]).astype(np.float32)
    # the Gaussian's transfer function is separable: an outer product of one factor per axis
    transfer = (
        np.exp(-2 * np.pi**2 * (sigma[:, 0:1] * freq_rows) ** 2)[:, :, None]
        * np.exp(-2 * np.pi**2 * (sigma[:, 1:2] * freq_cols) ** 2)[:, None, :]
    )
    white = rng.standard_normal((len(sigma), *shape), dtype=np.float32)
    fields = scipy.fft.irfft2(scipy.fft.rfft2(white) * transfer, s=shape)
    fields -= fields.mean(axis=(1, 2), keepdims=True)
    return fields / np.maximum(fields.std(axis=(1, 2), keepdims=True), 1e-6)


def _bend(fields: np.ndarray, follow: np.ndarray) -> np.ndarray:
    """Shift every column of periodic ``(..., rows, columns)`` fields down by ``follow[column]`` rows.

    Textures bent this way run along the undulating tissue layers instead of straight across the image.
    """
    rows = fields.shape[-2]
    source = np.arange(rows, dtype=np.float32)[:, None] - follow[None, :].astype(np.float32)
    below = np.floor(source)
    fraction = source - below
    index = below.astype(np.int64) % rows
    upper = np.take_along_axis(fields, np.broadcast_to(index, fields.shape), axis=-2)
    lower = np.take_along_axis(fields, np.broadcast_to((index + 1) % rows, fields.shape), axis=-2)
    return upper + fraction * (lower - upper)


def _ellipse_frame(
    shape: tuple[int, int], cy: float, cx: float, ry: float, rx: float, angle: float, reach: float
) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray]:
    """Window around a rotated ellipse and, in it, each pixel's normalised radius and polar angle.

    ``rho == 1`` on the ellipse; the window covers ``reach`` times the larger radius. Angle 0 points along
    the ellipse's first axis (rotated by ``angle`` from the image rows), positive angles downwards.
    """
    height, width = shape
    extent = reach * max(ry, rx) + 2
    y0, y1 = min(max(int(cy - extent), 0), height), min(max(int(cy + extent) + 1, 0), height)
    x0, x1 = min(max(int(cx - extent), 0), width), min(max(int(cx + extent) + 1, 0), width)
    dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    cos, sin = np.float32(math.cos(angle)), np.float32(math.sin(angle))
    u = (cos * dx + sin * dy) / np.float32(rx)
    v = (cos * dy - sin * dx) / np.float32(ry)
    return (slice(y0, y1), slice(x0, x1)), np.hypot(u, v), np.arctan2(v, u)


def _draw_curves(
    shape: tuple[int, int], curves: list[np.ndarray], weights: list[np.ndarray], sigma: float
) -> np.ndarray:
    """Rasterise curves given as ``(N, 2)`` (row, column) samples into a ``[0, 1]`` image of thin lines.

    Samples should be at most half a pixel apart; ``weights`` (one per curve, scalar or per sample) set the
    brightness along each line.
    """
    height, width = shape
    canvas = np.zeros(shape, dtype=np.float32)
    points = np.concatenate(curves)
    values = np.concatenate([np.broadcast_to(w, (len(c),)) for c, w in zip(curves, weights)]).astype(np.float32)
    rows, cols = np.round(points[:, 0]).astype(int), np.round(points[:, 1]).astype(int)
    keep = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    np.maximum.at(canvas, (rows[keep], cols[keep]), values[keep])
    # across a blurred one-pixel line the peak is 1 / (sqrt(2 pi) sigma): rescale so it reaches the weight
    lines = ndimage.gaussian_filter(canvas, sigma) * np.float32(math.sqrt(2 * math.pi) * sigma)
    return np.clip(lines, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# files


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
