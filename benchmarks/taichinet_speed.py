"""Training and inference speed and peak memory of TaiChiNet against one of its U-Net paths.

TaiChiNet runs two sub-network U-Nets plus C²-attention at the bottleneck and a per-pixel head, so it
should cost about twice one path; the target is at most 2.2× one path's time per image. The single path
is :class:`lesionseg.networks.blocks.UNetPath` with the same widths (Table I, Model 1).

- training step: forward in training mode, BCE-with-logits on every output (TaiChiNet: the positive
  output against the mask, the negative output against 1 − mask), backward, an Adam step;
- inference step: ``net.eval()`` and a ``torch.inference_mode()`` forward.

Speed: for each mode, one process builds both networks, runs ``--warmup`` untimed steps of each, then
``--iters`` rounds of one path step followed by one TaiChiNet step, and reports the median time per
image of each and the median over rounds of the TaiChiNet / path ratio within a round, which decides
the target. Pairing the steps matters on a machine shared with other work: the load changes from
minute to minute, and two networks timed minutes apart can differ by 2× from the load alone. The CPU
time (user + system, all threads) is reported beside the wall time; it is less disturbed by waiting for
a core. The system part is mostly page faults: glibc serves blocks above 32 MiB (every full-resolution
activation at batch 16) with fresh ``mmap`` pages that the kernel zeroes on first touch, a quarter of
the CPU time at batch 16. ``--reuse-freed-memory`` runs the workers with glibc told to keep freed memory
for reuse instead (``MALLOC_MMAP_MAX_=0``, a large ``MALLOC_TRIM_THRESHOLD_``), which removes that cost
and measures the networks' own work; a long CPU training run can use the same setting (or jemalloc).

Peak memory: each (network, mode) pair also runs alone in a fresh Python process (warm-up, then one
step), so that its high-water mark belongs to one network and one mode. It is how much the process grows
while it builds the network and optimiser and runs: parameters, gradients, optimiser state and
activations, not the Python and torch runtime. On CPU: the peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, a high-water mark kept by the kernel, which counts every
allocation including oneDNN's scratch buffers that Python-level tracers miss) minus the resident set
size just before the network is built. On CUDA: ``torch.cuda.max_memory_allocated`` minus
``torch.cuda.memory_allocated`` before the network is built.

Precision and layout: ``--precision`` (fp32, bf16, fp16 on CUDA, auto; :func:`lesionseg.engines.resolve_precision`)
runs both networks' forward passes under autocast, as the bundles do, with the loss on float32 outputs (fp16
training with a gradient scaler); ``--channels-last`` runs both in channels-last memory format, as the TaiChiNet
bundle does. The report starts with the CPU model and its AMX and AVX-512-BF16 flags, on which the bf16
ratios depend.

Usage::

    python benchmarks/taichinet_speed.py                   # 224x224, batch 16, fp32, 2 CPU threads
    python benchmarks/taichinet_speed.py --precision bf16 --channels-last
    python benchmarks/taichinet_speed.py --precision bf16 --channels-last --against-fp32  # against the 0.2.0 bundle
    python benchmarks/taichinet_speed.py --batch 4 --iters 5
    python benchmarks/taichinet_speed.py --device cuda --iters 20
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

NETWORKS = ("taichinet", "path")
# ``--against-fp32``: TaiChiNet as the 0.2.0 bundle trained it, in fp32 and contiguous memory
BASELINE = "taichinet_fp32_contiguous"
MODES = ("train", "infer")
# glibc: never serve allocations with mmap, never give the freed top of the heap back to the system.
REUSE_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _build(name: str):
    if name == "taichinet":
        from lesionseg.networks.nets.taichinet import TaiChiNet

        return TaiChiNet(spatial_dims=2, in_channels=1, out_channels=1)
    from lesionseg.networks.blocks.unet_path import UNetPath

    return UNetPath(spatial_dims=2, in_channels=1, out_channels=1)


def _step_function(net, mode: str, images, masks, precision=None):
    """One training step (forward, BCE on every output, backward, Adam) or one inference forward; the forward
    pass under ``precision``'s autocast (a resolved :class:`lesionseg.engines.Precision`, ``None``: float32),
    the loss on float32 outputs."""
    import torch
    import torch.nn.functional as F

    from lesionseg.engines.precision import Precision, to_float32

    device_type = images.device.type
    precision = precision or Precision("fp32", device_type)
    if mode == "infer":
        net.eval()

        def infer() -> None:
            with torch.inference_mode(), precision.autocast(device_type):
                net(images)

        return infer

    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    # a disabled scaler passes the loss and the step through unchanged (fp32, bf16)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.grad_scaling)

    def train() -> None:
        with precision.autocast(device_type):
            outputs = net(images)
        outputs = to_float32(outputs)
        if isinstance(outputs, tuple):  # TaiChiNet: (positive, negative)
            loss = F.binary_cross_entropy_with_logits(outputs[0], masks)
            loss = loss + F.binary_cross_entropy_with_logits(outputs[1], 1 - masks)
        else:
            loss = F.binary_cross_entropy_with_logits(outputs, masks)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train


def _network(name: str, device: str, channels_last: bool):
    import torch

    return _build(name).to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _precision(name: str, device: str):
    from lesionseg.engines.precision import resolve_precision

    return resolve_precision(name, device)


def cpu_report() -> str:
    """The CPU model and its bfloat16 flags, e.g. ``CPU Intel(R) Xeon(R) ...: AMX-BF16 yes, AVX512-BF16 yes ...``."""
    from lesionseg.engines.precision import cpu_features

    return f"CPU {cpu_features().describe()}"


def _inputs(size: int, batch: int, device: str, threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images = torch.rand(batch, 1, size, size, device=device)
    masks = (torch.rand(batch, 1, size, size, device=device) > 0.8).float()
    return images, masks


def _timed(step, cuda: bool) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one step."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    start, start_cpu = time.perf_counter(), os.times()
    step()
    if cuda:
        torch.cuda.synchronize()
    end, end_cpu = time.perf_counter(), os.times()
    return end - start, (end_cpu.user - start_cpu.user) + (end_cpu.system - start_cpu.system)


def measure_memory(
    name: str, mode: str, size: int, batch: int, warmup: int, device: str, threads: int,
    precision: str = "fp32", channels_last: bool = False,
) -> dict:
    """Peak memory of one (network, mode) pair, alone in this (fresh) process."""
    import torch

    images, masks = _inputs(size, batch, device, threads)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        baseline = _current_rss_bytes()
    net = _network(name, device, channels_last)
    step = _step_function(net, mode, images, masks, _precision(precision, device))
    for _ in range(warmup + 1):
        step()
    if cuda:
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline  # ru_maxrss is in KiB
    return {
        "network": name,
        "mode": mode,
        "parameters": sum(p.numel() for p in net.parameters()),
        "peak_memory_mib": peak / 2**20,
    }


def measure_speed(
    mode: str, size: int, batch: int, iters: int, warmup: int, device: str, threads: int,
    precision: str = "fp32", channels_last: bool = False, against_fp32: bool = False,
) -> dict:
    """Median wall and CPU seconds per image of both networks, their steps alternating in this process; with
    ``against_fp32`` also of TaiChiNet in fp32 and contiguous memory (:data:`BASELINE`) in the same rounds."""
    images, masks = _inputs(size, batch, device, threads)
    resolved = _precision(precision, device)
    steps = {
        name: _step_function(_network(name, device, channels_last), mode, images, masks, resolved) for name in NETWORKS
    }
    if against_fp32:
        steps[BASELINE] = _step_function(
            _network("taichinet", device, False), mode, images, masks, _precision("fp32", device)
        )
    for step in steps.values():
        for _ in range(warmup):
            step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(iters):
        for name in ("path", "taichinet", BASELINE)[: len(steps)]:  # the path first, then TaiChiNet
            seconds, cpu_seconds = _timed(steps[name], device.startswith("cuda"))
            wall[name].append(seconds / batch)
            cpu[name].append(cpu_seconds / batch)
    return {
        name: {
            "seconds_per_image": statistics.median(wall[name]),
            "cpu_seconds_per_image": statistics.median(cpu[name]),
            "seconds_per_image_all": wall[name],
            "cpu_seconds_per_image_all": cpu[name],
        }
        for name in steps
    }


def _run_worker(args: argparse.Namespace, worker: str) -> dict:
    command = [
        sys.executable,
        __file__,
        "--worker",
        worker,
        *("--size", str(args.size), "--batch", str(args.batch), "--iters", str(args.iters)),
        *("--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads)),
        *("--precision", args.precision),
        *(["--channels-last"] if args.channels_last else []),
        *(["--against-fp32"] if args.against_fp32 else []),
    ]
    env = {**os.environ, **REUSE_FREED_MEMORY} if args.reuse_freed_memory else None
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    if finished.returncode != 0:
        raise RuntimeError(f"the {worker} measurement failed:\n{finished.stderr}")
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    print(worker, json.dumps(result), file=sys.stderr, flush=True)
    return result


def _paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median over rounds of the ratio within a round."""
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="image height and width (multiple of 16)")
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--iters", type=int, default=3, help="timed steps of each network (median kept)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each network before timing")
    parser.add_argument("--device", default="cpu", help="'cpu' or a CUDA device such as 'cuda'")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads for CPU runs")
    parser.add_argument(
        "--reuse-freed-memory", action="store_true", help="run the workers with glibc reusing freed memory"
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "auto"),
        default="fp32",
        help="forward passes under autocast in this precision (fp16: CUDA only; auto: bf16 where native); default fp32",
    )
    parser.add_argument(
        "--channels-last", action="store_true", help="both networks in channels-last memory format (as the bundle runs)"
    )
    parser.add_argument(
        "--against-fp32",
        action="store_true",
        help="also time TaiChiNet in fp32 and contiguous memory (the 0.2.0 bundle) in the same rounds",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # "memory:NETWORK:MODE" or "speed:MODE"
    args = parser.parse_args(argv)
    if args.size % 16 != 0:
        parser.error(f"--size must be a multiple of 16, got {args.size}")
    try:
        resolved = _precision(args.precision, args.device).name
    except ValueError as error:
        parser.error(str(error))

    if args.worker:
        kind, *rest = args.worker.split(":")
        if kind == "memory" and rest[0] == BASELINE:
            result = measure_memory("taichinet", rest[1], args.size, args.batch, args.warmup, args.device,
                                    args.threads, "fp32", False)
        elif kind == "memory":
            result = measure_memory(*rest, args.size, args.batch, args.warmup, args.device, args.threads,
                                    args.precision, args.channels_last)
        else:
            result = measure_speed(*rest, args.size, args.batch, args.iters, args.warmup, args.device, args.threads,
                                   args.precision, args.channels_last, args.against_fp32)
        print(json.dumps(result))
        return 0

    measured = NETWORKS + ((BASELINE,) if args.against_fp32 else ())
    memory = {(name, mode): _run_worker(args, f"memory:{name}:{mode}") for mode in MODES for name in measured}
    speed = {mode: _run_worker(args, f"speed:{mode}") for mode in MODES}

    print(cpu_report())
    print(
        f"{args.size}x{args.size}, batch {args.batch}, {resolved} (--precision {args.precision})"
        f"{', channels-last' if args.channels_last else ''}, device {args.device}, {args.threads} CPU threads; "
        f"speed: median of {args.iters} alternating steps after {args.warmup} warm-up"
        + ("; glibc reusing freed memory" if args.reuse_freed_memory else "")
    )
    print(
        f"{'network':<26} {'mode':<6} {'params':>11} {'images/s':>9} {'s/image':>8} {'CPU s/image':>11} {'peak MiB':>9}"
    )
    for mode in MODES:
        for name in measured:
            timing, peak = speed[mode][name], memory[(name, mode)]
            print(
                f"{name:<26} {mode:<6} {peak['parameters']:>11,} {1 / timing['seconds_per_image']:>9.3f} "
                f"{timing['seconds_per_image']:>8.3f} {timing['cpu_seconds_per_image']:>11.3f} "
                f"{peak['peak_memory_mib']:>9.0f}"
            )
    for mode in MODES:
        taichinet, path = speed[mode]["taichinet"], speed[mode]["path"]
        time_ratio = _paired_ratio(taichinet["seconds_per_image_all"], path["seconds_per_image_all"])
        cpu_ratio = _paired_ratio(taichinet["cpu_seconds_per_image_all"], path["cpu_seconds_per_image_all"])
        ratio_of_medians = taichinet["seconds_per_image"] / path["seconds_per_image"]
        memory_ratio = memory[("taichinet", mode)]["peak_memory_mib"] / memory[("path", mode)]["peak_memory_mib"]
        verdict = "meets" if time_ratio <= 2.2 else "MISSES"
        print(
            f"{mode}: TaiChiNet / one path = {time_ratio:.2f}x time per image ({verdict} the 2.2x target; "
            f"ratio of the medians {ratio_of_medians:.2f}x), {cpu_ratio:.2f}x CPU time, "
            f"{memory_ratio:.2f}x peak memory"
        )
    if args.against_fp32:
        settings = f"{resolved}{' + channels-last' if args.channels_last else ''}"
        for mode in MODES:
            gain = _paired_ratio(speed[mode][BASELINE]["seconds_per_image_all"],
                                 speed[mode]["taichinet"]["seconds_per_image_all"])
            memory_ratio = memory[("taichinet", mode)]["peak_memory_mib"] / memory[(BASELINE, mode)]["peak_memory_mib"]
            print(
                f"{mode}: TaiChiNet {settings} / TaiChiNet fp32 contiguous = {gain:.2f}x throughput "
                f"(median of the paired ratios), {memory_ratio:.2f}x peak memory"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
