"""Predicting a folder (``lesionseg predict``): segment a person's own images with a trained bundle or an exported
model (:class:`FolderPrediction`).

For every input file it writes, under the output folder (keeping the input's sub-folders):

========================  ============================================  =========================================
input                     mask                                          probability map (``--probabilities``)
========================  ============================================  =========================================
PNG, JPEG, BMP, TIFF      ``<stem>_mask.png``, 0/255, the input's size  ``<stem>_prob.png``, 16-bit (p × 65535)
NIfTI, DICOM              ``<stem>_mask.nii.gz``, 0/1 uint8, the        ``<stem>_prob.nii.gz``, float32
                          source's voxel shape and affine
========================  ============================================  =========================================

and ``<stem>_overlay.png`` (``<stem>_overlay_<k>.png`` for slice k of a multi-slice file): the image in gray
with the predicted outline in yellow and, with ``--ground-truth``, the true outline in green, as in the
papers' figures. ``predictions.csv`` has one row per file (lesion area, and Dice, IoU and HD95 in pixels
and, where the file gives a pixel spacing, in mm against the ground truth when there is one) and
``summary.json`` the totals printed at the end. A file that cannot be read is reported by name and skipped;
the others are still written and the exit code is 1.

Nothing is written over an input or over a file this run did not create: an output folder that holds inputs
(images or ground truth, the input folder itself or a folder above it) is refused, and so is one that already
holds results unless ``--overwrite`` is given (which still never replaces an input). Files under the output
folder are never read as images or ground truth.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import math
import re
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lesionseg.engines.finite import check_threshold
from lesionseg.utils.overrides import OverrideError
from lesionseg.utils.overrides import parse_overrides as parse_key_values
from lesionseg.workflows.predictor import ModelError, NonFiniteOutputError, Predictor, load_predictor

#: errors of the output's file system that every later file would meet too: the run stops at the first
OUTPUT_STOPS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

logger = logging.getLogger(__name__)

# ground-truth files named "<stem>_mask", "<stem>_mask_1", "<stem>_label", "<stem>_seg", "<stem>_gt"
_MASK_NAME = re.compile(
    r"^(?P<stem>.+)_(?P<kind>mask|label|seg|segmentation|gt)(?:_(?P<index>\d+))?$", re.IGNORECASE
)

#: folders of a ground-truth tree that hold masks, whatever their file names (images/ + masks/): a tree of masks
#: beside the images' tree, and never images to segment
MASK_FOLDERS = frozenset({"masks", "mask", "labels", "label", "gt", "ground_truth", "annotations", "segmentations"})
#: the images' folder that a mask folder stands beside (images/p01 and masks/p01)
IMAGE_FOLDERS = frozenset({"images", "image", "imgs", "img"})


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["a#b=[1,2]", "c=3"]`` -> ``{"a#b": [1, 2], "c": 3}``; values are YAML (:mod:`lesionseg.utils.overrides`)."""
    try:
        return parse_key_values(items)
    except OverrideError as error:
        raise ModelError(str(error)) from None


# masks (BUSI's "_mask", "_mask_1") and what predict writes: never read as images
_NOT_AN_IMAGE = re.compile(r"^.+_(?:mask(?:_\d+)?|prob|overlay(?:_\d+)?)$", re.IGNORECASE)


def list_inputs(source: Path, recursive: bool) -> list[Path]:
    """The image files of ``source`` (a file: itself), skipping hidden files and files named like masks or like
    predict's outputs (``*_mask``, ``*_mask_1``, ``*_prob``, ``*_overlay``, ``*_overlay_1``), so that results
    of an earlier run in a folder inside ``source`` are not read back. (With ground truth, :class:`FolderPrediction`
    also leaves out the files it takes as masks: ``*_gt``, ``*_seg``, ``*_label``, and files in mask folders.)"""
    from lesionseg.data.io import file_kind, file_stem
    from lesionseg.data.readers import natural_key

    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: input not found")
    candidates = source.rglob("*") if recursive else source.iterdir()
    files = []
    for path in candidates:
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(source).parts):
            continue
        if file_kind(path) is None or _NOT_AN_IMAGE.match(file_stem(path)):
            continue
        files.append(path)
    return sorted(files, key=lambda p: natural_key(str(p.relative_to(source))))


class GroundTruth:
    """Ground-truth masks matched to input files by name and place; where no place fits, none (never a guess).

    The masks of ``<input>/<sub-folders>/<name>.png`` are ``<name>_mask.*`` (BUSI's ``_mask_1``... merged),
    ``_label``, ``_seg``, ``_segmentation`` or ``_gt`` (one kind per image), else a file ``<name>.*`` that is not
    the image. They are
    looked for first in the image's own folder when ``source`` holds the image, else in ``source/<sub-folders>/``,
    the folder that mirrors the image's under ``--input``; where that folder holds none, in one other folder at
    the image's place in ``source``:

    - ``source`` holds the image: a mask folder inside the image's folder (``data/masks`` for ``data/a.png``,
      :data:`MASK_FOLDERS`), or the same place in a tree of masks beside the images' (``masks/p01`` for
      ``images/p01``, ``p01/masks`` for ``p01/images``: the folders differ in one part, a mask folder);
    - ``source`` is a separate tree: a folder whose path ends the image's (``masks/site1/p01`` for
      ``.../images/site1/p01``), a folder that holds the image's original (a copy of some of BUSI's images
      against the dataset), or the top of ``source`` for an image whose name no other input has;

    and only when no other input of that name, nor another tree of images, has that folder at its place too
    (``masks/p01`` for ``site1/p01`` and ``site2/p01``; ``val/`` beside ``images/`` and ``masks/``). Files named
    as the image are never its masks in a folder of images (:data:`IMAGE_FOLDERS`), in a tree that keeps images
    beside their ``<name>_mask`` files, or outside a mask folder away from the mirrored one; and outside a mask
    folder only when they hold two values at most and are not the image's original. So per-case folders that
    reuse file names never lend one case's mask to another, and two folders at the image's place are refused
    rather than merged or picked. What predict or a bundle's evaluation wrote (a folder with ``predictions.csv``
    and ``summary.json``, a ``<name>_mask`` beside ``<name>_overlay`` or ``<name>_prob``) is never ground truth.

    Args:
        source: one mask file (paired with the only input) or a folder searched recursively.
        exclude: a folder whose files are never ground truth: predict's output folder.
        input_root: the ``--input`` folder (or file), whose sub-folders are mirrored under ``source``.
    """

    def __init__(self, source: Path, exclude: Path | None = None, input_root: Path | None = None) -> None:
        from lesionseg.data.io import file_kind, file_stem

        exclude = exclude.resolve() if exclude is not None else None
        self.single = source if source.is_file() else None
        self.root = source
        self.resolved_root = source.resolve()
        self.input_root = input_root
        # (folder relative to source, name) -> the masks named after it (kind, index, file), or the files of that name
        self.suffixed: dict[tuple[Path, str], list[tuple[str, int, Path]]] = {}
        self.plain: dict[tuple[Path, str], list[Path]] = {}
        self.folders: dict[str, list[Path]] = {}  # name -> the folders holding a file of that name or its masks
        self.in_mask_folders: set[Path] = set()  # files under a MASK_FOLDERS folder, resolved
        self.input_folders: dict[str, list[Path]] = {}  # name -> the folders of the run's inputs of that name
        self.images_beside_masks = False
        if self.single is not None:
            return
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: ground truth not found")
        for path in source.rglob("*"):
            if not path.is_file() or file_kind(path) is None:
                continue
            if exclude is not None and exclude in path.resolve().parents:
                continue
            folder, stem = path.relative_to(source).parent, file_stem(path)
            if _written_by_a_run(path, source, stem):
                continue
            if any(part.lower() in MASK_FOLDERS for part in folder.parts):
                self.in_mask_folders.add(path.resolve())
            match = _MASK_NAME.match(stem)
            if match:
                index = int(match["index"]) if match["index"] else 0
                stem = match["stem"]
                self.suffixed.setdefault((folder, stem), []).append((match["kind"].lower(), index, path))
            else:
                self.plain.setdefault((folder, stem), []).append(path)
            if folder not in self.folders.setdefault(stem, []):
                self.folders[stem].append(folder)
        # BUSI-like: images with their <name>_mask beside them, so a file named as an image is an image here
        self.images_beside_masks = any(key in self.suffixed for key in self.plain)

    def set_inputs(self, images: Iterable[Path]) -> None:
        """The run's input images: a folder at an image's place (other than its mirrored one) is taken only when
        no other input of that name has it at its place too."""
        from lesionseg.data.io import file_stem

        self.input_folders = {}
        for path in images:
            self.input_folders.setdefault(file_stem(path), []).append(path.resolve().parent)

    def files(self) -> list[Path]:
        """Every ground-truth file found."""
        if self.single is not None:
            return [self.single]
        return [path for found in self.suffixed.values() for _, _, path in found] + [
            path for found in self.plain.values() for path in found
        ]

    def mask_files(self) -> set[Path]:
        """The files named like masks (``<name>_mask``, ``_label``, ``_seg``, ``_gt``...) or lying in a mask
        folder (:data:`MASK_FOLDERS`), every file but the images when ``source`` lies inside the input folder, or
        the one mask file, resolved: ground truth, never an image to segment, when they lie in the input folder."""
        if self.single is not None:
            return {self.single.resolve()}
        root, inputs = self.resolved_root, self.input_root.resolve() if self.input_root is not None else None
        if inputs is not None and inputs in root.parents:  # --ground-truth a folder inside --input: ground truth,
            # but for its images: those of a folder that keeps images beside their masks (BUSI's class folder, with
            # any unlabelled image in it) and those of a folder of images (train/images beside train/masks)
            beside = {folder for folder, name in self.plain if (folder, name) in self.suffixed}
            images = {
                path.resolve()
                for (folder, _), found in self.plain.items()
                if folder in beside or any(part.lower() in IMAGE_FOLDERS for part in folder.parts)
                for path in found
            }
            return {path.resolve() for path in self.files()} - images
        return {path.resolve() for found in self.suffixed.values() for _, _, path in found} | self.in_mask_folders

    def find(self, image: Path) -> list[Path]:
        """The mask files of ``image`` (several for BUSI's multi-lesion cases), or ``[]``.

        Raises:
            DataError: naming ``image`` and the candidates, when two folders at its place hold masks of its
                name, or one folder holds two kinds of them (``_gt`` and ``_seg``) or two files of its name.
        """
        from lesionseg.data.io import DataError, file_stem

        if self.single is not None:
            return [self.single]
        stem = file_stem(image)
        root, inputs, parent = self.resolved_root, self.input_root, image.resolve().parent
        own_folder = parent == root or root in parent.parents  # the tree holds the image: its own folder
        if own_folder:
            mirrored = parent.relative_to(root)
        elif inputs is not None and image.is_relative_to(inputs):
            mirrored = image.relative_to(inputs).parent
        else:
            mirrored = Path()
        found = None
        # a mirrored folder that holds another input of that name holds that input's masks, not this one's
        if own_folder or root / mirrored not in self.input_folders.get(stem, []):
            found = self._masks_in(mirrored, stem, image, plain=self._plain_files_may_be_masks(mirrored, stem))
        if found is not None:
            return found
        candidates = {}
        for folder in self.folders.get(stem, []):
            if folder != mirrored and self._at_the_images_place(folder, stem, image):
                masks = self._masks_in(folder, stem, image, plain=self._holds_masks_only(folder))
                if masks:
                    candidates[folder] = masks
        if len(candidates) > 1:
            shown = ", ".join(str(path) for path in sorted(p for masks in candidates.values() for p in masks))
            raise DataError(
                image,
                f"no ground truth in {self.root / mirrored} (the folder that mirrors the image's) and masks of its "
                f"name in {len(candidates)} folders at its place in {self.root}: {shown}; put each image's masks "
                "in the sub-folder that mirrors the image's, or give the ground truth of these images alone",
            )
        return next(iter(candidates.values()), [])

    def _at_the_images_place(self, folder: Path, stem: str, image: Path) -> bool:
        # the rules of the class docstring, for a folder other than the mirrored one; a rule that fits several
        # inputs of that name (site1/p01 and site2/p01 for masks/p01) fits none
        root, parent, parts = self.resolved_root, image.resolve().parent, folder.parts
        others = [other for other in self.input_folders.get(stem, []) if other != parent]
        if parent == root or root in parent.parents:  # the ground-truth tree holds the image
            place = parent.relative_to(root).parts
            if parts == place:  # its own folder
                return True
            if not _masks_for(parts, place):
                return False
            index = _the_one_difference(parts, place)
            if index is not None and place[index].lower() in IMAGE_FOLDERS:  # images/p01 beside masks/p01
                return True
            # else only if no other folder of images of that name (unlabelled/p01 or val/ beside images/, the
            # folder above a masks/ inside it) and no other input's place (site1/p01 and site2/p01) leads there
            folders = [other.parts for other in self.folders.get(stem, [])]
            folders += [other.relative_to(root).parts for other in others if other == root or root in other.parents]
            return not any(other not in (place, parts) and _masks_for(parts, other) for other in folders)
        if any(_same_file_contents(path, image) for path in self.plain.get((folder, stem), [])):
            return True  # the image's original lies there (a copy of some of BUSI's images against the dataset)
        if parts:  # a separate tree: the folder's path ends the image's, and no other input's
            return parent.parts[-len(parts) :] == parts and not any(o.parts[-len(parts) :] == parts for o in others)
        return not others  # its top, for a name that no other input has

    def _plain_files_may_be_masks(self, folder: Path, stem: str) -> bool:
        # files named as the image are images, not its masks, in a folder of images (images/, Kvasir's), in a tree
        # that keeps images beside their <name>_mask files (BUSI's, or a copy of some of its images), and where a
        # mask folder at their place holds that name (data/h.png with data/masks/h.png)
        names = (self.resolved_root.name, *folder.parts)
        if self.images_beside_masks or any(name.lower() in IMAGE_FOLDERS for name in names):
            return False
        return not any(_masks_for(other.parts, folder.parts) for other in self.folders.get(stem, []))

    def _holds_masks_only(self, folder: Path) -> bool:
        # a folder whose files of an image's name are masks, not images: in a mask folder (or the ground truth a
        # mask folder itself), not a tree of images such as Kvasir's images/ beside its masks/
        names = (self.resolved_root.name, *folder.parts)
        return any(name.lower() in MASK_FOLDERS for name in names)

    def _masks_of_this_image(self, folder: Path, stem: str, image: Path) -> bool:
        # masks beside an image of their name are that image's: this image's only when that image is this one or
        # a copy of it (a copy of BUSI's benign (1).png against BUSI/benign), not another case's of the same name
        owners = self.plain.get((folder, stem), [])
        if not owners or any(path.resolve() == image.resolve() for path in owners):
            return True
        return any(_same_file_contents(path, image) for path in owners)

    def _masks_in(self, folder: Path, stem: str, image: Path, plain: bool = True) -> list[Path] | None:
        """The masks of ``image`` (named ``stem``) in ``folder`` of the source; ``None`` when it holds none (no
        file of that name, or only images beside ``image``, or, ``plain`` False, only files named as images)."""
        from lesionseg.data.io import DataError

        if (folder, stem) in self.suffixed:
            if not self._masks_of_this_image(folder, stem, image):
                return None
            found = sorted(self.suffixed[folder, stem])
            if len({(kind, index) for kind, index, _ in found}) < len(found):  # a_mask.png and a_mask.jpg
                shown = ", ".join(str(path) for _, _, path in found)
                raise DataError(image, f"several masks of one name have its name: {shown}; keep one of each")
            kinds = sorted({kind for kind, _, _ in found})
            if len(kinds) > 1:  # e.g. a _gt and another tool's _seg: not one lesion's parts to merge
                shown = ", ".join(str(path) for _, _, path in found)
                problem = f"masks of {len(kinds)} kinds ({', '.join(kinds)}) have its name: {shown}; keep one kind"
                raise DataError(image, problem)
            return [path for _, _, path in found]
        if (folder, stem) not in self.plain or not plain:
            return None
        # a file of that name beside the image is the image itself or another image (a.png beside a.jpg); outside a
        # mask folder, one that is the image's original, or is not binary, is an image too (p01/image.png of a
        # tree that names its masks mask.png)
        found = [path for path in self.plain[folder, stem] if path.resolve().parent != image.resolve().parent]
        if not self._holds_masks_only(folder):
            found = [path for path in found if not _same_file_contents(path, image) and _looks_binary(path)]
        if len(found) > 1:
            shown = ", ".join(str(path) for path in sorted(found))
            raise DataError(image, f"several ground-truth files have its name: {shown}; keep one")
        return found or None  # only images of that name here: the masks may be elsewhere (images/ + masks/)


def _same_file_contents(path: Path, other: Path) -> bool:
    import filecmp

    return path.resolve() == other.resolve() or filecmp.cmp(path, other, shallow=False)


def _looks_binary(path: Path) -> bool:
    # a mask holds two values at most (0 and its lesion value); an unreadable file is left to the reading of
    # the ground truth, which names it
    from lesionseg.data.io import DataError, load_pixels

    try:
        return np.unique(load_pixels(path)).size <= 2
    except (DataError, OSError, ValueError):
        return True


def _masks_for(masks: tuple[str, ...], images: tuple[str, ...]) -> bool:
    # whether the folder ``masks`` is a mask folder at the place of the folder ``images``: inside it (data/masks for
    # data), or beside it, differing in one part that is a mask folder (masks/p01 for images/p01)
    if masks[:-1] == images and masks and masks[-1].lower() in MASK_FOLDERS:
        return True
    index = _the_one_difference(masks, images)
    return index is not None and masks[index].lower() in MASK_FOLDERS and images[index].lower() not in MASK_FOLDERS


def _the_one_difference(parts: tuple[str, ...], other: tuple[str, ...]) -> int | None:
    # the index of the one part in which two folder paths of one depth differ, else None
    if len(parts) != len(other):
        return None
    differences = [index for index, (a, b) in enumerate(zip(parts, other)) if a != b]
    return differences[0] if len(differences) == 1 else None


def _written_by_a_run(path: Path, source: Path, stem: str) -> bool:
    """Whether ``path`` is an output of predict or of a bundle's evaluation, not ground truth: it lies in a folder
    (under ``source``) with predict's ``predictions.csv`` and ``summary.json``, or it is a ``<name>_mask`` beside
    ``<name>_overlay.png`` (``_overlay_000.png`` for a multi-slice file) or ``<name>_prob.*``."""
    match = _MASK_NAME.match(stem)
    if match and match["kind"].lower() == "mask":
        name = match["stem"]
        beside = (f"{name}_overlay.png", f"{name}_overlay_000.png", f"{name}_prob.png", f"{name}_prob.nii.gz")
        if any((path.parent / other).is_file() for other in beside):
            return True
    for folder in (path.parent, *path.parent.parents):
        if (folder / "predictions.csv").is_file() and (folder / "summary.json").is_file():
            return True
        if folder == source:
            return False
    return False


# what predict writes for an input with output base <stem>: masks, probability maps, overlays
_OUTPUT_NAME = re.compile(r"^_(?:mask\.(?:png|nii\.gz)|prob\.(?:png|nii\.gz)|overlay(?:_\d+)?\.png)$")
#: the files predict writes once per run, in the output folder
RUN_FILES = ("predictions.csv", "summary.json")


class OutputFiles:
    """The files one ``predict`` run writes: never an input, never a file that existed before the run (unless
    ``overwrite``), never one file twice.

    Args:
        protected: the run's inputs (images and ground-truth files), never written over.
        overwrite: allow replacing files that exist (the results of an earlier run).
    """

    def __init__(self, protected: list[Path], overwrite: bool = False) -> None:
        self.protected = {Path(path).resolve() for path in protected}
        self.overwrite = overwrite
        self.written: set[Path] = set()

    def claim(self, path: str | Path) -> Path:
        """``path``, once it is known that writing it loses nothing.

        Raises:
            DataError: naming ``path``, when it is an input, was written already in this run, or exists (and
                ``overwrite`` is off).
        """
        from lesionseg.data.io import DataError

        path = Path(path)
        resolved = path.resolve()
        if resolved in self.protected:
            raise DataError(path, "is an input of this run; predict never writes over its inputs")
        if resolved in self.written:
            raise DataError(
                path, "would be written twice in this run (two inputs give the same output name); rename one"
            )
        if path.exists() and not self.overwrite:
            raise DataError(path, "exists already; pass --overwrite to replace it, or choose another --output")
        self.written.add(resolved)
        return path


def check_output_folder(output: Path, inputs: list[Path], input_root: Path, truth: Path | None = None) -> None:
    """Refuse an output folder that is, or lies above, the input or ground-truth folder, or that holds any input.

    Writing ``<stem>_mask.png`` among BUSI's images would replace their ground truth ``<stem>_mask.png``.

    Args:
        output: the output folder.
        inputs: the input files, ground-truth files included.
        input_root: the ``--input`` path (a file or a folder).
        truth: the ``--ground-truth`` path, if any.

    Raises:
        DataError: naming ``output`` and the input it holds.
    """
    from lesionseg.data.io import DataError

    given_output, output = output, output.resolve()
    for given, what in ((input_root, "--input"), (truth, "--ground-truth")):
        if given is None or not given.is_dir():
            continue
        folder = given.resolve()
        if output == folder or output in folder.parents:
            where = "is" if output == folder else "holds"
            raise DataError(
                given_output,
                f"the output folder {where} the {what} folder {given}: predictions there would be written among "
                "(and could replace) the inputs, e.g. BUSI's ground truth <name>_mask.png; "
                f"choose a new folder, e.g. --output {folder.parent / (folder.name + '_predictions')}",
            )
    for path in inputs:
        if output in path.resolve().parents:
            raise DataError(
                given_output,
                f"the output folder holds an input, {path}; predict never writes among its inputs: choose a folder "
                "that holds no images or masks",
            )


def existing_outputs(output: Path, bases: dict[Path, Path]) -> list[Path]:
    """The files of ``output`` that this run would write: an earlier run's results."""
    found = [output / name for name in RUN_FILES if (output / name).exists()]
    for base in bases.values():
        if base.parent.is_dir():
            found += sorted(
                path
                for path in base.parent.glob(glob.escape(base.name) + "_*")
                if _OUTPUT_NAME.match(path.name[len(base.name) :])
            )
    return found


def output_bases(files: list[Path], source: Path, output: Path) -> dict[Path, Path]:
    """Each input's output path without postfix: ``output/<sub-folders>/<stem>``, or
    ``.../<stem>_<format>`` for every file of a folder whose stem another file shares (``a.png``, ``a.jpg``)."""
    from lesionseg.data.io import file_stem

    def base(path: Path) -> Path:
        relative = path.relative_to(source).parent if source.is_dir() else Path()
        return output / relative / file_stem(path)

    counts: dict[Path, int] = {}
    for path in files:
        counts[base(path)] = counts.get(base(path), 0) + 1
    return {
        path: base(path).with_name(path.name.replace(".", "_")) if counts[base(path)] > 1 else base(path)
        for path in files
    }


def _overlay_paths(base: Path, slices: int) -> list[Path]:
    if slices == 1:
        return [base.parent / f"{base.name}_overlay.png"]
    return [base.parent / f"{base.name}_overlay_{index:03d}.png" for index in range(slices)]


def _write_overlays(stack, masks: np.ndarray, truths: np.ndarray | None, paths: list[Path]) -> list[Path]:
    from lesionseg.data.writers import overlay_contours, save_picture

    # about 3 pixels on a 600-pixel image, 1 on small ones
    thickness = max(1, round(min(stack.slices.shape[1:]) / 200))
    for index, (image, path) in enumerate(zip(stack.slices, paths)):
        contours = {"yellow": masks[index]}
        if truths is not None:
            contours = {"lime": truths[index], **contours}
        save_picture(overlay_contours(image, contours, thickness), path)
    return paths


def predict_file(
    path: Path,
    base: Path,
    predictor: Predictor,
    threshold: float,
    probabilities: bool,
    truth_files: list[Path],
    outputs: OutputFiles | None = None,
) -> dict[str, Any]:
    """Segment one file and write its outputs next to ``base``; returns its CSV record.

    Args:
        outputs: checks every file before it is written (see :class:`OutputFiles`); by default a fresh
            one protecting ``path`` and ``truth_files``.

    Raises:
        DataError: the file (or its ground truth) cannot be read, the network's output is not finite, or an
            output would replace an input or an existing file; nothing of it is written then, except for a
            ground-truth problem found after the mask was written.
        ValueError: ``threshold`` is not a probability strictly between 0 and 1.
    """
    from lesionseg.data.io import DataError, read_mask_stack, read_stack, to_voxels
    from lesionseg.data.writers import save_mask_png, save_nifti_like, save_probability_png
    from lesionseg.metrics import compute_image_metrics

    threshold = check_threshold(threshold)
    outputs = outputs if outputs is not None else OutputFiles([path, *truth_files])
    stack = read_stack(path)
    probability = np.stack([predictor(image, path) for image in stack.slices])
    masks = probability >= threshold
    suffix = ".png" if stack.kind == "picture" else ".nii.gz"
    # every file of this input is checked before the first is written
    mask_file = outputs.claim(f"{base}_mask{suffix}")
    probability_file = outputs.claim(f"{base}_prob{suffix}") if probabilities else None
    overlay_files = [outputs.claim(p) for p in _overlay_paths(base, len(stack.slices))]
    claimed = [mask_file, *([probability_file] if probability_file is not None else []), *overlay_files]
    with _no_partial_results(path, claimed):
        base.parent.mkdir(parents=True, exist_ok=True)
        if stack.kind == "picture":
            mask_path = save_mask_png(masks[0], mask_file)
            if probability_file is not None:
                save_probability_png(probability[0], probability_file)
        else:
            mask_path = save_nifti_like(to_voxels(stack, masks.astype(np.uint8)), stack.affine, mask_file, stack.header)
            if probability_file is not None:
                save_nifti_like(to_voxels(stack, probability), stack.affine, probability_file, stack.header)
    lesion_pixels = int(masks.sum())
    record: dict[str, Any] = {
        "file": str(path),
        "mask": str(mask_path),
        "slices": int(masks.shape[0]),
        "height": int(masks.shape[1]),
        "width": int(masks.shape[2]),
        "lesion_found": lesion_pixels > 0,
        "lesion_pixels": lesion_pixels,
        "lesion_fraction": lesion_pixels / masks.size,
    }
    truths = None
    problem = None
    if truth_files:
        try:
            truths = read_mask_stack(truth_files)
            if truths.shape != masks.shape:
                raise DataError(
                    truth_files[0], f"ground truth of shape {truths.shape} (slices, H, W) but {path} has {masks.shape}"
                )
        except DataError as error:
            truths, problem = None, error
        if truths is not None:
            scores = [compute_image_metrics(m, t, spacing=stack.spacing) for m, t in zip(masks, truths)]
            record["ground_truth"] = ";".join(str(p) for p in truth_files)
            # means over the slices; HD95 is NaN where exactly one mask is empty (lesionseg.metrics)
            for name in ("dice", "iou", "hd95", "hd95_mm"):
                if name in scores[0]:
                    record[name] = _mean([score[name] for score in scores])
    with _no_partial_results(path, claimed):
        _write_overlays(stack, masks, truths, overlay_files)
    if problem is not None:
        raise problem
    return record


@contextlib.contextmanager
def _no_partial_results(image: Path, files: list[Path]):
    """Remove what was written of ``files`` when a write fails, so that an image has all its results or none;
    then raise a full or read-only disk (:data:`OUTPUT_STOPS`) as it is, which stops the run, and any other
    failed write as a :class:`DataError` naming ``image`` and the problem, which skips the image."""
    from lesionseg.data.io import DataError

    try:
        yield
    except OSError as error:
        for written in files:
            written.unlink(missing_ok=True)
        if error.errno in OUTPUT_STOPS:
            raise
        where = error.filename or files[0].parent
        raise DataError(
            image, f"cannot write its results ({error.strerror or error}: {where}); nothing of it was kept"
        ) from error


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(values)) if values else None


class FolderPrediction:
    """One ``predict`` run: every check before the model is loaded, then the files one by one, then the tables.

    Args:
        source: an image file or a folder of images.
        output: the folder the results go into; refused when it is or holds an input (:func:`check_output_folder`)
            or holds an earlier run's results (unless ``overwrite``).
        bundle, checkpoint, model, overrides, device, precision: the model, as :func:`load_predictor` takes them.
        recursive: also read the sub-folders of ``source``.
        probabilities: also write the lesion probability maps.
        ground_truth: a mask file (for one input file) or a folder of masks matched by name and sub-folder
            (:class:`GroundTruth`); files it takes as masks are not segmented.
        threshold: probability a lesion pixel reaches, strictly between 0 and 1.
        overwrite: replace the results of an earlier run (inputs are never written over).
        compile: run the network compiled by :func:`torch.compile` (about a minute's compile, then faster images).

    Raises:
        ModelError, DataError, FileNotFoundError, ValueError: naming the file and the problem, before anything is
            written.
    """

    def __init__(
        self,
        source: Path,
        output: Path,
        bundle: Path | None = None,
        checkpoint: Path | None = None,
        model: Path | None = None,
        overrides: dict[str, Any] | None = None,
        device: str | None = None,
        precision: str | None = None,
        recursive: bool = False,
        probabilities: bool = False,
        ground_truth: Path | None = None,
        threshold: float = 0.5,
        overwrite: bool = False,
        compile: bool = False,
    ) -> None:
        from lesionseg.data.io import DataError, max_pixels_limit

        self.start = time.monotonic()
        self.threshold = threshold
        self.probabilities = probabilities
        try:
            given_output, output = output, output.resolve()
        except (RuntimeError, OSError) as error:  # a symbolic link loop
            raise DataError(output, f"cannot be resolved ({error})") from None
        self.output = output
        if output.exists() and not output.is_dir():
            raise DataError(given_output, "is a file, not a folder; --output is the folder the results go into")
        files = list_inputs(source, recursive)
        truth = GroundTruth(ground_truth, exclude=output, input_root=source) if ground_truth is not None else None
        if truth is not None:
            # masks the ground truth takes (a_gt.png beside a.png with --ground-truth the input folder) are not
            # images too; list_inputs leaves out only *_mask
            masks = truth.mask_files()
            files = [path for path in files if path.resolve() not in masks]
        if not files:
            raise DataError(source, "no image files found (PNG, JPEG, BMP, TIFF, NIfTI, DICOM)")
        if truth is not None and truth.single is not None and len(files) > 1:
            raise DataError(ground_truth, f"one ground-truth file for {len(files)} inputs; give a folder of masks")
        # every image's masks, before the model is loaded: an ambiguous match stops the run here
        if truth is not None:
            truth.set_inputs(files)
        self.truth_files = {path: truth.find(path) for path in files} if truth is not None else {}
        inputs = files + (truth.files() if truth is not None else [])
        # before the model is loaded: a refused folder costs nothing
        check_output_folder(given_output, inputs, source, ground_truth)
        bases = output_bases(files, source, output)
        existing = existing_outputs(output, bases) if not overwrite else []
        if existing:
            shown = ", ".join(str(path) for path in existing[:3])
            shown += f" and {len(existing) - 3} more" if len(existing) > 3 else ""
            raise DataError(
                output,
                f"holds the results of an earlier run ({shown}); pass --overwrite to replace them, or choose "
                "another --output",
            )
        self.files, self.truth, self.bases = files, truth, bases
        self.outputs = OutputFiles(inputs, overwrite=overwrite)
        check_threshold(threshold)
        max_pixels_limit()  # a bad $LESIONSEG_MAX_PIXELS stops the run here, not at every file
        self.predictor = load_predictor(bundle, checkpoint, model, overrides or {}, device, precision, compile)
        self.records: list[dict[str, Any]] = []

    def create_output(self) -> None:
        """Create the output folder.

        Raises:
            DataError: naming the folder, when it cannot be created.
        """
        from lesionseg.data.io import DataError

        try:
            self.output.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(
                self.output,
                f"cannot create the output folder ({error.strerror or error}); choose a folder you can write to",
            ) from None

    def run(self) -> dict[str, Any]:
        """Segment every file (one that fails is reported and skipped, the others are still written); the summary.

        Raises:
            OSError: naming the file being written, when the output's disk is full or read-only
                (:data:`OUTPUT_STOPS`): the run stops there, the masks written so far are kept.
        """
        from lesionseg.data.io import DataError

        failures: list[tuple[str, str]] = []
        for path in tqdm(self.files, desc="predict", unit="image", file=sys.stderr):
            base = self.bases[path]
            truth_files = self.truth_files.get(path, [])
            try:
                self.records.append(
                    predict_file(
                        path, base, self.predictor, self.threshold, self.probabilities, truth_files, self.outputs
                    )
                )
            except (DataError, NonFiniteOutputError) as error:
                failures.append((str(path), str(error)))
                logger.error("skipped: %s", error)
            except OSError as error:
                if error.errno in OUTPUT_STOPS:  # every later file would fail alike: stop, naming the file
                    raise
                failures.append((str(path), f"{path}: {type(error).__name__}: {error}"))
                logger.exception("skipped %s", path)
            except Exception as error:  # one bad file never stops the others
                failures.append((str(path), f"{path}: {type(error).__name__}: {error}"))
                logger.exception("skipped %s", path)
        records = self.records
        with_truth = [r for r in records if "dice" in r]
        return {
            "images": len(records),
            "slices": sum(r["slices"] for r in records),
            "with_lesion": sum(r["lesion_found"] for r in records),
            "mean_lesion_fraction": _mean([r["lesion_fraction"] for r in records]),
            "with_ground_truth": len(with_truth),
            "without_ground_truth": len(records) - len(with_truth) if self.truth is not None else None,
            "mean_dice": _mean([r["dice"] for r in with_truth]),
            "mean_iou": _mean([r["iou"] for r in with_truth]),
            "failed": [{"file": file, "problem": problem} for file, problem in failures],
            "threshold": self.threshold,
            "seconds": round(time.monotonic() - self.start, 2),
        }

    def write_tables(self, summary: dict[str, Any]) -> None:
        """Write ``predictions.csv`` (when a file was predicted) and ``summary.json``.

        Raises:
            OSError, DataError: the tables cannot be written.
        """
        from lesionseg.metrics import write_per_image_csv, write_summary_json

        if self.records:
            write_per_image_csv(self.records, self.outputs.claim(self.output / "predictions.csv"))
        write_summary_json(summary, self.outputs.claim(self.output / "summary.json"))


def format_summary(summary: dict[str, Any], output: Path) -> str:
    """The lines ``lesionseg predict`` prints at the end of a run."""
    lines = []
    fraction = summary["mean_lesion_fraction"]
    line = (
        f"predicted {summary['images']} image(s) in {summary['seconds']} s: "
        f"{summary['with_lesion']} with a lesion found"
    )
    if fraction is not None:
        line += f", mean lesion area {100 * fraction:.2f} % of the image"
    lines.append(line)
    if summary["with_ground_truth"]:
        lines.append(
            f"  against the ground truth of {summary['with_ground_truth']}: mean Dice {summary['mean_dice']:.4f}, "
            f"mean IoU {summary['mean_iou']:.4f}"
        )
    if summary["without_ground_truth"]:
        lines.append(f"  no ground truth found for {summary['without_ground_truth']} image(s)")
    if summary["failed"]:
        lines.append(f"  FAILED {len(summary['failed'])} file(s), skipped:")
        for failure in summary["failed"]:
            lines.append(f"    {failure['problem']}")
    lines.append(f"  results in {output} (predictions.csv, summary.json)")
    return "\n".join(lines)
