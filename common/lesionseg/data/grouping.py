"""Groups of near-duplicate images, which splits keep on one side.

Public ultrasound datasets hold repeated scans of one lesion (for BUSI, Pawłowska et al.'s 2023 letter to
Data in Brief lists duplicated and near-duplicate images); a split that puts copies of one image on both
sides overestimates accuracy. Groups are lists of case ids (an item's ``"case"``, else its image stem),
stored as ``{"groups": [["benign (207)", "benign (256)"], ...]}`` in ``near_duplicate_groups.json``, and
found for a new dataset with :func:`find_groups` (the correlation of small thumbnails).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from lesionseg.data.io import DataError, PathLike, read_image, read_json
from lesionseg.data.readers import dataset_items, detect_layout, natural_key
from lesionseg.utils.files import write_text_atomically

__all__ = [
    "GROUPS_FILENAME",
    "Groups",
    "case_id",
    "load_groups",
    "save_groups",
    "image_signature",
    "connected_components",
    "similar_groups",
    "find_groups",
    "auto_groups_file",
    "resolve_groups",
]

logger = logging.getLogger(__name__)

#: file name :func:`resolve_groups` looks for beside a dataset with ``groups="auto"``
GROUPS_FILENAME = "near_duplicate_groups.json"

Groups = Sequence[Sequence[str]]


def case_id(item: Mapping) -> str:
    """The id groups use for a data dict: its ``"case"``, else the stem of its image file."""
    return str(item["case"]) if item.get("case") is not None else Path(item["image"]).stem


def load_groups(path: PathLike) -> list[list[str]]:
    """Read groups of case ids from a ``{"groups": [[case, ...], ...]}`` JSON file.

    Raises:
        DataError: naming the file, when it is missing, not JSON or not in that format.
    """
    path = Path(path)
    content = read_json(path, "groups file")
    groups = content.get("groups") if isinstance(content, dict) else None
    if not isinstance(groups, list) or not all(
        isinstance(group, list) and all(isinstance(case, str) for case in group) for group in groups
    ):
        raise DataError(path, 'expected {"groups": [["case a", "case b"], ...]} (lists of case ids)')
    return [list(group) for group in groups]


def save_groups(path: PathLike, groups: Groups, description: str | None = None) -> Path:
    """Write groups in the format :func:`load_groups` reads; returns the path."""
    path = Path(path)
    content: dict[str, object] = {"description": description} if description else {}
    content["groups"] = [list(group) for group in groups]
    return write_text_atomically(path, json.dumps(content, indent=1) + "\n")


def image_signature(image: np.ndarray, size: int = 16) -> np.ndarray:
    """A ``size * size`` thumbnail of a 2D image, zero-mean and unit-norm, as float32.

    The dot product of two signatures is the correlation of the thumbnails: near 1 for the same scan saved
    twice, re-encoded, resized or with a caliper mark added. A constant image gives zeros.
    """
    thumbnail = np.asarray(
        Image.fromarray(np.asarray(image, dtype=np.float32)).resize((size, size), Image.Resampling.BOX),
        dtype=np.float64,
    ).ravel()
    thumbnail -= thumbnail.mean()
    norm = np.linalg.norm(thumbnail)
    return (thumbnail / norm if norm > 0 else thumbnail).astype(np.float32)
def connected_components(num_nodes: int, edges: np.ndarray) -> list[list[int]]:
    """Connected components (union-find) of ``num_nodes`` nodes linked by an ``(E, 2)`` edge array.

    Returns:
        the components as sorted node lists, in the order of their first node.
    """
    parent = list(range(num_nodes))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b in edges.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for node in range(num_nodes):
        members.setdefault(root(node), []).append(node)
    return list(members.values())


def similar_groups(signatures: np.ndarray, threshold: float = 0.96, block: int = 1024) -> list[list[int]]:
    """Groups (index lists, two or more members) of rows linked by a dot product above ``threshold``.

    Links are transitive (union-find). The pairwise products are computed ``block`` rows at a time, so
    memory stays at ``block * N`` floats.

    Args:
        signatures: (N, D) unit-norm rows, e.g. from :func:`image_signature`.
        threshold: correlation above which two rows are linked.
        block: rows per matrix product.
    """
    signatures = np.asarray(signatures, dtype=np.float32)
    num = len(signatures)
    edges = []
    for start in range(0, num, block):
        rows, cols = np.nonzero(signatures[start : start + block] @ signatures.T > threshold)
        rows += start
        edges.append(np.stack([rows[rows < cols], cols[rows < cols]], axis=1))
    edges_array = np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64)
    return [group for group in connected_components(num, edges_array) if len(group) > 1]


def find_groups(
    source_or_items: PathLike | Sequence[Mapping],
    signature_size: int = 16,
    threshold: float = 0.96,
    progress: bool | None = False,
) -> list[list[str]]:
    """Find groups of near-duplicate images by the correlation of small thumbnails.

    With the defaults this finds every group of ``near_duplicate_groups.json`` of the BUSI development
    subset (623 images, a few seconds, most of it PNG decoding); lower ``threshold`` to group more
    aggressively (a false group only costs a little split balance, a missed one leaks).

    Args:
        source_or_items: a dataset :func:`lesionseg.data.readers.read_dataset` reads, or its data dicts.
        signature_size: thumbnail side, see :func:`image_signature`.
        threshold: correlation above which two images are near-duplicates.
        progress: show a progress bar on stderr (``None``: only on a terminal).

    Returns:
        groups of case ids (see :func:`case_id`), naturally sorted.
    """
    items = dataset_items(source_or_items)
    signatures = np.zeros((len(items), signature_size * signature_size), dtype=np.float32)
    for index, item in enumerate(tqdm(items, desc="thumbnails", unit="image", disable=_tqdm_disable(progress))):
        signatures[index] = image_signature(read_image(item["image"]), signature_size)
    groups = [{case_id(items[i]) for i in group} for group in similar_groups(signatures, threshold)]
    # items sharing a case id are one case, not a group
    return sorted((sorted(g, key=natural_key) for g in groups if len(g) > 1), key=lambda g: natural_key(g[0]))


def _tqdm_disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def auto_groups_file(source: PathLike) -> Path | None:
    """The :data:`GROUPS_FILENAME` that ``groups="auto"`` reads for the dataset ``source``, or ``None``.

    Args:
        source: the dataset path; the file is looked for in its folder (a datalist's folder), then in the
            folder's parent.

    Raises:
        DataError: naming ``source``, when it is not a dataset (:func:`~lesionseg.data.readers.detect_layout`).
    """
    layout, path = detect_layout(source)
    folder = path.parent if layout == "datalist" else path
    return next((c for c in (folder / GROUPS_FILENAME, folder.parent / GROUPS_FILENAME) if c.is_file()), None)


def resolve_groups(
    groups: str | PathLike | Groups | None, source: PathLike | None = None, items: Sequence[Mapping] | None = None
) -> list[list[str]]:
    """Turn a ``groups`` argument into lists of case ids.

    Args:
        groups: ``"auto"`` (the :data:`GROUPS_FILENAME` in the dataset's folder or its parent, else none),
            ``"detect"`` (:func:`find_groups` on ``items``), ``"none"`` or ``None`` (none), a path to a
            groups JSON, or the groups themselves.
        source: the dataset path, where ``"auto"`` looks.
        items: the data dicts, for ``"detect"`` and to warn when no group matches any item.
    """
    if groups is None or groups == "none":
        return []
    if groups == "auto":
        resolved = []
        found = auto_groups_file(source) if source is not None else None
        if found is not None:
            logger.info("keeping the near-duplicate groups of %s together", found)
            resolved = load_groups(found)
    elif groups == "detect":
        if items is None:
            raise ValueError('groups="detect" needs the items')
        return find_groups(items)
    elif isinstance(groups, (str, os.PathLike)):
        resolved = load_groups(groups)
    else:
        resolved = [list(group) for group in groups]
    if resolved and items is not None:
        known = {case_id(item) for item in items}
        if not any(case in known for group in resolved for case in group):
            logger.warning("no case of the %d groups is in the dataset; check the groups file", len(resolved))
    return resolved
