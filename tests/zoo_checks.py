"""What the MONAI model zoo's CI checks of a bundle, run on an exported bundle in a Python without lesionseg.

Run by ``test_export_bundle.py`` as ``python -I -S tests/zoo_checks.py SPEC.json``: ``-I -S`` leaves out the
current folder, the environment's ``PYTHON*`` variables and the ``site`` module, so the ``.pth`` file of
lesionseg's editable install is never read; the spec names the site-packages folders to put back on
``sys.path`` (torch, MONAI and the other third-party packages, read without their ``.pth`` files).

Spec (JSON): ``bundle`` (the exported folder), ``site_packages`` (list), ``schema`` (the offline metadata
schema), ``dataset_dir``, ``overrides`` (config id -> value, for every workflow, e.g. tiny widths),
``train_overrides`` (added for training), ``net_overrides`` (for the network-only checks).

Checks, in the order of the zoo's ``ci/verify_bundle.py`` and unit tests: ``import lesionseg`` fails; the
required files exist and none exceeds 25 MB; ``version`` is in ``changelog``; ``verify_metadata``
against the offline schema; the train, evaluate and inference workflows in the zoo's pattern (bundle root on
``sys.path``, ``ConfigWorkflow`` -> ``initialize`` -> ``check_properties()`` -> ``run`` -> ``finalize``);
``verify_net_in_out`` with the zoo's defaults; ``ckpt_export`` to TorchScript (``torch.jit.script``), whose
model is loaded back and run. Prints one JSON line with what it found; exits non-zero on the first failure.
"""

from __future__ import annotations

import json
import sys


def main(spec_file: str) -> None:
    with open(spec_file) as stream:
        spec = json.load(stream)
    sys.path[:0] = spec["site_packages"]
    try:
        import lesionseg  # noqa: F401
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError(f"lesionseg is importable here ({lesionseg.__file__}); the check would prove nothing")

    import os
    from pathlib import Path

    import torch
    from monai.bundle import ConfigWorkflow, ckpt_export, verify_metadata, verify_net_in_out

    bundle = Path(spec["bundle"])
    configs = bundle / "configs"
    for required in ("LICENSE", "configs/metadata.json", "docs/README.md", "configs/inference.yaml"):
        assert (bundle / required).is_file(), f"missing required file {required}"
    too_large = [str(p) for p in bundle.rglob("*") if p.is_file() and p.stat().st_size > 25 * 1024 * 1024]
    assert not too_large, f"files over 25 MB: {too_large}"
    metadata = json.loads((configs / "metadata.json").read_text())
    assert metadata["version"] in metadata["changelog"], "version is not in changelog"
    verify_metadata(meta_file=str(configs / "metadata.json"), filepath=spec["schema"])

    sys.path.append(str(bundle))  # as the zoo's unit tests do
    overrides = {"bundle_root": str(bundle), "dataset_dir": spec["dataset_dir"], **spec["overrides"]}

    def workflow(names, workflow_type, **extra):
        flow = ConfigWorkflow(
            config_file=[str(configs / f"{name}.yaml") for name in names],
            meta_file=str(configs / "metadata.json"),
            logging_file=str(configs / "logging.conf"),
            workflow_type=workflow_type,
            **overrides,
            **extra,
        )
        flow.initialize()
        missing = flow.check_properties()
        assert not missing, f"{names}: required ids missing: {missing}"
        flow.run()
        flow.finalize()
        return flow

    trained = workflow(["train"], "train", **spec["train_overrides"])
    assert (bundle / "models" / "model.pt").is_file(), "training wrote no models/model.pt"
    workflow(["train", "evaluate"], "train", **{**spec["train_overrides"], "output_dir": str(bundle / "eval_run")})
    workflow(["inference"], "infer", output_dir=str(bundle / "infer_run"))
    masks = sorted(p.name for p in (bundle / "infer_run").rglob("*_mask.png"))
    assert masks, "inference wrote no masks"

    net = spec["net_overrides"]
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.yaml"),
        bundle_root=str(bundle),
        **net,
    )
    ts_file = bundle / "models" / "verify_model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts_file),
        ckpt_file=str(bundle / "models" / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.yaml"),
        bundle_root=str(bundle),
        **net,
    )
    scripted = torch.jit.load(str(ts_file))
    with torch.no_grad():
        output = scripted(torch.rand(1, 1, 32, 48))

    modules = {name: getattr(module, "__file__", None) for name, module in sys.modules.items()}
    outside = [n for n, f in modules.items() if n.split(".")[0] == "scripts" and not str(f).startswith(str(bundle))]
    assert not outside, f"scripts modules loaded from outside the bundle: {outside}"
    print(
        json.dumps(
            {
                "lesionseg_loaded": any(n.split(".")[0] == "lesionseg" for n in modules),
                "network_module": type(trained.network_def).__module__,
                "epochs": trained.trainer.state.epoch,
                "masks": masks,
                "torchscript_output_shape": list(output.shape),
                "files": sorted(str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()),
                "cwd": os.getcwd(),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
