"""CA-Stream: a learned class token that replaces global average pooling.

Torres et al., "CA-Stream: Attention-based pooling for interpretable image
recognition", CVPR XAI4CV workshop 2024 (https://arxiv.org/abs/2404.14996). A class
token runs beside a frozen CNN. At each block position ``ℓ`` (after the stem and after each stage) the feature map ``F_ℓ``
(p tokens of dimension d) is pooled by single-head cross attention with the feature
map as both key and value, and no projections, residual, norm or MLP::

    a_ℓ = softmax(F_ℓ q_ℓ / √d_ℓ)     z_ℓ = F_ℓᵀ a_ℓ     q_{ℓ+1} = W_ℓ z_ℓ

``W_ℓ`` is a Linear ``d_ℓ → d_{ℓ+1}``. After the last position ``W_L: d_L → d_L`` maps
the last pooled vector to the token that replaces the GAP vector in front of the
backbone's own classifier. A position left out of ``blocks_at`` has no attention: its
``W_ℓ`` maps the incoming token straight on (``z_ℓ = q_ℓ``). ``q_0`` is initialised
from N(1, 1).

Initialisation of the ``W_ℓ`` (as in the released code, ftorres11/CA_Stream, except
the bias): weights Xavier-uniform (ResNet, MobileNet-V2) or truncated normal with
std 0.02 (ConvNeXt: the released ConvNeXt model re-initialises every Linear so).
Bias: ``projection_bias_init: zeros`` (the default, cambench's historical choice;
the paper does not fix it, and the released ConvNeXt code zeroes it too) or
``default`` (PyTorch's Linear init, uniform in ±1/√fan_in, which the released ResNet
code keeps).

The backbone and the classifier come from a trained base model, keep their names
(so the state-dict keys are the base's and CAM target layers read as in the base) and
never require grad. ``backbone_bn: frozen`` (the default) keeps them in eval mode even
when the model is put in train mode: frozen batch-norm statistics, no dropout, so the
backbone stays bit-identical to the base. ``backbone_bn: train`` follows the released
training, which runs the whole model in train mode: the backbone's batch norms then
normalize with batch statistics and update their running statistics (the weights
still do not learn; dropout stays off; ConvNeXt has no batch norm, so this changes
nothing there). Only ``stream.*`` (``q_0`` and the ``W_ℓ``) learns. The stream is
built in the base's dtype and on its device (a float64 base gives a float64 model).

Supported bases and where the five positions sit (:func:`stream_layout`):

| base | stem | layer1 | layer2 | layer3 | layer4 (CAM target) | classifier |
|---|---|---|---|---|---|---|
| cambench ``SmallResNet`` | ``normalize``, ``stem`` | ``layer1`` | ``layer2`` | ``layer3`` | ``layer4`` | ``fc`` |
| ResNet-18/34/50 (cambench's wrapped archs, or torchvision's bare ``ResNet``) | ``conv1``…``maxpool`` (after ``normalize``) | ``layer1`` | ``layer2`` | ``layer3`` | ``layer4`` | ``fc`` |
| MobileNet-V2 (wrapped ``mobilenet_v2`` or bare) | ``features.0-1`` (stride 2) | ``features.2-3`` (4) | ``features.4-6`` (8) | ``features.7-13`` (16) | ``features.14-18`` (32) | ``classifier`` |
| ConvNeXt-Tiny (wrapped ``convnext_tiny`` or bare ``ConvNeXt``) | ``features.0`` (stride 4) | ``features.1-2`` (8) | ``features.3-4`` (16) | ``features.5-6`` (32) | ``features.7`` (32) | ``classifier`` |

MobileNet-V2's positions are its resolution stages (the 16-, 24-, 32-, 96- and
1280-channel outputs); its default CAM target is ``features.18``, the same tensor as the
base's default target ``features``. ConvNeXt's positions follow the released
``convnext_stream.py``: after the stem, after each downsampling layer (so
``layer1``–``layer3`` end with the downsampling to the next stage's 192, 384 and 768
channels) and after the last stage; the token enters the classifier (LayerNorm2d,
Flatten, Linear) as a (B, 768, 1, 1) map, where GAP's output would; its default CAM
target ``features.7`` is the base's ``features``. Other bases (VGG) raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cambench.models.small_resnet import SmallResNet
from cambench.models.torchvision_models import RESNET_STEM, TorchvisionClassifier

POSITIONS = ("stem", "layer1", "layer2", "layer3", "layer4")
# Initialisations of the projections W_ℓ (see the module doc).
WEIGHT_INITS = ("xavier_uniform", "trunc_normal")
BIAS_INITS = ("zeros", "default")
BACKBONE_BN = ("frozen", "train")


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

    def __init__(
        self,
        dims: Sequence[int],
        blocks_at: Sequence[str],
        weight_init: str = "xavier_uniform",
        bias_init: str = "zeros",
    ) -> None:
        super().__init__()
        if len(dims) != len(POSITIONS):
            raise ValueError(f"need {len(POSITIONS)} feature dimensions, got {list(dims)}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {weight_init!r}")
        if bias_init not in BIAS_INITS:
            raise ValueError(
                f"projection_bias_init must be one of {', '.join(BIAS_INITS)}, got {bias_init!r}"
            )
        self.blocks_at = tuple(blocks_at)
        self.q0 = nn.Parameter(torch.empty(dims[0]).normal_(1.0, 1.0))
        outs = [*dims[1:], dims[-1]]
        # nn.Linear draws PyTorch's default init (weight and bias uniform in
        # ±1/√fan_in); the weight is then re-drawn, the bias kept or zeroed.
        self.proj = nn.ModuleList(
            nn.Linear(d_in, d_out) for d_in, d_out in zip(dims, outs, strict=True)
        )
        for linear in self.proj:
            if weight_init == "xavier_uniform":
                nn.init.xavier_uniform_(linear.weight)
            else:
                nn.init.trunc_normal_(linear.weight, std=0.02)
            if bias_init == "zeros":
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
    in a Linear) that takes the last token; ``target_layer``: the default CAM layer;
    ``head_takes_map``: the head expects a (B, d, 1, 1) map (ConvNeXt's classifier starts
    with a LayerNorm2d and a Flatten), not a (B, d) vector; ``weight_init``: the
    projections' weight initialisation (:data:`WEIGHT_INITS`).
    """

    keep: tuple[str, ...]
    positions: tuple[tuple[str, ...], ...]
    head: str
    target_layer: str
    head_takes_map: bool = False
    weight_init: str = "xavier_uniform"


_RESNET_LAYERS = tuple((name,) for name in POSITIONS[1:])


def _resnet_layout(stem: Sequence[str]) -> StreamLayout:
    return StreamLayout(
        keep=(*stem, *POSITIONS[1:], "fc"),
        positions=(tuple(stem), *_RESNET_LAYERS),
        head="fc",
        target_layer="layer4",
    )


# ``features`` indices per position of the bases whose layers are all in ``features``
# (torchvision's MobileNet-V2: its five resolution stages; ConvNeXt: the stem at 0, stage
# i at the odd indices and the downsampling after it at 2, 4, 6; the released stream
# taps after the stem, after each downsampling layer and after the last stage).
_MOBILENET_STAGES = ((0, 1), (2, 3), (4, 5, 6), tuple(range(7, 14)), tuple(range(14, 19)))
_CONVNEXT_STAGES = ((0,), (1, 2), (3, 4), (5, 6), (7,))


def _features_layout(
    base: nn.Module, normalize: bool, name: str, stages: Sequence[Sequence[int]], **options: Any
) -> StreamLayout:
    """The layout of a ``features`` → ``classifier`` base, positions given by ``stages``."""
    count = stages[-1][-1] + 1
    if len(base.features) != count:
        raise ValueError(
            f"CA-Stream expects torchvision's {name} layout ({count} feature modules), "
            f"got {len(base.features)}"
        )
    positions = [tuple(f"features.{i}" for i in stage) for stage in stages]
    if normalize:
        positions[0] = ("normalize", *positions[0])
    return StreamLayout(
        keep=(*(["normalize"] if normalize else []), "features", "classifier"),
        positions=tuple(positions),
        head="classifier",
        target_layer=f"features.{count - 1}",
        **options,
    )


def _mobilenet_layout(base: nn.Module, normalize: bool) -> StreamLayout:
    return _features_layout(base, normalize, "MobileNet-V2", _MOBILENET_STAGES)


def _convnext_layout(base: nn.Module, normalize: bool) -> StreamLayout:
    return _features_layout(
        base,
        normalize,
        "ConvNeXt",
        _CONVNEXT_STAGES,
        head_takes_map=True,
        weight_init="trunc_normal",
    )


def stream_layout(base: nn.Module) -> StreamLayout:
    """The :class:`StreamLayout` of a supported base model; ``ValueError`` otherwise."""
    if isinstance(base, SmallResNet):
        return _resnet_layout(("normalize", "stem"))
    # imported here: torchvision costs a job 1–2 s of start-up that cambench's own
    # SmallResNet (the default experiment's) does not need
    from torchvision.models import ConvNeXt, MobileNetV2, ResNet

    if isinstance(base, ResNet):
        return _resnet_layout(RESNET_STEM[1:])
    if isinstance(base, MobileNetV2):
        return _mobilenet_layout(base, normalize=False)
    if isinstance(base, ConvNeXt):
        return _convnext_layout(base, normalize=False)
    if isinstance(base, TorchvisionClassifier):
        if base.spec.family == "resnet":
            return _resnet_layout(RESNET_STEM)
        if base.spec.family == "mobilenet_v2":
            return _mobilenet_layout(base, normalize=True)
        if base.spec.family == "convnext":
            return _convnext_layout(base, normalize=True)
    name = type(base).__name__
    arch = getattr(base, "arch", None)
    raise ValueError(
        "CA-Stream supports cambench's SmallResNet, its resnet18/34/50, mobilenet_v2 and "
        "convnext_tiny archs and torchvision's ResNet, MobileNetV2 and ConvNeXt as base "
        f"models, not {name}" + (f" (arch {arch})" if arch else "")
    )


def _head_linear(head: nn.Module) -> nn.Linear | None:
    """The classifier's final Linear (the head itself or the last module of a Sequential)."""
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        return head[-1]
    return None


class CAStream(nn.Module):
    """A frozen backbone and classifier with a CA-Stream in place of GAP.

    ``projection_bias_init``: ``zeros`` (default) or ``default`` (PyTorch's Linear
    init); ``backbone_bn``: ``frozen`` (default) or ``train`` (see the module doc).
    The stream follows the base's dtype and device.
    """

    def __init__(
        self,
        base: nn.Module,
        blocks_at: Sequence[str] = POSITIONS,
        projection_bias_init: str = "zeros",
        backbone_bn: str = "frozen",
    ) -> None:
        super().__init__()
        if backbone_bn not in BACKBONE_BN:
            raise ValueError(
                f"backbone_bn must be one of {', '.join(BACKBONE_BN)}, got {backbone_bn!r}"
            )
        self.blocks_at = _check_blocks_at(blocks_at)
        self.backbone_bn = backbone_bn
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
        reference = next(base.parameters())
        stream = ClassTokenStream(
            self._feature_dims(base, reference),
            self.blocks_at,
            weight_init=self.layout.weight_init,
            bias_init=projection_bias_init,
        )
        self.stream = stream.to(device=reference.device, dtype=reference.dtype)
        self.train(base.training)

    @classmethod
    def from_config(cls, base: nn.Module, model_config: dict[str, Any]) -> CAStream:
        """The CA-Stream a castream model config asks for (``blocks_at``,
        ``projection_bias_init``, ``backbone_bn``; defaults otherwise)."""
        return cls(
            base,
            model_config.get("blocks_at", POSITIONS),
            projection_bias_init=model_config.get("projection_bias_init", "zeros"),
            backbone_bn=model_config.get("backbone_bn", "frozen"),
        )

    @torch.no_grad()
    def _feature_dims(self, base: nn.Module, reference: torch.Tensor) -> list[int]:
        modes = {m: m.training for m in base.modules()}
        base.eval()
        probe = torch.zeros(1, 3, 64, 64, device=reference.device, dtype=reference.dtype)
        try:
            dims = [f.shape[1] for f in self.feature_maps(probe)]
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
        """Only the stream changes mode; the backbone stays in eval mode, except its
        batch norms in train mode when ``backbone_bn`` is ``train``."""
        super().train(mode)
        for name in self.backbone_names:
            module = getattr(self, name)
            module.eval()
            if mode and self.backbone_bn == "train":
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.train()
        return self

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at the five positions (stem, layer1…layer4)."""
        return list(self._stream_inputs(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The token that goes into the classifier (B, d), in place of the GAP vector."""
        return self._pool(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._classify(self.pooled(x))

    def forward_with_attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, attention)``: the logits and the last block's raw attention
        logits ``F q / √d`` as (B, h, w) maps; an explicit return value rather than
        state left on the module."""
        token, attention = self._pool(x)
        return self._classify(token), attention

    def _classify(self, token: torch.Tensor) -> torch.Tensor:
        if self.layout.head_takes_map:
            token = token[:, :, None, None]
        return self.head(token)

    def _pool(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's token (B, d) and the last block's attention logits (B, h, w)."""
        token = self.stream.q0.expand(x.shape[0], -1)
        last = self.blocks_at[-1]
        attention = None
        for position, features, proj in zip(
            POSITIONS, self._stream_inputs(x), self.stream.proj, strict=True
        ):
            if position in self.blocks_at:
                token, logits = cross_attention_pool(features, token)
                if position == last:
                    # indexed, not star-unpacked: torch.fx traces it (batch-norm folding)
                    attention = logits.view(features.shape[0], features.shape[2], features.shape[3])
            token = proj(token)
        assert attention is not None  # blocks_at is non-empty
        return token, attention

    def _stream_inputs(self, x: torch.Tensor) -> Iterator[torch.Tensor]:
        """Feature maps position by position (lazily, so hooks see the usual call order)."""
        for paths in self.layout.positions:
            for path in paths:
                x = self.get_submodule(path)(x)
            yield x
