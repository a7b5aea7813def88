"""MONAI loading transforms for 2D ultrasound images and (possibly multi-file) lesion masks."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import ImageMetaKey, MetaKeys

from lesionseg.data.io import DataError, PathLike, read_image, read_mask

__all__ = ["LoadUltrasound", "LoadUltrasoundd", "ultrasound_tensor"]


def _as_path_list(value: object, what: str) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    if isinstance(value, Sequence) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
        return [os.fspath(v) for v in value]
    raise TypeError(f"{what} must be a file path or a non-empty list of file paths, got {value!r}")


def ultrasound_tensor(array: np.ndarray, filename: PathLike) -> MetaTensor:
    """A (H, W) image or mask as the channel-first ``MetaTensor`` (1, H, W) that :class:`LoadUltrasound` gives.

    For arrays read some other way (a NIfTI or DICOM slice), so that a bundle's transforms after its loader
    (``Resized``, ``ScaleIntensityd``, ``Invertd``...) treat them as they treat a loaded picture.

    Args:
        array: (H, W) values in ``(row, column)`` order.
        filename: the source file, kept as ``filename_or_obj``.
    """
    array = np.asarray(array, dtype=np.float32)
    meta = {
        ImageMetaKey.FILENAME_OR_OBJ: os.fspath(filename),
        MetaKeys.SPATIAL_SHAPE: np.asarray(array.shape),
        MetaKeys.ORIGINAL_CHANNEL_DIM: "no_channel",
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)[None]), meta=meta)


class LoadUltrasound(Transform):
    """Load a 2D ultrasound image, or a lesion mask, as a channel-first ``MetaTensor`` of shape (1, H, W).

    Images are read with :func:`lesionseg.data.io.read_image` (float32 gray levels: RGB becomes luma, 16-bit
    keeps its range); masks with :func:`lesionseg.data.io.read_mask` (float32 in {0, 1}, several files
    OR-merged). Axes are in ``(row, column)`` order, unlike ``LoadImage`` with ``PILReader``, which returns
    (W, H). The metadata follows ``LoadImage``: ``filename_or_obj`` (for a multi-file mask, the first file),
    ``spatial_shape`` (H, W), ``original_channel_dim`` ``"no_channel"`` and an identity affine, so the
    result composes with ``Resized``, ``Invertd`` and the other MONAI transforms.

    Args:
        mask: read a binary mask (a path or a list of paths) instead of an image (a path).
        max_pixels: refuse larger files (see :func:`lesionseg.data.io.load_pixels`); ``None``: the default
            limit, or ``$LESIONSEG_MAX_PIXELS``.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> folder = tempfile.mkdtemp()
        >>> Image.new("L", (5, 3), 200).save(f"{folder}/image.png")
        >>> image = LoadUltrasound()(f"{folder}/image.png")
        >>> tuple(image.shape), image.meta["spatial_shape"].tolist()
        ((1, 3, 5), [3, 5])
    """

    def __init__(self, mask: bool = False, max_pixels: int | None = None) -> None:
        self.mask = mask
        self.max_pixels = max_pixels

    def __call__(self, path: PathLike | Sequence[PathLike]) -> MetaTensor:
        if self.mask:
            paths = _as_path_list(path, "a mask")
            array = read_mask(paths, self.max_pixels).astype(np.float32)
        else:
            paths = _as_path_list(path, "an image")
            if len(paths) != 1:
                raise TypeError(f"an image is a single file, got {len(paths)} paths: {paths}")
            array = read_image(paths[0], self.max_pixels)
        return ultrasound_tensor(array, paths[0])


class LoadUltrasoundd(MapTransform):
    """Dictionary-based :class:`LoadUltrasound`: the image key loads an image, every other key a mask.

    A mask value may be a list of files (BUSI's ``_mask.png``, ``_mask_1.png``...), which are OR-merged.
    When the image and masks are loaded together, their sizes must agree.

    Args:
        keys: keys to load, e.g. ``("image", "label")``.
        image_key: the key holding the image; all other keys hold masks.
        allow_missing_keys: don't raise when a key is absent (e.g. ``label`` at inference).
        max_pixels: refuse larger files (see :class:`LoadUltrasound`).

    Raises:
        DataError: naming the file, for an unreadable file, or naming mask and image when their sizes
            differ.
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        image_key: str = "image",
        allow_missing_keys: bool = False,
        max_pixels: int | None = None,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key = image_key
        self.load_image = LoadUltrasound(mask=False, max_pixels=max_pixels)
        self.load_mask = LoadUltrasound(mask=True, max_pixels=max_pixels)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.load_image(d[key]) if key == self.image_key else self.load_mask(d[key])
        image = d.get(self.image_key)
        if self.image_key in self.keys and isinstance(image, MetaTensor):
            for key in self.key_iterator(d):
                if key != self.image_key and d[key].shape[1:] != image.shape[1:]:
                    mask_file = Path(d[key].meta[ImageMetaKey.FILENAME_OR_OBJ])
                    raise DataError(
                        mask_file,
                        f"mask has shape {tuple(d[key].shape[1:])} (H, W) but its image "
                        f"{image.meta[ImageMetaKey.FILENAME_OR_OBJ]} has {tuple(image.shape[1:])}",
                    )
        return d
