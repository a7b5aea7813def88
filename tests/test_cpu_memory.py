"""``lesionseg.engines.cpu_memory``: glibc keeps freed memory for reuse during CPU training, and only then."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from lesionseg.engines import cpu_memory
from lesionseg.engines.cpu_memory import release_freed_memory, reuse_freed_memory

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="the setting exists only with glibc")


class FakeGlibc:
    """Records the ``mallopt`` and ``malloc_trim`` calls instead of making them."""

    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return 1


@pytest.fixture
def fake_glibc(monkeypatch):
    libc = FakeGlibc()
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: libc)
    monkeypatch.setattr(cpu_memory, "_holders", 0)
    return libc


def test_reuse_sets_the_documented_mallopt_parameters_and_release_restores_glibcs_values(fake_glibc):
    assert reuse_freed_memory("cpu")
    # mallopt(3): M_MMAP_MAX (-4) 0 serves nothing with mmap; M_TRIM_THRESHOLD (-1) -1 never trims the heap
    assert fake_glibc.calls == [("mallopt", -4, 0), ("mallopt", -1, -1)]
    fake_glibc.calls.clear()
    assert release_freed_memory()
    assert fake_glibc.calls == [
        ("mallopt", -4, 65536),
        ("mallopt", -1, 128 * 1024),
        ("mallopt", -3, 128 * 1024),
        ("malloc_trim", 0),
    ]


def test_nested_workflows_keep_the_setting_until_the_last_release(fake_glibc):
    assert reuse_freed_memory(torch.device("cpu"))
    assert reuse_freed_memory("cpu")  # e.g. TaiChiNet's preparation inside its training
    assert len(fake_glibc.calls) == 2  # set once
    assert not release_freed_memory()
    assert len(fake_glibc.calls) == 2  # still in force for the outer workflow
    assert release_freed_memory()
    assert fake_glibc.calls[-1] == ("malloc_trim", 0)
    assert not release_freed_memory()  # nothing left to release: a finalize without an initialize
    assert fake_glibc.calls[-1] == ("malloc_trim", 0)


def test_a_workflow_that_took_no_hold_releases_none(fake_glibc):
    """A GPU workflow, or one with the setting off, inside a CPU one must not end the outer workflow's hold."""
    assert reuse_freed_memory("cpu")  # the outer CPU workflow
    inner_held = reuse_freed_memory("cpu", enabled=False)
    assert not inner_held
    assert not release_freed_memory(held=inner_held)
    assert cpu_memory._holders == 1 and len(fake_glibc.calls) == 2  # still in force
    assert release_freed_memory(held=True)
    assert cpu_memory._holders == 0


def test_nothing_changes_on_a_gpu_or_when_switched_off(fake_glibc, caplog):
    assert not reuse_freed_memory(torch.device("cuda", 0))
    with caplog.at_level(logging.INFO, logger=cpu_memory.__name__):
        assert not reuse_freed_memory("cpu", enabled=False)
    assert fake_glibc.calls == []
    assert "cpu_reuse_freed_memory is off" in caplog.text
    assert not release_freed_memory()
    assert fake_glibc.calls == []


def test_nothing_changes_without_glibc(monkeypatch, caplog):
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    monkeypatch.setattr(cpu_memory, "_holders", 0)
    with caplog.at_level(logging.INFO, logger=cpu_memory.__name__):
        assert not reuse_freed_memory("cpu")
    assert "left as it is (not glibc" in caplog.text
    assert not release_freed_memory()


def test_a_refused_mallopt_is_an_error(fake_glibc, monkeypatch):
    monkeypatch.setattr(fake_glibc, "mallopt", lambda param, value: 0)
    with pytest.raises(OSError, match=r"mallopt\(-4, 0\) failed"):
        reuse_freed_memory("cpu")


# Allocates and frees a 64 MiB tensor (above glibc's largest mmap threshold, 32 MiB) twelve times with glibc's
# defaults and twelve times with freed memory reused (the heap settles in the first few), and prints the minor
# page faults of each of the last four allocations of each phase and the resident memory (MiB) handed back
# before a fork and by release_freed_memory.
_FAULTS_SCRIPT = textwrap.dedent(
    """
    import json, os, resource, torch
    from lesionseg.engines.cpu_memory import release_freed_memory, reuse_freed_memory

    def faults():
        counts = []
        for _ in range(12):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            block = torch.zeros(16 * 2**20)
            del block
            counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return counts[-4:]

    def resident_mib():
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20

    def returned_by(action):
        before = resident_mib()
        action()
        return before - resident_mib()

    def fork():
        child = os.fork()
        if child == 0:  # a DataLoader worker would load images here
            os._exit(0)
        os.waitpid(child, 0)

    default = faults()
    assert reuse_freed_memory("cpu")
    reused = faults()
    returned_at_fork = returned_by(fork)
    faults()  # the freed block is kept again
    returned_at_release = returned_by(release_freed_memory)
    print(json.dumps({"default": default, "reused": reused, "returned_at_fork_mib": returned_at_fork,
                      "returned_at_release_mib": returned_at_release}))
    """
)


@needs_glibc
def test_reused_blocks_touch_no_fresh_pages_and_release_returns_the_kept_memory():
    """The point of the setting, measured: with glibc's defaults every 64 MiB block is 16 384 fresh pages that
    the kernel zeroes; with freed memory reused, the same allocation after a few rounds touches none. The
    freed block stays resident meanwhile; it is handed back to the system before the process forks (a child
    would otherwise share it copy-on-write and the parent's next step copy it) and by release_freed_memory."""
    result = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    pages = 64 * 2**20 // 4096
    assert all(count >= pages // 2 for count in measured["default"]), measured
    assert all(count < 100 for count in measured["reused"]), measured
    assert measured["returned_at_fork_mib"] >= 48, measured
    assert measured["returned_at_release_mib"] >= 48, measured


def _train(steps: int = 3) -> dict[str, torch.Tensor]:
    from lesionseg.networks.nets import TaiChiNet

    torch.manual_seed(0)
    net = TaiChiNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 8, 16, 32, 64))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    images = torch.rand(4, 1, 64, 64)
    masks = (images > 0.5).float()
    for _ in range(steps):
        optimizer.zero_grad()
        positive, negative = net(images)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(positive, masks)
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(negative, 1 - masks)
        loss.backward()
        optimizer.step()
    return {name: value.detach().clone() for name, value in net.state_dict().items()}


@needs_glibc
def test_training_gives_the_same_weights_bit_for_bit():
    expected = _train()
    assert reuse_freed_memory("cpu")
    try:
        reused = _train()
    finally:
        release_freed_memory()
    assert expected.keys() == reused.keys()
    assert all(torch.equal(expected[name], reused[name]) for name in expected)


@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
@pytest.mark.parametrize("enabled", [True, False])
def test_bundle_training_sets_it_in_initialize_and_releases_it_in_finalize(bundle, enabled, fake_glibc, tmp_path):
    from lesionseg.workflows.bundle import make_workflow

    workflow = make_workflow(ROOT / "bundles" / bundle, ["train"], "train", dataset_dir=str(tmp_path / "data"),
                             ckpt_dir=str(tmp_path / "models"), prepare_dir=str(tmp_path / "easy_hard"),
                             device="$torch.device('cpu')", cpu_reuse_freed_memory=enabled, num_workers=0,
                             image_size=[32, 32], **{"network_def#features": [2, 4, 8, 16, 32]})
    workflow.initialize()
    assert cpu_memory._holders == int(enabled)
    assert [call[1:] for call in fake_glibc.calls] == ([(-4, 0), (-1, -1)] if enabled else [])
    workflow.finalize()
    assert cpu_memory._holders == 0
    assert fake_glibc.calls[-1:] == ([("malloc_trim", 0)] if enabled else [])


@pytest.mark.parametrize("bundle", ["dcnet_bundle", "taichinet_bundle"])
@pytest.mark.parametrize("device, enabled", [("cpu", True), ("cpu", False), ("cuda", True)])
def test_bundle_training_inside_a_held_workflow_releases_only_its_own_hold(bundle, device, enabled, fake_glibc,
                                                                          tmp_path):
    """A nested training (a GPU one, one with the setting off, or a CPU one) leaves the outer hold in force."""
    from lesionseg.workflows.bundle import make_workflow

    assert reuse_freed_memory("cpu")  # the enclosing workflow
    workflow = make_workflow(ROOT / "bundles" / bundle, ["train"], "train", dataset_dir=str(tmp_path / "data"),
                             ckpt_dir=str(tmp_path / "models"), prepare_dir=str(tmp_path / "easy_hard"),
                             device=f"$torch.device('{device}')", cpu_reuse_freed_memory=enabled, num_workers=0,
                             image_size=[32, 32], **{"network_def#features": [2, 4, 8, 16, 32]})
    workflow.initialize()
    assert cpu_memory._holders == (2 if device == "cpu" and enabled else 1)
    workflow.finalize()
    assert cpu_memory._holders == 1
    assert len(fake_glibc.calls) == 2  # glibc's defaults never restored under the enclosing workflow
    assert release_freed_memory()


@needs_glibc
def test_the_benchmark_compares_both_settings_and_keeps_existing_files(tmp_path, capsys):
    """``benchmarks/cpu_memory.py`` end to end on a tiny image: both settings measured in their own processes."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("cpu_memory_benchmark", ROOT / "benchmarks" / "cpu_memory.py")
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    output = tmp_path / "cpu_memory.json"
    arguments = ["--models", "basicunet", "--size", "32", "--iters", "1", "--warmup", "1", "--rounds", "1"]
    assert benchmark.main([*arguments, "--output", str(output)]) == 0
    (summary,) = json.loads(output.read_text())["results"]
    ((round_,),) = [summary["rounds"]]
    assert {result["setting"] for result in round_.values()} == {"default", "reuse"}
    assert summary["speedup"] == pytest.approx(
        round_["default"]["median_step_seconds"] / round_["reuse"]["median_step_seconds"]
    )
    assert "| basicunet (16) |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        benchmark.main([*arguments, "--output", str(output)])  # refuses to write over its own earlier result
    assert "exists" in capsys.readouterr().err
