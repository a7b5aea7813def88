"""What the bundles' ``cpu_reuse_freed_memory`` setting buys a CPU training step: time, page faults, peak memory.

With glibc's defaults every block above 32 MiB is a fresh ``mmap`` that the kernel zeroes on first touch, every
step; ``lesionseg.engines.reuse_freed_memory`` (the bundles' default for CPU training, ``docs/training.md``) keeps
freed memory for reuse instead. This script measures both on each model's training step as the paper preset of
``benchmarks/busi_accuracy.py`` trains it:

- network, memory format and precision from the bundle's ``configs/train.yaml`` (``network``,
  ``precision_policy``, the forward pass through ``train#inferer``, the bundle's autocast inferer); BasicUNet as
  the benchmark builds it (the DC-Net bundle with MONAI's ``BasicUNet``); batch size and image size of the
  preset (TaiChiNet and BasicUNet batch 16, DC-Net batch 4, 224²);
- a step: forward in training mode, BCE-with-logits on every output (the papers' losses add Dice terms on the
  same outputs, small next to the network), backward, ``torch.optim.Adam`` as the bundles build it.

For each model, ``--rounds`` rounds of two fresh processes, one with glibc's defaults and one with
``reuse_freed_memory``, in alternating order. Fresh processes, because the setting belongs to the process and
glibc's adaptive defaults cannot be restored once changed; alternating, so that both see the same load on a
shared machine. Each process runs ``--warmup`` untimed steps, then ``--iters`` timed steps, and reports the
median seconds per step, the minor page faults per step, the share of its CPU time spent in the kernel
(system time: page faults, mostly) and its peak resident memory above the resident memory just before the
network was built (``ru_maxrss``, the kernel's high-water mark). The speed-up of a round is the default's median
step over the reused-memory one; the report gives the median over rounds, and starts with the CPU model and
flags.

Usage::

    python benchmarks/cpu_memory.py                                   # all three models, 2 rounds, 2 threads
    python benchmarks/cpu_memory.py --models taichinet --rounds 3 --iters 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = ("default", "reuse")
#: model -> (bundle, batch size of the paper preset); BasicUNet runs in the DC-Net bundle
MODELS = {"basicunet": ("dcnet_bundle", 16), "dcnet": ("dcnet_bundle", 4), "taichinet": ("taichinet_bundle", 16)}
#: BasicUNet as benchmarks/busi_accuracy.py builds it (its BASICUNET network)
BASICUNET_NETWORK = {"_target_": "BasicUNet", "spatial_dims": 2, "in_channels": 1, "out_channels": 1}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _bundle_parts(model: str):
    """The bundle's network (on the CPU, channels-last as the bundles run it) and its autocast inferer."""
    from monai.bundle import ConfigParser

    bundle = REPO / "bundles" / MODELS[model][0]
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.yaml"))
    parser["bundle_root"] = str(bundle)
    parser["device"] = "$torch.device('cpu')"
    if model == "basicunet":
        parser["network_def"] = BASICUNET_NETWORK
    return parser.get_parsed_content("network"), parser.get_parsed_content("train#inferer")


def worker(model: str, setting: str, args: argparse.Namespace) -> dict:
    """One process: ``--warmup`` then ``--iters`` timed training steps; the measurements as a dict."""
    import torch
    import torch.nn.functional as F

    from lesionseg.engines import reuse_freed_memory

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if setting == "reuse" and not reuse_freed_memory("cpu"):
        raise SystemExit("reuse_freed_memory did not apply here (not glibc?): nothing to compare")
    rss_before = _rss_bytes()
    network, inferer = _bundle_parts(model)
    network.train()
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-4)
    batch = MODELS[model][1]
    images = torch.rand(batch, 1, args.size, args.size).contiguous(memory_format=torch.channels_last)
    masks = (torch.rand(batch, 1, args.size, args.size) > 0.7).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        outputs = inferer(images, network)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        loss = sum(F.binary_cross_entropy_with_logits(output, masks) for output in outputs)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    seconds, faults = [], []
    usage_before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.iters):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    user, system = usage.ru_utime - usage_before.ru_utime, usage.ru_stime - usage_before.ru_stime
    return {
        "model": model,
        "setting": setting,
        "median_step_seconds": statistics.median(seconds),
        "step_seconds": seconds,
        "faults_per_step": statistics.median(faults),
        "system_share": system / (user + system),
        "peak_memory_bytes": usage.ru_maxrss * 1024 - rss_before,
    }


def _run_worker(model: str, setting: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", model, setting, "--size", str(args.size),
               "--iters", str(args.iters), "--warmup", str(args.warmup), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{model} ({setting}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(model: str, args: argparse.Namespace) -> dict:
    """``--rounds`` alternating pairs of processes for ``model``; the per-round results and the summary."""
    rounds = []
    for index in range(args.rounds):
        order = SETTINGS if index % 2 == 0 else SETTINGS[::-1]
        results = {setting: _run_worker(model, setting, args) for setting in order}
        rounds.append(results)
        print(
            f"  {model} round {index + 1}: "
            + ", ".join(f"{s} {results[s]['median_step_seconds']:.2f} s/step" for s in SETTINGS),
            flush=True,
        )

    def median(setting: str, key: str) -> float:
        return statistics.median(r[setting][key] for r in rounds)

    return {
        "model": model,
        "batch": MODELS[model][1],
        "speedup": statistics.median(
            r["default"]["median_step_seconds"] / r["reuse"]["median_step_seconds"] for r in rounds
        ),
        **{f"{s}_{k}": median(s, k) for s in SETTINGS for k in
           ("median_step_seconds", "faults_per_step", "system_share", "peak_memory_bytes")},
        "rounds": rounds,
    }


def table(summaries: list[dict], size: int) -> str:
    lines = [
        f"| model ({size}², batch) | s/step default | s/step reused | speed-up | page faults/step default, reused "
        "| system CPU share default, reused | peak memory default, reused |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in summaries:
        lines.append(
            f"| {s['model']} ({s['batch']}) | {s['default_median_step_seconds']:.2f} | "
            f"{s['reuse_median_step_seconds']:.2f} | {s['speedup']:.2f}× | "
            f"{s['default_faults_per_step']:,.0f}, {s['reuse_faults_per_step']:,.0f} | "
            f"{s['default_system_share']:.0%}, {s['reuse_system_share']:.0%} | "
            f"{s['default_peak_memory_bytes'] / 1e9:.1f} GB, {s['reuse_peak_memory_bytes'] / 1e9:.1f} GB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["basicunet", "dcnet", "taichinet"])
    parser.add_argument("--size", type=int, default=224, help="image height and width (default 224, the preset's)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of processes per model (default 2)")
    parser.add_argument("--iters", type=int, default=4, help="timed steps per process (default 4)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3: the heap settles)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return 0
    for name in ("rounds", "iters", "warmup", "threads", "size"):
        if getattr(args, name) < (0 if name == "warmup" else 1):
            parser.error(f"--{name} must be at least {0 if name == 'warmup' else 1}")
    if output := args.output:
        if output.exists():
            parser.error(f"{output} exists; this script does not write over files")
    from lesionseg.engines.precision import cpu_features

    print(f"CPU: {cpu_features().describe()}; {args.threads} threads, pid {os.getpid()}", flush=True)
    summaries = [compare(model, args) for model in args.models]
    print(table(summaries, args.size))
    if args.output:
        args.output.write_text(json.dumps({"cpu": cpu_features().describe(), "results": summaries}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
