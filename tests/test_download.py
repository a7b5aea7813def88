"""``lesionseg download busi``: against a local HTTP server on 127.0.0.1 (never the internet) serving small
archives in BUSI's layout made here: a good one, a corrupted, a truncated and a malicious one."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import ssl
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lesionseg.cli import main
from lesionseg.data.download import BUSI_FOLDER, DownloadError, download_busi, fetch_file
from lesionseg.data.grouping import GROUPS_FILENAME, load_groups
from lesionseg.data.io import DataError
from lesionseg.utils.archives import UnsafeArchiveError


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _busi_members(seed: int = 0) -> dict[str, bytes]:
    """A tiny BUSI: two benign cases that are the same scan (a near-duplicate group), a malignant case with
    two mask files and a normal case with an empty mask."""
    rng = np.random.default_rng(seed)
    scans = [rng.integers(0, 256, (24, 32), dtype=np.uint8) for _ in range(3)]
    lesion = np.zeros((24, 32), np.uint8)
    lesion[6:14, 8:20] = 255
    second = np.zeros_like(lesion)
    second[16:20, 22:28] = 255
    folder = BUSI_FOLDER
    return {
        f"{folder}/benign/benign (1).png": _png(scans[0]),
        f"{folder}/benign/benign (1)_mask.png": _png(lesion),
        f"{folder}/benign/benign (2).png": _png(scans[0]),
        f"{folder}/benign/benign (2)_mask.png": _png(lesion),
        f"{folder}/malignant/malignant (1).png": _png(scans[1]),
        f"{folder}/malignant/malignant (1)_mask.png": _png(lesion),
        f"{folder}/malignant/malignant (1)_mask_1.png": _png(second),
        f"{folder}/normal/normal (1).png": _png(scans[2]),
        f"{folder}/normal/normal (1)_mask.png": _png(np.zeros_like(lesion)),
    }


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


GOOD = _zip(_busi_members())
# one byte changed in the middle: same size, another SHA-256
CORRUPTED = GOOD[: len(GOOD) // 2] + bytes([GOOD[len(GOOD) // 2] ^ 0xFF]) + GOOD[len(GOOD) // 2 + 1 :]
TRUNCATED = GOOD[: len(GOOD) // 2]
MALICIOUS = _zip({**_busi_members(), "../escaped.txt": b"outside the destination"})
NOT_BUSI = _zip({"readme.txt": b"no images here"})


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    # path -> bytes; "/cut.zip" announces the good archive's length, sends half of it and closes
    files = {"/good.zip": GOOD, "/corrupted.zip": CORRUPTED, "/truncated.zip": TRUNCATED,
             "/malicious.zip": MALICIOUS, "/not_busi.zip": NOT_BUSI}  # fmt: skip
    requests: list[str] = []
    timeout = 10  # seconds a connection may stay idle: the server never hangs a test

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        if self.path == "/cut.zip":
            self.send_response(200)
            self.send_header("Content-Length", str(len(GOOD)))
            self.end_headers()
            self.wfile.write(GOOD[: len(GOOD) // 3])
            self.close_connection = True
            return
        content = self.files.get(self.path)
        if content is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Content-Type", "application/zip")
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, *args):
        pass


def _serve(tls: ssl.SSLContext | None = None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def server():
    """Base URL of an HTTP server on 127.0.0.1 serving the archives above."""
    httpd, thread = _serve()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def requests():
    _Handler.requests = []
    return _Handler.requests


def _download(root: Path, url: str, content: bytes = GOOD, **kwargs):
    return download_busi(root, url=url, sha256=_sha256(content), timeout=10, progress=False, **kwargs)


def _everything(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def test_good_archive_is_unpacked_grouped_and_checked(server, tmp_path, requests):
    root = tmp_path / "data"
    result = _download(root, f"{server}/good.zip")
    assert requests == ["/good.zip"]
    assert result.dataset == root / BUSI_FOLDER
    for name in _busi_members():
        assert (root / name).read_bytes() == _busi_members()[name]
    # the near-duplicate groups, where the splits look for them (groups="auto")
    assert result.groups_file == root / GROUPS_FILENAME
    assert load_groups(result.groups_file) == [["benign (1)", "benign (2)"]]
    assert result.report.errors == [] and result.report.cases_per_class == {"benign": 2, "malignant": 1, "normal": 1}
    assert result.report.groups_file_groups == 1
    # nothing else: no archive, no temporary file or folder
    assert sorted(p.name for p in root.iterdir()) == sorted([BUSI_FOLDER, GROUPS_FILENAME])
    assert result.archive is None


def test_keep_archive_and_a_verified_archive_is_reused(server, tmp_path, requests):
    root = tmp_path / "data"
    first = _download(root, f"{server}/good.zip", keep_archive=True)
    assert first.archive is not None and first.archive.read_bytes() == GOOD
    again = _download(root, f"{server}/good.zip", overwrite=True)
    assert requests == ["/good.zip"], "a verified archive already in ROOT is used, not downloaded again"
    assert again.archive == first.archive and first.archive.is_file(), "an archive that was there is kept"


@pytest.mark.parametrize(
    "path, size, message",
    [
        ("/corrupted.zip", None, "SHA-256 mismatch"),
        ("/truncated.zip", None, "SHA-256 mismatch"),
        ("/truncated.zip", len(GOOD), f"expected {len(GOOD):,}"),
        ("/cut.zip", None, "closed after"),
        ("/missing.zip", None, "404"),
    ],
)
def test_bad_download_is_refused_and_leaves_nothing(server, tmp_path, path, size, message):
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as error:
        _download(root, f"{server}{path}", size=size)
    assert f"{server}{path}" in str(error.value) and message in str(error.value)
    assert _everything(root) == [], "a failed download must leave no file behind"


def test_cli_reports_a_checksum_mismatch_and_exits_1(server, tmp_path, capsys):
    root = tmp_path / "data"
    code = main(["download", "busi", "--root", str(root), "--url", f"{server}/corrupted.zip",
                 "--sha256", _sha256(GOOD), "--timeout", "10"])  # fmt: skip
    assert code == 1
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert _everything(root) == []


def test_malicious_archive_is_refused_and_nothing_is_written(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError) as error:
        _download(root, f"{server}/malicious.zip", MALICIOUS)
    assert "../escaped.txt" in str(error.value)
    assert _everything(root) == []
    assert not (tmp_path / "escaped.txt").exists()


def test_archive_without_busi_is_refused_and_nothing_is_kept(server, tmp_path):
    root = tmp_path / "data"
    with pytest.raises(DataError) as error:
        _download(root, f"{server}/not_busi.zip", NOT_BUSI)
    assert "Dataset_BUSI.zip" in str(error.value) and "no BUSI dataset" in str(error.value)
    assert _everything(root) == []


def test_existing_dataset_is_kept_without_overwrite_and_replaced_with_it(server, tmp_path, requests):
    root = tmp_path / "data"
    (root / BUSI_FOLDER).mkdir(parents=True)
    (root / BUSI_FOLDER / "mine.txt").write_text("not from the download")
    with pytest.raises(FileExistsError) as error:
        _download(root, f"{server}/good.zip")
    assert str(root / BUSI_FOLDER) in str(error.value) and "--overwrite" in str(error.value)
    assert requests == [], "nothing is downloaded when the result could not be written"
    assert (root / BUSI_FOLDER / "mine.txt").is_file()
    # a groups file alone is protected too
    other = tmp_path / "other"
    other.mkdir()
    (other / GROUPS_FILENAME).write_text(json.dumps({"groups": []}))
    with pytest.raises(FileExistsError):
        _download(other, f"{server}/good.zip")
    # an archive that fails, with --overwrite, leaves the old dataset as it was
    with pytest.raises(DownloadError):
        _download(root, f"{server}/corrupted.zip", GOOD, overwrite=True)
    assert (root / BUSI_FOLDER / "mine.txt").is_file()

    result = _download(root, f"{server}/good.zip", overwrite=True)
    assert not (root / BUSI_FOLDER / "mine.txt").exists()
    assert result.report.errors == []


def test_checksum_is_mandatory_and_checked_for_format(server, tmp_path, requests):
    with pytest.raises(DownloadError, match="--sha256"):
        download_busi(tmp_path / "data", url=f"{server}/good.zip", sha256=None)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        download_busi(tmp_path / "data", url=f"{server}/good.zip", sha256="abc")
    assert requests == []
    assert not (tmp_path / "data").exists()


def test_a_different_archive_in_the_way_is_not_overwritten(server, tmp_path, requests):
    root = tmp_path / "data"
    root.mkdir()
    (root / "Dataset_BUSI.zip").write_bytes(b"partial download by hand")
    with pytest.raises(FileExistsError, match="does not match"):
        _download(root, f"{server}/good.zip")
    assert (root / "Dataset_BUSI.zip").read_bytes() == b"partial download by hand" and requests == []


def test_only_http_urls(tmp_path):
    with pytest.raises(DownloadError, match="only http and https"):
        fetch_file(f"file://{tmp_path}/x.zip", tmp_path / "x.zip", _sha256(GOOD))
    assert _everything(tmp_path) == []


def test_cli_downloads_groups_and_checks(server, tmp_path, capsys):
    root = tmp_path / "data"
    code = main(["download", "busi", "--root", str(root), "--url", f"{server}/good.zip",
                 "--sha256", _sha256(GOOD).upper(), "--timeout", "10"])  # fmt: skip
    output = capsys.readouterr().out
    assert code == 0, output
    assert f"near-duplicate groups: 1 written to {root / GROUPS_FILENAME}" in output
    assert "errors 0" in output
    # a second run stops before downloading: the dataset is there
    assert main(["download", "busi", "--root", str(root), "--url", f"{server}/good.zip",
                 "--sha256", _sha256(GOOD)]) == 1  # fmt: skip
    assert "--overwrite" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """An HTTPS server on 127.0.0.1 with a self-signed certificate (which no client trusts)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "cert.pem", folder / "key.pem")
    httpd, thread = _serve(context)
    yield f"https://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_untrusted_certificate_is_refused_unless_asked_and_the_checksum_still_applies(tls_server, tmp_path):
    with pytest.raises(DownloadError, match="--no-verify-tls"):
        _download(tmp_path / "a", f"{tls_server}/good.zip")
    assert _everything(tmp_path / "a") == []
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        _download(tmp_path / "b", f"{tls_server}/corrupted.zip", GOOD, verify_tls=False)
    assert _download(tmp_path / "c", f"{tls_server}/good.zip", verify_tls=False).report.errors == []
