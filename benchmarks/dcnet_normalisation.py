"""Does DC-Net's product normalisation change training? Both forms trained side by side on the same batches.

``DCNet(normalise_products=True)`` (the default) divides CCF's correlation and DCP's kernel maps by their
inputs' per-sample root mean square, so that a network whose BatchNorm running statistics have not adapted
cannot overflow in evaluation mode. In training those inputs come out of BatchNorm and ReLU, so the divisor
should be close to one constant, which the following weights absorb. This script measures that claim: it
trains the published (unnormalised) and the normalised network from the same initial weights on the same
BUSI batches (or phantoms when BUSI is absent), and prints, per epoch, each one's mean training loss and
validation Dice (eval mode, threshold 0.5), plus the RMS values the normalisation divides by.

Usage::

    python benchmarks/dcnet_normalisation.py                    # 64 BUSI lesion images, 128², 4 epochs
    python benchmarks/dcnet_normalisation.py --images 16 --epochs 1 --size 64   # a quick check
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lesionseg.data.phantoms import make_phantom
from lesionseg.losses import DCNetLoss
from lesionseg.networks.blocks.ccf import CrossCorrelationFusion
from lesionseg.networks.blocks.dcp import DifferentiableContextPooling
from lesionseg.networks.blocks.shapes import sample_rms
from lesionseg.networks.nets import DCNet

BUSI = Path(__file__).resolve().parents[2] / "shared" / "data" / "busi" / "Dataset_BUSI_with_GT"


def _load(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``count`` lesion images and masks, (N, 1, size, size), min-max scaled; BUSI benign/malignant if present."""
    images, masks = [], []
    if BUSI.is_dir():
        cases = sorted(p for kind in ("benign", "malignant") for p in (BUSI / kind).glob("* (*).png"))
        for path in np.random.default_rng(0).permutation(cases)[:count]:
            image = np.asarray(Image.open(path).convert("L").resize((size, size), Image.BILINEAR), np.float32)
            mask = np.zeros((size, size), bool)
            for mask_path in path.parent.glob(f"{path.stem}_mask*.png"):
                mask |= np.asarray(Image.open(mask_path).convert("L").resize((size, size), Image.NEAREST)) > 0
            images.append(image)
            masks.append(mask)
        source = f"BUSI ({BUSI})"
    else:
        rng = np.random.default_rng(0)
        for index in range(count):
            phantom = make_phantom(rng, size, size, ("benign", "malignant")[index % 2])
            images.append(phantom.image.astype(np.float32))
            masks.append(phantom.mask)
        source = "phantoms (BUSI not found)"
    scaled = [(i - i.min()) / max(float(i.max() - i.min()), 1e-6) for i in images]
    return (
        torch.from_numpy(np.stack(scaled))[:, None],
        torch.from_numpy(np.stack(masks).astype(np.float32))[:, None],
        source,
    )


def _dice(net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> float:
    with torch.no_grad():
        predicted = (torch.sigmoid(net.eval()(images)) > 0.5).float()
    overlap = (predicted * masks).sum((1, 2, 3))
    total = predicted.sum((1, 2, 3)) + masks.sum((1, 2, 3))
    return float(torch.where(total > 0, 2 * overlap / total.clamp_min(1), torch.ones_like(total)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64, help="lesion images; a quarter is held out (64)")
    parser.add_argument("--size", type=int, default=128, help="square image size, a multiple of 16 (128)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-4, help="Adam, the paper's (3e-4)")
    parser.add_argument("--alpha", type=float, default=0.5, help="harmonic loss α (0.5: the short-budget choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(
        f"CPU: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    images, masks, source = _load(args.images, args.size)
    held_out = max(1, len(images) // 4)
    train_x, train_y, val_x, val_y = images[held_out:], masks[held_out:], images[:held_out], masks[:held_out]
    print(f"data: {source}: {len(train_x)} training, {len(val_x)} validation images at {args.size}²")

    torch.manual_seed(args.seed)
    reference = DCNet(normalise_products=False)
    networks = {"published": reference, "normalised": DCNet(normalise_products=True)}
    networks["normalised"].load_state_dict(reference.state_dict())  # same initial weights, same parameter names
    optimizers = {name: torch.optim.Adam(net.parameters(), lr=args.learning_rate) for name, net in networks.items()}
    loss_function = DCNetLoss(alpha=args.alpha)

    divisors: list[float] = []  # the RMS values the normalised network divides by, over training

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            divisors.extend(sample_rms(inputs[0]).flatten().tolist())

    for module in networks["normalised"].modules():
        if isinstance(module, (CrossCorrelationFusion, DifferentiableContextPooling)):
            module.register_forward_pre_hook(record)

    print(f"fresh: validation Dice published {_dice(reference, val_x, val_y):.3f}, "
          f"normalised {_dice(networks['normalised'], val_x, val_y):.3f}")
    print("epoch | loss published | loss normalised | val Dice published | val Dice normalised | seconds")
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(train_x), generator=generator)
        losses: dict[str, list[float]] = {name: [] for name in networks}
        start = time.perf_counter()
        for first in range(0, len(order) - args.batch_size + 1, args.batch_size):
            batch = order[first : first + args.batch_size]
            for name, net in networks.items():
                optimizers[name].zero_grad()
                loss = loss_function(net.train()(train_x[batch]), train_y[batch])
                loss.backward()
                optimizers[name].step()
                losses[name].append(loss.item())
        dice = {name: _dice(net, val_x, val_y) for name, net in networks.items()}
        print(
            f"{epoch:5d} | {statistics.mean(losses['published']):14.4f} | "
            f"{statistics.mean(losses['normalised']):15.4f} "
            f"| {dice['published']:18.3f} | {dice['normalised']:19.3f} | {time.perf_counter() - start:7.1f}"
        )
    quartiles = np.percentile(divisors, [0, 25, 50, 75, 100])
    print("RMS divisors in training (min, quartiles, max): " + ", ".join(f"{q:.3f}" for q in quartiles))


if __name__ == "__main__":
    main()
