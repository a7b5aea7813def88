"""Training and inference speed and peak memory of DC-Net against MONAI's BasicUNet.

- training step: ``zero_grad`` + forward (training mode) + BCE-with-logits on every output + backward + Adam
  (torch's default implementation, or with ``--fused-adam`` its fused one for both networks: the default
  loops over the parameters, which costs DC-Net's 54 M parameters about 1.5 s per step on 2 CPU threads);
- inference step: ``net.eval()`` and ``torch.inference_mode()`` forward.

Speed: for each mode one fresh process builds both networks and alternates their steps (DC-Net, BasicUNet,
DC-Net, ...), ``--warmup`` untimed steps each, then ``--iters`` timed steps each, so that both see the
same load on a shared machine. Throughput is ``batch / t`` with ``t`` the fastest step of each network
(noise only ever slows a step down); the median step is printed as well. ``--repeats`` repeats the whole
timing and keeps the fastest steps over all repeats.

Peak memory: every (network, mode) pair runs in its own fresh process (one warm-up and one measured step:
the second step is the first with optimiser state). It is the growth of the process from just before
the network is built, so it covers parameters, gradients, optimiser state and activations, not the
Python and torch runtime. On CUDA: ``torch.cuda.max_memory_allocated`` minus ``memory_allocated`` before.
On CPU: the peak resident set size (``resource.getrusage(...).ru_maxrss``, a high-water mark kept by the
kernel that sees every allocation, oneDNN's buffers included, which ``tracemalloc`` does not) minus the
resident set size before. These processes run with ``MALLOC_MMAP_THRESHOLD_=131072``: by default glibc
raises its mmap threshold up to 32 MB as large blocks are freed, after which freed tensors stay in the
heap and the resident set holds memory no tensor uses (it creeps up from step to step). With the fixed
threshold every block of 128 KiB or more goes back to the system when freed, so the peak resident set
follows the live memory, as CUDA's counter does. ``--default-malloc`` measures without it.

Precision: ``--precision`` (fp32, bf16, fp16 on CUDA, auto; :func:`lesionseg.engines.resolve_precision`) runs
both networks' forward passes under autocast, as the bundles do, with the loss on float32 outputs; fp16
training steps use a gradient scaler. The report starts with the CPU model and its AMX and AVX-512-BF16
flags, on which the bf16 ratios depend. ``--against-fp32`` also times both networks in fp32 in the same
rounds (same layout and optimiser), so the bf16 / fp32 speed-ups come from one run.

Usage::

    python benchmarks/dcnet_speed.py                       # 256x256, batch 4, fp32, 2 CPU threads
    python benchmarks/dcnet_speed.py --precision bf16 --channels-last --fused-adam
    python benchmarks/dcnet_speed.py --precision bf16 --against-fp32 --channels-last --fused-adam  # bf16 speed-up
    python benchmarks/dcnet_speed.py --device cuda --iters 20
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
from collections.abc import Callable

NETWORKS = ("dcnet", "basicunet")
MODES = ("train", "infer")
MMAP_THRESHOLD = "131072"


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _build(name: str, activation_checkpointing: bool = True):
    if name == "dcnet":
        from lesionseg.networks.nets.dcnet import DCNet

        return DCNet(in_channels=1, out_channels=1, use_checkpoint=activation_checkpointing)
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1)


def _to(net, args: argparse.Namespace):
    """``net`` on the benchmark's device, in channels-last memory format with ``--channels-last``."""
    import torch

    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    return net.to(args.device, memory_format=memory_format)


def _step_function(net, mode: str, image, target, fused_adam: bool = False, precision=None) -> Callable[[], None]:
    """One step of ``mode``; the forward pass under ``precision``'s autocast (a resolved
    :class:`lesionseg.engines.Precision`, ``None``: float32), the loss on float32 outputs."""
    import torch

    from lesionseg.engines.precision import Precision, to_float32

    precision = precision or Precision("fp32", image.device.type)
    if mode == "infer":
        net.eval()

        def infer() -> None:
            with torch.inference_mode(), precision.autocast(image.device.type):
                net(image)

        return infer
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-4, fused=fused_adam or None)
    # a disabled scaler passes the loss and the step through unchanged (fp32, bf16)
    scaler = torch.amp.GradScaler("cuda", enabled=precision.grad_scaling)
    targets = (target, target, 1.0 - target)  # lesion, foreground and background saliency (DC-Net)

    def train() -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(image.device.type):
            outputs = net(image)
        outputs = to_float32(outputs if isinstance(outputs, tuple) else (outputs,))
        loss = sum(torch.nn.functional.binary_cross_entropy_with_logits(o, t) for o, t in zip(outputs, targets))
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return train


def _precision(args: argparse.Namespace):
    from lesionseg.engines.precision import resolve_precision

    return resolve_precision(args.precision, args.device)


def cpu_report() -> str:
    """The CPU model and its bfloat16 flags, e.g. ``CPU Intel(R) Xeon(R) ...: AMX-BF16 yes, AVX512-BF16 yes ...``."""
    from lesionseg.engines.precision import cpu_features

    return f"CPU {cpu_features().describe()}"


def _inputs(args: argparse.Namespace):
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    image = torch.rand(args.batch, 1, args.size, args.size, device=device)
    target = (torch.rand(args.batch, 1, args.size, args.size, device=device) > 0.5).float()
    return torch, device, image, target


def _runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The timed (network, precision) pairs: both networks in ``--precision``, and in fp32 with ``--against-fp32``."""
    precisions = [args.precision] + (["fp32"] if args.against_fp32 and args.precision != "fp32" else [])
    return [(name, precision) for precision in precisions for name in NETWORKS]


def time_both(args: argparse.Namespace, mode: str) -> dict:
    """Step times (seconds) of every (network, precision) run, alternating, in this process."""
    from lesionseg.engines.precision import resolve_precision

    torch, device, image, target = _inputs(args)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    steps = {
        f"{name}:{precision}": _step_function(
            _to(_build(name, not args.no_activation_checkpointing), args),
            mode,
            image,
            target,
            args.fused_adam,
            resolve_precision(precision, args.device),
        )
        for name, precision in _runs(args)
    }
    for _ in range(args.warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {key: [] for key in steps}
    for _ in range(args.iters):
        for name, step in steps.items():
            sync()
            start = time.perf_counter()
            step()
            sync()
            times[name].append(time.perf_counter() - start)
    return {"times": times, "torch": torch.__version__}


def peak_memory(args: argparse.Namespace, name: str, mode: str, precision: str) -> dict:
    """Peak memory growth (bytes) of one network in one mode and precision, from before it is built, in this
    process."""
    from lesionseg.engines.precision import resolve_precision

    torch, device, image, target = _inputs(args)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _current_rss_bytes()
    net = _to(_build(name, not args.no_activation_checkpointing), args)
    step = _step_function(net, mode, image, target, args.fused_adam, resolve_precision(precision, args.device))
    for _ in range(2):
        step()
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base  # ru_maxrss is in KiB on Linux
    return {"peak_bytes": peak, "parameters": sum(p.numel() for p in net.parameters())}


def _subprocess(args: argparse.Namespace, worker: str, fixed_mmap_threshold: bool = False) -> dict:
    env = dict(os.environ)
    if fixed_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = MMAP_THRESHOLD
    options = ["--size", str(args.size), "--batch", str(args.batch), "--iters", str(args.iters)]
    options += ["--warmup", str(args.warmup), "--device", args.device, "--threads", str(args.threads)]
    options += ["--fused-adam"] if args.fused_adam else []
    options += ["--channels-last"] if args.channels_last else []
    options += ["--precision", args.precision]
    options += ["--against-fp32"] if args.against_fp32 else []
    options += ["--no-activation-checkpointing"] if args.no_activation_checkpointing else []
    command = [sys.executable, __file__, "--worker", worker, *options]
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="image height and width (default 256)")
    parser.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per network (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per network first (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="repeat the timing, keep the fastest (default 1)")
    parser.add_argument("--default-malloc", action="store_true", help="measure CPU memory with glibc's defaults")
    parser.add_argument("--fused-adam", action="store_true", help="torch.optim.Adam(fused=True) for both networks")
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="both networks in channels-last memory format (as the DC-Net bundle runs)",
    )
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16", "auto"),
        default="fp32",
        help="forward passes under autocast in this precision (fp16: CUDA only; auto: bf16 where native); default fp32",
    )
    parser.add_argument(
        "--against-fp32",
        action="store_true",
        help="also time both networks in fp32 (same layout and optimiser) in the same rounds and print the speed-ups",
    )
    parser.add_argument(
        "--no-activation-checkpointing",
        action="store_true",
        help="DC-Net keeps its decomposition subnet's activations instead of recomputing them (use_checkpoint=False)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.size % 16 or args.size < 32:
        parser.error(f"--size must be a multiple of 16 and at least 32 (DC-Net's input contract), got {args.size}")
    try:
        resolved = _precision(args).name
    except ValueError as error:
        parser.error(str(error))

    if args.worker:
        kind, *rest = args.worker.split(":")
        result = time_both(args, *rest) if kind == "time" else peak_memory(args, *rest)
        print(json.dumps(result))
        return 0

    runs = _runs(args)
    times = {(f"{name}:{precision}", mode): [] for name, precision in runs for mode in MODES}
    version = ""
    for _ in range(args.repeats):
        for mode in MODES:
            timed = _subprocess(args, f"time:{mode}")
            version = timed["torch"]
            for key, step_times in timed["times"].items():
                times[(key, mode)] += step_times
    fixed = not args.default_malloc and not args.device.startswith("cuda")
    memory = {
        (f"{name}:{precision}", mode): _subprocess(
            args, f"memory:{name}:{mode}:{precision}", fixed_mmap_threshold=fixed
        )
        for name, precision in runs
        for mode in MODES
    }

    malloc = "" if args.device.startswith("cuda") else ", CPU memory " + ("glibc defaults" if not fixed else "live")
    print(cpu_report())
    print(
        f"size {args.size}x{args.size}, batch {args.batch}, {resolved} (--precision {args.precision}), "
        f"{args.threads} threads, device {args.device}, "
        f"{args.warmup} warm-up + {args.iters} timed steps x {args.repeats}, torch {version}{malloc}"
        f"{', fused Adam' if args.fused_adam else ''}{', channels-last' if args.channels_last else ''}"
        f"{', DC-Net without activation checkpointing' if args.no_activation_checkpointing else ''}"
    )
    print(
        f"{'network':<10} {'precision':<9} {'params (M)':>10} {'mode':<6} {'images/s best':>13} {'(median)':>9} "
        f"{'peak (GB)':>9}"
    )
    speed, peak = {}, {}
    for name, precision in runs:
        key = f"{name}:{precision}"
        for mode in MODES:
            step_times = times[(key, mode)]
            speed[(key, mode)] = args.batch / min(step_times)
            median = args.batch / statistics.median(step_times)
            peak[(key, mode)] = memory[(key, mode)]["peak_bytes"]
            params = memory[(key, mode)]["parameters"] / 1e6
            print(
                f"{name:<10} {precision:<9} {params:>10.2f} {mode:<6} {speed[(key, mode)]:>13.3f} {median:>9.3f} "
                f"{peak[(key, mode)] / 1e9:>9.2f}"
            )
    chosen = args.precision
    for mode in MODES:
        ratio = speed[(f"dcnet:{chosen}", mode)] / speed[(f"basicunet:{chosen}", mode)]
        mem = peak[(f"dcnet:{chosen}", mode)] / peak[(f"basicunet:{chosen}", mode)]
        print(f"DC-Net / BasicUNet ({chosen}), {mode:<5}: throughput {ratio:.2f}x, peak memory {mem:.1f}x")
    if ("dcnet:fp32", "train") in speed and chosen != "fp32":
        for mode in MODES:
            for name in NETWORKS:
                gain = speed[(f"{name}:{chosen}", mode)] / speed[(f"{name}:fp32", mode)]
                mem = peak[(f"{name}:{chosen}", mode)] / peak[(f"{name}:fp32", mode)]
                print(f"{name} {chosen} / fp32, {mode:<5}: throughput {gain:.2f}x, peak memory {mem:.2f}x")
        against = speed[(f"dcnet:{chosen}", "infer")] / speed[("basicunet:fp32", "infer")]
        print(f"DC-Net {chosen} inference / BasicUNet fp32 inference: {against:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
