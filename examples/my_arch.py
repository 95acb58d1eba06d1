"""An example cambench plug-in: an architecture of your own.

``plugins: [examples/my_arch.py]`` and ``arch: tiny_vit`` (with ``arch_kwargs:``) in a
model's config build it; ``kind: pretrained`` with ``weights: <state dict>`` evaluates
saved weights without training. The factory gets the number of classes and the
``arch_kwargs``.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import VisionTransformer

from cambench.models import register_arch


@register_arch("tiny_vit")
def tiny_vit(
    num_classes: int,
    image_size: int = 32,
    patch_size: int = 8,
    num_layers: int = 2,
    num_heads: int = 2,
    hidden_dim: int = 32,
    mlp_dim: int = 64,
) -> nn.Module:
    """A small torchvision VisionTransformer (vit_b_16's layout, fewer and narrower
    layers): cambench's CAMs take its last block's first LayerNorm by default."""
    return VisionTransformer(
        image_size=image_size,
        patch_size=patch_size,
        num_layers=num_layers,
        num_heads=num_heads,
        hidden_dim=hidden_dim,
        mlp_dim=mlp_dim,
        num_classes=num_classes,
    )
