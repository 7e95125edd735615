"""What counts as adversarial: small criterion objects handed to an attack (Foolbox style).

Targeted vs untargeted is data given to the attack, not a flag on it. A criterion holds one label or
target per image, answers `is_adversarial(logits)` for a batch of logits [N, C], and supplies the loss
every gradient attack descends (`loss(logits, kind)`, lower = more adversarial), so a new criterion
needs no change to any attack.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import InputError


def _as_labels(values: object, name: str) -> Tensor:
    if not isinstance(values, Tensor):
        try:
            values = torch.as_tensor(values)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(f"{name} must be a 1-D integer tensor (one class index per image), got "
                             f"{type(values).__name__}.") from None
    if values.dtype.is_floating_point or values.dtype.is_complex or values.dtype == torch.bool:
        raise InputError(f"{name} must hold integer class indices, got dtype {values.dtype}; "
                         f"convert with .long().")
    if values.dim() != 1:
        raise InputError(f"{name} must be 1-D (one class index per image), got shape {tuple(values.shape)}.")
    return values.long()


class Criterion(ABC):
    """One class index per image; `is_adversarial(logits)` -> BoolTensor [N] (or [..., N] for [..., N, C])."""

    labels: Tensor | None
    targets: Tensor | None

    @abstractmethod
    def is_adversarial(self, logits: Tensor) -> Tensor: ...

    @abstractmethod
    def loss(self, logits: Tensor, kind: str = "ce") -> Tensor:
        """Per-sample loss [N] of logits [N, C], lower = more adversarial. kind "ce": a cross-entropy form,
        bounded below; "margin": a logit margin that is < 0 exactly where the criterion holds; "logodds": its
        smooth form (a logsumexp over the rival classes), whose gradient is parallel to the cross-entropy's
        but never vanishes in float, so sign-gradient attacks keep moving."""

    @abstractmethod
    def subset(self, index: Tensor | slice) -> Criterion:
        """The criterion restricted to some images (for batching)."""

    @abstractmethod
    def to(self, device: torch.device | str) -> Criterion: ...

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    def __len__(self) -> int:
        ref = self.targets if self.targets is not None else self.labels
        assert ref is not None
        return int(ref.shape[0])

    def validate(self, n_images: int, n_classes: int) -> None:
        """Raise InputError unless there is one in-range index per image (and targets differ from labels)."""
        for name, values in (("labels", self.labels), ("targets", self.targets)):
            if values is None:
                continue
            if values.shape[0] != n_images:
                raise InputError(f"{type(self).__name__} has {values.shape[0]} {name} for {n_images} images; "
                                 f"pass one per image.")
            if values.numel() and (int(values.min()) < 0 or int(values.max()) >= n_classes):
                raise InputError(f"{name} must lie in 0..{n_classes - 1} (the model has {n_classes} outputs), "
                                 f"got values in {int(values.min())}..{int(values.max())}.")
        if self.labels is not None and self.targets is not None:
            same = (self.labels == self.targets).nonzero().flatten()
            if same.numel():
                raise InputError(f"{same.numel()} target(s) equal the true label (first at index {int(same[0])}); "
                                 f"a targeted attack needs a different class: use random_targets(labels, seed).")


class _OffLabelMass(torch.autograd.Function):
    """−log(1 − p_y) = logsumexp(z) − logsumexp(z_{j≠y}) with its gradient p_y·(e_y − q) formed directly.
    Autograd through the two logsumexps forms p_j − q_j instead, which cancels to rounding noise once the
    image is confidently wrong (p_y < ~1e-6 in float32), and a sign-gradient attack then wanders."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, logits: Tensor, labels: Tensor) -> Tensor:
        others = logits.scatter(-1, labels.unsqueeze(-1), float("-inf"))
        lse, lse_others = logits.logsumexp(dim=-1), others.logsumexp(dim=-1)
        ctx.save_for_backward(logits, labels, others, lse, lse_others)
        return lse - lse_others

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        logits, labels, others, lse, lse_others = ctx.saved_tensors  # type: ignore[attr-defined]
        p_own = (logits.gather(-1, labels.unsqueeze(-1)).squeeze(-1) - lse).exp_().mul_(grad)
        out = others.sub(lse_others.unsqueeze(-1)).exp_().neg_().mul_(p_own.unsqueeze(-1))  # −p_y·q
        return out.scatter_(-1, labels.unsqueeze(-1), p_own.unsqueeze(-1)), None  # + p_y·e_y (q_y = 0)


class Misclassification(Criterion):
    """Adversarial when the predicted class differs from the true label."""

    def __init__(self, labels: Tensor) -> None:
        self.labels = _as_labels(labels, "labels")
        self.targets = None

    def is_adversarial(self, logits: Tensor) -> Tensor:
        assert self.labels is not None
        return logits.argmax(dim=-1) != self.labels.to(logits.device)

    def loss(self, logits: Tensor, kind: str = "ce") -> Tensor:
        """"ce": −log(1 − p_label), minus the log of the probability mass off the label (bounded below; its
        gradient p_y·(e_y − q), q the softmax over the other classes, is parallel to that of −CE(label));
        "margin": z_label − max_{j≠label} z_j; "logodds": z_label − logsumexp_{j≠label} z_j."""
        assert self.labels is not None
        if _kind(kind) == "ce":
            return _OffLabelMass.apply(logits, self.labels.expand(logits.shape[:-1]))
        others = logits.scatter(-1, self.labels.expand(logits.shape[:-1]).unsqueeze(-1), float("-inf"))
        rival = others.amax(dim=-1) if kind == "margin" else others.logsumexp(dim=-1)
        return logits.gather(-1, self.labels.unsqueeze(-1)).squeeze(-1) - rival

    def subset(self, index: Tensor | slice) -> Misclassification:
        assert self.labels is not None
        return Misclassification(self.labels[index])

    def to(self, device: torch.device | str) -> Misclassification:
        assert self.labels is not None
        return Misclassification(self.labels.to(device))

    def __repr__(self) -> str:
        return f"Misclassification(n={len(self)})"


class TargetedMisclassification(Criterion):
    """Adversarial when the predicted class equals the target; `labels` (optional) are checked to differ."""

    def __init__(self, targets: Tensor, labels: Tensor | None = None) -> None:
        self.targets = _as_labels(targets, "targets")
        self.labels = None if labels is None else _as_labels(labels, "labels")
        if self.labels is not None and self.labels.shape != self.targets.shape:
            raise InputError(f"targets {tuple(self.targets.shape)} and labels {tuple(self.labels.shape)} must "
                             f"have the same length.")

    def is_adversarial(self, logits: Tensor) -> Tensor:
        assert self.targets is not None
        return logits.argmax(dim=-1) == self.targets.to(logits.device)

    def loss(self, logits: Tensor, kind: str = "ce") -> Tensor:
        """"ce": cross-entropy of the target; "margin": max_{j≠t} z_j − z_t; "logodds": logsumexp_{j≠t} z_j − z_t."""
        assert self.targets is not None
        if _kind(kind) == "ce":
            return F.cross_entropy(logits, self.targets, reduction="none")
        others = logits.scatter(-1, self.targets.expand(logits.shape[:-1]).unsqueeze(-1), float("-inf"))
        rival = others.amax(dim=-1) if kind == "margin" else others.logsumexp(dim=-1)
        return rival - logits.gather(-1, self.targets.unsqueeze(-1)).squeeze(-1)

    def subset(self, index: Tensor | slice) -> TargetedMisclassification:
        assert self.targets is not None
        return TargetedMisclassification(self.targets[index], None if self.labels is None else self.labels[index])

    def to(self, device: torch.device | str) -> TargetedMisclassification:
        assert self.targets is not None
        return TargetedMisclassification(self.targets.to(device),
                                         None if self.labels is None else self.labels.to(device))

    def __repr__(self) -> str:
        return f"TargetedMisclassification(n={len(self)})"


LOSSES = ("ce", "margin", "logodds")


def _kind(kind: str) -> str:
    if kind not in LOSSES:
        raise InputError(f"unknown loss {kind!r}; choose 'ce' (cross-entropy), 'margin' (logit margin) or "
                         f"'logodds' (its smooth form).")
    return kind


def random_targets(labels: Tensor, seed: int, n_classes: int = 10) -> Tensor:
    """A seeded target per image, uniform over the n_classes - 1 classes other than its label."""
    labels = _as_labels(labels, "labels")
    if n_classes < 2:
        raise InputError(f"n_classes must be at least 2 to draw a target other than the label, got {n_classes}.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise InputError(f"labels must lie in 0..{n_classes - 1}, got values in "
                         f"{int(labels.min())}..{int(labels.max())}.")
    gen = torch.Generator().manual_seed(int(seed))
    offset = torch.randint(1, n_classes, labels.shape, generator=gen)
    return ((labels.cpu() + offset) % n_classes).to(labels.device)
