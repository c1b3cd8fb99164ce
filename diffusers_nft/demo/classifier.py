"""The demo's judge: a small CNN with a digit head and a colour head, trained only on the train digits."""

import os

import torch
from torch import nn

from .world import COLOR_NAMES, IMAGE_SIZE


class DigitColorClassifier(nn.Module):
    """32x32 RGB image -> (digit logits over 10, colour logits over 6)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.digit = nn.Linear(16 * width, 10)
        self.color = nn.Linear(16 * width, len(COLOR_NAMES))

    def forward(self, images: torch.Tensor):
        if images.shape[-1] != IMAGE_SIZE:
            images = nn.functional.interpolate(images, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True)
        features = self.features(images * 2 - 1)
        return self.digit(features), self.color(features)


def train_classifier(epochs: int = 30, seed: int = 0, log=print) -> DigitColorClassifier:
    """Train on the train digits in every colour, with shifts, brightness and noise as augmentation."""
    from .world import load_digits_split, render

    torch.manual_seed(seed)
    digits, labels = load_digits_split("train")
    model = DigitColorClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    n_colors = len(COLOR_NAMES)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        color_index = torch.randint(n_colors, (len(digits),), generator=generator)
        offsets = torch.randint(-3, 4, (len(digits), 2), generator=generator)
        images = render(digits, [COLOR_NAMES[i] for i in color_index], offsets.numpy())
        images = images * (0.6 + 0.4 * torch.rand(len(images), 1, 1, 1, generator=generator))
        images = (images + 0.08 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
        order = torch.randperm(len(images), generator=generator)
        total = 0.0
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            digit_logits, color_logits = model(images[batch])
            loss = nn.functional.cross_entropy(digit_logits, torch.as_tensor(labels)[batch])
            loss = loss + nn.functional.cross_entropy(color_logits, color_index[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        log(f"classifier epoch {epoch + 1}/{epochs}: loss {total / len(order):.4f}")
    return model.eval()


def load_classifier(folder: str) -> DigitColorClassifier:
    from safetensors.torch import load_file

    model = DigitColorClassifier()
    model.load_state_dict(load_file(os.path.join(folder, "classifier.safetensors")))
    return model.eval().requires_grad_(False)
