"""Writing predicted masks, probability maps and overlay pictures next to the source images' names.

Every file is written whole or not at all (:func:`lesionseg.utils.files.replacing`): a full disk or a kill leaves
no truncated mask, and the error names the file.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from PIL import Image

from lesionseg.data.io import file_stem
from lesionseg.utils.files import replacing
from lesionseg.utils.meta import source_filename

logger = logging.getLogger(__name__)


def _to_2d_array(data: torch.Tensor | np.ndarray) -> np.ndarray:
    array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D map (optionally with singleton channels), got shape {data.shape}")
    return array


def _source_stem(data: Mapping[Hashable, object], source_key: str) -> str:
    filename = source_filename(data, source_key)
    if not filename:
        raise KeyError(f"cannot name the output: '{source_key}' carries no 'filename_or_obj' in its metadata")
    return file_stem(str(filename))


def save_picture(picture: np.ndarray, path: str | Path) -> Path:
    """Write an 8-bit (H, W) gray or (H, W, 3) RGB picture in the format of ``path``'s suffix; returns the path."""
    path = Path(path)
    with replacing(path) as temporary:
        Image.fromarray(np.asarray(picture)).save(temporary)
    return path


def save_mask_png(mask: np.ndarray, path: str | Path) -> Path:
    """Write a (H, W) binary mask as an 8-bit PNG with values 0 and 255; returns the path."""
    return save_picture((np.asarray(mask) > 0).astype(np.uint8) * np.uint8(255), path)


def save_probability_png(probability: np.ndarray, path: str | Path) -> Path:
    """Write a (H, W) probability map in [0, 1] as a 16-bit grayscale PNG (0 to 65535); returns the path.

    ``value / 65535`` gives the probability back to within 1 / 131070.
    """
    path = Path(path)
    scaled = np.round(np.clip(np.asarray(probability, dtype=np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)
    with replacing(path) as temporary:
        Image.fromarray(scaled).save(temporary)
    return path


def save_nifti_like(voxels: np.ndarray, affine: np.ndarray, path: str | Path, header: object | None = None) -> Path:
    """Write voxels as NIfTI-1 with the given affine (qform and sform), e.g. a mask in its source's geometry.

    Args:
        voxels: the array, in the source's voxel layout (see :func:`lesionseg.data.io.to_voxels`);
            its dtype is kept (uint8 for masks, float32 for probabilities).
        affine: (4, 4) voxel-to-world matrix.
        path: ``.nii`` or ``.nii.gz`` file.
        header: the source's NIfTI-1 header, whose units, description and orientation codes are kept.
    """
    import nibabel as nib

    path = Path(path)
    voxels = np.asarray(voxels)
    header = header.copy() if isinstance(header, nib.Nifti1Header) else None
    image = nib.Nifti1Image(voxels, np.asarray(affine, dtype=np.float64), header=header)
    image.set_data_dtype(voxels.dtype)
    image.header.set_slope_inter(1.0, 0.0)
    qform_code = int(header["qform_code"]) if header is not None else 0
    sform_code = int(header["sform_code"]) if header is not None else 0
    image.set_qform(affine, code=qform_code or 1)
    image.set_sform(affine, code=sform_code or 1)
    with replacing(path) as temporary:
        nib.save(image, str(temporary))
    return path


def overlay_contours(image: np.ndarray, contours: Mapping[str, np.ndarray], thickness: int = 1) -> np.ndarray:
    """Draw mask outlines over a grayscale image.

    Args:
        image: (H, W) grayscale image, any range (min-max scaled for display).
        contours: colour name or ``#rrggbb`` -> (H, W) binary mask whose outline is drawn in that colour, in
            order, so later outlines cover earlier ones. The outline is the mask's pixels within ``thickness``
            4-connected steps of the background, the image's outside counting as background (so a lesion
            touching the edge is outlined there too); with ``thickness=1`` the pixels with a 4-connected
            background neighbour.
        thickness: outline width in pixels (e.g. 3 for a 600-pixel image, to be seen at a glance).

    Returns:
        (H, W, 3) uint8 RGB picture.
    """
    from matplotlib.colors import to_rgb
    from scipy.ndimage import binary_erosion, generate_binary_structure

    if thickness < 1:
        raise ValueError(f"thickness must be at least 1 pixel, got {thickness}")
    image = np.asarray(image, dtype=np.float32)
    span = float(image.max() - image.min())
    gray = ((image - image.min()) / span * 255.0) if span > 0 else np.zeros_like(image)
    rgb = np.repeat(gray.astype(np.uint8)[..., None], 3, axis=-1)
    cross = generate_binary_structure(2, 1)
    for colour, mask in contours.items():
        mask = np.asarray(mask) > 0
        outline = mask & ~binary_erosion(mask, structure=cross, iterations=thickness, border_value=0)
        rgb[outline] = np.round(np.array(to_rgb(colour)) * 255).astype(np.uint8)
    return rgb


class SaveMaskd(MapTransform):
    """Save a binary prediction as ``<output_dir>/<source stem><postfix>.png`` (values 0 and 255).

    The map is written in the (row, column) order of :class:`lesionseg.data.transforms.LoadUltrasoundd`, so
    a prediction inverted to the source size (``Invertd``) overlays its image exactly. With
    ``overlay=True`` it also writes ``<stem>_overlay.png``: the source image with the predicted outline in
    yellow and, when ``label_key`` is present, the ground-truth outline in green.

    It never writes among its inputs: an ``output_dir`` that is the folder of the source image (or of its
    label) is refused, since ``<stem>_mask.png`` there is BUSI's ground truth for ``<stem>.png``. Nor does
    it write one file for two sources: a second source with the stem of an earlier one (``a.jpg`` after
    ``a.png``, or ``a.png`` of another folder) is written as ``a_2_mask.png`` (``_3``...), with a warning that
    names both, instead of replacing the first's mask.

    Args:
        keys: the prediction key (one key).
        output_dir: folder to write into (created when missing).
        source_key: key of the source image whose metadata names the output.
        postfix: appended to the source stem.
        overlay: also write the overlay picture.
        label_key: ground truth to outline on the overlay, if present in the data.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str | Path,
        source_key: str = "image",
        postfix: str = "_mask",
        overlay: bool = False,
        label_key: str = "label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_dir = Path(output_dir)
        self.source_key = source_key
        self.postfix = postfix
        self.overlay = overlay
        self.label_key = label_key
        self._sources: dict[str, str] = {}  # output stem -> the source it was written for

    def _check_not_among_inputs(self, data: Mapping[Hashable, object]) -> None:
        output_dir = self.output_dir.resolve()
        for key in (self.source_key, self.label_key):
            filename = source_filename(data, key)
            if filename and Path(filename).resolve().parent == output_dir:
                raise ValueError(
                    f"{self.output_dir}: the output folder holds the input {filename}; the predicted masks "
                    "(<name>_mask.png) would be written among the inputs and could replace their ground truth: "
                    "choose another output_dir"
                )

    def _output_stem(self, data: Mapping[Hashable, object]) -> str:
        # the source's stem, or <stem>_2, _3... when another source of this run has that stem
        stem = _source_stem(data, self.source_key)
        source = str(Path(str(source_filename(data, self.source_key))).resolve())  # ./a.png and a.png: one source
        name, number = stem, 1
        while self._sources.get(name, source) != source:
            number += 1
            name = f"{stem}_{number}"
        if name not in self._sources:  # the first time this source is written
            self._sources[name] = source
            if name != stem:
                logger.warning(
                    "%s: the outputs %s%s.png and %s_overlay.png are %s's, so this image's are %s%s.png and "
                    "%s_overlay.png", source, stem, self.postfix, stem, self._sources[stem], name, self.postfix, name,
                )  # fmt: skip
        return name

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        self._check_not_among_inputs(d)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        stem = self._output_stem(d)
        for key in self.key_iterator(d):
            mask = _to_2d_array(d[key]) > 0.5
            save_mask_png(mask, self.output_dir / f"{stem}{self.postfix}.png")
            if self.overlay:
                contours = {"yellow": mask}
                if d.get(self.label_key) is not None:
                    contours = {"lime": _to_2d_array(d[self.label_key]), **contours}
                picture = overlay_contours(_to_2d_array(d[self.source_key]), contours)
                save_picture(picture, self.output_dir / f"{stem}_overlay.png")
        return d
