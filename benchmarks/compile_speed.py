"""Compiled against eager inference: throughput, compile time and output agreement, in one process.

The network (DC-Net by default, as ``lesionseg predict`` builds it from the bundle) runs in eval mode under
``--precision``'s autocast, once as it is and once through :func:`lesionseg.engines.compile_for_inference`
(``torch.compile``, TorchInductor), sharing the same weights. Its BatchNorm layers are calibrated first: a few
training-mode forward passes without gradients, so that the running statistics are those of the inputs and
not a fresh network's (0, 1), which matters for the agreement check.

- compile time: the first compiled call (tracing, code generation, the C++ compiler), minus one eager step;
- speed: ``--warmup`` untimed steps of each, then ``--iters`` rounds of one eager and one compiled step;
  throughput is ``batch / t`` for the fastest and the median step of each, and the ratio is the median over
  rounds of eager time / compiled time within a round (pairing makes it robust to a shared machine's load);
- agreement: the largest absolute difference of the logits, and the Dice of the two masks thresholded at 0.

Usage::

    python benchmarks/compile_speed.py                          # DC-Net, 256x256, batch 4, bf16, 2 threads
    python benchmarks/compile_speed.py --precision fp32 --network taichinet --size 224
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def _build(name: str):
    import torch

    if name == "dcnet":
        from lesionseg.networks.nets import DCNet

        return DCNet(in_channels=1, out_channels=1).to(memory_format=torch.channels_last)
    from lesionseg.networks.nets import TaiChiNet

    return TaiChiNet(spatial_dims=2, in_channels=1, out_channels=1).to(memory_format=torch.channels_last)


def _first(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=("dcnet", "taichinet"), default="dcnet")
    parser.add_argument("--size", type=int, default=256, help="image height and width, a multiple of 16 (256)")
    parser.add_argument("--batch", type=int, default=4, help="images per step (4)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16", "auto"), default="bf16")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each after the compile (2)")
    parser.add_argument("--iters", type=int, default=10, help="timed rounds (10)")
    args = parser.parse_args(argv)
    if args.size % 16:
        parser.error(f"--size must be a multiple of 16, got {args.size}")

    import torch

    from lesionseg.engines import compile_for_inference, resolve_precision
    from lesionseg.engines.precision import cpu_features

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    precision = resolve_precision(args.precision, device)
    # smooth speckle-like inputs in [0, 1], not white noise
    noise = torch.rand(args.batch, 1, args.size // 8, args.size // 8)
    images = torch.nn.functional.interpolate(noise, size=(args.size, args.size), mode="bilinear").to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    net = _build(args.network).to(device)
    with torch.no_grad():
        net.train()
        for _ in range(3):  # BatchNorm calibration
            net(images)
    net.eval()
    compiled = compile_for_inference(net, device.type)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step(forward):
        sync()
        start = time.perf_counter()
        with torch.inference_mode(), precision.autocast(device.type):
            output = _first(forward(images)).float()
        sync()
        return time.perf_counter() - start, output

    eager_first, eager_out = step(net)
    compile_seconds, compiled_out = step(compiled)
    for _ in range(args.warmup):
        step(net), step(compiled)
    eager, fast = [], []
    for _ in range(args.iters):
        eager.append(step(net)[0])
        fast.append(step(compiled)[0])

    ratio = statistics.median(e / c for e, c in zip(eager, fast))
    difference = (eager_out - compiled_out).abs().max().item()
    eager_mask, compiled_mask = eager_out > 0, compiled_out > 0
    overlap = 2 * (eager_mask & compiled_mask).sum().item()
    total = eager_mask.sum().item() + compiled_mask.sum().item()
    dice = overlap / total if total else 1.0

    print(f"CPU {cpu_features().describe()}")
    print(
        f"{args.network}, {args.size}x{args.size}, batch {args.batch}, {precision.name} "
        f"(--precision {args.precision}), channels-last, eval mode, {args.threads} threads, "
        f"device {args.device}, torch {torch.__version__}; "
        f"{args.warmup} warm-up + {args.iters} alternating rounds"
    )
    print(f"compile: {compile_seconds - eager_first:.1f} s (first compiled call {compile_seconds:.1f} s)")
    print(f"{'':<9} {'images/s best':>13} {'median':>8}")
    for name, times in (("eager", eager), ("compiled", fast)):
        print(f"{name:<9} {args.batch / min(times):>13.3f} {args.batch / statistics.median(times):>8.3f}")
    print(f"compiled / eager: {ratio:.2f}x throughput (median of the paired ratios)")
    print(
        f"agreement: max |logit difference| {difference:.3g} (largest |logit| {eager_out.abs().max().item():.3g}), "
        f"mask Dice {dice:.5f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
