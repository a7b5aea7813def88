"""The repository's MONAI Label app (``monailabel/lesionseg_app``) with MONAI Label 0.8.5, both bundles as they
are (no hand edits): info, inference, training twice, epistemic scoring and strategy through the FastAPI server
app in-process, and label upload and inference through a real server started by ``monailabel/start.sh``
(127.0.0.1 by default). Fixtures: ``conftest.py`` beside this file."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from monailabel_testing import BUNDLES, LABELLED, RUN_OUTPUTS, SOURCE_SHAPE, server_env, tiny_config
from PIL import Image

UNLABELLED = [f"case_{i}" for i in range(LABELLED, 6)]


def _png(content: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(content))
    assert image.format == "PNG"
    return np.asarray(image)


def _bundle_cli_mask(bundle: Path, image: Path, output_dir: Path, **overrides) -> np.ndarray:
    """The bundle's own inference (its ``monai.bundle`` workflow, as ``python -m monai.bundle run`` runs it) on
    one image: its ``<stem>_mask.png`` as {0, 1}."""
    from monai.bundle import ConfigWorkflow

    single = output_dir / "input"
    single.mkdir(parents=True)
    (single / image.name).symlink_to(image)
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.yaml"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="inference",
        bundle_root=str(bundle),
        dataset_dir=str(single),
        output_dir=str(output_dir / "out"),
        **overrides,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return (np.asarray(Image.open(output_dir / "out" / f"{image.stem}_mask.png")) > 0).astype(np.uint8)


def test_info_lists_both_bundles_as_2d_lesion_segmenters(client):
    info = client.get("/info/").json()
    for name in BUNDLES:
        model = info["models"][name]
        assert model["dimension"] == 2, name
        assert model["labels"] == {"lesion": 1}, name
        assert model["type"] == "segmentation", name
        assert name in info["trainers"], name
        assert name in info["scoring"], name
    strategies = {"random", "first", "epistemic", *(f"epistemic_{name}" for name in BUNDLES)}
    assert set(info["strategies"]) == strategies
    assert set(info["models"]) == set(BUNDLES), "the app serves the bundles only (no SAM: it downloads weights)"


def test_served_copies_carry_only_what_serving_needs(client, bundle_source, served_dir):
    for name in BUNDLES:
        served = {p.relative_to(served_dir / name).as_posix() for p in (served_dir / name).rglob("*") if p.is_file()}
        assert "models/model.pt" in served and "configs/inference.yaml" in served, name
        assert not served & set(RUN_OUTPUTS), f"{name}: run outputs copied: {served & set(RUN_OUTPUTS)}"
        assert not any(p.startswith("eval/") for p in served), name
        assert all((bundle_source / name / output).is_file() for output in RUN_OUTPUTS), "the source was changed"


@pytest.fixture
def served_module(app_dir):
    """The app's ``lib/served.py`` (the served copies), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("served", app_dir / "lib" / "served.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_bundle_without_weights_is_refused_naming_the_file(served_module, bundle_source, tmp_path):
    shutil.copytree(bundle_source / "dcnet_bundle" / "configs", tmp_path / "source" / "dcnet_bundle" / "configs")
    with pytest.raises(FileNotFoundError, match=r"dcnet_bundle/models/model\.pt: missing"):
        served_module.prepare_served_bundles(tmp_path / "source", tmp_path / "served", ["dcnet_bundle"])
    assert not (tmp_path / "served" / "dcnet_bundle").exists()
    with pytest.raises(ValueError, match="model_dir"):
        served_module.prepare_served_bundles(bundle_source, bundle_source, ["dcnet_bundle"])


def test_a_restart_updates_the_configs_and_keeps_the_trained_weights(served_module, bundle_source, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(bundle_source / "dcnet_bundle", source / "dcnet_bundle")
    served = served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])["dcnet_bundle"]
    model = Path(served) / "models" / "model.pt"
    model.write_bytes(b"fine-tuned by MONAI Label")
    config = source / "dcnet_bundle" / "configs" / "inference.yaml"
    config.write_text(config.read_text() + "\n# changed\n")
    served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])
    assert model.read_bytes() == b"fine-tuned by MONAI Label"
    assert (Path(served) / "configs" / "inference.yaml").read_text() == config.read_text()


def test_a_source_with_other_weights_or_another_size_is_refused(served_module, bundle_source, tmp_path):
    """Weights MONAI Label trained in a served copy belong to the bundle's weights, size and network of then; an
    untrained copy follows the bundle."""
    source = tmp_path / "source"
    shutil.copytree(bundle_source / "dcnet_bundle", source / "dcnet_bundle")
    served = Path(served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])["dcnet_bundle"])
    weights = source / "dcnet_bundle" / "models" / "model.pt"
    # new weights and a new size in the bundle: an untrained copy takes both
    weights.write_bytes(weights.read_bytes() + b"new weights")
    for config in ("train.yaml", "inference.yaml"):
        tiny_config(source / "dcnet_bundle" / "configs" / config, {"image_size": [64, 64]})
    served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])
    assert (served / "models" / "model.pt").read_bytes() == weights.read_bytes()
    assert (served / "configs" / "train.yaml").read_text() == (
        source / "dcnet_bundle" / "configs" / "train.yaml"
    ).read_text()
    # a copy MONAI Label trained: another size in either config is refused, the copy left as it was
    (served / "models" / "model.pt").write_bytes(b"fine-tuned by MONAI Label")
    kept = (served / "configs" / "inference.yaml").read_text()
    for config in ("train.yaml", "inference.yaml"):
        path = source / "dcnet_bundle" / "configs" / config
        original = path.read_text()
        tiny_config(path, {"image_size": [96, 96]})
        with pytest.raises(ValueError, match=rf"image_size: \[64, 64\] in the copy, \[96, 96\] in .*{config}"):
            served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])
        assert (served / "configs" / "inference.yaml").read_text() == kept, "the copy was changed"
        path.write_text(original)
    # a network option written out at its default is the same network
    inference = source / "dcnet_bundle" / "configs" / "inference.yaml"
    original = inference.read_text()
    written_out = {**yaml.safe_load(original)["network_def"], "pooling": "dcp"}
    tiny_config(inference, {"image_size": [64, 64], "network_def": written_out})
    served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])
    inference.write_text(original)
    # and new bundle weights are refused
    weights.write_bytes(weights.read_bytes() + b"newer weights")
    with pytest.raises(ValueError, match="changed since .* was copied from it, and MONAI Label has trained"):
        served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])
    assert (served / "models" / "model.pt").read_bytes() == b"fine-tuned by MONAI Label"
    shutil.rmtree(served)  # as the error says: the copy is made again from the new weights
    served_module.prepare_served_bundles(source, tmp_path / "served", ["dcnet_bundle"])
    assert (served / "models" / "model.pt").read_bytes() == weights.read_bytes()


def test_a_folder_the_app_did_not_make_is_not_taken_over(served_module, bundle_source, tmp_path):
    """``--conf model_dir`` pointing at a folder of bundles (or anything else) of the same names: refused."""
    other = tmp_path / "other" / "dcnet_bundle"
    shutil.copytree(bundle_source / "dcnet_bundle", other)
    (other / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() for p in other.rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match="is not a served copy made by this app"):
        served_module.prepare_served_bundles(bundle_source, tmp_path / "other", ["dcnet_bundle"])
    assert {p: p.read_bytes() for p in other.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("name", BUNDLES)
def test_infer_returns_a_source_size_binary_png(client, name):
    response = client.post(f"/infer/{name}?image=case_0&output=image", data={"params": json.dumps({"device": "cpu"})})
    assert response.status_code == 200, response.text
    mask = _png(response.content)
    assert mask.shape == SOURCE_SHAPE, f"{name}: mask {mask.shape}, source image (H, W) {SOURCE_SHAPE}"
    assert set(np.unique(mask)) <= {0, 1}


def test_infer_result_json_names_the_label(client):
    response = client.post(
        "/infer/dcnet_bundle?image=case_1&output=json", data={"params": json.dumps({"device": "cpu"})}
    )
    assert response.status_code == 200, response.text
    assert response.json()["label_names"] == {"lesion": 1}


def _shift_model() -> torch.nn.Conv2d:
    """A 1x1 convolution computing ``x - 0.5``: with it in place of the network, a bundle's mask is the image
    thresholded at half its range, a mask that shows any flip, transpose or resampling."""
    shift = torch.nn.Conv2d(1, 1, kernel_size=1)
    with torch.no_grad():
        shift.weight.fill_(1.0)
        shift.bias.fill_(-0.5)
    return shift


@pytest.mark.parametrize("name", BUNDLES)
def test_infer_mask_equals_the_bundles_own_run_pixel_for_pixel(client, served_dir, studies, name, tmp_path):
    """MONAI Label's PNG, the bundle's own inference run and the bundle's transforms applied by hand give
    the same mask, with the network replaced by ``x - 0.5`` in all three."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose
    from monailabel.interfaces.utils.app import app_instance

    bundle = served_dir / name
    shift = _shift_model()
    torch.save(shift.state_dict(), bundle / "models" / "shift.pt")
    task = app_instance()._infers[name]
    network = task.network
    task.network = _shift_model().apply(lambda m: torch.nn.init.zeros_(m.weight) if hasattr(m, "weight") else None)
    task.clear_cache()
    try:  # MONAI Label's model_filename option loads models/shift.pt into the (zeroed) replacement
        params = {"device": "cpu", "model_filename": "shift.pt"}
        response = client.post(f"/infer/{name}?image=case_2&output=image", data={"params": json.dumps(params)})
    finally:
        task.network = network
        task.clear_cache()
        (bundle / "models" / "shift.pt").unlink()
    assert response.status_code == 200, response.text
    served = _png(response.content)

    (tmp_path / "shift").mkdir()
    torch.save(shift.state_dict(), tmp_path / "shift" / "model.pt")
    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 1}
    own_run = _bundle_cli_mask(
        bundle, studies / "case_2.png", tmp_path, network_def=conv, ckpt_dir=str(tmp_path / "shift")
    )

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.yaml"))
    data = Compose(parser.get_parsed_content("preprocessing").transforms)({"image": str(studies / "case_2.png")})
    data["pred"] = data["image"].clone() - 0.5
    probability = Compose(parser.get_parsed_content("mask_postprocessing"))(data)["pred"][0].numpy()
    by_hand = (probability > 0.5).astype(np.uint8)

    assert served.shape == own_run.shape == by_hand.shape == SOURCE_SHAPE
    assert 0 < by_hand.sum() < by_hand.size, "the check needs a mask that is neither empty nor full"
    np.testing.assert_array_equal(served, by_hand)
    np.testing.assert_array_equal(own_run, by_hand)


def _state_dict(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("model", state)


@pytest.mark.parametrize("name", BUNDLES)
def test_train_twice_rewrites_the_model_each_time(client, served_dir, name):
    """The served train.yaml keeps ``resume: true`` (and TaiChiNet ``easy_to_hard: true``): the app's overrides
    make a second training fine-tune again instead of finding the first one's finished state."""
    import yaml

    train = yaml.safe_load((served_dir / name / "configs" / "train.yaml").read_text())
    assert train["resume"] is True and train.get("easy_to_hard", True) is True, "the served copy was edited"
    model = served_dir / name / "models" / "model.pt"
    params = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False, "pretrained": True}
    for run in (1, 2):
        before = _state_dict(model)
        mtime = model.stat().st_mtime_ns
        response = client.post(f"/train/{name}?run_sync=true", json=params)
        assert response.status_code == 200, f"training {run}: {response.text}"
        assert model.stat().st_mtime_ns > mtime, f"training {run}: {model} was not rewritten"
        after = _state_dict(model)
        assert set(after) == set(before)
        changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
        assert changed, f"training {run} changed no weight"
    # the new model answers
    response = client.post(f"/infer/{name}?image=case_0&output=image", data={"params": json.dumps({"device": "cpu"})})
    assert response.status_code == 200, response.text
    assert _png(response.content).shape == SOURCE_SHAPE


def test_epistemic_strategy_refuses_before_any_scoring(client):
    response = client.post("/activelearning/epistemic", json={})
    assert response.status_code == 409, response.text
    assert "run POST /scoring/dcnet_bundle first" in response.json()["detail"]


@pytest.mark.parametrize("name", BUNDLES)
def test_epistemic_scoring_uses_dropout_and_scores_the_unlabelled_images(client, name):
    """The app's default scoring (no ``--conf epistemic_model``): dropout 0.2, a score per unlabelled image."""
    from monailabel.interfaces.utils.app import app_instance

    method = app_instance()._scoring_methods[name]
    dropouts = [m.p for m in method.infer_task.network.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(p == pytest.approx(0.2) for p in dropouts), f"{name}: network_def#dropout not applied"
    # dropout alone samples: BatchNorm keeps its running statistics, as in the served model
    network = method.infer_task._get_network("cpu", {})
    modes = {
        (type(m).__name__, m.training)
        for m in network.modules()
        if isinstance(m, (torch.nn.Dropout, torch.nn.BatchNorm2d))
    }
    assert modes == {("Dropout", True), ("BatchNorm2d", False)}, modes
    response = client.post(f"/scoring/{name}?run_sync=true", json={"device": "cpu", "max_workers": 1})
    assert response.status_code == 200, response.text
    assert response.json()["executed"] == len(UNLABELLED), response.text
    datastore = client.get("/datastore/?output=all").json()
    scores = {i: datastore["objects"][i]["image"]["info"].get(f"epistemic_entropy_{name}") for i in UNLABELLED}
    assert all(isinstance(s, float) and np.isfinite(s) and s > 0 for s in scores.values()), scores
    # scored by the current model: a second run skips them all
    response = client.post(f"/scoring/{name}?run_sync=true", json={"device": "cpu", "max_workers": 1})
    assert response.status_code == 200 and response.json()["executed"] == 0, response.text


def test_epistemic_strategy_picks_the_most_uncertain_image(client):
    """``/activelearning/epistemic`` picks the unlabelled image of highest DC-Net score, here the last one in the
    datastore's order (so not the first by default). The scores are written, not scored: the tiny random networks
    of these tests predict lesion almost everywhere, so their scores tie on some CPUs (scoring has its own
    tests above)."""
    from monailabel.interfaces.utils.app import app_instance

    datastore = app_instance().datastore()
    scores = {image_id: 0.1 * (rank + 1) for rank, image_id in enumerate(UNLABELLED)}
    for image_id, score in scores.items():
        datastore.update_image_info(image_id, {"epistemic_entropy_dcnet_bundle": score})
    response = client.post("/activelearning/epistemic", json={})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == UNLABELLED[-1] == max(scores, key=scores.get)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _multipart_params(params: dict) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'
        f"{json.dumps(params)}\r\n--{boundary}--\r\n"
    ).encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _listening_addresses(port: int) -> set[str]:
    """The IPv4/IPv6 addresses a socket listens on at ``port``, from /proc/net/tcp{,6} (hex, as the kernel
    writes them: 0100007F is 127.0.0.1, 00000000 is 0.0.0.0)."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses


def _multipart_file(field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_start_sh_passes_an_explicit_host_through(app_dir, tmp_path):
    """``start.sh`` adds ``--host 127.0.0.1`` unless the command line names a host (``MONAILABEL=echo`` prints
    the command it would run)."""
    start = app_dir.parent / "start.sh"
    env = {**os.environ, "MONAILABEL": "echo"}
    default = subprocess.run([str(start), "--studies", "s"], env=env, capture_output=True, text=True, check=True)
    assert default.stdout.split() == ["start_server", "--app", str(app_dir), "--host", "127.0.0.1", "--studies", "s"]
    chosen = subprocess.run(
        [str(start), "--studies", "s", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, check=True
    )
    assert chosen.stdout.split() == ["start_server", "--app", str(app_dir), "--studies", "s", "--host", "0.0.0.0"]


def test_start_sh_lists_every_image_format_the_bundles_read(app_dir, tmp_path, monkeypatch):
    """MONAI Label's own list (.png, .jpg, .tif, case-sensitive) would leave BMP, JPEG and upper-case files out of
    the datastore with no message; ``start.sh`` sets the list unless the environment has one."""
    from monailabel.config import Settings

    start = app_dir.parent / "start.sh"
    printer = tmp_path / "print_exts"
    printer.write_text('#!/bin/sh\necho "$MONAI_LABEL_DATASTORE_FILE_EXT"\n')
    printer.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "MONAI_LABEL_DATASTORE_FILE_EXT"}
    listed = subprocess.run([str(start)], env={**env, "MONAILABEL": str(printer)}, capture_output=True, text=True)
    patterns = json.loads(listed.stdout)
    for name in ("a.png", "b.PNG", "c.jpg", "d.jpeg", "e.JPG", "f.bmp", "g.tif", "h.TIFF"):
        assert any(Path(name).match(pattern) for pattern in patterns), (name, patterns)
    monkeypatch.setenv("MONAI_LABEL_DATASTORE_FILE_EXT", listed.stdout.strip())
    assert Settings().MONAI_LABEL_DATASTORE_FILE_EXT == patterns, "MONAI Label does not read the list start.sh sets"
    mine = subprocess.run(
        [str(start)],
        env={**env, "MONAILABEL": str(printer), "MONAI_LABEL_DATASTORE_FILE_EXT": '["*.nii"]'},
        capture_output=True,
        text=True,
    )
    assert mine.stdout.strip() == '["*.nii"]'


def test_infer_writes_a_png_mask_for_a_jpeg_image(client, tmp_path):
    """MONAI Label writes a result in its image's format; a JPEG mask would not keep its 0/1 values."""
    from monailabel.interfaces.utils.app import app_instance

    task = app_instance()._infers["dcnet_bundle"]
    mask = np.zeros((88, 72), dtype=np.uint8)  # MONAI Label's (x, y) order, as the bundles' ToXYMaskd gives it
    mask[10:30, 20:50] = 1
    output, _ = task.writer({"image_path": str(tmp_path / "scan.jpg"), "pred": mask})
    assert Path(output).suffix == ".png"
    assert set(np.unique(np.asarray(Image.open(output)))) == {0, 1}


def test_start_sh_serves_on_127_0_0_1_labels_and_infers_over_http(app_dir, bundle_source, studies, tmp_path):
    """A real server from ``monailabel/start.sh`` without ``--host`` (bounded waits; killed at the end): it
    listens on 127.0.0.1 only, takes a label by ``PUT /datastore/label`` for an id with a space and parentheses
    (URL-encoded, as BUSI's ``benign (1)``), answers ``/infer`` for it, scores the unlabelled images in the
    background (the task MONAI Label starts as a separate process) and picks the most uncertain."""
    from urllib.parse import quote

    folder = tmp_path / "studies"
    folder.mkdir()
    image_id = "benign (1)"
    shutil.copy(studies / "case_0.png", folder / f"{image_id}.png")
    unlabelled = ["benign (2)", "malignant (3)"]
    for index, name in enumerate(unlabelled, start=1):
        shutil.copy(studies / f"case_{index}.png", folder / f"{name}.png")
    port = _free_port()
    command = [str(app_dir.parent / "start.sh"), "--studies", str(folder), "--port", str(port)]
    conf = {"bundles": str(bundle_source), "model_dir": str(tmp_path / "served"), "models": "dcnet_bundle"}
    conf["skip_trainers"] = "true"
    for key, value in conf.items():
        command += ["--conf", key, value]
    env = {**server_env(tmp_path), "MONAILABEL": str(Path(sys.executable).parent / "monailabel")}
    # MONAI Label's default: the server re-reads the datastore that its background tasks (scoring) write
    env["MONAI_LABEL_DATASTORE_AUTO_RELOAD"] = "true"
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        info = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(f"{base}/info/", timeout=5) as reply:
                    info = json.loads(reply.read())
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        log_tail = (tmp_path / "server.log").read_text()[-3000:]
        assert info is not None, f"server not up after 180 s (exit {server.poll()}):\n{log_tail}"
        assert info["models"]["dcnet_bundle"]["labels"] == {"lesion": 1}
        assert "dcnet_bundle" in info["scoring"] and "epistemic" in info["strategies"]
        assert _listening_addresses(port) == {"0100007F"}, f"listening on {_listening_addresses(port)}"

        encoded = quote(image_id)
        assert encoded == "benign%20%281%29"
        mask = (np.asarray(Image.open(studies / "labels" / "final" / "case_0.png")) > 0).astype(np.uint8) * 255
        buffer = io.BytesIO()
        Image.fromarray(mask).save(buffer, format="PNG")
        body, content_type = _multipart_file("label", "label.png", buffer.getvalue())
        request = urllib.request.Request(
            f"{base}/datastore/label?image={encoded}&tag=final",
            data=body,
            headers={"Content-Type": content_type},
            method="PUT",
        )
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert json.loads(reply.read())["image"] == image_id
        np.testing.assert_array_equal(
            np.asarray(Image.open(folder / "labels" / "final" / f"{image_id}.png")) > 0, mask > 0
        )

        body, content_type = _multipart_params({"device": "cpu"})
        request = urllib.request.Request(
            f"{base}/infer/dcnet_bundle?image={encoded}&output=image", data=body, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            assert reply.status == 200
            mask = _png(reply.read())
        assert mask.shape == SOURCE_SHAPE and set(np.unique(mask)) <= {0, 1}

        body = json.dumps({"device": "cpu", "max_workers": 1}).encode()
        headers = {"Content-Type": "application/json"}
        request = urllib.request.Request(f"{base}/scoring/dcnet_bundle", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert reply.status == 200
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and status not in ("DONE", "ERROR"):
            time.sleep(1)
            with urllib.request.urlopen(f"{base}/scoring/", timeout=10) as reply:
                status = json.loads(reply.read())["status"]
        assert status == "DONE", f"scoring: {status}\n{(tmp_path / 'server.log').read_text()[-3000:]}"
        deadline, scores = time.monotonic() + 30, {}
        while time.monotonic() < deadline and len(scores) < len(unlabelled):
            with urllib.request.urlopen(f"{base}/datastore/?output=all", timeout=10) as reply:
                objects = json.loads(reply.read())["objects"]
            scores = {i: objects[i]["image"]["info"].get("epistemic_entropy_dcnet_bundle") for i in unlabelled}
            scores = {i: s for i, s in scores.items() if s is not None}
            time.sleep(0.5)
        assert len(scores) == len(unlabelled) and all(np.isfinite(s) and s > 0 for s in scores.values()), scores
        request = urllib.request.Request(f"{base}/activelearning/epistemic", data=b"{}", headers=headers)
        with urllib.request.urlopen(request, timeout=30) as reply:
            picked = json.loads(reply.read())["id"]
        # the tiny random network's scores may tie (it predicts lesion almost everywhere): any top-scored image
        assert scores[picked] == max(scores.values()), (picked, scores)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=20)
        except ProcessLookupError:
            pass
        log.close()
    assert server.poll() is not None
