"""Untrusted files: checkpoints load with weights_only=True (pickled code is refused, not run), and archives
unpack only inside their destination (lesionseg.utils.archives)."""

from __future__ import annotations

import ast
import inspect
import io
import re
import tarfile
import traceback
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine
from monai.handlers import CheckpointLoader
from PIL import Image

from lesionseg.engines.checkpoint import CheckpointError, TrainingCheckpoint, load_checkpoint
from lesionseg.engines.checkpoint_loader import WeightsOnlyCheckpointLoader
from lesionseg.engines.finite import FiniteCheckpointLoader
from lesionseg.utils import UnsafeArchiveError, safe_extract

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this calls ``Path.touch(marker)``: harmless, and proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def booby_trapped(tmp_path):
    """A checkpoint whose state dict carries pickled code, and the marker file that code would create."""
    marker = tmp_path / "code_ran"
    state = nn.Linear(2, 1).state_dict()
    state["extra"] = _Payload(marker)
    path = tmp_path / "model.pt"
    torch.save(state, path)
    assert not marker.exists()
    return path, marker


def test_load_checkpoint_refuses_pickled_code_without_running_it(booby_trapped):
    path, marker = booby_trapped
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    assert str(raised.value).startswith(f"{path}: refused: the file holds pickled Python objects")
    assert "sources you trust" in str(raised.value)
    assert not marker.exists(), "the checkpoint's code ran"
    # the unsafe load this guards against really would run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_bundle_checkpoint_loader_refuses_pickled_code(booby_trapped):
    """MONAI's CheckpointLoader, which inference.yaml and evaluate.yaml use, loads with weights_only=True."""
    path, marker = booby_trapped
    loader = CheckpointLoader(load_path=str(path), load_dict={"model": nn.Linear(2, 1)})
    with pytest.raises(Exception, match="Weights only load failed"):
        loader(Engine(lambda engine, batch: None))
    assert not marker.exists()


def test_resuming_from_a_booby_trapped_state_refuses_it(booby_trapped, tmp_path):
    path, marker = booby_trapped
    network = nn.Linear(2, 1)
    handler = TrainingCheckpoint(path, {"model": network})
    trainer = Engine(lambda engine, batch: None)
    handler.attach(trainer)
    with pytest.raises(CheckpointError, match="refused"):
        trainer.run([0], max_epochs=1)
    assert not marker.exists()



def test_checkpoint_loader_refuses_non_finite_weights(tmp_path):
    """MONAI's CheckpointLoader loads NaN weights silently (the network then reads "no lesion" everywhere);
    the bundles' FiniteCheckpointLoader refuses them, naming the file and the first bad tensor."""
    from lesionseg.engines import FiniteCheckpointLoader, NonFiniteError

    state = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)).state_dict()
    state["1.weight"][0, 1] = float("inf")
    path = tmp_path / "model.pt"
    torch.save(state, path)
    CheckpointLoader(load_path=str(path), load_dict={"model": nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))})(
        Engine(lambda engine, batch: None)
    )  # accepted: the fault this guards against
    network = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    loader = FiniteCheckpointLoader(load_path=str(path), load_dict={"model": network})
    with pytest.raises(NonFiniteError, match=rf"^{path}: refused: tensor '1\.weight' holds 0 NaN and 1 infinite"):
        loader(Engine(lambda engine, batch: None))
    state["1.weight"][0, 1] = 0.5
    torch.save(state, path)
    loader(Engine(lambda engine, batch: None))  # finite weights load as before


@pytest.mark.parametrize("config", ["inference.yaml", "evaluate.yaml"])
@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
def test_bundles_load_weights_and_check_outputs_for_non_finite_values(bundle, config):
    text = (ROOT / "bundles" / bundle / "configs" / config).read_text()
    assert "lesionseg.engines.FiniteCheckpointLoader" in text
    assert not re.search(r"_target_: CheckpointLoader\b", text), "a checkpoint loaded without the finite check"
    assert "lesionseg.engines.RefuseNonFinited" in text


def test_refuse_non_finite_names_the_image():
    from monai.data import MetaTensor

    from lesionseg.engines import NonFiniteError, RefuseNonFinited

    image = MetaTensor(torch.zeros(1, 4, 4), meta={"filename_or_obj": "/data/case (1).png"})
    check = RefuseNonFinited(keys="pred")
    check({"image": image, "pred": torch.zeros(1, 4, 4)})
    pred = torch.zeros(1, 4, 4)
    pred[0, 1, 2] = float("nan")
    with pytest.raises(
        NonFiniteError, match=r"^/data/case \(1\)\.png: the network's output holds 1 NaN and 0 infinite"
    ):
        check({"image": image, "pred": pred})


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every call ``name(...)`` in ``text`` (balanced parentheses)."""
    calls = []
    for match in re.finditer(re.escape(name) + r"\(", text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            depth += {"(": 1, ")": -1}.get(text[index], 0)
            if depth == 0:
                calls.append(text[start:index])
                break
    return calls


def test_every_torch_load_in_the_project_is_weights_only():
    sources = [p for folder in ("common", "tests", "benchmarks", "bundles") for p in (ROOT / folder).rglob("*")
               if p.suffix in (".py", ".yaml", ".json") and ".venv" not in p.parts]
    found = 0
    for source in sources:
        text = source.read_text()
        for call in _calls(text, "torch.load"):
            found += 1
            if source.name == Path(__file__).name and "weights_only=False" in call:
                continue  # the demonstration above of what an unsafe load does
            assert "weights_only=True" in call, f"{source}: a torch load call without weights_only=True: {call}"
    assert found >= 3
    # the bundles load checkpoints through MONAI's CheckpointLoader: it must keep loading weights only
    assert "weights_only=True" in inspect.getsource(CheckpointLoader.__call__)
    configs = [p for p in (ROOT / "bundles").rglob("*.yaml")]
    assert any("CheckpointLoader" in p.read_text() for p in configs)


# ------------------------------------------------------------------------------------------------- archives


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    data = data or {}
    with tarfile.open(path, "w:gz") as archive:
        for member in members:
            payload = data.get(member.name)
            if payload is not None:
                member.size = len(payload)
            archive.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return path


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname = kind, link
    return member


def test_safe_extract_unpacks_a_well_formed_bundle(tmp_path):
    archive = _zip(tmp_path / "bundle.zip", {"dcnet/configs/train.yaml": b"a: 1\n", "dcnet/models/model.pt": b"x"})
    written = safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out" / "dcnet" / "configs" / "train.yaml").read_bytes() == b"a: 1\n"
    assert len(written) == 2
    members = [_member("b/"), _member("b/docs/README.md"), _member("b/latest", tarfile.SYMTYPE, "docs/README.md")]
    members[0].type = tarfile.DIRTYPE
    archive = _tar(tmp_path / "bundle.tar.gz", members, {"b/docs/README.md": b"card"})
    safe_extract(archive, tmp_path / "tar_out")
    assert (tmp_path / "tar_out" / "b" / "latest").read_bytes() == b"card"  # a link inside the bundle is fine


@pytest.mark.parametrize(
    "members, words",
    [
        ({"ok.txt": b"1", "../escaped.txt": b"2"}, "'../escaped.txt' climbs out of the destination"),
        ({"a/../../escaped.txt": b"2"}, "climbs out"),
        ({"/tmp/absolute.txt": b"2"}, "has an absolute path"),
        ({"C:/windows.txt": b"2"}, "has an absolute path"),
        ({"..\\escaped.txt": b"2"}, "climbs out"),
    ],
)
def test_safe_extract_refuses_zip_members_outside_the_destination(tmp_path, members, words):
    archive = _zip(tmp_path / "evil.zip", members)
    with pytest.raises(UnsafeArchiveError) as raised:
        safe_extract(archive, tmp_path / "out")
    assert str(raised.value).startswith(f"{archive}: member ") and words in str(raised.value)
    assert not (tmp_path / "out").exists(), "nothing may be written from a refused archive"
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize(
    "members, words",
    [
        ([_member("../escaped.txt")], "climbs out"),
        ([_member("/etc/cron.d/job")], "absolute path"),
        ([_member("etc", tarfile.SYMTYPE, "/etc"), _member("etc/passwd")], "links to the absolute path '/etc'"),
        ([_member("up", tarfile.SYMTYPE, "../../.."), _member("up/escaped.txt")], "outside"),
        ([_member("hard", tarfile.LNKTYPE, "../outside.txt")], "outside"),
        ([_member("tty", tarfile.CHRTYPE)], "device, FIFO or other special file"),
        ([_member("pipe", tarfile.FIFOTYPE)], "special file"),
    ],
)
def test_safe_extract_refuses_tar_members_and_links_outside_the_destination(tmp_path, members, words):
    archive = _tar(tmp_path / "evil.tar.gz", members)
    with pytest.raises(UnsafeArchiveError) as raised:
        safe_extract(archive, tmp_path / "out")
    assert str(raised.value).startswith(f"{archive}: member ") and words in str(raised.value), str(raised.value)
    assert not (tmp_path / "out").exists()


def test_safe_extract_refuses_archives_that_unpack_too_large_and_non_archives(tmp_path):
    archive = _zip(tmp_path / "bomb.zip", {"zeros.bin": bytes(10_000)})
    with pytest.raises(UnsafeArchiveError, match="unpacks to 10,000 bytes, more than the limit of 1,000"):
        safe_extract(archive, tmp_path / "out", max_bytes=1000)
    (tmp_path / "notes.zip").write_text("not an archive")
    with pytest.raises(ValueError, match="notes.zip: not a zip or tar archive"):
        safe_extract(tmp_path / "notes.zip", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="archive not found"):
        safe_extract(tmp_path / "missing.zip", tmp_path / "out")


# --------------------------------------------------------------------------------------------- data files
# README's Security promise for data files, for every format and every reader of it: the pixel limit is
# checked from the header before any pixel is decoded, and NaN or infinite values are refused; each time with
# an error that names the file.

HUGE = 8000  # a header declaring 8000 x 8000 = 64 million pixels, over the default limit of 25 million


def _png_declaring(path: Path, height: int, width: int) -> Path:
    """A PNG whose header declares ``height`` x ``width`` 8-bit pixels but which holds the data of one."""
    import struct
    import zlib

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    path.write_bytes(bytes(data))
    return path


def _jpeg_declaring(path: Path, height: int, width: int) -> Path:
    import struct

    Image.new("L", (8, 8)).save(path, quality=90)
    data = bytearray(path.read_bytes())
    sof = data.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def _bmp_declaring(path: Path, height: int, width: int) -> Path:
    import struct

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[18:26] = struct.pack("<ii", width, height)  # BITMAPINFOHEADER width, height
    path.write_bytes(bytes(data))
    return path


def _tiff(path: Path, pixels, height: int | None = None, width: int | None = None) -> Path:
    """A little-endian TIFF of one strip holding ``pixels`` (uint8 or float32 (H, W)), whose header may declare
    another size."""
    import struct

    pixels = np.ascontiguousarray(pixels)
    rows, cols = pixels.shape
    height, width = height or rows, width or cols
    bits, sample_format = pixels.dtype.itemsize * 8, 3 if pixels.dtype.kind == "f" else 1
    payload = pixels.tobytes()
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 1), (262, 3, 1), (273, 4, 0),
               (277, 3, 1), (278, 4, height), (279, 4, len(payload)), (339, 3, sample_format)]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, 1) + packed
    path.write_bytes(b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + payload)
    return path


def _nifti(path: Path, voxels, shape: tuple[int, ...] | None = None) -> Path:
    """A NIfTI file of ``voxels`` ((W, H) as MONAI lays out a picture), or a header declaring ``shape`` with the
    data of ``voxels`` only."""
    import nibabel

    image = nibabel.Nifti1Image(np.asarray(voxels), np.eye(4))
    if shape is None:
        nibabel.save(image, path)
        return path
    image.header.set_data_shape(shape)
    header = image.header.binaryblock + b"\0" * 4  # the 348-byte header and its extension flag
    data = header + np.asarray(voxels).tobytes()
    if path.name.endswith(".gz"):
        import gzip

        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _dicom(path: Path, pixels, rows: int | None = None, columns: int | None = None, slope: float | None = None) -> Path:
    """A DICOM file of 8- or 16-bit ``pixels`` (H, W) whose header may declare another size or a rescale slope."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Modality = "US"
    dataset.Rows, dataset.Columns = rows or pixels.shape[0], columns or pixels.shape[1]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = pixels.dtype.itemsize * 8
    dataset.HighBit, dataset.PixelRepresentation = dataset.BitsStored - 1, 0
    if slope is not None:
        dataset.RescaleSlope, dataset.RescaleIntercept = slope, 0
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def _small(shape=(40, 50)):
    return (np.arange(shape[0] * shape[1]) % 251).astype(np.uint8).reshape(shape)


def _readers(name: str):
    """The project's readers of a file ``name``: the training loader (pictures, 2D NIfTI) and predict's."""
    from lesionseg.data.io import load_pixels, read_image, read_mask, read_mask_stack, read_stack
    from lesionseg.data.transforms import LoadUltrasound

    readers = {"read_stack": read_stack, "read_mask_stack": read_mask_stack}
    if not name.endswith(".dcm"):
        readers.update(
            load_pixels=load_pixels, read_image=read_image, read_mask=read_mask, LoadUltrasound=LoadUltrasound()
        )
    return readers


# file name -> writer of a file whose header declares HUGE x HUGE pixels but that holds almost no data
DECLARING_HUGE = {
    "image.png": lambda path: _png_declaring(path, HUGE, HUGE),
    "image.jpg": lambda path: _jpeg_declaring(path, HUGE, HUGE),
    "image.bmp": lambda path: _bmp_declaring(path, HUGE, HUGE),
    "image.tif": lambda path: _tiff(path, _small((1, 1)), HUGE, HUGE),
    "image.nii": lambda path: _nifti(path, _small((1, 1)), (HUGE, HUGE)),
    "image.nii.gz": lambda path: _nifti(path, _small((1, 1)), (HUGE, HUGE)),
    "image.dcm": lambda path: _dicom(path, _small((2, 2)), HUGE, HUGE),
}


@pytest.mark.parametrize("name", list(DECLARING_HUGE))
def test_every_format_and_reader_checks_the_pixel_limit_from_the_header(tmp_path, name):
    """A small file declaring 8000 x 8000 pixels is refused for its size, before its data is read: a NIfTI or
    DICOM reader that decoded first allocated the declared size (1.6 GB for a 279 KB NIfTI of float32)."""
    from lesionseg.data.io import DataError

    path = DECLARING_HUGE[name](tmp_path / name)
    assert path.stat().st_size < 5000
    for reader_name, reader in _readers(name).items():
        with pytest.raises(DataError) as raised:
            reader(path)
        message = str(raised.value)
        limit = "image is 8000 x 8000 = 64,000,000 pixels, more than the limit of 25,000,000"
        assert message.startswith(f"{path}: {limit}"), (
            reader_name, message)
        assert "LESIONSEG_MAX_PIXELS" in message


# file name -> writer of a valid 40 x 50 image
def _picture(path: Path, pixels) -> Path:
    Image.fromarray(pixels).save(path)
    return path


SMALL = {
    "image.png": lambda path: _picture(path, _small()),
    "image.jpg": lambda path: _picture(path, _small()),
    "image.bmp": lambda path: _picture(path, _small()),
    "image.tif": lambda path: _tiff(path, _small()),
    "image.nii": lambda path: _nifti(path, _small().T),
    "image.nii.gz": lambda path: _nifti(path, _small().T),
    "image.dcm": lambda path: _dicom(path, _small()),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_every_format_and_reader_obeys_the_pixel_limit_setting(tmp_path, monkeypatch, name):
    """The limit is the environment's LESIONSEG_MAX_PIXELS for every reader; under it the file reads."""
    from lesionseg.data.io import DataError

    path = SMALL[name](tmp_path / name)
    monkeypatch.setenv("LESIONSEG_MAX_PIXELS", "1999")
    for reader_name, reader in _readers(name).items():
        with pytest.raises(DataError, match=r"image is .*2,000 pixels, more than the limit of 1,999"):
            reader(path)
    monkeypatch.setenv("LESIONSEG_MAX_PIXELS", "2000")
    for reader_name, reader in _readers(name).items():
        result = reader(path)
        shape = (result.slices if reader_name == "read_stack" else np.asarray(result)).shape
        assert shape[-2:] == (40, 50), (reader_name, shape)


# file name -> writer of an image holding NaN and infinity (the formats that can hold them)
NON_FINITE = {
    "float.tif": lambda path: _tiff(path, np.array([[0.0, np.nan, 1.0], [np.inf, 2.0, -np.inf]], np.float32)),
    "float.nii": lambda path: _nifti(path, np.array([[0.0, np.nan, 1.0], [np.inf, 2.0, -np.inf]], np.float32).T),
    "float.nii.gz": lambda path: _nifti(path, np.array([[0.0, np.nan, 1.0], [np.inf, 2.0, -np.inf]], np.float32).T),
    # 16-bit pixels times a slope of 1e36 overflow float32: infinity after DICOM's rescaling
    "overflow.dcm": lambda path: _dicom(path, np.array([[0, 1, 60000], [70, 2, 65535]], np.uint16), slope=1e36),
}


@pytest.mark.parametrize("name", list(NON_FINITE))
def test_every_format_and_reader_refuses_nan_and_infinity(tmp_path, name):
    """NaN and infinite values are refused naming the file (predict's NIfTI reader replaced them by 0 and
    the largest float, silently)."""
    from lesionseg.data.io import DataError

    path = NON_FINITE[name](tmp_path / name)
    for reader_name, reader in _readers(name).items():
        with pytest.raises(DataError) as raised:
            reader(path)
        assert str(raised.value).startswith(f"{path}: holds "), (reader_name, str(raised.value))
        assert "infinite pixel value(s); every pixel must be a finite number" in str(raised.value), reader_name


def _zip_with_a_bad_last_member(path: Path) -> Path:
    """A zip whose members all pass the checks, but whose last one fails its CRC when it is unpacked."""
    _zip(path, {"b/configs/train.yaml": b"a: 1\n", "b/docs/README.md": b"card", "b/models/model.pt": b"WEIGHTS" * 50})
    data = bytearray(path.read_bytes())
    data[data.index(b"WEIGHTS")] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def test_safe_extract_writes_nothing_when_the_last_member_is_damaged(tmp_path):
    archive = _zip_with_a_bad_last_member(tmp_path / "bundle.zip")
    with pytest.raises(ValueError) as raised:
        safe_extract(archive, tmp_path / "new")
    assert str(raised.value).startswith(f"{archive}: damaged archive") and "nothing was unpacked" in str(raised.value)
    assert not (tmp_path / "new").exists()
    # into a folder that exists: it keeps exactly what it held
    existing = tmp_path / "existing"
    (existing / "b").mkdir(parents=True)
    (existing / "b" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="damaged archive"):
        safe_extract(archive, existing)
    assert sorted(p.relative_to(existing).as_posix() for p in existing.rglob("*")) == ["b", "b/notes.txt"]


def test_safe_extract_writes_nothing_when_the_disk_fills_on_the_last_member(tmp_path, monkeypatch):
    members = [_member("b/"), _member("b/first.txt"), _member("b/last.txt")]
    members[0].type = tarfile.DIRTYPE
    archive = _tar(tmp_path / "bundle.tar.gz", members, {"b/first.txt": b"1", "b/last.txt": b"2"})
    real_extract = tarfile.TarFile._extract_member

    def disk_full_on_last(self, member, target, *args, **kwargs):
        if member.name == "b/last.txt":
            Path(target).write_bytes(b"")  # a part of it, as a full disk leaves
            raise OSError(28, "No space left on device")
        return real_extract(self, member, target, *args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "_extract_member", disk_full_on_last)
    with pytest.raises(OSError, match="No space left"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_safe_extract_never_replaces_a_file_already_there(tmp_path):
    archive = _zip(tmp_path / "bundle.zip", {"b/new.txt": b"new", "b/configs/train.yaml": b"theirs"})
    destination = tmp_path / "out"
    (destination / "b" / "configs").mkdir(parents=True)
    (destination / "b" / "configs" / "train.yaml").write_text("mine")
    with pytest.raises(FileExistsError, match=r"member 'b/configs/train.yaml' would replace the existing"):
        safe_extract(archive, destination)
    assert (destination / "b" / "configs" / "train.yaml").read_text() == "mine"
    assert not (destination / "b" / "new.txt").exists()
    # into existing folders, beside other files, is fine
    written = safe_extract(_zip(tmp_path / "other.zip", {"b/configs/other.yaml": b"x"}), destination)
    assert written == [destination / "b" / "configs" / "other.yaml"] and written[0].read_bytes() == b"x"
    assert sorted(p.name for p in destination.rglob("*") if p.name.startswith(".")) == []


# ------------------------------------------------------------------------------ code-carrying checkpoints


def _advises_an_unsafe_load(error: BaseException) -> bool:
    """Whether the error or its printed traceback tells the user to load with weights_only=False."""
    text = "".join(traceback.format_exception(error))
    return "weights_only=False" in text or "`weights_only` set to `False`" in text


def test_refusal_of_pickled_code_says_why_and_never_advises_weights_only_false(booby_trapped):
    path, marker = booby_trapped
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: refused") and "(it would call getattr)" in message
    assert "run their code with your permissions" in message and "lesionseg refuses" in message
    # neither the message nor the traceback (no chained PyTorch error) tells the user to load it unsafely
    assert not _advises_an_unsafe_load(raised.value)
    assert not marker.exists()


def test_bundle_handler_refuses_pickled_code_with_the_projects_message(booby_trapped):
    path, marker = booby_trapped
    loader = WeightsOnlyCheckpointLoader(load_path=str(path), load_dict={"model": nn.Linear(2, 1)})
    with pytest.raises(CheckpointError) as raised:
        loader(Engine(lambda engine, batch: None))
    assert str(raised.value).startswith(f"{path}: refused") and "lesionseg refuses" in str(raised.value)
    assert not _advises_an_unsafe_load(raised.value)
    assert not marker.exists()
    # a good checkpoint loads as with MONAI's handler
    good, network = path.with_name("good.pt"), nn.Linear(2, 1)
    torch.save(network.state_dict(), good)
    target = nn.Linear(2, 1)
    WeightsOnlyCheckpointLoader(load_path=str(good), load_dict={"model": target})(Engine(lambda e, b: None))
    assert torch.equal(target.weight, network.weight)


def test_predict_refuses_a_code_carrying_checkpoint_with_the_projects_message(booby_trapped):
    from lesionseg.workflows.predictor import ModelError, load_predictor

    path, marker = booby_trapped
    with pytest.raises(ModelError) as raised:
        load_predictor(
            bundle=ROOT / "bundles" / "dcnet_bundle",
            checkpoint=path,
            overrides={"network_def#features": [2, 4, 8, 16, 32]},
            device="cpu",
        )
    assert str(raised.value).startswith(f"{path}: refused") and "lesionseg refuses" in str(raised.value)
    assert not _advises_an_unsafe_load(raised.value)
    assert not marker.exists()


def test_every_checkpoint_load_goes_through_the_projects_loader():
    """One loader: no torch.load in the package or the benchmarks outside lesionseg.engines.checkpoint, and
    the bundles' configs load through its handler, not MONAI's CheckpointLoader with PyTorch's messages."""
    loader = ROOT / "common" / "lesionseg" / "engines" / "checkpoint.py"
    loads = {}
    for folder in ("common", "benchmarks"):
        for source in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                function = node.func if isinstance(node, ast.Call) else None
                if (
                    isinstance(function, ast.Attribute)
                    and function.attr == "load"
                    and ast.unparse(function.value) == "torch"
                ):
                    loads.setdefault(source, []).append(node.lineno)
    assert list(loads) == [loader] and len(loads[loader]) == 1, f"torch.load outside load_checkpoint: {loads}"
    for config in (ROOT / "bundles").rglob("*.yaml"):
        for target in re.findall(r"_target_:\s*(\S+)", config.read_text()):
            # the bundles' loader: weights_only with the project's errors, and NaN weights refused
            ours = "lesionseg.engines.FiniteCheckpointLoader"
            assert not target.endswith("CheckpointLoader") or target == ours, f"{config}: {target}"
    assert issubclass(FiniteCheckpointLoader, WeightsOnlyCheckpointLoader)
