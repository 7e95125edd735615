"""Control models for checking robustness tools on real data: small ReLU nets trained briefly on MNIST (whose
robustness an attack, a certifier and an exact solver can all measure) and a gradient-masking wrapper (false
robustness by construction, which an audit must see through). Tests and benchmarks share them from here."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data import load_mnist


def relu_mlp(*hidden: int) -> nn.Sequential:
    """784-h1-…-10 with ReLUs: the nets exact solvers can handle when small."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def relu_cnn() -> nn.Sequential:
    """conv5x5(16)-ReLU-maxpool2, conv5x5(32)-ReLU-maxpool2, FC100-ReLU, 10 logits."""
    return nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5, padding=2),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 7 * 7, 100), nn.ReLU(),
                         nn.Linear(100, 10))


def fit_control(model: nn.Module, images: int = 10_000, epochs: int = 1, *, batch: int = 64, seed: int = 0,
                device: str | torch.device = "cpu") -> nn.Module:
    """Adam (lr 1e-3) on the first `images` MNIST training images, weights re-drawn from `seed` first, so the same
    arguments give the same net (on CPU); returned in eval mode on `device`."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    model = model.to(device)
    train = load_mnist("train", subset=images)
    x_all, y_all = train.images.to(device), train.labels.to(device)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(images, generator=gen).to(device)
        for i in range(0, images, batch):
            b = perm[i:i + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x_all[b]), y_all[b]).backward()
            opt.step()
    opt.zero_grad(set_to_none=True)  # no stale parameter gradients left behind
    return model.eval()


class GradientMasked(nn.Module):
    """`net` behind input quantisation (rounded to 1/levels: zero gradient almost everywhere) with its logits
    scaled (a saturated softmax): a gradient attack finds nothing, yet the net is as fragile as before."""

    def __init__(self, net: nn.Module, levels: int = 4, scale: float = 1000.0) -> None:
        super().__init__()
        self.net, self.levels, self.scale = net, levels, scale

    def forward(self, x: Tensor) -> Tensor:
        return self.net(torch.round(x * self.levels) / self.levels) * self.scale
