"""What every swinlab classifier shares (timm's API): ``forward`` = ``forward_head(forward_features(x))``,
the head's ``get_classifier`` / ``reset_classifier``, ``no_weight_decay`` and the per-model choice of
the linear-layer backend."""

from __future__ import annotations

import torch
from torch import nn

from ..kernels import linear as linear_kernels
from ..layers.init import init_weights
from ..layers.linear import Linear


class Classifier(nn.Module):
    """Base of the model families. A subclass sets ``self.config`` (a frozen config with ``num_classes``
    and ``linear_backend``) and ``self.num_features``, builds its head with :meth:`_make_head`, defines
    ``forward_features`` and ``forward_head``, and ends ``__init__`` with :meth:`_finish_init`."""

    #: parameter-name suffixes that take no weight decay (position tables, embeddings, tokens)
    no_weight_decay_suffixes: tuple[str, ...] = ()

    config: object
    num_features: int
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def no_weight_decay(self) -> set[str]:
        """Names of parameters that take no weight decay (see :attr:`no_weight_decay_suffixes`)."""
        suffixes = self.no_weight_decay_suffixes
        return {n for n, _ in self.named_parameters() if suffixes and n.endswith(suffixes)}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a fresh one for ``num_classes`` (0: no head)."""
        self.config = self.config.replace(num_classes=num_classes)
        self.head = self._make_head(num_classes)
        if num_classes:
            init_weights(self.head)

    def set_linear_backend(self, backend: str) -> None:
        """Run every swinlab :class:`~swinlab.layers.Linear` of the model on ``backend`` (``"auto"``,
        ``"torch"`` or ``"onednn"``, see :mod:`swinlab.kernels.linear`); weights are unchanged and the
        choice is recorded in ``config.linear_backend`` (so checkpoints keep it)."""
        linear_kernels.check_backend(backend)
        for m in self.modules():
            if isinstance(m, Linear):
                m.backend = backend
        self.config = self.config.replace(linear_backend=backend)

    def _make_head(self, num_classes: int) -> nn.Module:
        if not num_classes:
            return nn.Identity()
        return Linear(self.num_features, num_classes, backend=self.config.linear_backend)

    def _finish_init(self) -> None:
        """Initialize the weights and put every linear layer on the config's backend."""
        self.apply(init_weights)
        self.set_linear_backend(self.config.linear_backend)
