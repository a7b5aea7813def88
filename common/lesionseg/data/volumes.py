"""Any supported image file as a stack of 2D slices, with the geometry needed to write results back.

A 2D picture (PNG, JPEG, BMP, TIFF) is a stack of one slice. A NIfTI file (``.nii``, ``.nii.gz``, read with
nibabel) or a DICOM file (``.dcm``, ``.dicom`` or any file with the ``DICM`` preamble; read with pydicom, or
with ITK when pydicom is not installed) may hold one slice or several (a 3-D volume, a multi-frame cine
loop); each slice is segmented on its own.

Slice orientation. Slices are ``(row, column)`` arrays, the orientation of the 2D pictures the networks
are trained on. A DICOM frame is read as it is stored (rows down, columns across). NIfTI stores voxels as
``(x, y, z)`` with ``x`` running fastest, the layout ITK and most converters give a picture (``x`` along
its columns), so slice ``k`` is ``volume[:, :, k].T``. :func:`to_voxels` is the exact inverse of that
mapping, so a mask written with :func:`lesionseg.data.writers.save_nifti_like` has the source's shape and
affine voxel for voxel. DICOM results are written as NIfTI in the same ``(x, y, frame)`` layout, with an
affine from the DICOM geometry (see :func:`dicom_affine`).

Every format follows the rules of :mod:`lesionseg.data.io`: the file is checked before it is opened
(:func:`~lesionseg.data.io.check_file`), its size against the pixel limit from its header before any pixel is
decoded (:func:`~lesionseg.data.io.check_size`; for a volume, all its voxels), and NaN or infinite values
are refused (:func:`~lesionseg.data.io.check_finite`). NIfTI is read by :func:`lesionseg.data.io.read_nifti`
for both 2D training images and volumes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lesionseg.data.io import (
    NIFTI_SUFFIXES,
    DataError,
    PathLike,
    check_file,
    check_finite,
    check_size,
    load_pixels,
    max_pixels_limit,
    read_mask,
    read_nifti,
    to_grayscale,
)

__all__ = [
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PICTURE_SUFFIXES",
    "ImageStack",
    "dicom_affine",
    "file_kind",
    "file_stem",
    "read_mask_stack",
    "read_stack",
    "to_voxels",
]

#: 2D picture formats, read with :func:`lesionseg.data.io.load_pixels`
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")

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
            ``None``: :func:`lesionseg.data.io.max_pixels_limit`.

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

    Pictures follow :func:`lesionseg.data.io.read_mask` (non-zero is lesion, several files OR-merged);
    NIfTI and DICOM masks are non-zero where the lesion is.

    Raises:
        DataError: naming the file, as :func:`read_stack` and :func:`lesionseg.data.io.read_mask`.
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
