"""Finding the image/mask pairs of a dataset in one of three layouts.

1. **BUSI** (Al-Dhabyani et al., Data in Brief 2020): one folder per class holding ``<class> (n).png`` with
   its mask ``<class> (n)_mask.png`` and, for cases with several lesions, ``<class> (n)_mask_1.png``,
   ``_mask_2.png``... (the lesion mask is their union). The folder the archive unpacks to
   (``Dataset_BUSI_with_GT``) or the folder holding it may be given.
2. **Folder pair**: ``images/`` and ``masks/`` side by side, matched by file stem (masks may carry a suffix
   such as ``_mask``).
3. **MONAI datalist**: a Decathlon-style JSON file with sections (``"training"``, ``"validation"``...)
   of ``{"image": ..., "label": ...}`` items, paths relative to the JSON's folder, read by
   :mod:`lesionseg.data.datalist`.

Every reader returns MONAI data dicts ``{"image": str, "label": str | list[str], ...}`` that
:class:`lesionseg.data.transforms.LoadUltrasoundd` loads. BUSI items also carry ``"class"`` and
``"case"`` (``"benign (12)"``), folder-pair items ``"case"`` (the image stem).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lesionseg.data.datalist import read_datalist_items
from lesionseg.data.io import DataError, PathLike

__all__ = [
    "IMAGE_SUFFIXES",
    "DatasetScan",
    "natural_key",
    "scan_busi",
    "scan_folder_pair",
    "scan_dataset",
    "detect_layout",
    "read_busi",
    "read_folder_pair",
    "read_dataset",
    "read_images",
    "dataset_items",
    "inference_datalist",
]

#: file suffixes read as images (lower case)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

# "<case>_mask" or "<case>_mask_<k>", BUSI's mask naming
_BUSI_MASK = re.compile(r"^(?P<case>.+)_mask(?:_(?P<index>\d+))?$")

LAYOUTS_HELP = (
    "expected one of: a BUSI folder (class sub-folders holding '<class> (n).png' and "
    "'<class> (n)_mask.png'), a folder with 'images/' and 'masks/' sub-folders, or a MONAI datalist "
    ".json file"
)


def natural_key(text: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``"benign (2)"`` before ``"benign (10)"``."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(text)))


@dataclass
class DatasetScan:
    """Image/mask pairs found in a dataset, plus the files that could not be paired.

    Attributes:
        layout: ``"busi"``, ``"folder_pair"`` or ``"datalist"``.
        root: the dataset folder, or the datalist file.
        items: data dicts of the paired cases, in natural order.
        images_without_mask: image files for which no mask was found.
        masks_without_image: mask files for which no image was found.
    """

    layout: str
    root: Path
    items: list[dict] = field(default_factory=list)
    images_without_mask: list[Path] = field(default_factory=list)
    masks_without_image: list[Path] = field(default_factory=list)

    def raise_unpaired(self) -> None:
        """Raise a :class:`DataError` naming the first unpaired file and listing the others, if any."""
        unpaired = [(path, "no mask found for this image") for path in self.images_without_mask]
        unpaired += [(path, "no image found for this mask") for path in self.masks_without_image]
        if not unpaired:
            return
        path, problem = unpaired[0]
        if len(unpaired) > 1:
            problem += f"; {len(unpaired) - 1} more unpaired file(s):\n" + "\n".join(
                f"{other}: {what}" for other, what in unpaired[1:]
            )
        raise DataError(path, problem)


def _entries(folder: Path) -> list[Path]:
    """The entries of ``folder``; a folder that cannot be listed is a :class:`DataError` naming it."""
    try:
        return list(folder.iterdir())
    except PermissionError as error:
        raise DataError(
            folder, "cannot read the folder (permission denied); check its permissions (chmod +rx)"
        ) from error
    except NotADirectoryError as error:
        raise DataError(folder, "not a folder") from error
    except OSError as error:
        raise DataError(folder, f"cannot read the folder ({type(error).__name__}: {error})") from error


def _image_files(folder: Path) -> list[Path]:
    return [
        p for p in _entries(folder) if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    ]


def _is_busi_root(folder: Path) -> bool:
    for sub in _entries(folder):
        if sub.is_dir() and not sub.name.startswith("."):
            pattern = re.compile(rf"^{re.escape(sub.name)} \(\d+\)$")
            if any(pattern.match(p.stem) for p in _image_files(sub)):
                return True
    return False


def scan_busi(root: PathLike) -> DatasetScan:
    """Pair the images and masks of a BUSI-layout folder without failing on unpaired files.

    Each sub-folder is a class; an image ``<case>.png`` pairs with ``<case>_mask.png`` and any
    ``<case>_mask_<k>.png``. Items are ``{"image", "label", "class", "case"}``, ``label`` a list when a
    case has several mask files (``_mask`` first, then by ``k``).

    Raises:
        DataError: ``root`` is not a folder or holds no class folder with images.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "not a folder" if root.exists() else "folder not found")
    scan = DatasetScan("busi", root)
    for class_dir in sorted(
        (p for p in _entries(root) if p.is_dir() and not p.name.startswith(".")), key=lambda p: natural_key(p.name)
    ):
        images: dict[str, Path] = {}
        masks: dict[str, list[tuple[int, Path]]] = {}
        for path in _image_files(class_dir):
            match = _BUSI_MASK.match(path.stem)
            if match:
                index = int(match["index"]) if match["index"] is not None else 0
                masks.setdefault(match["case"], []).append((index, path))
            else:
                images[path.stem] = path
        for case in sorted(images, key=natural_key):
            mask_files = [str(p) for _, p in sorted(masks.pop(case, []))]
            if not mask_files:
                scan.images_without_mask.append(images[case])
                continue
            label = mask_files[0] if len(mask_files) == 1 else mask_files
            scan.items.append({"image": str(images[case]), "label": label, "class": class_dir.name, "case": case})
        scan.masks_without_image += sorted(
            (p for found in masks.values() for _, p in found), key=lambda p: natural_key(p.name)
        )
    if not scan.items and not scan.images_without_mask:
        raise DataError(root, f"no images found in class sub-folders; {LAYOUTS_HELP}")
    return scan


def read_busi(root: PathLike) -> list[dict]:
    """Read a BUSI-layout folder: ``[{"image", "label", "class", "case"}, ...]`` in natural order.

    Args:
        root: the folder holding the class folders (``Dataset_BUSI_with_GT``).

    Raises:
        DataError: naming the image, when an image has no mask (every unpaired file is listed).
    """
    scan = scan_busi(root)
    scan.raise_unpaired()
    return scan.items


def _infer_mask_suffix(image_stems: Iterable[str], mask_stems: Iterable[str]) -> str:
    # the most common remainder after the longest image stem that starts a mask stem ("", "_mask", ...)
    image_stems = set(image_stems)
    suffixes: Counter[str] = Counter()
    for stem in mask_stems:
        for end in range(len(stem), 0, -1):
            if stem[:end] in image_stems:
                suffixes[stem[end:]] += 1
                break
    return suffixes.most_common(1)[0][0] if suffixes else ""


def scan_folder_pair(images_dir: PathLike, masks_dir: PathLike, mask_suffix: str | None = None) -> DatasetScan:
    """Pair ``images_dir/<stem>.<ext>`` with ``masks_dir/<stem><mask_suffix>.<ext>``, without failing.

    Args:
        images_dir: folder of images.
        masks_dir: folder of masks.
        mask_suffix: what mask stems add to image stems (``"_mask"``); ``None`` infers it from the files
            (``""`` when the stems are equal).

    Raises:
        DataError: a folder is missing, or two files share a stem (``a.png`` and ``a.jpg``).
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(folder, "folder not found")

    def by_stem(files: list[Path]) -> dict[str, Path]:
        stems: dict[str, Path] = {}
        for path in sorted(files):
            if path.stem in stems:
                raise DataError(path, f"same name as {stems[path.stem].name}; cannot tell which one to use")
            stems[path.stem] = path
        return stems

    image_files, mask_files = _image_files(images_dir), _image_files(masks_dir)
    if mask_suffix is None:
        mask_suffix = _infer_mask_suffix((p.stem for p in image_files), (p.stem for p in mask_files))
    images, masks = by_stem(image_files), by_stem(mask_files)
    scan = DatasetScan("folder_pair", images_dir.parent)
    for stem in sorted(images, key=natural_key):
        mask = masks.pop(stem + mask_suffix, None)
        if mask is None:
            scan.images_without_mask.append(images[stem])
        else:
            scan.items.append({"image": str(images[stem]), "label": str(mask), "case": stem})
    scan.masks_without_image = sorted(masks.values(), key=lambda p: natural_key(p.name))
    return scan


def read_folder_pair(images_dir: PathLike, masks_dir: PathLike, mask_suffix: str | None = None) -> list[dict]:
    """Read ``images/`` + ``masks/`` folders matched by stem: ``[{"image", "label", "case"}, ...]``.

    Args:
        images_dir: folder of images.
        masks_dir: folder of masks.
        mask_suffix: what mask stems add to image stems (``"_mask"``); ``None`` infers it.

    Raises:
        DataError: when any image has no mask or any mask no image; the message lists each by name.
    """
    scan = scan_folder_pair(images_dir, masks_dir, mask_suffix)
    scan.raise_unpaired()
    return scan.items



def detect_layout(source: PathLike) -> tuple[str, Path]:
    """Which layout ``source`` is in: ``("busi" | "folder_pair" | "datalist", path to read)``.

    A folder whose only sub-folder holds one of the layouts (like ``busi/Dataset_BUSI_with_GT``) resolves
    to that sub-folder.

    Raises:
        DataError: naming ``source``, when it is none of them (the message describes the three layouts).
    """
    source = Path(source)
    if not source.exists():
        raise DataError(source, "not found")
    if source.is_file():
        if source.suffix.lower() == ".json":
            return "datalist", source
        raise DataError(source, f"not a dataset; {LAYOUTS_HELP}")
    if (source / "images").is_dir() and (source / "masks").is_dir():
        return "folder_pair", source
    if _is_busi_root(source):
        return "busi", source
    subfolders = [p for p in _entries(source) if p.is_dir() and not p.name.startswith(".")]
    if len(subfolders) == 1:
        try:
            return detect_layout(subfolders[0])
        except DataError:
            pass
    raise DataError(source, f"no dataset found; {LAYOUTS_HELP}")



def scan_dataset(source: PathLike) -> DatasetScan:
    """Pair the files of a dataset in any supported layout, without failing on unpaired files.

    For a datalist, ``items`` are the labelled items of all sections, in file order; unlabelled sections
    (the Decathlon ``"test"`` image list) are left out.
    """
    layout, path = detect_layout(source)
    if layout == "busi":
        return scan_busi(path)
    if layout == "folder_pair":
        return scan_folder_pair(path / "images", path / "masks")
    return DatasetScan("datalist", path, items=read_datalist_items(path))


def read_dataset(source: PathLike) -> list[dict]:
    """Read a dataset in any supported layout, detected from ``source``.

    Args:
        source: a BUSI folder (or the folder holding it), a folder with ``images/`` and ``masks/``, or a
            MONAI datalist JSON (the labelled items of all its sections, concatenated).

    Raises:
        DataError: naming the path, for an unrecognised layout or any image without mask or mask
            without image.
    """
    scan = scan_dataset(source)
    scan.raise_unpaired()
    return scan.items


def read_images(source: PathLike) -> list[dict]:
    """Every image of a dataset, with or without a mask, for inference: ``[{"image", ...}, ...]``.

    Args:
        source: a BUSI or images/masks folder (images without a mask included; items keep their other
            keys), a MONAI datalist (the items of all sections, labelled or not), or a flat folder of
            images, where files named like masks (``*_mask.png``, ``*_mask_1.png``) are left out.

    Raises:
        DataError: naming ``source``, when it holds no image.
    """
    source = Path(source)
    try:
        layout, path = detect_layout(source)
    except DataError:
        if not source.is_dir():
            raise
        files = [p for p in _image_files(source) if not _BUSI_MASK.match(p.stem)]
        if not files:
            raise DataError(source, f"no image files ({', '.join(IMAGE_SUFFIXES)}) found") from None
        return [{"image": str(p), "case": p.stem} for p in sorted(files, key=lambda p: natural_key(p.name))]
    if layout == "datalist":
        return read_datalist_items(path, labelled_only=False)
    scan = scan_dataset(path)
    if not scan.images_without_mask:
        return scan.items
    unpaired = [{"image": str(p), "case": p.stem} for p in scan.images_without_mask]
    if layout == "busi":
        for item in unpaired:
            item["class"] = Path(item["image"]).parent.name
    return sorted(scan.items + unpaired, key=lambda item: natural_key(item["image"]))


def dataset_items(source_or_items: PathLike | Sequence[Mapping]) -> list[Mapping]:
    """The data dicts of a dataset :func:`read_dataset` reads, or the data dicts given, as a list."""
    if isinstance(source_or_items, (str, os.PathLike)):
        return read_dataset(source_or_items)
    return list(source_or_items)


def inference_datalist(source: PathLike) -> list[dict]:
    """The data of an inference run over ``source``: ``[{"image": path}, ...]`` for every image :func:`read_images`
    finds, in its order.

    Only the image is kept: MONAI's evaluators take a ``label`` in the batch for a ground truth to move to the
    device, and a mask path there would fail the run.

    Args:
        source: any source :func:`read_images` reads (a dataset in a supported layout or a flat folder of images).

    Raises:
        DataError: naming ``source``, when it holds no image.
    """
    return [{"image": item["image"]} for item in read_images(source)]
