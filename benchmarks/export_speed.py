"""Inference throughput of ONNX Runtime (CPU) against eager PyTorch for DC-Net and TaiChiNet.

For each network at its paper's image size (DC-Net 256x256, TaiChiNet 224x224, one grey channel, the
published widths) this script

1. builds the network with its published widths and, with ``--checkpoint``, loads a bundle's
   ``models/model.pt``; without one it calibrates the BatchNorm statistics on random images first (an
   untrained DC-Net in evaluation mode has no sensible running statistics and its logits overflow);
2. exports it with :func:`lesionseg.deploy.export_onnx` (dynamic batch, height and width), which checks the
   ONNX Runtime output against eager PyTorch;
3. in this one process, runs ``--warmup`` untimed calls of each, then ``--iters`` rounds of one eager call
   (``net.eval()``, ``torch.inference_mode()``, ``torch.set_num_threads(--threads)``) followed by one
   ONNX Runtime call (``CPUExecutionProvider``, ``intra_op_num_threads = --threads``, one inter-op thread,
   all graph optimisations: ORT folds BatchNorm into the convolutions itself).

It reports the median time per batch of each and the median over rounds of eager / ORT time within a round
(the throughput ratio; the target is at least 1.5), and the ratio of the fastest call of each. Pairing the
calls keeps the ratio honest on a machine shared with other work, where the load changes from minute to
minute; the fastest calls are the least disturbed ones. The load matters here: eager PyTorch's two OpenMP
threads wait for each other at every operation, so when another process takes a core its time grows several
fold, while ONNX Runtime's grows less. The ratio on an idle machine is the ratio of the fastest calls.

Usage::

    python benchmarks/export_speed.py                       # both networks, batch 1, 2 threads
    python benchmarks/export_speed.py --networks taichinet --iters 20 --batch 4
    python benchmarks/export_speed.py --json results.json

Measured (2 shared CPU cores, torch 2.13.0 CPU, onnxruntime 1.32.0, batch 1, 2 threads each): see the
project README, "Export".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

#: network -> (image size of its bundle, constructor)
NETWORKS = {"dcnet": (256, 256), "taichinet": (224, 224)}


def _build(name: str, checkpoint: str | None, size: tuple[int, int]):
    import torch

    from lesionseg.engines import load_checkpoint
    from lesionseg.networks.nets import DCNet, TaiChiNet

    torch.manual_seed(0)
    net = DCNet() if name == "dcnet" else TaiChiNet()
    if checkpoint:
        state = load_checkpoint(checkpoint)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
    else:
        norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        for norm in norms:
            norm.momentum = None  # a cumulative average over the calibration batches
        net.train()
        with torch.no_grad():
            for _ in range(2):
                net(torch.rand(2, 1, *size))
    return net.eval()


def measure(name: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Times (seconds per batch) of eager PyTorch and ONNX Runtime for one network, paired per round."""
    import onnxruntime as ort
    import torch

    from lesionseg.deploy import export_onnx, onnx_session

    torch.set_num_threads(args.threads)
    size = NETWORKS[name]
    net = _build(name, args.checkpoint.get(name), size)
    path = workdir / f"{name}.onnx"
    start = time.perf_counter()
    export_onnx(net, path, image_size=size)
    export_seconds = time.perf_counter() - start
    session = onnx_session(path, args.threads)
    image = torch.rand(args.batch, 1, *size)
    feed = {"image": image.numpy()}

    def eager() -> None:
        with torch.inference_mode():
            net(image)

    def onnx() -> None:
        session.run(None, feed)

    for _ in range(args.warmup):
        eager()
        onnx()
    times: dict[str, list[float]] = {"eager": [], "onnxruntime": []}
    for _ in range(args.iters):
        for key, call in (("eager", eager), ("onnxruntime", onnx)):
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    ratios = [e / o for e, o in zip(times["eager"], times["onnxruntime"])]
    return {
        "image_size": list(size),
        "batch": args.batch,
        "threads": args.threads,
        "export_seconds": round(export_seconds, 1),
        "eager_median_s": statistics.median(times["eager"]),
        "onnxruntime_median_s": statistics.median(times["onnxruntime"]),
        "throughput_ratio_median": statistics.median(ratios),
        "throughput_ratio_min": min(ratios),
        "eager_fastest_s": min(times["eager"]),
        "onnxruntime_fastest_s": min(times["onnxruntime"]),
        "throughput_ratio_fastest": min(times["eager"]) / min(times["onnxruntime"]),
        "times": times,
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="threads of each runtime (default 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--target", type=float, default=1.5, help="the throughput ratio to reach (default 1.5)")
    parser.add_argument(
        "--checkpoint", nargs="*", default=[], metavar="NET=PATH", help="weights to load, e.g. dcnet=models/model.pt"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    try:
        args.checkpoint = dict(item.split("=", 1) for item in args.checkpoint)
    except ValueError:
        parser.error(f"--checkpoint takes NET=PATH items, got {args.checkpoint}")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print('onnxruntime is not installed: pip install "lesionseg[onnx]"', file=sys.stderr)
        return 2
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.networks:
            results[name] = measure(name, args, Path(workdir))
            r = results[name]
            print(
                f"{name} {r['image_size'][0]}x{r['image_size'][1]} batch {args.batch}, {args.threads} threads: "
                f"eager {r['eager_median_s'] * 1e3:.0f} ms, ONNX Runtime {r['onnxruntime_median_s'] * 1e3:.0f} ms "
                f"per batch; throughput ratio {r['throughput_ratio_median']:.2f}x (median of {args.iters} paired "
                f"rounds, lowest {r['throughput_ratio_min']:.2f}x; target {args.target}x); fastest calls: eager "
                f"{r['eager_fastest_s'] * 1e3:.0f} ms, ONNX Runtime {r['onnxruntime_fastest_s'] * 1e3:.0f} ms, "
                f"{r['throughput_ratio_fastest']:.2f}x"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    reached = all(
        min(r["throughput_ratio_median"], r["throughput_ratio_fastest"]) >= args.target for r in results.values()
    )
    return 0 if reached else 1


if __name__ == "__main__":
    sys.exit(main())
