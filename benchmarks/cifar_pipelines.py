"""The CIFAR-10 shape of ``throughput.py --shape cifar10``: PreAct-ResNet-18, 32x32 RGB,
batch 128, random crop (padding 4) and horizontal flip on every batch, as BackdoorBench
trains it.

In one process, on the same model object, it measures training images/s of

  triggerlab's loop (``train.train_epoch`` with batched on-device augmentation) in
  fp32 and bf16, each with ``torch.compile`` off and on; and
  the pipeline public toolkits build: a per-sample ``Dataset`` that makes a PIL image,
  pastes the 3x3 trigger into poisoned samples, applies ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize``, batched by a ``DataLoader``
  with worker processes (BackdoorBench's configs use 4), trained in fp32.

Every variant trains the same number of batches per round; medians over rounds are
reported. A compiled variant is warmed up (compiled) before it is timed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from triggerlab.attack.poison import poison_dataset
from triggerlab.attack.tasks import ClassificationTask
from triggerlab.catalogue.triggers import PatchSpec
from triggerlab.config import ModelConfig, PoisonConfig
from triggerlab.data.dataset import ImageDataset
from triggerlab.models import build_configured, build_model
from triggerlab.train.augment import Augment
from triggerlab.train.devices import Precision, compiled, resident, synchronize
from triggerlab.train.loop import Step, train_epoch

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


class PerSamplePoisonedCIFAR(Dataset):
    """BackdoorBench-style per-sample pipeline: PIL image, trigger pasted, PIL transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, poisoned: set[int]) -> None:
        self.images, self.labels, self.poisoned = images, labels, poisoned
        self.transform = transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(MEAN, STD),
            ]
        )
        self.trigger = Image.new("RGB", (3, 3), (255, 255, 255))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[index])
        target = int(self.labels[index])
        if index in self.poisoned:
            img.paste(self.trigger, (29, 29))
            target = 0
        return self.transform(img), target


def images_per_s(run: Callable[[], int], device: torch.device) -> float:
    import time

    synchronize(device)
    start = time.perf_counter()
    seen = run()
    synchronize(device)
    return seen / (time.perf_counter() - start)


def cifar_main(args: argparse.Namespace, device: torch.device) -> dict:
    rng = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=rng)
    labels = torch.randint(0, 10, (args.n,), generator=rng)
    data = ImageDataset(images, labels, tuple(str(i) for i in range(10)))
    task = ClassificationTask(PoisonConfig(rate=0.1, target=0, sources="all"), data.class_names)
    trigger = PatchSpec(size=3, color="white", position="bottom_right").build(data.shape)
    result = poison_dataset(data, task, trigger, torch.Generator().manual_seed(0))
    used = args.batches * args.batch_size
    if used > args.n:
        raise SystemExit(f"--batches x --batch-size = {used} exceeds --n = {args.n}")

    torch.manual_seed(0)
    section = ModelConfig(name="preact_resnet18", normalization={"mean": MEAN, "std": STD})
    model, _ = build_configured(section, (3, 32, 32), 10)  # normalisation inside the model
    model = model.to(device=device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    train_images = resident(result.train.images[:used], device)
    train_targets = resident(result.train.targets[:used], device)
    augment = Augment(("random_crop", "hflip"), 4, torch.Generator().manual_seed(0))

    def triggerlab_run(precision: str, compile_: bool) -> Callable[[], int]:
        step = Step(Precision(precision, device), None, augment, compiled(model, compile_))

        def run(batches: int = args.batches) -> int:
            count = batches * args.batch_size
            _, seen = train_epoch(
                model,
                task,
                optimizer,
                train_images[:count],
                train_targets[:count],
                batch_size=args.batch_size,
                device=device,
                generator=rng,
                step=step,
            )
            return seen

        return run

    variants: dict[str, Callable[[], int]] = {}
    for precision in args.precisions:
        for compile_ in args.compile:
            run = triggerlab_run(precision, compile_)
            run(2)  # warm-up; for a compiled variant, the compilation
            variants[f"triggerlab {precision}{' compiled' if compile_ else ''}"] = run

    reference = PerSamplePoisonedCIFAR(
        result.train.images.permute(0, 2, 3, 1).numpy(),
        labels.numpy(),
        set(result.indices.tolist()),
    )
    loader = DataLoader(
        reference,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.loader_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.loader_workers > 0,
    )
    # the reference trains a model without in-model normalisation: its transform normalises
    plain = build_model("preact_resnet18", 3, (32, 32), 10)
    plain = plain.to(device=device, memory_format=torch.channels_last)
    plain_optimizer = torch.optim.SGD(plain.parameters(), lr=0.01, momentum=0.9)

    def per_sample() -> int:
        plain.train()
        seen = 0
        for batch, (x, y) in enumerate(loader):
            if batch == args.batches:
                break
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            loss = nn.functional.cross_entropy(plain(x), y.to(device, non_blocking=True))
            plain_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            plain_optimizer.step()
            seen += x.shape[0]
        return seen

    name = f"per-sample Dataset + DataLoader ({args.loader_workers} workers), fp32"
    variants[name] = per_sample
    per_sample()  # warm-up: worker start
    results: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for key, run in variants.items():
            results[key].append(images_per_s(run, device))
    medians = {k: statistics.median(v) for k, v in results.items()}
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(
        f"preact_resnet18, 32x32 RGB, batch {args.batch_size}, random crop + flip, device "
        f"{gpu or device} ({platform.processor() or platform.machine()}), "
        f"{torch.get_num_threads()} threads, {args.batches} batches x {args.rounds} rounds"
    )
    for key, value in medians.items():
        print(f"  {key:<52} {value:9.0f} images/s")
    fastest = max(v for k, v in medians.items() if k.startswith("triggerlab"))
    print(f"  fastest triggerlab / per-sample pipeline = {fastest / medians[name]:.2f}")
    return {
        "shape": "cifar10",
        "gpu": gpu,
        "images_per_s": results,
        "median": medians,
        "fastest_over_per_sample": fastest / medians[name],
    }
