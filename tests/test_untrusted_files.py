"""Untrusted files: checkpoints load with weights_only=True (pickled code is refused, not run), and archives
unpack only inside their destination (lesionseg.utils.archives)."""

from __future__ import annotations

import inspect
import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from ignite.engine import Engine
from monai.handlers import CheckpointLoader

from lesionseg.engines.checkpoint import CheckpointError, TrainingCheckpoint, load_checkpoint
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
    loader = FiniteCheckpointLoader(load_path=str(path), load_dict={"model": nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))})
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
    with pytest.raises(NonFiniteError, match=r"^/data/case \(1\)\.png: the network's output holds 1 NaN and 0 infinite"):
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
