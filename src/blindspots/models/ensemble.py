"""An ensemble of classifiers as one classifier: the mean of the members' softmax outputs."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Ensemble(nn.Module):
    """Averages the members' softmax probabilities; its logits are the log of that mean, so its softmax is the
    mean probability and every attack (cross-entropy on its logits: −log of the mean probability of the label)
    works on it unchanged."""

    def __init__(self, members: Iterable[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        if not len(self.members):
            raise ValueError("an ensemble needs at least one member")

    def forward(self, x: Tensor) -> Tensor:
        log_p = torch.stack([F.log_softmax(m(x), dim=-1) for m in self.members])
        return torch.logsumexp(log_p, dim=0) - math.log(len(self.members))
