"""Masks in MONAI's (x, y) axis order, for tools that write them with MONAI's conventions (e.g. MONAI Label)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Resize
from monai.utils import MetaKeys

from lesionseg.utils.meta import item_meta


class ToXYMaskd(MapTransform):
    """A binary mask in lesionseg's (row, column) order to a 2-D uint8 array in MONAI's (x, y) order.

    :class:`lesionseg.data.transforms.LoadUltrasoundd` loads images as (1, H, W), rows first, while MONAI's
    ``LoadImage`` with ``PILReader`` loads PNGs as (W, H) and records ``spatial_shape`` as (W, H); tools built
    on that convention, such as MONAI Label's ``Writer`` (which transposes 2-D arrays before writing them),
    expect a prediction in that order. This transform

    - resizes each mask (1, h, w) to the source image's size (H, W) from the reference image's
      ``spatial_shape`` (nearest neighbour) when it is not already there (e.g. when ``Invertd`` was skipped),
    - drops the channel and transposes it to (W, H), as uint8 with values {0, 1} (values > 0.5 are 1),
    - records the reference image's ``spatial_shape`` as (W, H), MONAI's order, so that a later
      size restoration by that metadata (MONAI Label's ``Restored``) leaves the mask as it is.

    Args:
        keys: the mask key(s); each value (1, h, w) or (h, w).
        ref_key: key of the loaded source image (a ``MetaTensor`` with ``spatial_shape`` (H, W)).
        allow_missing_keys: don't raise when a key is absent.

    Raises:
        KeyError: ``ref_key`` is missing or carries no ``spatial_shape``.
        ValueError: a mask with more than one channel or not 2-D.

    Example:
        >>> image = MetaTensor(torch.zeros(1, 2, 3), meta={"spatial_shape": np.array([2, 3])})
        >>> mask = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
        >>> out = ToXYMaskd("pred")({"pred": mask, "image": image})
        >>> out["pred"].tolist(), out["image"].meta["spatial_shape"].tolist()
        ([[1, 0], [0, 0], [0, 1]], [3, 2])
    """

    def __init__(self, keys: KeysCollection, ref_key: str = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        ref = d.get(self.ref_key)
        meta = item_meta(d, self.ref_key)
        if MetaKeys.SPATIAL_SHAPE not in meta:
            raise KeyError(f"ToXYMaskd: '{self.ref_key}' carries no '{MetaKeys.SPATIAL_SHAPE}' in its metadata")
        height, width = (int(s) for s in np.asarray(meta[MetaKeys.SPATIAL_SHAPE]).ravel()[-2:])
        for key in self.key_iterator(d):
            mask = torch.as_tensor(d[key]).float()
            if mask.ndim == 2:
                mask = mask[None]
            if mask.ndim != 3 or mask.shape[0] != 1:
                raise ValueError(f"ToXYMaskd: '{key}' must be (1, H, W) or (H, W), got shape {tuple(mask.shape)}")
            if tuple(mask.shape[1:]) != (height, width):
                mask = Resize(spatial_size=(height, width), mode="nearest")(mask)
            mask = torch.as_tensor(mask)  # a plain tensor: the (x, y) array carries no (row, column) metadata
            d[key] = (mask[0] > 0.5).to(torch.uint8).T.contiguous()
        if isinstance(ref, MetaTensor):
            ref = ref.clone()
            ref.meta = {**ref.meta, MetaKeys.SPATIAL_SHAPE: np.array([width, height])}
            d[self.ref_key] = ref
        else:
            d[f"{self.ref_key}_meta_dict"] = {**meta, MetaKeys.SPATIAL_SHAPE: np.array([width, height])}
        return d
