"""Attention maps of ViT-style models: raw attention, attention rollout, and
gradient-weighted attention relevance (Chefer et al.).

All three read the attention probabilities ``A_l = softmax(Q_l K_lᵀ / √d)``
(B, heads, N, N) of every block ``l = 1 … L``, over ``N = P + h·w`` tokens: ``P``
prefix tokens (the class token first, then a distillation token or registers where
the model has them) and the ``h × w`` patches. Each map is the class token's row over
the patch tokens, reshaped to the patch grid.

Fused attention kernels (``scaled_dot_product_attention``) never form ``A``, so the
capture switches them off for the one forward it watches, and only for that forward:

- torchvision's ``nn.MultiheadAttention`` (its ``VisionTransformer``, and the plug-in
  example ``tiny_vit`` built on it) is called with ``need_weights=False``, which takes
  the fused kernel; during the capture its ``forward`` is replaced by the explicit
  computation ``out_proj(softmax(q kᵀ / √d) v)`` with the module's own weights;
- timm's ``Attention`` (ViT, DeiT, DeiT distilled) has a ``fused_attn`` flag; it is
  turned off, so timm runs its own explicit path, whose probabilities pass through
  ``attn_drop``, where a forward hook reads them. A plug-in architecture whose
  attention modules follow the same convention (a ``fused_attn`` attribute and an
  ``attn_drop`` submodule applied to the probabilities) is captured the same way.

The explicit path gives the model's logits to float rounding (within 1e-6 on the
tested models); the model is left exactly as found. A model needs a class token
(``class_token`` as in torchvision, or ``cls_token`` as in timm; timm's
``num_prefix_tokens`` gives ``P``, otherwise ``P = 1``) and one of these attention
modules; otherwise the methods are a ValueError (and the workflow skips the pair).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cambench.models import build_on_meta
from cambench.saliency.core import check_gradients, check_logits, target_scores
from cambench.saliency.registry import ParamError, check_choice, register

HEAD_FUSIONS = ("mean", "max", "min")
ProbsHook = Callable[[torch.Tensor], torch.Tensor | None]


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules cambench can read probabilities from, in module order:
    ``nn.MultiheadAttention`` and timm-style modules (``fused_attn`` + ``attn_drop``)."""
    return [m for m in model.modules() if isinstance(m, nn.MultiheadAttention) or _timm_style(m)]


def _timm_style(module: nn.Module) -> bool:
    return hasattr(module, "fused_attn") and isinstance(
        getattr(module, "attn_drop", None), nn.Module
    )


def class_token_prefix(model: nn.Module) -> int | None:
    """``P``, the number of tokens before the patches (class token first), or ``None``
    when the model has no class token: read from the module holding ``class_token``
    (torchvision) or ``cls_token`` (timm; its ``num_prefix_tokens``)."""
    for module in model.modules():
        if isinstance(getattr(module, "class_token", None), torch.Tensor):
            return int(getattr(module, "num_prefix_tokens", 1))
        if hasattr(module, "cls_token"):
            if not isinstance(module.cls_token, torch.Tensor):
                return None  # timm with class_token=False
            return int(getattr(module, "num_prefix_tokens", 1))
    return None


def is_attention_model(model: nn.Module) -> bool:
    """Whether the attention methods apply: a class token and readable attention
    modules (the workflow decides this at config time on a model built on the meta
    device, see :meth:`cambench.specs.ModelSpec.applies`)."""
    return class_token_prefix(model) is not None and bool(attention_modules(model))


def config_has_attention(model_config: dict[str, Any]) -> bool:
    """Whether the model a config entry builds is ViT-style (:func:`is_attention_model`),
    decided without weights or compute: the model is built on PyTorch's meta device.
    A model that cannot be built there counts as ViT-style, so the saliency job runs
    and a wrong guess is a ValueError naming the method, never a silent skip."""
    return _config_has_attention(json.dumps(model_config, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _config_has_attention(entry: str) -> bool:
    model = build_on_meta(json.loads(entry))
    if model is None:  # the job decides what cannot be built here
        return True
    return is_attention_model(model)


def check_attention_model(model: nn.Module, method: str) -> int:
    """``P`` (:func:`class_token_prefix`), or a ValueError saying why ``method`` does
    not apply to ``model``."""
    kind = type(getattr(model, "net", model)).__name__
    if not attention_modules(model):
        raise ValueError(
            f"saliency method {method!r} needs a ViT-style model with attention blocks "
            "(torchvision VisionTransformer, timm ViT/DeiT, or modules following timm's "
            f"Attention convention); {kind} has none"
        )
    prefix = class_token_prefix(model)
    if prefix is None or prefix < 1:
        raise ValueError(
            f"saliency method {method!r} reads the class token's attention; {kind} has "
            "no class token (class_token / cls_token)"
        )
    return prefix


def check_rollout_params(params: dict[str, Any]) -> None:
    """The registry's ``check`` hook of ``attention_rollout``: a :class:`ParamError`
    (reported as ``methods.attention_rollout.<param>``) unless ``head_fusion`` is one
    of :data:`HEAD_FUSIONS` and ``residual`` a bool."""
    check_choice(params, "head_fusion", HEAD_FUSIONS)
    if not isinstance(params["residual"], bool):
        raise ParamError("residual", f"must be true or false, got {params['residual']!r}")


def _explicit_mha(
    mha: nn.MultiheadAttention,
    on_probs: ProbsHook,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    need_weights: bool = True,
    attn_mask: torch.Tensor | None = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> tuple[torch.Tensor, None]:
    """``nn.MultiheadAttention``'s forward for batch-first self-attention without
    masks (a ViT's), with the probabilities formed explicitly and passed through
    ``on_probs`` (which may return a replacement the model continues with)."""
    if not (query is key and key is value) or query.ndim != 3 or not mha.batch_first:
        raise ValueError(
            "attention capture supports batch-first self-attention "
            "nn.MultiheadAttention(x, x, x) only (a ViT's)"
        )
    unsupported = (
        key_padding_mask is not None
        or attn_mask is not None
        or is_causal
        or mha.bias_k is not None
        or mha.add_zero_attn
        or not mha._qkv_same_embed_dim
    )
    if unsupported:
        raise ValueError(
            "attention capture does not support masks, bias_k/bias_v, add_zero_attn or "
            "separate key/value dimensions in nn.MultiheadAttention"
        )
    b, n, e = query.shape
    heads, d = mha.num_heads, mha.head_dim
    qkv = F.linear(query, mha.in_proj_weight, mha.in_proj_bias)
    q, k, v = qkv.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4).unbind(0)
    probs = torch.softmax((q * d**-0.5) @ k.transpose(-2, -1), dim=-1)
    replaced = on_probs(probs)
    if replaced is not None:
        probs = replaced
    out = (probs @ v).transpose(1, 2).reshape(b, n, e)
    return F.linear(out, mha.out_proj.weight, mha.out_proj.bias), None


@contextmanager
def capture_attention(model: nn.Module, on_probs: ProbsHook) -> Iterator[None]:
    """Within the block, every attention module of ``model`` computes its
    probabilities (B, heads, N, N) explicitly and calls ``on_probs`` with them, in
    forward order; a tensor it returns replaces them in the rest of the forward.
    Fused kernels are off inside the block only; the model is restored on exit."""
    restore: list[Callable[[], None]] = []
    try:
        for module in attention_modules(model):
            if isinstance(module, nn.MultiheadAttention):
                had = "forward" in module.__dict__
                old = module.__dict__.get("forward")
                module.forward = functools.partial(_explicit_mha, module, on_probs)

                def undo(m: nn.Module = module, had: bool = had, old: object = old) -> None:
                    if had:
                        m.forward = old
                    else:
                        del m.forward

                restore.append(undo)
            else:
                fused = module.fused_attn
                module.fused_attn = False
                restore.append(lambda m=module, f=fused: setattr(m, "fused_attn", f))
                handle = module.attn_drop.register_forward_hook(
                    lambda _m, _i, probs: on_probs(probs)
                )
                restore.append(handle.remove)
        yield
    finally:
        for undo in reversed(restore):
            undo()


def _forward_capturing(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor],
) -> list[torch.Tensor]:
    """``reduce(A_l)`` for every block, from one forward without autograd."""
    kept: list[torch.Tensor] = []
    with torch.no_grad(), capture_attention(model, lambda probs: kept.append(reduce(probs))):
        logits = model(images)
    check_logits(logits, targets)
    return kept


def _class_token_map(
    rows: torch.Tensor, prefix: int, size: tuple[int, int], method: str
) -> torch.Tensor:
    """The class token's row (B, N) over the patch tokens, as (B, h, w) with ``h × w``
    the patch grid of ``size``'s aspect ratio."""
    patches = rows.shape[-1] - prefix
    height, width = size
    h = max(1, round((patches * height / width) ** 0.5))
    w = patches // h
    if h * w != patches:
        raise ValueError(
            f"saliency method {method!r}: {patches} patch tokens (after {prefix} prefix "
            f"tokens) do not form a grid of the images' {height}x{width} aspect ratio"
        )
    return rows[:, prefix:].reshape(-1, h, w)


def _class_token_row(probs: torch.Tensor) -> torch.Tensor:
    """``e_cls``, the class token's one-hot row (B, 1, N), for products from the left."""
    row = probs.new_zeros(probs.shape[0], 1, probs.shape[-1], requires_grad=False)
    row[:, :, 0] = 1
    return row.detach()


def _no_blocks(method: str) -> ValueError:
    return ValueError(f"saliency method {method!r}: no attention block ran during the forward")


@register("attention", uses_layer=False, relu=False)
def attention(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """Raw attention: the last block's class-token attention, averaged over heads.

    ``S = mean_h A_L[h, cls, patches]`` reshaped to the ``h × w`` patch grid, with
    ``A_L = softmax(Q Kᵀ / √d)`` the last block's attention probabilities (read with
    the fused attention kernel switched off for the forward, see the module's
    docstring). Class-agnostic: ``targets`` only check the logits. The baseline of
    Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020,
    https://arxiv.org/abs/2005.00928.

    >>> import torch
    >>> from torchvision.models import VisionTransformer
    >>> from cambench.saliency import explain
    >>> _ = torch.manual_seed(0)
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32,
    ...                         mlp_dim=64, num_classes=10).eval()
    >>> maps = explain("attention", vit, torch.rand(2, 3, 32, 32), torch.tensor([1, 2]))
    >>> tuple(maps.shape), float(maps.amin()), float(maps.amax())
    ((2, 32, 32), 0.0, 1.0)
    """
    prefix = check_attention_model(model, "attention")
    kept = _forward_capturing(model, images, targets, lambda probs: probs[:, :, 0].mean(1))
    if not kept:
        raise _no_blocks("attention")
    return _class_token_map(kept[-1], prefix, tuple(images.shape[-2:]), "attention")


@register(
    "attention_rollout",
    defaults={"head_fusion": "mean", "residual": True},
    uses_layer=False,
    relu=False,
    check=check_rollout_params,
)
def attention_rollout(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: None,
    head_fusion: str = "mean",
    residual: bool = True,
) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): attention multiplied through the blocks.

    Per block, the heads are fused (``head_fusion``: ``mean``, ``max`` or ``min``
    over heads), the residual connection added as the identity (``residual``) and the
    rows renormalized to sum to 1: ``Ã_l = rownorm(fuse_h A_l + I)``. The rollout is
    ``R = Ã_L · … · Ã_1`` and ``S = R[cls, patches]`` on the patch grid. With mean
    fusion ``Ã_l = ½ (mean_h A_l + I)``, the paper's equation; ``max``/``min`` are the
    variants of common implementations (hence the renormalization). Class-agnostic.
    Attention is read with the fused kernel switched off (see the module's docstring).

    Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020,
    https://arxiv.org/abs/2005.00928.

    >>> import torch
    >>> from torchvision.models import VisionTransformer
    >>> from cambench.saliency import explain
    >>> _ = torch.manual_seed(0)
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32,
    ...                         mlp_dim=64, num_classes=10).eval()
    >>> images, targets = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    >>> explain("attention_rollout", vit, images, targets, head_fusion="max").shape
    torch.Size([2, 32, 32])
    """
    check_rollout_params({"head_fusion": head_fusion, "residual": residual})
    prefix = check_attention_model(model, "attention_rollout")

    def fuse(probs: torch.Tensor) -> torch.Tensor:
        if head_fusion == "mean":
            return probs.mean(1)
        return probs.amax(1) if head_fusion == "max" else probs.amin(1)

    kept = _forward_capturing(model, images, targets, fuse)
    if not kept:
        raise _no_blocks("attention_rollout")
    # row cls of Ã_L · … · Ã_1, as a row vector multiplied from the left (N² per block)
    row = _class_token_row(kept[0])
    for fused in reversed(kept):
        step = (
            fused + torch.eye(fused.shape[-1], dtype=fused.dtype, device=fused.device)
            if residual
            else fused
        )
        row = row @ (step / step.sum(-1, keepdim=True))
    return _class_token_map(row.squeeze(1), prefix, tuple(images.shape[-2:]), "attention_rollout")


@register("attention_gradient", uses_layer=False, relu=False)
def attention_gradient(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, layer: None
) -> torch.Tensor:
    """Gradient-weighted attention relevance (Chefer et al. 2021), class-specific.

    With ``A_l`` block ``l``'s attention probabilities and ``∇A_l = ∂y_c/∂A_l``,
    ``Ā_l = mean_h (∇A_l ⊙ A_l)⁺`` and, from ``R = I`` (N × N), for ``l = 1 … L``:
    ``R ← R + Ā_l · R``; ``S = R[cls, patches]`` on the patch grid. One forward with
    the fused kernel switched off (see the module's docstring) and one backward from
    ``y_c`` to the first block's attention.

    Chefer, Gur & Wolf, "Generic Attention-model Explainability for Interpreting
    Bi-Modal and Encoder-Decoder Transformers", ICCV 2021,
    https://arxiv.org/abs/2103.15679 (rule 6 for self-attention).

    >>> import torch
    >>> from torchvision.models import VisionTransformer
    >>> from cambench.saliency import explain
    >>> _ = torch.manual_seed(0)
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32,
    ...                         mlp_dim=64, num_classes=10).eval()
    >>> images, targets = torch.rand(2, 3, 32, 32), torch.tensor([1, 2])
    >>> explain("attention_gradient", vit, images, targets).shape
    torch.Size([2, 32, 32])
    """
    prefix = check_attention_model(model, "attention_gradient")
    kept: list[torch.Tensor] = []

    def keep(probs: torch.Tensor) -> torch.Tensor | None:
        # The first block's probabilities become a leaf that requires grad, so autograd
        # records from there on (the parameters are frozen); later blocks' stay the
        # model's own tensors, nodes of that graph, so ∂y_c/∂A_l includes every path
        # from A_l to y_c, through the later blocks' attention too.
        if not probs.requires_grad:
            probs = probs.detach().requires_grad_(True)
            kept.append(probs)
            return probs
        kept.append(probs)
        return None

    with torch.enable_grad(), capture_attention(model, keep):
        logits = model(images)
        check_logits(logits, targets)
        if not kept:
            raise _no_blocks("attention_gradient")
        grads = torch.autograd.grad(target_scores(logits, targets).sum(), kept, allow_unused=True)
    # row cls of (I + Ā_L) · … · (I + Ā_1), i.e. of R after the update for every
    # block, as a row vector multiplied from the left (N² per block)
    row = _class_token_row(kept[0])
    for probs, grad in reversed(list(zip(kept, grads, strict=True))):
        if grad is None:  # a block the logits do not depend on adds nothing
            continue
        check_gradients(grad)
        row = row + row @ (grad * probs.detach()).clamp_min(0).mean(1)
    return _class_token_map(row.squeeze(1), prefix, tuple(images.shape[-2:]), "attention_gradient")
