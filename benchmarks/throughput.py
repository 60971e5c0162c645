"""Training throughput: the triggerlab loop against its compute ceiling and a PIL pipeline.

    python benchmarks/throughput.py                 # small CNN, MNIST-sized data, batch 64
    python benchmarks/throughput.py --n 20000 --rounds 5 --json out.json
    python benchmarks/throughput.py --shape cifar10 # PreAct-ResNet-18, CIFAR-10, batch 128

``--shape cifar10`` measures the GPU recipe instead: fp32 and bf16, ``torch.compile``
off and on, against a per-sample Dataset + DataLoader with the same augmentation (see
``cifar_pipelines.py``). What follows describes the default, MNIST shape.

In one process, on the same model and batch size, it measures training images/s of

  (a) triggerlab's loop (``train.train_epoch``: index slices of the in-memory uint8
      tensor, converted to float on the device, poisoned samples already in place);
  (b) the compute ceiling: the same steps on float batches prepared beforehand;
  (c) the pipeline the public reference implementations build: a per-sample
      ``Dataset`` that makes a PIL image, pastes the trigger when ``index in
      poisoned_list``, applies ``ToTensor`` and ``Normalize``, batched by a
      ``DataLoader`` (``num_workers=0``, the reference's default).

All three train the same model object in the same memory format (channels_last
unless ``--nchw``), so (a)/(c) isolates the data path and (a)/(b) its overhead.

Each round runs (a), (b), (c) one after the other for the same number of
batches; the medians over rounds are reported with (a)/(b) and (a)/(c).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import functional as TF

from triggerlab.attack.poison import poison_dataset
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.catalogue.triggers import PatchSpec
from triggerlab.config import PoisonConfig
from triggerlab.data.dataset import ImageDataset
from triggerlab.models import build_model
from triggerlab.train.devices import resident, resolve_device, synchronize, to_input
from triggerlab.train.loop import train_epoch


class ReferencePoisonedMNIST(Dataset):
    """Per-sample poisoning as the reference implementations do it (list lookup, PIL paste)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rate: float, target: int, size: int):
        self.images, self.labels, self.target = images, labels, target
        count = int(len(labels) * rate)
        self.poisoned = np.random.default_rng(0).choice(len(labels), count, replace=False).tolist()
        self.trigger = Image.new("L", (size, size), 255)
        self.corner = (images.shape[2] - size, images.shape[1] - size)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[index], mode="L")
        target = int(self.labels[index])
        if index in self.poisoned:
            target = self.target
            img.paste(self.trigger, self.corner)
        return TF.normalize(TF.to_tensor(img), (0.5,), (0.5,)), target


def step(
    model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def timed(run: Callable[[], int], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    images = run()
    synchronize(device)
    return images / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--n", type=int, help="training images (default: 60,000; 50,000)")
    parser.add_argument("--size", type=int, default=28, help="image side in pixels")
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--batch-size", type=int, help="default: 64; 128")
    parser.add_argument("--batches", type=int, default=300, help="batches per measurement")
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], help="cifar10: precisions to time"
    )
    parser.add_argument(
        "--compile",
        nargs="+",
        type=lambda v: v == "on",
        default=[False, True],
        metavar="off|on",
        help="cifar10: torch.compile settings to time",
    )
    parser.add_argument("--loader-workers", type=int, default=4, help="cifar10: DataLoader workers")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--nchw", action="store_true", help="train with NCHW instead of channels_last"
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    cifar = args.shape == "cifar10"
    args.n = args.n or (50_000 if cifar else 60_000)
    args.batch_size = args.batch_size or (128 if cifar else 64)
    device = resolve_device(args.device)
    if cifar:
        from cifar_pipelines import cifar_main

        record = cifar_main(args, device)
        if args.json:
            record = {"args": vars(args), "device": str(device), **record}
            record["threads"], record["torch"] = torch.get_num_threads(), torch.__version__
            with open(args.json, "w") as fh:
                json.dump(record, fh, indent=2)
        return
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (args.n, 1, args.size, args.size), dtype=torch.uint8, generator=rng
    )
    labels = torch.randint(0, 10, (args.n,), generator=rng)
    data = ImageDataset(images, labels, tuple(str(i) for i in range(10)))
    poison = PoisonConfig(rate=0.1, target=1)
    trigger = PatchSpec(size=5).build(data.shape)
    task = ClassificationTask(poison, data.class_names)
    poisoned = poison_dataset(data, task, trigger, torch.Generator().manual_seed(0)).train
    used = args.batches * args.batch_size
    if used > args.n:
        raise SystemExit(f"--batches x --batch-size = {used} exceeds --n = {args.n}")

    torch.manual_seed(0)
    model = build_model(args.model, 1, (args.size, args.size), 10)
    layout = torch.contiguous_format if args.nchw else torch.channels_last
    model = model.to(device=device, memory_format=layout)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    # (a) the first `used` images of the poisoned set, as train_epoch slices them
    a_images, a_targets = (
        resident(poisoned.images[:used], device),
        resident(poisoned.targets[:used], device),
    )

    def run_a() -> int:
        _, seen = train_epoch(
            model,
            task,
            optimizer,
            a_images,
            a_targets,
            batch_size=args.batch_size,
            device=device,
            generator=rng,
        )
        return seen

    # (b) the same images as float batches made beforehand: nothing but compute remains
    ready = [
        (
            to_input(a_images[i : i + args.batch_size], device, layout),
            a_targets[i : i + args.batch_size],
        )
        for i in range(0, used, args.batch_size)
    ]

    def run_b() -> int:
        model.train()
        for x, y in ready:
            step(model, optimizer, x, y)
        return used

    reference = ReferencePoisonedMNIST(images[:, 0].numpy(), labels.numpy(), 0.1, 1, 5)
    loader = DataLoader(reference, batch_size=args.batch_size, shuffle=True, num_workers=0)

    def run_c() -> int:
        model.train()
        seen = 0
        for batch, (x, y) in enumerate(loader):
            if batch == args.batches:
                break
            step(model, optimizer, x.to(device), y.to(device))
            seen += x.shape[0]
        return seen

    run_b()  # warm-up: allocator, kernels
    results: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    for _ in range(args.rounds):
        for name, run in (("a", run_a), ("b", run_b), ("c", run_c)):
            results[name].append(timed(run, device))
    med = {k: statistics.median(v) for k, v in results.items()}

    print(
        f"model {args.model}, {args.size}x{args.size} grey, batch {args.batch_size}, "
        f"device {device}, {'NCHW' if args.nchw else 'channels_last'}, "
        f"{torch.get_num_threads()} threads, {args.batches} batches x {args.rounds} rounds"
    )
    print(f"(a) triggerlab loop            {med['a']:10.0f} images/s")
    print(f"(b) ready-made tensors (ceiling){med['b']:9.0f} images/s")
    print(f"(c) PIL Dataset + DataLoader   {med['c']:10.0f} images/s")
    print(f"(a)/(b) = {med['a'] / med['b']:.3f}    (a)/(c) = {med['a'] / med['c']:.2f}")
    if args.json:
        record = {
            "args": vars(args),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "machine": platform.processor() or platform.machine(),
            "images_per_s": results,
            "median": med,
            "a_over_b": med["a"] / med["b"],
            "a_over_c": med["a"] / med["c"],
        }
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
