"""CA-Stream: a learned class token that replaces global average pooling.

Torres et al., "CA-Stream: Attention-based pooling for interpretable image
recognition" (CVPR XAI4CV workshop 2024); the definition is in REFERENCES.md. A class
token runs beside a frozen CNN. At each block position ``ℓ`` (after the stem and
after each stage) the feature map ``F_ℓ`` (p tokens of dimension d) is pooled by
single-head cross attention with the feature map as both key and value, and no
projections, residual, norm or MLP::

    a_ℓ = softmax(F_ℓ q_ℓ / √d_ℓ)     z_ℓ = F_ℓᵀ a_ℓ     q_{ℓ+1} = W_ℓ z_ℓ

``W_ℓ`` is a Linear ``d_ℓ → d_{ℓ+1}`` (Xavier-uniform weights, zero bias — our
choice; the paper does not fix the bias init). After the last position
``W_L: d_L → d_L`` maps the last pooled vector to the token that replaces the GAP
vector in front of the backbone's own classifier. A position left out of
``blocks_at`` has no attention: its ``W_ℓ`` maps the incoming token straight on
(``z_ℓ = q_ℓ``). ``q_0`` is initialised from N(1, 1).

The backbone and the classifier come from a trained base model, keep their names
(``stem``/``layer1``…``layer4``/``fc``, so the default CAM target layer is still
``layer4`` and the state-dict keys are the base's), never require grad, and stay in
eval mode (frozen batch-norm statistics) even when the model is put in train mode.
Only ``stream.*`` (``q_0`` and the ``W_ℓ``) learns.

Supported bases: cambench's ``SmallResNet``, its wrapped torchvision ResNets (archs
``resnet18``/``resnet34``/``resnet50``, whose ``castream_stem`` names the modules before
``layer1``, input normalization included) and torchvision's bare ``ResNet``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

POSITIONS = ("stem", "layer1", "layer2", "layer3", "layer4")


def cross_attention_logits(features: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
    """``F q / √d`` for features (B, d, h, w) and tokens (B, d): logits (B, h·w)."""
    return torch.einsum("bdp,bd->bp", features.flatten(2), token) / math.sqrt(features.shape[1])


def cross_attention_pool(
    features: torch.Tensor, token: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, logits)``: ``z = Fᵀ softmax(F q / √d)`` (B, d) and the raw logits (B, h·w)."""
    logits = cross_attention_logits(features, token)
    attention = torch.softmax(logits, dim=1)
    return torch.einsum("bdp,bp->bd", features.flatten(2), attention), logits


class ClassTokenStream(nn.Module):
    """The learned part of CA-Stream: ``q_0`` and one Linear after every position."""

    def __init__(self, dims: Sequence[int], blocks_at: Sequence[str]) -> None:
        super().__init__()
        if len(dims) != len(POSITIONS):
            raise ValueError(f"need {len(POSITIONS)} feature dimensions, got {list(dims)}")
        self.blocks_at = tuple(blocks_at)
        self.q0 = nn.Parameter(torch.empty(dims[0]).normal_(1.0, 1.0))
        outs = [*dims[1:], dims[-1]]
        self.proj = nn.ModuleList(
            nn.Linear(d_in, d_out) for d_in, d_out in zip(dims, outs, strict=True)
        )
        for linear in self.proj:
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)

    def extra_repr(self) -> str:
        return f"blocks_at={list(self.blocks_at)}"


def _check_blocks_at(blocks_at: Sequence[str]) -> tuple[str, ...]:
    blocks = tuple(blocks_at)
    unknown = [b for b in blocks if b not in POSITIONS]
    if unknown or not blocks or len(set(blocks)) != len(blocks):
        raise ValueError(
            f"blocks_at must be a non-empty subset of {list(POSITIONS)} without repeats, "
            f"got {list(blocks)}"
        )
    return tuple(p for p in POSITIONS if p in blocks)  # network order


def _backbone_layout(base: nn.Module) -> list[str]:
    """Names of the base's modules that make up the stem, in call order."""
    from torchvision.models import ResNet

    from cambench.models.small_resnet import SmallResNet

    if isinstance(base, SmallResNet):
        return ["normalize", "stem"]
    if isinstance(base, ResNet):
        return ["conv1", "bn1", "relu", "maxpool"]
    stem = getattr(base, "castream_stem", None)  # cambench's wrapped torchvision ResNets
    if stem:
        return list(stem)
    name = type(base).__name__
    arch = getattr(base, "arch", None)
    raise ValueError(
        "CA-Stream supports cambench's SmallResNet, its resnet18/34/50 archs and torchvision "
        f"ResNets as base models, not {name}" + (f" (arch {arch})" if arch else "")
    )


class CAStream(nn.Module):
    """A frozen ResNet-style backbone and classifier with a CA-Stream in place of GAP.

    ``last_attention`` holds the last block's raw attention logits (B, h, w),
    detached, after every forward pass.
    """

    default_target_layer = "layer4"

    def __init__(self, base: nn.Module, blocks_at: Sequence[str] = POSITIONS) -> None:
        super().__init__()
        self.blocks_at = _check_blocks_at(blocks_at)
        self.stem_names = _backbone_layout(base)
        for name in [*self.stem_names, *POSITIONS[1:], "fc"]:
            self.add_module(name, getattr(base, name))
        if not isinstance(self.fc, nn.Linear):
            raise ValueError(f"the base model's classifier 'fc' must be a Linear, got {self.fc}")
        self.backbone_names = [*self.stem_names, *POSITIONS[1:], "fc"]
        for name in self.backbone_names:
            getattr(self, name).requires_grad_(False)
        self.stream = ClassTokenStream(self._feature_dims(base), self.blocks_at)
        self.last_attention: torch.Tensor | None = None
        self.train(base.training)

    @torch.no_grad()
    def _feature_dims(self, base: nn.Module) -> list[int]:
        modes = {m: m.training for m in base.modules()}
        base.eval()
        try:
            dims = [f.shape[1] for f in self.feature_maps(torch.zeros(1, 3, 64, 64))]
        finally:
            for m, mode in modes.items():
                m.training = mode
        if dims[-1] != self.fc.in_features:
            raise ValueError(
                f"the classifier takes {self.fc.in_features} features, the last stage has {dims[-1]}"
            )
        return dims

    def train(self, mode: bool = True) -> CAStream:
        """Only the stream changes mode; the backbone's batch norms stay in eval mode."""
        super().train(mode)
        for name in self.backbone_names:
            getattr(self, name).eval()
        return self

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at the five positions (stem, layer1…layer4)."""
        return list(self._stream_inputs(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's feature map (B, C, h, w)."""
        return self.feature_maps(x)[-1]

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The token that goes into the classifier (B, d), in place of the GAP vector."""
        token = self.stream.q0.expand(x.shape[0], -1)
        last = self.blocks_at[-1]
        for position, features, proj in zip(
            POSITIONS, self._stream_inputs(x), self.stream.proj, strict=True
        ):
            if position in self.blocks_at:
                token, logits = cross_attention_pool(features, token)
                if position == last:
                    self.last_attention = logits.detach().view(
                        features.shape[0], features.shape[2], features.shape[3]
                    )
            token = proj(token)
        return token

    def _stream_inputs(self, x: torch.Tensor):
        """Feature maps position by position (lazily, so hooks see the usual call order)."""
        for name in self.stem_names:
            x = getattr(self, name)(x)
        yield x
        for name in POSITIONS[1:]:
            x = getattr(self, name)(x)
            yield x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled(x))
