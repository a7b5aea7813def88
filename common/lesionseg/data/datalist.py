"""MONAI datalists: reading and writing the Decathlon-style JSON files of ``{"image": ..., "label": ...}`` items.

A datalist is a JSON object of sections (``"training"``, ``"validation"``, ``"test"``...), each a list of data
dicts whose ``image`` and ``label`` paths are relative to the JSON's folder. Everything lesionseg reads or
writes as a datalist goes through this module:

- :func:`read_datalist` (one section), :func:`read_datalist_items` (every section), :func:`read_labelled_section`
  (a section the bundles train or validate on: not empty, every item labelled), :func:`read_datalist_entry` (an
  entry beside the sections, such as how the datalist was made);
- :func:`write_datalist` (atomically, paths made relative), :func:`keep_or_write_datalist` (keep a datalist already
  written when it lists the same images, as the folds of a cross-validation);
- :func:`read_prepared_datalist`: a datalist whose training items carry TaiChiNet's ``easy`` and ``hard`` masks
  (:mod:`lesionseg.engines.easy_hard`).

It imports only :mod:`lesionseg.data.io` (and :mod:`lesionseg.utils`), so that :mod:`lesionseg.data.readers` can
read the datalist layout.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lesionseg.data.io import DataError, PathLike, read_json
from lesionseg.utils.files import write_text_atomically

__all__ = [
    "ITEM_KEYS",
    "LABELLED_SECTIONS",
    "PART_KEYS",
    "read_datalist",
    "read_datalist_items",
    "read_datalist_entry",
    "read_labelled_section",
    "read_prepared_datalist",
    "require_labels",
    "write_datalist",
    "keep_or_write_datalist",
]

logger = logging.getLogger(__name__)

#: datalist keys of TaiChiNet's easy part E_p and hard part H_p (:mod:`lesionseg.engines.easy_hard`)
PART_KEYS = ("easy", "hard")

#: the keys of a data dict that lesionseg reads; a datalist item key that is none of them but close to one the
#: item lacks ('lable' for 'label') is a misspelling and an error, before training meets it as a KeyError
ITEM_KEYS = ("image", "label", "class", "case", "spacing", *PART_KEYS)

#: datalist sections whose every item must have a 'label' (training selects and validates on them)
LABELLED_SECTIONS = ("training", "validation")


def _load_json(path: Path) -> dict:
    content = read_json(path, "datalist file")
    if not isinstance(content, dict):
        raise DataError(path, 'a datalist is a JSON object of sections ({"training": [...], ...})')
    return content


def _resolve(value: object, base_dir: Path, where: str, path: Path) -> str | list[str]:
    if isinstance(value, str):
        return os.path.normpath(base_dir / value)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return [os.path.normpath(base_dir / v) for v in value]
    raise DataError(path, f"{where} must be a path or a list of paths, got {value!r}")


def _misspelt_keys(entry: Mapping) -> list[str]:
    # "'lable' (did you mean 'label'?)" for each key close to a known key that the entry lacks
    missing = [key for key in ITEM_KEYS if key not in entry]
    found = []
    for key in entry:
        if key in ITEM_KEYS or not isinstance(key, str):
            continue
        close = difflib.get_close_matches(key.lower(), missing, n=1, cutoff=0.75)
        if close:
            found.append(f"{key!r} (did you mean {close[0]!r}?)")
    return found


def _check_spacing(value: object, where: str, path: Path) -> None:
    numbers = value if isinstance(value, (list, tuple)) else None
    if not (
        numbers is not None
        and len(numbers) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in numbers)
    ):
        raise DataError(
            path,
            f"{where}['spacing'] must be the pixel size in mm as [row, column], two positive numbers such as "
            f"[0.1, 0.1], got {value!r}",
        )


def _section_items(content: Mapping, section: str, path: Path, base_dir: Path) -> list[dict]:
    entries = content[section]
    if not isinstance(entries, list):
        raise DataError(path, f"section {section!r} is not a list of items")
    items = []
    for index, entry in enumerate(entries):
        where = f"{section}[{index}]"
        entry = {"image": entry} if isinstance(entry, str) else entry  # Decathlon "test": bare image paths
        if isinstance(entry, dict):
            misspelt = _misspelt_keys(entry)
            if misspelt:
                raise DataError(
                    path, f"{where} has the unknown key {', '.join(misspelt)}; keys read: {list(ITEM_KEYS)}"
                )
        if not isinstance(entry, dict) or "image" not in entry:
            raise DataError(path, f"{where} has no 'image'")
        if "spacing" in entry:
            _check_spacing(entry["spacing"], where, path)
        item = dict(entry)
        for key in ("image", "label"):
            if key in item:
                item[key] = _resolve(item[key], base_dir, f"{where}[{key!r}]", path)
        items.append(item)
    return items


def read_datalist(path: PathLike, section: str = "training", base_dir: PathLike | None = None) -> list[dict]:
    """Read one section of a MONAI (Decathlon-style) datalist JSON.

    Same format and path rule as :func:`monai.data.load_decathlon_datalist` (``image`` and ``label``,
    possibly lists, are joined to ``base_dir``, by default the JSON's folder; a ``"test"`` section may list
    bare image paths), except that other values are left alone: MONAI also rewrites any value naming an
    existing path, which would turn ``"class": "benign"`` into a folder when the JSON sits beside the
    class folders.

    Args:
        path: the JSON file.
        section: which list to read.
        base_dir: folder relative paths start from; default the JSON's folder.

    Raises:
        DataError: naming the JSON, when it is missing, not valid JSON, lacks ``section`` (the message
            lists the sections it has) or has a malformed item.
    """
    path = Path(path)
    content = _load_json(path)
    if section not in content:
        sections = [k for k, v in content.items() if isinstance(v, list)]
        raise DataError(path, f"no section {section!r}; it has {sections}")
    return _section_items(content, section, path, Path(base_dir) if base_dir is not None else path.parent)


def read_datalist_entry(path: PathLike, key: str, default: object = None) -> object:
    """An entry of a datalist JSON beside its sections (``"description"``, how it was made), or ``default``.

    Raises:
        DataError: naming the JSON, when it is missing or not a JSON object.
    """
    return _load_json(Path(path)).get(key, default)


def write_datalist(
    path: PathLike,
    sections: Mapping[str, Sequence[Mapping]],
    description: str | None = None,
    metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write a MONAI datalist JSON whose ``image`` and ``label`` paths are relative to the JSON's folder.

    The file is replaced atomically: a failed write (disk full) keeps an older datalist whole.

    Args:
        path: the JSON file to write (its folder is created).
        sections: section name -> data dicts (other keys, such as ``class``, are kept).
        description: optional ``"description"`` entry.
        metadata: other entries written after the description and before the sections (how the datalist
            was made, e.g. ``{"preparation": {...}}``); readers skip entries that are not lists.

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = path.parent.resolve()

    def relative(value: str | Sequence[str]) -> str | list[str]:
        if isinstance(value, (list, tuple)):
            return [relative(v) for v in value]
        return Path(os.path.relpath(Path(value).resolve(), folder)).as_posix()

    content: dict[str, object] = {"description": description} if description else {}
    content.update(metadata or {})
    for name, items in sections.items():
        content[name] = [
            {key: relative(value) if key in ("image", "label") else value for key, value in item.items()}
            for item in items
        ]
    return write_text_atomically(path, json.dumps(content, indent=2) + "\n")  # an old datalist stays whole on failure


def _no_label(section: str, items: Sequence[Mapping]) -> str:
    index = next(i for i, item in enumerate(items) if "label" not in item)
    return (
        f"{section}[{index}] has no 'label' (its keys: {', '.join(map(str, items[index]))}); every item of a "
        f"{section!r} section needs its mask"
    )


def require_labels(path: PathLike, section: str, items: Sequence[Mapping]) -> None:
    """Raise a :class:`DataError` naming ``path`` and the first item of ``section`` without a ``'label'``."""
    if not all("label" in item for item in items):
        raise DataError(path, _no_label(section, items))


def read_datalist_items(path: PathLike, labelled_only: bool = True) -> list[dict]:
    """The items of every section of a datalist JSON, in file order.

    Args:
        path: the JSON file.
        labelled_only: leave out the sections without labels (the Decathlon ``"test"`` image list); all
            items of a section kept must then have a ``label``.

    Raises:
        DataError: naming the JSON, when it is missing or invalid, an item of a ``"training"`` or
            ``"validation"`` section has no label, a kept section is partly labelled, or no item is left.
    """
    path = Path(path)
    content = _load_json(path)
    items = []
    for section, entries in content.items():
        if not isinstance(entries, list):
            continue  # metadata such as "description"
        section_items = _section_items(content, section, path, path.parent)
        labelled = ["label" in item for item in section_items]
        if section in LABELLED_SECTIONS and section_items and not all(labelled):
            raise DataError(path, _no_label(section, section_items))
        if labelled_only and not any(labelled):
            logger.info("%s: section %r has no labels, left out", path, section)
            continue
        if labelled_only and not all(labelled):
            raise DataError(path, f"{section}[{labelled.index(False)}] has no 'label' (other items of the section do)")
        items += section_items
    if not items:
        raise DataError(
            path, 'no section of labelled items ({"image": ..., "label": ...})' if labelled_only else "no items"
        )
    return items


def read_labelled_section(path: PathLike, section: str) -> list[dict]:
    """One section of a datalist JSON that the bundles train, validate or evaluate on: not empty, all labelled.

    Raises:
        DataError: naming the JSON, when it is missing or invalid, has no such section, the section is empty
            (for ``"training"`` and ``"validation"`` the message says why a bundle needs it) or an item has no
            ``label``.
    """
    path = Path(path)
    items = read_datalist(path, section)
    if not items:
        raise DataError(
            path,
            f"section {section!r} is empty; list labelled items in it ({_EMPTY_SECTION_WHY[section]})"
            if section in _EMPTY_SECTION_WHY
            else f"section {section!r} is empty; list labelled items in it",
        )
    require_labels(path, section, items)
    return items


# why a bundle cannot do without a section
_EMPTY_SECTION_WHY = {
    "training": "there is nothing to train on",
    "validation": "training chooses the best model on it and, without it, would write no models/model.pt",
}


def read_prepared_datalist(path: PathLike, section: str = "training") -> list[dict]:
    """Read one section of an easy/hard preparation's datalist, with every path made absolute.

    Like :func:`read_datalist` (``image`` and ``label`` joined to the JSON's folder), and the ``easy`` and
    ``hard`` mask paths (:data:`PART_KEYS`) too.

    Raises:
        DataError: naming the JSON, when it is missing, invalid, lacks ``section`` or an item's ``easy`` or
            ``hard`` is not a path.
    """
    path = Path(path)
    items = read_datalist(path, section)
    for index, item in enumerate(items):
        for key in PART_KEYS:
            if key in item:
                if not isinstance(item[key], str):
                    raise DataError(path, f"{section}[{index}][{key!r}] must be a path, got {item[key]!r}")
                item[key] = os.path.normpath(path.parent / item[key])
    return items


def keep_or_write_datalist(
    path: PathLike, sections: Mapping[str, Sequence[Mapping]], description: str | None = None
) -> Path:
    """Write a datalist (:func:`write_datalist`), or keep the one already at ``path`` if it lists the same images.

    What was made from a datalist (the folds of a half-finished cross-validation) must not change under it,
    e.g. because images were added to the dataset: an existing datalist must hold the same image files in
    every section of ``sections`` (in any order), and is then left untouched.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: naming the file and the section, when an existing datalist differs from ``sections``.
        DataError: naming the file, when an existing datalist is invalid or lacks a section.
    """
    path = Path(path)
    if not path.is_file():
        return write_datalist(path, sections, description=description)
    for section, items in sections.items():
        written = sorted(os.path.abspath(item["image"]) for item in read_datalist(path, section))
        planned = sorted(os.path.abspath(item["image"]) for item in items)
        if written != planned:
            raise ValueError(
                f"{path}: its {section!r} section differs from the split of the dataset now (was the dataset or "
                "the split changed?); what was made from it would not be comparable. Use a new output folder."
            )
    return path
