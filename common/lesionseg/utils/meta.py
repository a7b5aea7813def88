"""The metadata of an item of a MONAI data dictionary, wherever MONAI keeps it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

__all__ = ["item_meta", "source_filename"]


def item_meta(data: Mapping[Hashable, Any], key: str) -> Mapping[str, Any]:
    """The metadata of ``data[key]``: a ``MetaTensor``'s ``meta``, else the ``<key>_meta_dict`` entry that
    MONAI's transforms write beside a plain array, else an empty mapping.

    Example:
        >>> import torch
        >>> from monai.data import MetaTensor
        >>> image = MetaTensor(torch.zeros(1), meta={"filename_or_obj": "a.png"})
        >>> item_meta({"image": image}, "image")["filename_or_obj"]
        'a.png'
        >>> item_meta({"image": torch.zeros(1), "image_meta_dict": {"filename_or_obj": "b.png"}}, "image")
        {'filename_or_obj': 'b.png'}
    """
    meta = getattr(data.get(key), "meta", None) or data.get(f"{key}_meta_dict") or {}
    return meta if isinstance(meta, Mapping) else {}


def source_filename(data: Mapping[Hashable, Any], key: str) -> str | None:
    """The file ``data[key]`` was read from (its ``filename_or_obj``), or ``None`` when its metadata has none."""
    filename = item_meta(data, key).get("filename_or_obj")
    return str(filename) if filename else None
