"""Reading 2D ultrasound images and lesion masks from PNG, JPEG, BMP or TIFF files.

Arrays come back in natural ``(row, column)`` order, the order of ``numpy.asarray(PIL.Image.open(path))``
(MONAI's ``PILReader`` returns the transpose). Every failure is a :class:`DataError` whose message starts
with the offending file, so a bad file in a dataset of hundreds is found at once.
"""

from __future__ import annotations

import json

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DataError", "load_pixels", "to_grayscale", "to_foreground", "read_image", "read_mask"]

PathLike = str | os.PathLike

#: ITU-R BT.601 luma weights, the ones ``PIL.Image.convert("L")`` uses
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

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


def load_pixels(path: PathLike) -> np.ndarray:
    """Fully decode one image file and return its pixel values unchanged.

    The result is ``(H, W)`` for single-channel files (1-bit as 0/255 uint8, 8-bit uint8, 16-bit uint16,
    32-bit int32 or float32) and ``(H, W, C)`` for gray+alpha (C=2), RGB (C=3) and RGBA (C=4). Palette
    images are expanded to the colours of their palette (RGB, or RGBA when the palette has transparency).

    Args:
        path: PNG, JPEG, BMP or TIFF file (anything PIL decodes).

    Raises:
        DataError: the file is missing, a folder, empty (0 bytes), not an image, truncated or corrupt
            (the whole file is decoded, not just its header), holds several frames, or has a pixel
            format other than those above (e.g. CMYK).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "file not found")
    if path.is_dir():
        raise DataError(path, "is a folder, expected an image file")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as image:
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
                    "gray+alpha, palette, RGB or RGBA",
                )
            pixels = np.asarray(image)
    except DataError:
        raise
    except Image.UnidentifiedImageError as error:
        raise DataError(path, "not an image PIL can read (expected PNG, JPEG, BMP or TIFF)") from error
    except Exception as error:  # PIL's decoders fail with OSError, SyntaxError, struct.error, zlib.error...
        raise DataError(path, f"truncated or corrupt image ({type(error).__name__}: {error})") from error
    if mode == "1":
        # 1-bit pixels as 0/255, the values PIL.Image.convert("L") gives them
        pixels = pixels.astype(np.uint8) * np.uint8(255)
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


def read_image(path: PathLike) -> np.ndarray:
    """Read an ultrasound image as float32 ``(H, W)`` gray levels in ``(row, column)`` order.

    8- and 16-bit grayscale keep their values; RGB (e.g. images carrying coloured annotations) becomes
    luma; RGBA and gray+alpha drop the alpha channel first; palette images use their palette colours;
    1-bit images read as 0 and 255.

    Args:
        path: PNG, JPEG, BMP or TIFF file.

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
    return to_grayscale(load_pixels(path))


def read_mask(paths: PathLike | Sequence[PathLike]) -> np.ndarray:
    """Read a lesion mask as uint8 ``(H, W)`` in {0, 1}, the union of one or more mask files.

    Each file is binarised with :func:`to_foreground` (non-zero is lesion; any non-zero colour channel
    counts; fully transparent pixels do not), then the files are OR-merged, as BUSI stores a case with
    several lesions as ``_mask.png``, ``_mask_1.png``, ...

    Args:
        paths: one mask file or a sequence of mask files of one case.

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
        foreground = to_foreground(load_pixels(path))
        if merged is None:
            merged, first = foreground, path
        elif foreground.shape != merged.shape:
            raise DataError(
                path, f"mask has shape {foreground.shape} (H, W) but mask {first} of the same case has {merged.shape}"
            )
        else:
            merged |= foreground
    return merged.astype(np.uint8)
