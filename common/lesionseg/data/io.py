"""Reading ultrasound images and lesion masks: one reader per format, one set of checks.

Formats and readers:

- 2D pictures (PNG, JPEG, BMP, TIFF; :data:`PICTURE_SUFFIXES`), read with PIL by :func:`load_pixels`;
- NIfTI (``.nii``, ``.nii.gz``; :data:`NIFTI_SUFFIXES`), read with nibabel by :func:`read_nifti`, for 2D
  training images (through :func:`load_pixels`) and volumes (through :func:`read_stack`) alike;
- DICOM (``.dcm``, ``.dicom`` or any file with the ``DICM`` preamble; :data:`DICOM_SUFFIXES`), read with
  pydicom, or with ITK when pydicom is not installed, by :func:`read_stack` (for ``lesionseg predict``).

:func:`read_image` and :func:`read_mask` give one 2D image or mask (training, evaluation, the bundles'
loaders); :func:`read_stack` and :func:`read_mask_stack` give any file as a stack of 2D slices with the
geometry needed to write results back (``lesionseg predict``).

Every reader applies the same checks, and every failure is a :class:`DataError` whose message starts with the
offending file, so a bad file in a dataset of hundreds is found at once:

- the file is checked before it is opened (:func:`check_file`: exists, not a folder, not empty, readable);
- memory stays bounded: an image of more than :data:`MAX_PIXELS` pixels (25 million, e.g. 5000 x 5000:
  100 MB as float32, 80 times a BUSI image; for a volume, all its voxels) is refused from its header, before
  it is decoded (:func:`check_size`). Raise the limit with the ``max_pixels`` argument or, for bundles and
  the command line, the environment variable ``LESIONSEG_MAX_PIXELS``;
- float pixels (32-bit TIFF, NIfTI, DICOM after its rescaling) must be finite: NaN or infinity is refused
  (:func:`check_finite`).

Orientation. Arrays come back in natural ``(row, column)`` order, the order of
``numpy.asarray(PIL.Image.open(path))`` (MONAI's ``PILReader`` returns the transpose). A DICOM frame is read
as it is stored (rows down, columns across). NIfTI stores voxels as ``(x, y, z)`` with ``x`` running fastest,
the layout ITK and most converters give a picture (``x`` along its columns), as MONAI's ``NibabelReader`` and
``PILReader`` agree: a PNG saved as NIfTI by MONAI reads back as the PNG, and slice ``k`` of a volume is
``volume[:, :, k].T``. :func:`to_voxels` is the exact inverse of that mapping, so a mask written with
:func:`lesionseg.data.writers.save_nifti_like` has the source's shape and affine voxel for voxel. DICOM
results are written as NIfTI in the same ``(x, y, frame)`` layout, with an affine from the DICOM geometry
(see :func:`dicom_affine`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
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
    "DICOM_SUFFIXES",
    "PICTURE_SUFFIXES",
    "ImageStack",
    "dicom_affine",
    "file_kind",
    "file_stem",
    "read_mask_stack",
    "read_stack",
    "to_voxels",
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
#: 2D picture formats, read with PIL by :func:`load_pixels` (lower case)
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: DICOM files, read with pydicom (or ITK) by :func:`read_stack`; a file with the ``DICM`` preamble is one too
DICOM_SUFFIXES = (".dcm", ".dicom")

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

    def __init__(self, path: PathLike, problem: str | None = None) -> None:  # noqa: B042 (__reduce__ pickles it)
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


# stacks of 2D slices: any format, with the geometry to write results back (lesionseg predict)

#: LPS (DICOM, ITK) to RAS (NIfTI) world coordinates
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class ImageStack:
    """The slices of one image file and the geometry of its source.

    Attributes:
        path: the source file.
        kind: ``"picture"`` (PNG, JPEG, BMP, TIFF), ``"nifti"`` or ``"dicom"``.
        slices: float32 ``(N, H, W)`` gray levels in ``(row, column)`` order, values as stored (colour
            becomes luma, DICOM's rescale slope/intercept applied, MONOCHROME1 inverted).
        affine: ``(4, 4)`` voxel-to-world (RAS, mm) matrix of the ``(x, y, z)`` voxel layout; ``None`` for
            pictures.
        voxel_shape: shape of the source's voxel array (NIfTI: as stored, e.g. ``(W, H)``, ``(W, H, 1)`` or
            ``(W, H, N)``; DICOM: ``(W, H)`` or ``(W, H, N)``); ``None`` for pictures.
        spacing: pixel size in mm as ``(row, column)``, when the file says.
        header: the source's NIfTI header (copied into written masks), else ``None``.
    """

    path: Path
    kind: str
    slices: np.ndarray
    affine: np.ndarray | None = None
    voxel_shape: tuple[int, ...] | None = None
    spacing: tuple[float, float] | None = None
    header: object | None = None


def file_stem(path: PathLike) -> str:
    """The file name without its format suffix (both parts of ``.nii.gz``)."""
    name = Path(path).name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")]
    return Path(name).stem


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            file.seek(128)
            return file.read(4) == b"DICM"
    except OSError:
        return False


def file_kind(path: PathLike) -> str | None:
    """``"picture"``, ``"nifti"`` or ``"dicom"`` by the file's suffix, or by its ``DICM`` preamble when it has
    no known suffix; ``None`` when it is none of them."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(PICTURE_SUFFIXES):
        return "picture"
    if path.is_file() and _has_dicom_preamble(path):
        return "dicom"
    return None


def read_stack(path: PathLike, max_pixels: int | None = None) -> ImageStack:
    """Read an image file of any supported format as an :class:`ImageStack`.

    Args:
        path: a PNG, JPEG, BMP, TIFF, NIfTI or DICOM file.
        max_pixels: refuse files with more pixels (all slices together) than this, from their header;
            ``None``: :func:`max_pixels_limit`.

    Raises:
        DataError: naming ``path``: missing, empty, unreadable, truncated or corrupt file, an unknown format,
            more pixels than the limit, NaN or infinite values, more than three non-singleton dimensions, or
            DICOM without pydicom or ITK installed.
    """
    path = check_file(path)
    limit = max_pixels_limit(max_pixels)
    kind = file_kind(path)
    if kind == "picture":
        stack = ImageStack(path, kind, to_grayscale(load_pixels(path, limit))[None])
    elif kind == "nifti":
        stack = _read_nifti(path, limit)
    elif kind == "dicom":
        stack = _read_dicom(path, limit)
    else:
        raise DataError(
            path,
            "unknown image format; expected "
            + ", ".join(PICTURE_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES)
            + " (or a DICOM file with the DICM preamble)",
        )
    # after colour conversion and DICOM's rescaling too (a huge RescaleSlope overflows float32)
    check_finite(path, stack.slices)
    return stack


def read_mask_stack(path: PathLike | list[PathLike]) -> np.ndarray:
    """Read a lesion mask of any supported format as bool ``(N, H, W)``, oriented like :func:`read_stack`.

    Pictures follow :func:`read_mask` (non-zero is lesion, several files OR-merged);
    NIfTI and DICOM masks are non-zero where the lesion is.

    Raises:
        DataError: naming the file, as :func:`read_stack` and :func:`read_mask`.
    """
    paths = [Path(path)] if isinstance(path, (str, os.PathLike)) else [Path(p) for p in path]
    if all(file_kind(p) == "picture" for p in paths):
        return read_mask(paths).astype(bool)[None]
    if len(paths) != 1:
        raise DataError(paths[0], "several mask files are merged only for pictures (PNG, JPEG, BMP, TIFF)")
    return read_stack(paths[0]).slices > 0


def to_voxels(stack: ImageStack, slices: np.ndarray) -> np.ndarray:
    """Arrange ``(N, H, W)`` slices (e.g. masks of ``stack.slices``) in the source's voxel layout.

    The inverse of the slicing of :func:`read_stack`: ``to_voxels(stack, stack.slices)`` is the source's
    voxel array. Only for NIfTI and DICOM stacks.
    """
    if stack.voxel_shape is None:
        raise ValueError(f"{stack.path}: a {stack.kind} has no voxel layout")
    slices = np.asarray(slices)
    if slices.shape != stack.slices.shape:
        raise ValueError(f"expected slices of shape {stack.slices.shape}, got {slices.shape}")
    return np.ascontiguousarray(slices.transpose(2, 1, 0)).reshape(stack.voxel_shape)


def _volume_slices(path: Path, volume: np.ndarray) -> np.ndarray:
    """(x, y[, z, 1, ...]) voxels as (z, row=y, column=x) slices."""
    shape = volume.shape
    if volume.ndim < 2 or any(size != 1 for size in shape[3:]):
        raise DataError(path, f"holds an array of shape {shape}; expected 2D (x, y) or a stack of slices (x, y, z)")
    volume = volume.reshape(shape[0], shape[1], -1)
    return np.ascontiguousarray(volume.transpose(2, 1, 0))


def _read_nifti(path: Path, limit: int | None = None) -> ImageStack:
    import nibabel as nib

    volume, image = read_nifti(path, limit)
    if image.get_data_dtype().names:  # colour voxels: a last axis of R, G, B
        volume = to_grayscale(volume.reshape(-1, 1, volume.shape[-1])).reshape(volume.shape[:-1])
    slices = _volume_slices(path, volume).astype(np.float32)
    zooms = tuple(float(z) for z in image.header.get_zooms()[:2])
    spacing = (zooms[1], zooms[0]) if len(zooms) == 2 else None
    header = image.header if isinstance(image, nib.Nifti1Image) else None
    return ImageStack(path, "nifti", slices, np.asarray(image.affine, dtype=np.float64), volume.shape, spacing, header)


def dicom_affine(
    orientation: tuple[float, ...] | None,
    position: tuple[float, float, float] | None,
    spacing: tuple[float, float],
    slice_spacing: float = 1.0,
) -> np.ndarray:
    """The RAS voxel-to-world affine of a DICOM image in the ``(x=column, y=row, z=frame)`` voxel layout.

    DICOM gives the patient-space (LPS) position of pixel (row r, column c) as
    ``position + c * spacing_col * row_cosine + r * spacing_row * column_cosine``; NIfTI's RAS flips the
    first two world axes. Without orientation or position (most ultrasound files) the affine is the
    diagonal of the spacings, with no patient frame.

    Args:
        orientation: ImageOrientationPatient (0020,0037): the row and column direction cosines (6 values).
        position: ImagePositionPatient (0020,0032): world position of the first pixel's centre.
        spacing: PixelSpacing (0028,0030) as (row spacing, column spacing), mm.
        slice_spacing: distance between frames along the slice normal, mm.
    """
    row_spacing, col_spacing = (float(s) for s in spacing)
    if orientation is None or position is None:
        return np.diag([col_spacing, row_spacing, float(slice_spacing), 1.0])
    row_cosine = np.asarray(orientation[:3], dtype=np.float64)
    col_cosine = np.asarray(orientation[3:6], dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0] = row_cosine * col_spacing
    lps[:3, 1] = col_cosine * row_spacing
    lps[:3, 2] = np.cross(row_cosine, col_cosine) * float(slice_spacing)
    lps[:3, 3] = np.asarray(position, dtype=np.float64)
    return _LPS_TO_RAS @ lps


def _dicom_spacing(dataset) -> tuple[tuple[float, float] | None, float]:
    """(row, column) pixel spacing in mm (PixelSpacing, else the first ultrasound region's physical deltas in
    cm), and the frame spacing."""
    spacing = None
    if "PixelSpacing" in dataset:
        spacing = tuple(float(s) for s in dataset.PixelSpacing)
    elif "SequenceOfUltrasoundRegions" in dataset and len(dataset.SequenceOfUltrasoundRegions):
        region = dataset.SequenceOfUltrasoundRegions[0]
        # PhysicalUnitsX/YDirection 3 is cm
        if (
            getattr(region, "PhysicalUnitsXDirection", None) == 3
            and getattr(region, "PhysicalUnitsYDirection", None) == 3
        ):
            spacing = (abs(float(region.PhysicalDeltaY)) * 10.0, abs(float(region.PhysicalDeltaX)) * 10.0)
    slice_spacing = 1.0
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = getattr(dataset, keyword, None)
        if value:
            slice_spacing = float(value)
            break
    return spacing, slice_spacing


def _read_dicom(path: Path, limit: int | None = None) -> ImageStack:
    try:
        import pydicom
    except ImportError:
        return _read_with_itk(path, limit)
    try:
        # the header alone first: its size is checked before the pixel data is read or decoded
        header = pydicom.dcmread(str(path), stop_before_pixels=True)
        frames = int(getattr(header, "NumberOfFrames", 1) or 1)
        check_size(path, (frames, int(header.Rows), int(header.Columns))[frames == 1 :], limit)
        dataset = pydicom.dcmread(str(path))
        pixels = dataset.pixel_array  # pydicom converts YBR colour to RGB
    except DataError:
        raise
    except Exception as error:  # InvalidDicomError, missing pixel data, decoder errors...
        raise DataError(path, f"not a readable DICOM image ({type(error).__name__}: {error})") from error
    frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
    samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
    if frames == 1:
        pixels = pixels[None]
    if samples > 1:
        slices = np.stack([to_grayscale(frame) for frame in pixels])
    else:
        slices = pixels.astype(np.float32)
        slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
        intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
        slices = slices * np.float32(slope) + np.float32(intercept)
        if getattr(dataset, "PhotometricInterpretation", "") == "MONOCHROME1":  # white is 0: invert
            slices = slices.max() + slices.min() - slices
    if slices.ndim != 3:
        raise DataError(path, f"pixel data of shape {pixels.shape} is not one or more 2D frames")
    spacing, slice_spacing = _dicom_spacing(dataset)
    orientation = getattr(dataset, "ImageOrientationPatient", None)
    position = getattr(dataset, "ImagePositionPatient", None)
    affine = dicom_affine(
        tuple(float(v) for v in orientation) if orientation is not None else None,
        tuple(float(v) for v in position) if position is not None else None,
        spacing or (1.0, 1.0),
        slice_spacing,
    )
    n, height, width = slices.shape
    voxel_shape = (width, height) if n == 1 else (width, height, n)
    return ImageStack(path, "dicom", slices.astype(np.float32), affine, voxel_shape, spacing)


def _itk_shape(itk, path: Path) -> tuple[int, ...]:
    """The image size ITK reads from ``path``'s header, without reading its pixels."""
    read_mode = getattr(getattr(itk, "CommonEnums", None), "IOFileMode_ReadMode", None)
    if read_mode is None:  # ITK before 5.1
        read_mode = itk.ImageIOFactory.ReadMode
    image_io = itk.ImageIOFactory.CreateImageIO(str(path), read_mode)
    if image_io is None:
        raise ValueError("no ITK reader recognises the file")
    image_io.SetFileName(str(path))
    image_io.ReadImageInformation()
    return tuple(int(image_io.GetDimensions(axis)) for axis in range(image_io.GetNumberOfDimensions()))


def _read_with_itk(path: Path, limit: int | None = None) -> ImageStack:
    """DICOM through ITK, for machines without pydicom."""
    try:
        import itk
    except ImportError:
        raise DataError(
            path, "reading DICOM needs pydicom or itk, and neither is installed (pip install pydicom)"
        ) from None
    try:
        check_size(path, _itk_shape(itk, path), limit)
        image = itk.imread(str(path))
    except DataError:
        raise
    except Exception as error:
        raise DataError(path, f"not a readable DICOM image ({type(error).__name__}: {error})") from error
    pixels = np.asarray(itk.array_from_image(image))  # (frames, rows, columns[, components]) or (rows, columns[, c])
    components = image.GetNumberOfComponentsPerPixel()
    dimension = image.GetImageDimension()
    if dimension == 2:
        pixels = pixels[None]
    if components > 1:
        slices = np.stack([to_grayscale(frame) for frame in pixels])
    else:
        slices = pixels.astype(np.float32)
    spacing_xyz = [float(s) for s in image.GetSpacing()]
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dimension, dimension)
    origin = [float(o) for o in image.GetOrigin()]
    lps = np.eye(4)
    lps[:dimension, :dimension] = direction * np.asarray(spacing_xyz)[None, :]
    lps[:dimension, 3] = origin
    n, height, width = slices.shape
    voxel_shape = (width, height) if n == 1 else (width, height, n)
    spacing = (spacing_xyz[1], spacing_xyz[0])
    return ImageStack(path, "dicom", slices, _LPS_TO_RAS @ lps, voxel_shape, spacing)
