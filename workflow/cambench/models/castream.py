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
(so the state-dict keys are the base's and CAM target layers read as in the base),
never require grad, and stay in eval mode (frozen batch-norm statistics, no dropout)
even when the model is put in train mode. Only ``stream.*`` (``q_0`` and the ``W_ℓ``)
learns.

Supported bases and where the five positions sit (:func:`stream_layout`):

| base | stem | layer1 | layer2 | layer3 | layer4 (CAM target) | classifier |
|---|---|---|---|---|---|---|
| cambench ``SmallResNet`` | ``normalize``, ``stem`` | ``layer1`` | ``layer2`` | ``layer3`` | ``layer4`` | ``fc`` |
| ResNet-18/34/50 (cambench's wrapped archs, or torchvision's bare ``ResNet``) | ``conv1``…``maxpool`` (after ``normalize``) | ``layer1`` | ``layer2`` | ``layer3`` | ``layer4`` | ``fc`` |
| MobileNet-V2 (wrapped ``mobilenet_v2`` or bare) | ``features.0-1`` (stride 2) | ``features.2-3`` (4) | ``features.4-6`` (8) | ``features.7-13`` (16) | ``features.14-18`` (32) | ``classifier`` |

MobileNet-V2's positions are its resolution stages (the 16-, 24-, 32-, 96- and
1280-channel outputs); its default CAM target is ``features.18``, the same tensor as the
base's default target ``features``. Other bases (VGG, ConvNeXt) raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True)
class StreamLayout:
    """How a base model splits into the stream's five positions.

    ``keep``: the base's top-level modules the CA-Stream model registers (same names);
    ``positions``: for each of :data:`POSITIONS`, the dotted paths of the modules run in
    order to reach that position's feature map; ``head``: the classifier module (ends
    in a Linear) that takes the last token; ``target_layer``: the default CAM layer.
    """

    keep: tuple[str, ...]
    positions: tuple[tuple[str, ...], ...]
    head: str
    target_layer: str


# MobileNet-V2's ``features`` indices per resolution stage (torchvision's 19 modules).
_MOBILENET_STAGES = ((0, 1), (2, 3), (4, 5, 6), tuple(range(7, 14)), tuple(range(14, 19)))
_RESNET_LAYERS = tuple((name,) for name in POSITIONS[1:])


def _resnet_layout(stem: Sequence[str]) -> StreamLayout:
    return StreamLayout(
        keep=(*stem, *POSITIONS[1:], "fc"),
        positions=(tuple(stem), *_RESNET_LAYERS),
        head="fc",
        target_layer="layer4",
    )


def _mobilenet_layout(base: nn.Module, normalize: bool) -> StreamLayout:
    if len(base.features) != 19:
        raise ValueError(
            f"CA-Stream expects torchvision's MobileNet-V2 layout (19 feature modules), "
            f"got {len(base.features)}"
        )
    positions = [tuple(f"features.{i}" for i in stage) for stage in _MOBILENET_STAGES]
    if normalize:
        positions[0] = ("normalize", *positions[0])
    return StreamLayout(
        keep=(*(["normalize"] if normalize else []), "features", "classifier"),
        positions=tuple(positions),
        head="classifier",
        target_layer="features.18",
    )


def stream_layout(base: nn.Module) -> StreamLayout:
    """The :class:`StreamLayout` of a supported base model; ``ValueError`` otherwise."""
    from torchvision.models import MobileNetV2, ResNet

    from cambench.models.small_resnet import SmallResNet
    from cambench.models.torchvision_models import RESNET_STEM, TorchvisionClassifier

    if isinstance(base, SmallResNet):
        return _resnet_layout(("normalize", "stem"))
    if isinstance(base, ResNet):
        return _resnet_layout(RESNET_STEM[1:])
    if isinstance(base, MobileNetV2):
        return _mobilenet_layout(base, normalize=False)
    if isinstance(base, TorchvisionClassifier):
        if base.spec.family == "resnet":
            return _resnet_layout(RESNET_STEM)
        if base.spec.family == "mobilenet_v2":
            return _mobilenet_layout(base, normalize=True)
    name = type(base).__name__
    arch = getattr(base, "arch", None)
    raise ValueError(
        "CA-Stream supports cambench's SmallResNet, its resnet18/34/50 and mobilenet_v2 archs "
        f"and torchvision's ResNet and MobileNetV2 as base models, not {name}"
        + (f" (arch {arch})" if arch else "")
    )


def _head_linear(head: nn.Module) -> nn.Linear | None:
    """The classifier's final Linear (the head itself or the last module of a Sequential)."""
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        return head[-1]
    return None


class CAStream(nn.Module):
    """A frozen ResNet-style backbone and classifier with a CA-Stream in place of GAP.

    ``last_attention`` holds the last block's raw attention logits (B, h, w),
    detached, after every forward pass.
    """

    def __init__(self, base: nn.Module, blocks_at: Sequence[str] = POSITIONS) -> None:
        super().__init__()
        self.blocks_at = _check_blocks_at(blocks_at)
        self.layout = stream_layout(base)
        for name in self.layout.keep:
            self.add_module(name, getattr(base, name))
        self.default_target_layer = self.layout.target_layer
        linear = _head_linear(self.head)
        if linear is None:
            raise ValueError(
                f"the base model's classifier {self.layout.head!r} must be a Linear or end in "
                f"one, got {self.head}"
            )
        self.head_in_features = linear.in_features
        self.backbone_names = list(self.layout.keep)
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
        if dims[-1] != self.head_in_features:
            raise ValueError(
                f"the classifier takes {self.head_in_features} features, "
                f"the last stage has {dims[-1]}"
            )
        return dims

    @property
    def head(self) -> nn.Module:
        """The base's classifier (a property, so its parameters keep the base's names)."""
        return getattr(self, self.layout.head)

    @property
    def num_classes(self) -> int:
        """Number of classes: the out-features of the classifier's final Linear.

        Public because the head's name differs by base (``fc``, ``classifier``).
        """
        linear = _head_linear(self.head)
        assert linear is not None  # checked in __init__
        return linear.out_features

    def train(self, mode: bool = True) -> CAStream:
        """Only the stream changes mode; the backbone's batch norms stay in eval mode."""
        super().train(mode)
        for name in self.backbone_names:
            getattr(self, name).eval()
        return self

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at the five positions (stem, layer1…layer4)."""
        return list(self._stream_inputs(x))

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

    def _stream_inputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Feature maps position by position (lazily, so hooks see the usual call order)."""
        for paths in self.layout.positions:
            for path in paths:
                x = self.get_submodule(path)(x)
            yield x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))
