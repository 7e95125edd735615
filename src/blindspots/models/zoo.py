"""The papers' model zoo as plain `nn.Sequential` classifiers that take [N, 1, 28, 28] images in [0, 1]
and return logits. Layers are named (fc1, act1, ..., out) so analysis code can address them.

Choices the papers leave open (documented in the README and in each checkpoint's JSON):
- hidden units of the FC and AE nets are sigmoids (as in public reproductions of Szegedy et al.);
- the CNN is conv5x5(16)-ReLU-maxpool2, conv5x5(32)-ReLU-maxpool2, FC100-ReLU, softmax;
- MAXOUT follows Goodfellow et al. 2013/2015: two maxout layers of 240 units with 5 pieces (MAXOUT1600: 1600);
- RBF has one Gaussian unit per class, logit_k = -sum_i beta_ki (x_i - mu_ki)^2 (the log of the unit's output).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .spec import N_CLASSES, ModelSpec, parse_spec

N_PIXELS = 28 * 28


class Maxout(nn.Module):
    """A linear map to units*pieces outputs followed by a max over each unit's pieces."""

    def __init__(self, in_features: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(in_features, units * pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).view(*x.shape[:-1], self.units, self.pieces).amax(dim=-1)


class Dropout(nn.Dropout):
    """Dropout whose kept units are multiplied by `scale` while training (default 1/(1 − p), torch's inverted
    dropout; pylearn2's maxout recipe keeps the input pixels with probability 0.8 and scales them by 1, so its
    net sees inputs 0.8× as bright on average in training as at test time). Identity in eval mode."""

    def __init__(self, p: float, scale: float | None = None) -> None:
        super().__init__(p)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.scale is None:
            return super().forward(x)
        keep = torch.empty_like(x).bernoulli_(1 - self.p)
        return x * keep * self.scale


class RBFLayer(nn.Module):
    """One Gaussian unit per class; returns log-activations -sum_i beta_ki (x_i - mu_ki)^2 (<= 0).

    exp(logit) is the unit's own output in (0, 1], Goodfellow's "confidence" of an RBF net.
    """

    def __init__(self, in_features: int, classes: int) -> None:
        super().__init__()
        self.centers = nn.Parameter(torch.full((classes, in_features), 0.5))
        self.log_beta = nn.Parameter(torch.full((classes, in_features), -3.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.log_beta.exp()
        # -sum_i beta (x - mu)^2 expanded into matrix products: no [N, C, D] intermediate
        quad = x.square() @ beta.T - 2 * x @ (beta * self.centers).T + (beta * self.centers.square()).sum(1)
        return -quad.clamp(min=0)


def one_vs_rest_nll(log_outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over images of -sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)] with p_k = exp(log_outputs_k).

    The training cost of Goodfellow's RBF net, whose units are independent "is it class k?" outputs
    (not a softmax): each unit is pushed towards 1 on its class and towards 0 elsewhere.
    """
    log_p = log_outputs.clamp(max=-1e-7)
    log_not_p = torch.log(-torch.expm1(log_p))
    on = nn.functional.one_hot(labels, log_outputs.shape[-1]).to(log_p.dtype)
    return -(on * log_p + (1 - on) * log_not_p).sum(dim=-1).mean()


class BinaryLogistic(nn.Module):
    """Logistic regression with one logit z = w·x + b; p(positive class | x) = sigmoid(z).

    Goodfellow et al.'s 3-versus-7 model (section 5): 3 is the negative class (y = -1), 7 the positive.
    """

    def __init__(self, in_features: int = N_PIXELS) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.flatten(x)).squeeze(-1)


class TwoClassLogits(nn.Module):
    """Logits [0, z] of a one-logit model: their softmax is [1 - sigmoid(z), sigmoid(z)], so cross-entropy
    on them is exactly the logistic loss and any multi-class attack applies unchanged."""

    def __init__(self, binary: nn.Module) -> None:
        super().__init__()
        self.binary = binary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.binary(x)
        return torch.stack([torch.zeros_like(z), z], dim=-1)


def _fc(hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    width = N_PIXELS
    for i, h in enumerate(hidden, start=1):
        layers += [(f"fc{i}", nn.Linear(width, h)), (f"act{i}", nn.Sigmoid())]
        width = h
    layers.append(("out", nn.Linear(width, N_CLASSES)))
    return nn.Sequential(OrderedDict(layers))


def _cnn() -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 5, padding=2)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 5, padding=2)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(32 * 7 * 7, 100)), ("relu3", nn.ReLU()),
        ("out", nn.Linear(100, N_CLASSES)),
    ]))


def _maxout(units: int = 240, pieces: int = 5) -> nn.Sequential:
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()), ("drop0", Dropout(0.2)),
        ("maxout1", Maxout(N_PIXELS, units, pieces)), ("drop1", Dropout(0.5)),
        ("maxout2", Maxout(units, units, pieces)), ("drop2", Dropout(0.5)),
        ("out", nn.Linear(units, N_CLASSES)),
    ]))


def _rbf() -> nn.Sequential:
    return nn.Sequential(OrderedDict([("flatten", nn.Flatten()), ("rbf", RBFLayer(N_PIXELS, N_CLASSES))]))


def build_model(spec: str | ModelSpec) -> nn.Sequential:
    """A freshly initialised classifier for `spec` (uses the global torch RNG for initial weights)."""
    s = parse_spec(spec)
    if s.kind == "fc":
        return _fc(s.hidden)
    if s.kind == "ae":
        return _fc(s.hidden)  # same shape as FC<h>-10; its fc1/act1 is the autoencoder's frozen encoder
    if s.kind == "cnn":
        return _cnn()
    if s.kind == "maxout":
        return _maxout(*s.hidden)
    return _rbf()
