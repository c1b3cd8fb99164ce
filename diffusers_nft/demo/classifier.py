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


def _standard_batch(digits, generator):
    """The bundled classifier's augmentation: random colours, shifts of up to 3 pixels, brightness and noise."""
    from .world import render

    color_index = torch.randint(len(COLOR_NAMES), (len(digits),), generator=generator)
    offsets = torch.randint(-3, 4, (len(digits), 2), generator=generator)
    images = render(digits, [COLOR_NAMES[i] for i in color_index], offsets.numpy())
    images = images * (0.6 + 0.4 * torch.rand(len(images), 1, 1, 1, generator=generator))
    return (images + 0.08 * torch.randn(images.shape, generator=generator)).clamp(0, 1), color_index


def _ensemble_batch(digits, generator):
    """The ensemble members' augmentation: the standard one, then shear, stroke contrast (a gamma of 0.5-2) and a
    blacked-out 8 x 8 patch, so that no member leans on one stroke or one exact pixel pattern."""
    images, color_index = _standard_batch(digits, generator)
    n = len(images)
    shear = (torch.rand(n, 2, generator=generator) * 2 - 1) * 0.25
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 1], theta[:, 1, 0] = shear[:, 0], shear[:, 1]
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    images = nn.functional.grid_sample(images, grid, align_corners=False)
    images = images.clamp(0, 1) ** (2.0 ** (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1))
    corner = torch.randint(0, images.shape[-1] - 8, (n, 2), generator=generator)
    rows = torch.arange(images.shape[-1]).view(1, -1, 1)
    cols = torch.arange(images.shape[-1]).view(1, 1, -1)
    top, left = corner[:, 0].view(-1, 1, 1), corner[:, 1].view(-1, 1, 1)
    patch = (rows >= top) & (rows < top + 8) & (cols >= left) & (cols < left + 8)
    return images * ~patch.unsqueeze(1), color_index


AUGMENTATIONS = {"standard": _standard_batch, "ensemble": _ensemble_batch}


def train_classifier(epochs: int = 30, seed: int = 0, augment: str = "standard", log=print) -> DigitColorClassifier:
    """Train on the train digits in every colour.

    Args:
        epochs: Passes over the train digits, each freshly augmented.
        seed: Initialisation and augmentation seed.
        augment: A key of `AUGMENTATIONS`: `"standard"` (the bundled classifier) or `"ensemble"` (its members).
    """
    from .world import load_digits_split

    torch.manual_seed(seed)
    digits, labels = load_digits_split("train")
    model = DigitColorClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        images, color_index = AUGMENTATIONS[augment](digits, generator)
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


def load_classifier(folder: str, filename: str = "classifier.safetensors") -> DigitColorClassifier:
    from safetensors.torch import load_file

    model = DigitColorClassifier()
    model.load_state_dict(load_file(os.path.join(folder, filename)))
    return model.eval().requires_grad_(False)
