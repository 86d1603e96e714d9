"""Transfer learning through a Graft registry with PyTorch: a teacher, three students, the best.

A small CNN is pretrained on Fashion-MNIST classes 0-4 (the teacher) and registered as a base.
Three students learn classes 5-9 from 100 labels per class, one per transfer mode:

- feature extraction: every feature layer frozen (requires_grad off, BatchNorm in eval mode),
  a new head;
- partial fine-tuning: the first convolution block frozen, the rest trained;
- full fine-tuning: everything trained from the teacher's weights.

Each student is created with its frozen-layer manifest, commits a checkpoint with its validation
accuracy every epoch (the registry checks every time that frozen tensors did not move, and stores
only the tensors that changed), and at the end the client asks for the best checkpoint under the
teacher.

    graft serve --registry ./registry &          # with a write token in $GRAFT_TOKEN
    GRAFT_URL=http://127.0.0.1:8470 python examples/pytorch_transfer.py

Under 3 minutes on 2 CPU cores (torch's CPU build); `--quick` runs a smaller version.
"""

from __future__ import annotations

import argparse
import gzip
import os
import struct
import time

import numpy as np
import torch
from torch import nn

import graft

DATA = "/usr/share/datasets/fashion-mnist"


def load(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(os.path.join(DATA, f"{kind}-images-idx3-ubyte.gz")) as file:
        _, count, rows, cols = struct.unpack(">IIII", file.read(16))
        images = np.frombuffer(file.read(), dtype=np.uint8).reshape(count, 1, rows, cols)
    with gzip.open(os.path.join(DATA, f"{kind}-labels-idx1-ubyte.gz")) as file:
        file.read(8)
        labels = np.frombuffer(file.read(), dtype=np.uint8)
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(labels.astype(np.int64))


def subset(images, labels, classes, per_class, seed):
    generator = np.random.default_rng(seed)
    picks = []
    for cls in classes:
        indices = np.flatnonzero(labels.numpy() == cls)
        picks.extend(generator.choice(indices, size=min(per_class, len(indices)), replace=False))
    picks = np.array(picks)
    return images[picks], labels[picks] - min(classes)


class CNN(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(32 * 7 * 7, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def freeze(module: nn.Module) -> None:
    """Frozen means frozen: no gradients, and BatchNorm's running statistics left alone."""
    module.requires_grad_(False)
    module.eval()


def train(model, frozen, images, labels, epochs, lr, on_epoch=None, batch=64, seed=0):
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(1, epochs + 1):
        model.train()
        for module in frozen:
            module.eval()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch):
            index = order[start : start + batch]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
            optimizer.step()
        if on_epoch:
            on_epoch(epoch)


@torch.no_grad()
def accuracy(model, images, labels) -> float:
    model.eval()
    return float((model(images).argmax(1) == labels).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smaller run (for tests)")
    parser.add_argument("--prefix", default="", help="prefix for the model names (to run twice on one registry)")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    started = time.perf_counter()
    client = graft.Client()
    train_images, train_labels = load("train")
    test_images, test_labels = load("t10k")
    teacher_per_class, epochs_teacher, per_class, epochs = (300, 1, 40, 2) if args.quick else (2000, 2, 100, 6)
    validation = 100 if args.quick else 300

    # 1. The teacher: classes 0-4.
    images, labels = subset(train_images, train_labels, range(0, 5), teacher_per_class, seed=1)
    teacher = CNN(classes=5)
    train(teacher, [], images, labels, epochs_teacher, lr=1e-3)
    val_images, val_labels = subset(test_images, test_labels, range(0, 5), validation, seed=2)
    teacher_name = f"{args.prefix}fmnist-teacher-pt"
    base = client.register_base(teacher_name, teacher.state_dict(), license="mit", dataset="fashion-mnist classes 0-4",
                                architecture="cnn-2block", task="image classification")
    client.log_metrics(base.ref, {"val/accuracy": accuracy(teacher, val_images, val_labels)}, split="val")
    print(f"teacher {base.ref}: val/accuracy {accuracy(teacher, val_images, val_labels):.3f}")

    # 2. Three students on classes 5-9, 100 labels per class.
    images, labels = subset(train_images, train_labels, range(5, 10), per_class, seed=3)
    val_images, val_labels = subset(test_images, test_labels, range(5, 10), validation, seed=4)
    modes = {
        "fe": ("feature extraction", lambda s: [s.features], {"freeze": ["features"]}, 3e-3),
        "partial": ("partial fine-tuning", lambda s: [s.features[0], s.features[1]], {"freeze": ["features.0", "features.1"]}, 1e-3),
        "full": ("full fine-tuning", lambda s: [], {}, 5e-4),
    }
    for short, (mode, frozen_of, rules, lr) in modes.items():
        name = f"{args.prefix}fmnist-5to9-pt-{short}"
        client.create_student(name, base.ref, reinit=["head"], **rules)
        student = CNN(classes=5)
        student.features.load_state_dict(teacher.features.state_dict())
        frozen = frozen_of(student)
        for module in frozen:
            freeze(module)

        def commit(epoch: int, student=student, name=name) -> None:
            value = accuracy(student, val_images, val_labels)
            checkpoint = client.commit(name, student.state_dict(), epoch=epoch, metrics={"val/accuracy": value}, split="val")
            print(f"  {checkpoint.ref}: val/accuracy {value:.3f}, sent {checkpoint.bytes_uploaded:,} bytes")

        print(f"{name} ({mode}):")
        train(student, frozen, images, labels, epochs, lr=lr, on_epoch=commit, seed=5)

    best = client.best("val/accuracy", under=teacher_name, split="val")
    print(f"best under {teacher_name}: {best.ref} val/accuracy {best.value:.3f}  ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
