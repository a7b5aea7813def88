"""Both bundles in MONAI Label 0.8.5's stock ``monaibundle`` app: info, inference, training and epistemic
scoring through the FastAPI server app in-process, and inference once through a real ``monailabel
start_server`` on 127.0.0.1. Fixtures: ``conftest.py`` beside this file."""

from __future__ import annotations

import io
import json
import os
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
from monailabel_testing import BUNDLES, LABELLED, OFFLINE_CONF, SOURCE_SHAPE, server_env
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
    assert set(info["strategies"]) == {"random", "first"}
    assert not any(name.startswith("sam") for name in info["models"]), "SAM must be off (it downloads weights)"


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
def test_infer_mask_equals_the_bundles_own_run_pixel_for_pixel(client, app_dir, studies, name, tmp_path):
    """MONAI Label's PNG, the bundle's own inference run and the bundle's transforms applied by hand give
    the same mask, with the network replaced by ``x - 0.5`` in all three."""
    from monai.bundle import ConfigParser
    from monai.transforms import Compose
    from monailabel.interfaces.utils.app import app_instance

    bundle = app_dir / "model" / name
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


@pytest.mark.parametrize("name", BUNDLES)
def test_train_rewrites_the_model(client, app_dir, name):
    model = app_dir / "model" / name / "models" / "model.pt"
    before = torch.load(model, map_location="cpu", weights_only=True)
    mtime = model.stat().st_mtime_ns
    params = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False, "pretrained": True}
    response = client.post(f"/train/{name}?run_sync=true", json=params)
    assert response.status_code == 200, response.text
    assert model.stat().st_mtime_ns > mtime, f"{model} was not rewritten"
    after = torch.load(model, map_location="cpu", weights_only=True)
    after = after.get("model", after)
    assert set(after) == set(before)
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert changed, "training changed no weight"
    # the new model answers
    response = client.post(f"/infer/{name}?image=case_0&output=image", data={"params": json.dumps({"device": "cpu"})})
    assert response.status_code == 200, response.text
    assert _png(response.content).shape == SOURCE_SHAPE


@pytest.mark.parametrize("name", BUNDLES)
def test_epistemic_scoring_uses_dropout_and_scores_the_unlabelled_images(client, name):
    from monailabel.interfaces.utils.app import app_instance

    method = app_instance()._scoring_methods[name]
    dropouts = [m.p for m in method.infer_task.network.modules() if isinstance(m, torch.nn.Dropout)]
    assert dropouts and all(p == pytest.approx(0.2) for p in dropouts), f"{name}: network_def#dropout not applied"
    response = client.post(f"/scoring/{name}?run_sync=true", json={"device": "cpu", "max_workers": 1})
    assert response.status_code == 200, response.text
    datastore = client.get("/datastore/?output=all").json()
    scores = {i: datastore["objects"][i]["image"]["info"].get("epistemic_entropy") for i in UNLABELLED}
    assert all(isinstance(s, float) and np.isfinite(s) and s >= 0 for s in scores.values()), scores


def test_epistemic_strategy_picks_the_most_uncertain_image(client):
    """The README's recipe: MONAI Label's Epistemic strategy registered beside the stock app's random and
    first, asked through the active-learning endpoint after a scoring run."""
    from monailabel.interfaces.utils.app import app_instance
    from monailabel.tasks.activelearning.epistemic import Epistemic

    response = client.post("/scoring/dcnet_bundle?run_sync=true", json={"device": "cpu", "max_workers": 1})
    assert response.status_code == 200, response.text
    app = app_instance()
    scores = {i: app.datastore().get_image_info(i)["epistemic_entropy"] for i in UNLABELLED}
    app._strategies["epistemic"] = Epistemic()  # what init_strategies does with the README's line added
    try:
        response = client.post("/activelearning/epistemic", json={})
    finally:
        del app._strategies["epistemic"]
    assert response.status_code == 200, response.text
    assert response.json()["id"] == max(scores, key=scores.get)


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


def test_start_server_answers_infer_over_http(app_dir, studies, tmp_path):
    """A real ``monailabel start_server`` on 127.0.0.1 (bounded waits; the server is killed at the end)."""
    port = _free_port()
    conf = {**OFFLINE_CONF, "models": "dcnet_bundle", "skip_trainers": "true"}
    command = [str(Path(sys.executable).parent / "monailabel"), "start_server", "--app", str(app_dir)]
    command += ["--studies", str(studies), "--host", "127.0.0.1", "--port", str(port)]
    for key, value in conf.items():
        command += ["--conf", key, value]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env=server_env(tmp_path), start_new_session=True
    )
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
        body, content_type = _multipart_params({"device": "cpu"})
        request = urllib.request.Request(
            f"{base}/infer/dcnet_bundle?image=case_3&output=image", data=body, headers={"Content-Type": content_type}
        )
        with urllib.request.urlopen(request, timeout=120) as reply:
            assert reply.status == 200
            mask = _png(reply.read())
        assert mask.shape == SOURCE_SHAPE and set(np.unique(mask)) <= {0, 1}
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
