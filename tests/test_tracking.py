"""Experiment tracking of both bundles: ``--tracking mlflow`` (MONAI's MLflow settings, a local SQLite store)
and the bundles' own TensorBoard logs, read back through MLflow's client and TensorBoard's EventAccumulator.

MLflow 3.13+ refuses the plain file store (``file://.../mlruns``); MONAI's default and these tests use a
SQLite file, which is local too and needs no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import run as bundle_run
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lesionseg.data.phantoms import write_phantom_dataset
from lesionseg.data.splits import datalist_section

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = {"dcnet": ROOT / "bundles" / "dcnet_bundle", "taichinet": ROOT / "bundles" / "taichinet_bundle"}
TINY = {
    "dcnet": {"network_def#features": [4, 8, 16, 32, 64]},
    # tracking does not depend on the easy-to-hard schedule; without it no preparation runs
    "taichinet": {"network_def#features": [2, 4, 8, 16, 32], "easy_to_hard": False},
}
EPOCHS = 2
BATCH = 4


def _tensorboard_scalars(folder: Path) -> dict[str, list[float]]:
    scalars: dict[str, list[float]] = {}
    for event_file in sorted(folder.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(event.value for event in accumulator.Scalars(tag))
    return scalars


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BUNDLES))
def test_mlflow_and_tensorboard_record_the_run(name, tmp_path):
    mlflow = pytest.importorskip("mlflow", reason='MLflow tracking needs mlflow: pip install "lesionseg[mlflow]"')
    data = write_phantom_dataset(tmp_path / "data", num_images=6, seed=2, size=(48, 64), progress=False)
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    bundle = BUNDLES[name]
    # what `python -m monai.bundle run --config_file configs/train.yaml --tracking mlflow --tracking_uri ...` does
    bundle_run(
        config_file=str(bundle / "configs" / "train.yaml"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        logging_file=str(bundle / "configs" / "logging.conf"),
        bundle_root=str(bundle),
        tracking="mlflow",
        tracking_uri=tracking_uri,
        experiment_name=f"lesionseg_{name}",
        dataset_dir=str(data),
        ckpt_dir=str(tmp_path / "models"),
        # an expression, as the bundle's own default is: MONAI 1.6.1 builds the executed config's artifact path
        # as `output_dir + " + '/config_<time>.json'"`, which only works on an expression
        output_dir=f"$'{tmp_path / 'eval'}'",
        image_size=[32, 32],
        batch_size=BATCH,
        num_workers=0,
        max_epochs=EPOCHS,
        **TINY[name],
    )

    client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(f"lesionseg_{name}")
    assert experiment is not None, "no MLflow experiment was created"
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    iterations = -(-len(datalist_section(data, "training", val_fraction=0.2, seed=0)) // BATCH)
    assert len(losses) == EPOCHS * iterations, losses  # one value per iteration
    dice = client.get_metric_history(run.info.run_id, "val_mean_dice")
    assert sorted(m.step for m in dice) == list(range(1, EPOCHS + 1)) and all(0 <= m.value <= 1 for m in dice)
    assert "val_mean_iou" in run.data.metrics
    assert run.data.params, "the run's parameters (the config's values) were not logged"
    assert "train_mean_dice" in run.data.metrics
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert any(path.endswith(".json") for path in artifacts), f"no executed config among the artifacts {artifacts}"

    # the bundle's TensorBoard logs, beside it: the same losses, and the validation metrics once per epoch
    scalars = _tensorboard_scalars(tmp_path / "eval")
    # TensorBoard stores float32 scalars, MLflow the float64 loss: equal to float32's precision
    assert scalars["train_loss"] == pytest.approx([m.value for m in losses], rel=1e-6)
    assert len(scalars["val_mean_dice"]) == EPOCHS and len(scalars["val_mean_iou"]) == EPOCHS
    assert scalars["val_mean_dice"] == pytest.approx([m.value for m in sorted(dice, key=lambda m: m.step)])
