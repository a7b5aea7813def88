"""Reading 2D ultrasound images and lesion masks from PNG, JPEG, BMP or TIFF files.

Arrays come back in natural ``(row, column)`` order, the order of ``numpy.asarray(PIL.Image.open(path))``
(MONAI's ``PILReader`` returns the transpose). Every failure is a :class:`DataError` whose message starts
with the offending file, so a bad file in a dataset of hundreds is found at once.

2D NIfTI files (``.nii``, ``.nii.gz``, e.g. listed in a datalist) are read too: their first axis is the
image's width, as MONAI's ``NibabelReader`` and ``PILReader`` agree, so a PNG saved as NIfTI by MONAI reads
back as the PNG. Float pixels (32-bit TIFF, NIfTI) must be finite: NaN or infinity is refused.

Memory stays bounded: an image of more than :data:`MAX_PIXELS` pixels (25 million, e.g. 5000 x 5000: 100 MB
as float32, 80 times a BUSI image) is refused from its header, before it is decoded. Raise the limit with
the ``max_pixels`` argument or, for bundles and the command line, the environment variable
``LESIONSEG_MAX_PIXELS``.

These rules hold for every reader of the project: :mod:`lesionseg.data.volumes` (multi-slice NIfTI and
DICOM, for ``lesionseg predict``) reads NIfTI with :func:`read_nifti` and checks files, sizes and values
with :func:`check_file`, :func:`check_size` and :func:`check_finite`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = [
    "DataError",
    "MAX_PIXELS",
    "NIFTI_SUFFIXES",
    "check_file",
    "check_finite",
    "check_size",
    "max_pixels_limit",
    "load_pixels",
    "read_nifti",
    "to_grayscale",
    "to_foreground",
    "read_image",
    "read_mask",
    "read_json",
]

PathLike = str | os.PathLike

#: ITU-R BT.601 luma weights, the ones ``PIL.Image.convert("L")`` uses
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: default largest image, in pixels, read before refusing (see the module docstring)
MAX_PIXELS = 25_000_000
#: environment variable that overrides :data:`MAX_PIXELS`
MAX_PIXELS_VARIABLE = "LESIONSEG_MAX_PIXELS"
#: file suffixes read with nibabel instead of PIL (lower case)
NIFTI_SUFFIXES = (".nii", ".nii.gz")

# PIL modes read as they are; palette images are expanded to their colours first
_SINGLE_CHANNEL_MODES = {"1", "L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"}
_MULTI_CHANNEL_MODES = {"LA", "RGB", "RGBA"}
_PALETTE_MODES = {"P", "PA"}


class DataError(ValueError):
    """A data file that cannot be used; the message reads ``"<path>: <problem>"``.

    Args:
        path: the offending file (or folder); or, with ``problem`` left out, the whole message
            ``"<path>: <problem>"``.
        problem: what is wrong with it.
    """

    def __init__(self, path: PathLike, problem: str | None = None) -> None:
        if problem is None:
            path, _, problem = str(path).partition(": ")
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # keeps the (path, problem) signature when the error crosses a DataLoader worker boundary
        return type(self), (self.path, self.problem)


def read_json(path: PathLike, what: str = "file") -> object:
    """Parse a JSON file; a missing, undecodable or invalid file is a :class:`DataError` naming it.

    Args:
        path: the file.
        what: what the file is, for the message (e.g. ``"datalist file"``).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, f"{what} not found")
    try:
        with open(path) as file:
            return json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, f"not valid JSON ({error})") from error


def max_pixels_limit(max_pixels: int | None = None) -> int:
    """The pixel limit in force: ``max_pixels`` if given, else ``$LESIONSEG_MAX_PIXELS``, else :data:`MAX_PIXELS`.

    Raises:
        ValueError: the environment variable is set but not a positive integer (the message names it).
    """
    if max_pixels is not None:
        return int(max_pixels)
    value = os.environ.get(MAX_PIXELS_VARIABLE)
    if value is None or value.strip() == "":
        return MAX_PIXELS
    try:
        limit = int(value.replace("_", ""))
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"{MAX_PIXELS_VARIABLE}={value!r}: must be a positive whole number of pixels")
    return limit


def check_file(path: PathLike) -> Path:
    """The checks made before any file is opened: it exists, is a file, is not empty and can be read.

    Raises:
        DataError: naming ``path`` and the problem.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes); copy or export it again")
    if not os.access(path, os.R_OK):
        raise DataError(path, "cannot read the file (permission denied); check its permissions (chmod +r)")
    return path


def check_size(path: PathLike, shape: Sequence[int], max_pixels: int | None = None) -> None:
    """Refuse an image (or volume) of ``shape`` with more pixels (voxels) than the limit, from its header.

    Args:
        path: the file, named in the message.
        shape: the sizes its header gives, e.g. ``(H, W)`` or ``(x, y, z)``.
        max_pixels: the limit; ``None``: :func:`max_pixels_limit`.

    Raises:
        DataError: naming ``path``, the size and how to raise the limit.
    """
    _check_size(Path(path), shape, max_pixels_limit(max_pixels))


def check_finite(path: PathLike, pixels: np.ndarray) -> None:
    """Refuse float pixels that hold NaN or infinity (integer pixels always pass).

    Raises:
        DataError: naming ``path`` and how many values are NaN and infinite.
    """
    _check_finite(Path(path), np.asarray(pixels))


def _check_size(path: Path, shape: Sequence[int], limit: int) -> None:
    pixels = math.prod(int(n) for n in shape)
    if pixels > limit:
        size = " x ".join(str(int(n)) for n in shape)
        raise DataError(
            path,
            f"image is {size} = {pixels:,} pixels, more than the limit of {limit:,} that keeps memory bounded; "
            f"downscale it, or raise the limit (environment variable {MAX_PIXELS_VARIABLE}={pixels})",
        )


def _check_finite(path: Path, pixels: np.ndarray) -> None:
    if pixels.dtype.kind != "f":
        return
    finite = np.isfinite(pixels)
    if not finite.all():
        nan = int(np.isnan(pixels).sum())
        infinite = int(pixels.size - finite.sum()) - nan
        raise DataError(
            path,
            f"holds {nan} NaN and {infinite} infinite pixel value(s); every pixel must be a finite number: "
            "replace them (e.g. numpy.nan_to_num) and save the image again",
        )


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)


def read_nifti(path: PathLike, max_pixels: int | None = None) -> tuple[np.ndarray, object]:
    """Read a NIfTI file's voxels, with the rules of every reader of the project.

    The shape is checked against the pixel limit from the header, before any voxel is read (a small
    ``.nii.gz`` may declare 8000 x 8000 voxels); values are scaled by the header's slope and intercept
    (as nibabel does), then must be finite.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        max_pixels: the limit on the number of voxels; ``None``: :func:`max_pixels_limit`.

    Returns:
        ``(voxels, image)``: the voxels in the file's ``(x, y[, z, ...])`` layout, float32 for float data,
        uint8 for bool, else their integer type; colour voxels (RGB24, RGBA32) with a last axis of 3 colour
        channels. ``image`` is the nibabel image (header, affine).

    Raises:
        DataError: naming ``path``: missing, empty, unreadable, truncated or corrupt, more voxels than the
            limit, an unsupported data type, or NaN or infinite values.
    """
    import nibabel

    path = check_file(path)
    limit = max_pixels_limit(max_pixels)
    try:
        image = nibabel.load(path)
        # the header's shape, before the data is read
        _check_size(path, image.shape, limit)
        data = np.asanyarray(image.dataobj)
    except DataError:
        raise
    except Exception as error:  # nibabel and gzip fail with ImageFileError, EOFError, OSError, zlib.error...
        raise DataError(
            path, f"truncated or corrupt NIfTI file ({type(error).__name__}: {error}); copy or export it again"
        ) from error
    data = np.asarray(data)
    if data.dtype.names:  # RGB24 / RGBA32 voxels: a structured dtype with R, G, B(, A) fields
        data = np.stack([data[name] for name in data.dtype.names[:3]], axis=-1)
    if data.dtype.kind == "f" and data.dtype != np.float32:
        data = data.astype(np.float32)
    elif data.dtype.kind == "b":
        data = data.astype(np.uint8)
    elif data.dtype.kind not in "uif":
        raise DataError(path, f"unsupported NIfTI data type {data.dtype}; expected integer or float pixels")
    _check_finite(path, data)
    return data, image


def _load_nifti(path: Path, limit: int) -> np.ndarray:
    """A 2D NIfTI image as ``(H, W)`` (or ``(H, W, 3)`` for colour voxels)."""
    data, image = read_nifti(path, limit)
    shape = tuple(int(n) for n in image.shape)
    squeezed = tuple(n for n in shape if n != 1) or (1, 1)
    if len(squeezed) > 2:
        raise DataError(path, f"NIfTI volume of shape {shape}; expected a 2D image (H x W, or W x H x 1)")
    if len(squeezed) == 2:
        plane = squeezed
    else:  # one row or column, or a single pixel: keep which axis it lies along
        plane = (squeezed[0], 1) if shape[0] != 1 else (1, squeezed[0] if squeezed else 1)
    channels = data.shape[len(shape) :]
    data = data.reshape(plane + channels)
    # NIfTI's first axis is x (the width), as MONAI reads it: (W, H) -> (H, W)
    return np.ascontiguousarray(np.swapaxes(data, 0, 1))


def load_pixels(path: PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Fully decode one image file and return its pixel values unchanged.

    The result is ``(H, W)`` for single-channel files (1-bit as 0/255 uint8, 8-bit uint8, 16-bit uint16,
    32-bit int32 or float32) and ``(H, W, C)`` for gray+alpha (C=2), RGB (C=3) and RGBA (C=4). Palette
    images are expanded to the colours of their palette (RGB, or RGBA when the palette has transparency).
    A 2D NIfTI file (``.nii``, ``.nii.gz``, see :func:`read_nifti`) gives ``(H, W)`` in its own integer type
    or float32, or ``(H, W, 3)`` for colour voxels.

    Args:
        path: PNG, JPEG, BMP or TIFF file (anything PIL decodes), or a 2D NIfTI file.
        max_pixels: refuse images with more pixels than this; ``None``: :func:`max_pixels_limit`.

    Raises:
        DataError: the file is missing, a folder, unreadable (permissions), empty (0 bytes), not an image,
            truncated or corrupt (the whole file is decoded, not just its header), holds several frames (or
            is a 3D volume), has more than ``max_pixels`` pixels, holds NaN or infinite values, or has a
            pixel format other than those above (e.g. CMYK).
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)
    check_file(path)
    if _is_nifti(path):
        return _load_nifti(path, limit)
    try:
        with warnings.catch_warnings():
            # the pixel limit below replaces PIL's decompression-bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image_file = Image.open(path)
        with image_file as image:
            _check_size(path, (image.height, image.width), limit)
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise DataError(path, f"holds {frames} frames, expected a single 2D image")
            image.load()
            if image.mode in _PALETTE_MODES:
                transparent = image.mode == "PA" or "transparency" in image.info
                image = image.convert("RGBA" if transparent else "RGB")
            mode = image.mode
            if mode not in _SINGLE_CHANNEL_MODES | _MULTI_CHANNEL_MODES:
                raise DataError(
                    path,
                    f"unsupported pixel format {mode!r}; expected grayscale (8 or 16 bit), 1-bit, "
                    "gray+alpha, palette, RGB or RGBA: convert it (e.g. to 8-bit grayscale PNG)",
                )
            pixels = np.asarray(image)
    except DataError:
        raise
    except Image.DecompressionBombError as error:
        # beyond PIL's own hard limit (2 x Image.MAX_IMAGE_PIXELS), which no setting here lifts
        raise DataError(path, f"image too large to read safely ({error}); downscale it") from error
    except PermissionError as error:
        raise DataError(path, "cannot read the file (permission denied); check its permissions (chmod +r)") from error
    except Image.UnidentifiedImageError as error:
        raise DataError(
            path,
            "not an image PIL can read (expected PNG, JPEG, BMP or TIFF, or NIfTI .nii/.nii.gz); "
            "convert it to PNG (DICOM: e.g. with pydicom or dcm2niix)",
        ) from error
    except Exception as error:  # PIL's decoders fail with OSError, SyntaxError, struct.error, zlib.error...
        raise DataError(
            path, f"truncated or corrupt image ({type(error).__name__}: {error}); copy or export it again"
        ) from error
    if mode == "1":
        # 1-bit pixels as 0/255, the values PIL.Image.convert("L") gives them
        pixels = pixels.astype(np.uint8) * np.uint8(255)
    _check_finite(path, pixels)
    return pixels


def to_grayscale(pixels: np.ndarray) -> np.ndarray:
    """Gray levels of decoded pixels (see :func:`load_pixels`) as float32 ``(H, W)``.

    Single-channel values are kept as they are (16-bit stays 0-65535), the alpha channel is dropped,
    and colour becomes luma with :data:`LUMA_WEIGHTS`.
    """
    if pixels.ndim == 2:
        return pixels.astype(np.float32)
    if pixels.shape[-1] <= 2:
        return pixels[..., 0].astype(np.float32)
    # float64 sum, so gray pixels (R == G == B) come back exactly
    return (pixels[..., :3].astype(np.float64) @ np.asarray(LUMA_WEIGHTS)).astype(np.float32)


def to_foreground(pixels: np.ndarray) -> np.ndarray:
    """Foreground of decoded mask pixels (see :func:`load_pixels`) as a bool ``(H, W)`` array.

    A pixel is foreground where its value is non-zero; for colour, where any of R, G, B is non-zero. With
    an alpha channel (gray+alpha, RGBA) a fully transparent pixel is background whatever its colour, since
    nothing was painted there.
    """
    if pixels.ndim == 2:
        return pixels > 0
    colour_channels = 1 if pixels.shape[-1] <= 2 else 3
    foreground = (pixels[..., :colour_channels] > 0).any(axis=-1)
    if pixels.shape[-1] in (2, 4):
        foreground &= pixels[..., -1] > 0
    return foreground


def read_image(path: PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read an ultrasound image as float32 ``(H, W)`` gray levels in ``(row, column)`` order.

    8- and 16-bit grayscale keep their values; RGB (e.g. images carrying coloured annotations) becomes
    luma; RGBA and gray+alpha drop the alpha channel first; palette images use their palette colours;
    1-bit images read as 0 and 255.

    Args:
        path: PNG, JPEG, BMP or TIFF file, or a 2D NIfTI file.
        max_pixels: the size limit of :func:`load_pixels`.

    Raises:
        DataError: naming ``path``, for any file :func:`load_pixels` refuses.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> folder = tempfile.mkdtemp()
        >>> Image.new("RGB", (5, 3), (10, 10, 10)).save(f"{folder}/image.png")
        >>> image = read_image(f"{folder}/image.png")
        >>> image.shape, image.dtype, float(image.max())
        ((3, 5), dtype('float32'), 10.0)
    """
    return to_grayscale(load_pixels(path, max_pixels))


def read_mask(paths: PathLike | Sequence[PathLike], max_pixels: int | None = None) -> np.ndarray:
    """Read a lesion mask as uint8 ``(H, W)`` in {0, 1}, the union of one or more mask files.

    Each file is binarised with :func:`to_foreground` (non-zero is lesion; any non-zero colour channel
    counts; fully transparent pixels do not), then the files are OR-merged, as BUSI stores a case with
    several lesions as ``_mask.png``, ``_mask_1.png``, ...

    Args:
        paths: one mask file or a sequence of mask files of one case.
        max_pixels: the size limit of :func:`load_pixels`.

    Raises:
        DataError: naming the file, for any file :func:`load_pixels` refuses, or when the files
            differ in size (the message names both).
        ValueError: ``paths`` is an empty sequence.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if len(paths) == 0:
        raise ValueError("read_mask needs at least one mask file, got an empty sequence")
    merged = None
    for path in paths:
        foreground = to_foreground(load_pixels(path, max_pixels))
        if merged is None:
            merged, first = foreground, path
        elif foreground.shape != merged.shape:
            raise DataError(
                path, f"mask has shape {foreground.shape} (H, W) but mask {first} of the same case has {merged.shape}"
            )
        else:
            merged |= foreground
    return merged.astype(np.uint8)
