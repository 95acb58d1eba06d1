"""Attention methods (attention, attention_rollout, attention_gradient) against short
implementations of the papers' equations written here, on attention probabilities
read independently of cambench's capture: a tiny ViT of this file that stores its
own explicit softmax(QKᵀ/√d), torchvision's need_weights=True path, and an explicit
re-implementation of timm's Attention.forward."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VisionTransformer

from cambench.models import build_model
from cambench.plugins import load_plugins
from cambench.saliency import METHODS, explain
from cambench.saliency.attention import capture_attention
from cambench.specs import ATTENTION_METHODS, ModelSpec

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


# --- a tiny ViT whose attention is explicit and stored ------------------------------


class ExplicitAttention(nn.Module):
    """softmax(QKᵀ/√d) formed explicitly; the probabilities of every forward are kept
    in ``probs`` (with their gradient retained when autograd records). Follows timm's
    convention (``fused_attn``, ``attn_drop`` on the probabilities) so cambench reads it."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.fused_attn = False
        self.attn_drop = nn.Identity()
        self.probs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), dim=-1)
        if probs.requires_grad:
            probs.retain_grad()
        self.probs.append(probs)
        out = self.attn_drop(probs) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = ExplicitAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ExplicitViT(nn.Module):
    def __init__(self, size=32, patch=8, dim=32, heads=2, depth=3, classes=10) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + (size // patch) ** 2, dim) * 0.5)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), tokens], 1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


# --- the papers' equations -----------------------------------------------------------


def ref_attention(probs, prefix):
    return probs[-1].mean(1)[:, 0, prefix:]


def ref_rollout(probs, prefix, head_fusion="mean", residual=True):
    """Abnar & Zuidema: Ã = rownorm(fuse_h A + I), R = Ã_L … Ã_1, full matrices."""
    n = probs[0].shape[-1]
    rollout = torch.eye(n, dtype=torch.float64)
    for a in probs:
        a = a.double()
        fused = {"mean": a.mean(1), "max": a.max(1).values, "min": a.min(1).values}[head_fusion]
        if residual:
            fused = fused + torch.eye(n, dtype=torch.float64)
        fused = fused / fused.sum(-1, keepdim=True)
        rollout = fused @ rollout
    return rollout[:, 0, prefix:]


def ref_gradient(probs, grads, prefix):
    """Chefer et al.: R = I; R ← R + mean_h((∇A ⊙ A)⁺) R, block by block."""
    n = probs[0].shape[-1]
    r = torch.eye(n, dtype=torch.float64)
    for a, g in zip(probs, grads, strict=True):
        bar = (g.double() * a.double()).clamp(min=0).mean(1)
        r = r + bar @ r
    return r[:, 0, prefix:]


def to_map(rows, size):
    """Rows over h·w patches → (B, H, W): bilinear up-sampling and min-max, by hand."""
    side = int(round(rows.shape[-1] ** 0.5))
    up = F.interpolate(rows.float().reshape(-1, 1, side, side), size=size, mode="bilinear")
    flat = up.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - low) / (high - low)).reshape(-1, *size)


def references(probs, grads, prefix, size):
    out = {
        "attention": to_map(ref_attention(probs, prefix), size),
        "attention_gradient": to_map(ref_gradient(probs, grads, prefix), size),
    }
    for fusion in ("mean", "max", "min"):
        for residual in (True, False):
            rows = ref_rollout(probs, prefix, fusion, residual)
            out[f"attention_rollout/{fusion}/{residual}"] = to_map(rows, size)
    return out


def check_against(model, probs, grads, prefix, images, targets):
    refs = references(probs, grads, prefix, tuple(images.shape[-2:]))
    for key, ref in refs.items():
        method, *rest = key.split("/")
        params = {}
        if rest:
            params = {"head_fusion": rest[0], "residual": rest[1] == "True"}
        ours = explain(method, model, images, targets, **params)
        err = (ours - ref).abs().max().item()
        assert err < TOL, f"{key}: max difference {err:.2e}"


def inputs(size=32, n=3):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=gen), torch.tensor([1, 4, 7][:n])


def grads_via_input(model, images, targets, read):
    """Probabilities and ∂y_c/∂A by the reference's own means: a forward with the
    images requiring grad, ``read()`` returning the tensors it kept (grad retained)."""
    with torch.enable_grad():
        x = images.clone().requires_grad_(True)
        logits = model(x)
        logits.gather(1, targets[:, None]).sum().backward()
    kept = read()
    return [p.detach() for p in kept], [p.grad for p in kept], logits.detach()


def logits_unchanged(model, images):
    """The capture (reading, and substituting leaves as attention_gradient does)
    leaves the model's logits as they are, to 1e-6 relative to their largest magnitude
    (the fused kernel and the explicit path round differently); and the model as found."""
    with torch.no_grad():
        plain = model(images)
        with capture_attention(model, lambda probs: None):
            read = model(images)
    with torch.enable_grad(), capture_attention(model, lambda p: p.detach().requires_grad_()):
        leaf = model(images).detach()
    with torch.no_grad():
        after = model(images)
    assert torch.equal(after, plain)
    scale = max(1.0, plain.abs().max().item())  # float32 rounding of the explicit path
    assert (read - plain).abs().max() <= 1e-6 * scale
    assert (leaf - plain).abs().max() <= 1e-6 * scale


# --- the models ---------------------------------------------------------------------


def test_explicit_vit_matches_the_papers():
    torch.manual_seed(0)
    model = ExplicitViT().eval()
    images, targets = inputs()
    logits_unchanged(model, images)
    stored = [blk.attn for blk in model.blocks]
    for attn in stored:
        attn.probs.clear()
    probs, grads, _ = grads_via_input(model, images, targets, lambda: [a.probs[0] for a in stored])
    check_against(model, probs, grads, 1, images, targets)


def random_heads(model: nn.Module) -> nn.Module:
    """torchvision (and timm) initialize the classifier to zero: constant logits would
    give zero gradients, so every Linear gets random weights."""
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.3)
    return model


def torchvision_vit():
    torch.manual_seed(0)
    vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64)
    return random_heads(vit).eval()


def torchvision_reference(model, images, targets):
    """torchvision's own probabilities (need_weights=True, per head) and their
    gradients (retained on the tensor the attention output is computed from)."""
    kept = []
    originals = {}
    for block in model.encoder.layers:
        mha = block.self_attention
        originals[mha] = mha.forward

        def forward(q, k, v, need_weights=False, _orig=mha.forward):
            out, weights = _orig(q, k, v, need_weights=True, average_attn_weights=False)
            base = weights._base  # (B·heads, N, N), the tensor multiplied with V
            if base.requires_grad:
                base.retain_grad()
            kept.append((weights, base))
            return out, None

        mha.forward = forward
    try:
        with torch.enable_grad():
            x = images.clone().requires_grad_(True)
            logits = model(x)
            logits.gather(1, targets[:, None]).sum().backward()
    finally:
        for mha in originals:
            del mha.forward
    probs = [w.detach() for w, _ in kept]
    grads = [b.grad.view_as(w) for w, b in kept]
    return probs, grads


def test_torchvision_vit_matches_the_papers():
    model = torchvision_vit()
    images, targets = inputs()
    logits_unchanged(model, images)
    probs, grads = torchvision_reference(model, images, targets)
    check_against(model, probs, grads, 1, images, targets)


def timm_reference(model, images, targets):
    """timm's Attention re-implemented here from its weights (softmax(q kᵀ·scale))."""
    kept = []

    def forward(self, x, attn_mask=None, is_causal=False):
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        probs = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(-1)
        probs.retain_grad()
        kept.append(probs)
        out = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj(self.norm(out))

    blocks = [blk.attn for blk in model.blocks]
    for attn in blocks:
        attn.forward = forward.__get__(attn)
    try:
        with torch.enable_grad():
            x = images.clone().requires_grad_(True)
            logits = model(x)
            logits.gather(1, targets[:, None]).sum().backward()
    finally:
        for attn in blocks:
            del attn.forward
    with torch.no_grad():
        plain = model(images)  # the reference computes the model's logits
    assert (logits.detach() - plain).abs().max() <= 1e-6 * max(1.0, plain.abs().max().item())
    return [p.detach() for p in kept], [p.grad for p in kept]


TIMM = {
    "vit": ("vit_tiny_patch16_224", {}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {}),
    "vit_registers": ("vit_tiny_patch16_224", {"reg_tokens": 2}),
}


def timm_vit(name, **kwargs):
    torch.manual_seed(0)
    model = timm.create_model(
        name, pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=32,
        num_heads=2, mlp_ratio=2, num_classes=10, **kwargs,
    )  # fmt: skip
    return random_heads(model).eval()


@pytest.mark.parametrize("case", sorted(TIMM))
def test_timm_vit_matches_the_papers(case):
    name, kwargs = TIMM[case]
    model = timm_vit(name, **kwargs)
    prefix = model.num_prefix_tokens
    assert prefix == {"vit": 1, "deit_distilled": 2, "vit_registers": 3}[case]
    assert model.blocks[0].attn.fused_attn  # cambench switches the kernel off itself
    images, targets = inputs()
    logits_unchanged(model, images)
    assert model.blocks[0].attn.fused_attn  # and back on
    probs, grads = timm_reference(model, images, targets)
    check_against(model, probs, grads, prefix, images, targets)


# --- properties, models cambench builds, refusals -----------------------------------


def test_rollout_mean_residual_is_the_papers_half_identity():
    """Abnar & Zuidema's Ã = ½A + ½I: one block's rollout row is ½ mean_h A over
    the patches (the identity adds only to the class token's own column)."""
    torch.manual_seed(0)
    model = ExplicitViT(depth=1).eval()
    images, targets = inputs()
    with torch.no_grad():
        model(images)
    half = 0.5 * model.blocks[0].attn.probs[-1].mean(1)[:, 0, 1:]
    ours = explain("attention_rollout", model, images, targets)
    assert (ours - to_map(half, (32, 32))).abs().max() < TOL
    assert (ours - explain("attention", model, images, targets)).abs().max() < TOL


def test_attention_gradient_is_class_specific_and_the_others_are_not():
    model = torchvision_vit()
    images, _ = inputs(n=2)
    a, b = torch.tensor([0, 0]), torch.tensor([3, 5])
    assert torch.equal(
        explain("attention", model, images, a), explain("attention", model, images, b)
    )
    assert not torch.allclose(
        explain("attention_gradient", model, images, a),
        explain("attention_gradient", model, images, b),
    )


def test_cambench_models_tiny_vit_plugin_and_timm():
    """Through the model builder: the plug-in tiny_vit (examples/my_arch.py) and a
    timm: arch, wrapped in an ExternalClassifier with the normalization inside; the
    references run on the wrapped network with normalized images."""
    load_plugins([str(ROOT / "examples" / "my_arch.py")])
    images, targets = inputs()
    timm_kwargs = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    for arch, kwargs, reference in (
        ("tiny_vit", {"image_size": 32}, torchvision_reference),
        ("timm:vit_tiny_patch16_224", timm_kwargs, timm_reference),
    ):
        torch.manual_seed(0)
        model = random_heads(build_model({"arch": arch, "arch_kwargs": kwargs}, 10)).eval()
        probs, grads = reference(model.net, model.normalize(images), targets)
        check_against(model, probs, grads, 1, images, targets)


def test_applies_decided_from_the_config():
    load_plugins([str(ROOT / "examples" / "my_arch.py")])

    def spec(arch, kind="baseline"):
        return ModelSpec("m", kind, {"kind": kind, "arch": arch}, arch, None, "", 1)

    assert set(ATTENTION_METHODS) <= set(METHODS)
    for method in ATTENTION_METHODS:
        assert not METHODS[method].uses_layer
        assert spec("tiny_vit").applies(method)
        assert spec("timm:deit_tiny_distilled_patch16_224").applies(method)
        assert spec("torchvision:vit_b_16").applies(method)
        assert not spec("resnet_small").applies(method)
        assert not spec("torchvision:resnet18").applies(method)
        assert not spec("timm:swin_tiny_patch4_window7_224").applies(method)  # no class token
        assert not spec("resnet_small", "castream").applies(method)


def test_refused_through_the_api(small_resnet):
    images, targets = inputs()
    for method in ATTENTION_METHODS:
        with pytest.raises(ValueError, match=f"'{method}' needs a ViT-style model.*SmallResNet"):
            explain(method, small_resnet, images, targets)
    no_cls = timm_vit("vit_tiny_patch16_224", class_token=False, global_pool="avg")
    with pytest.raises(ValueError, match="no class token"):
        explain("attention", no_cls, images, targets)
    with pytest.raises(ValueError, match="head_fusion.*mean, max, min"):
        explain("attention_rollout", torchvision_vit(), images, targets, head_fusion="median")


def test_config_errors_name_the_key():
    from test_config import check_config

    with pytest.raises(ValueError, match=r"'methods\.attention_rollout\.head_fusion'.*median"):
        check_config({"methods": {"attention_rollout": {"head_fusion": "median"}}})
    with pytest.raises(ValueError, match=r"'methods\.attention_gradient'.*baseline \(baseline"):
        check_config({"methods": {"gradcam": {}, "attention_gradient": {}}})
    vit = {"kind": "baseline", "arch": "tiny_vit", "epochs": 1, "layer": "encoder.ln"}
    experiment = check_config(
        {
            "plugins": ["examples/my_arch.py"],
            "models": {"vit": vit, "cnn": {"kind": "baseline", "epochs": 1}},
            "methods": {"gradcam": {}, "attention": {}},
        }
    )
    assert experiment.pairs() == [("vit", "gradcam"), ("vit", "attention"), ("cnn", "gradcam")]


# --- the output contract and explain's checks, on a ViT ------------------------------


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_contract_batches_and_state(method):
    """test_saliency.py's generic checks, on a ViT: maps (B, H, W) float32 spanning
    [0, 1], independent of the batch, and the model left as found."""
    model = torchvision_vit()
    images, targets = inputs(n=3)
    maps = explain(method, model, images, targets)
    assert maps.shape == (3, 32, 32) and maps.dtype == torch.float32
    assert torch.equal(maps.amin((1, 2)), torch.zeros(3))
    assert torch.equal(maps.amax((1, 2)), torch.ones(3))
    parts = torch.cat(
        [explain(method, model, images[i : i + 1], targets[i : i + 1]) for i in range(3)]
    )
    torch.testing.assert_close(maps, parts, atol=1e-5, rtol=0)
    model.train()
    model.encoder.layers[0].eval()
    model.conv_proj.weight.requires_grad_(False)
    hook = model.encoder.register_forward_hook(lambda *a: None)
    modes = {n: m.training for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    explain(method, model, images, targets)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all("forward" not in vars(m) for m in model.modules())  # the capture is undone
    assert all(not m._forward_hooks for m in model.modules() if m is not model.encoder)
    assert all(p.grad is None for p in model.parameters())
    hook.remove()


@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_bad_targets_and_nan_logits(method):
    model = torchvision_vit()
    images, targets = inputs()
    with pytest.raises(ValueError, match=r"^target 1000 is outside \[0, 1000\)"):
        explain(method, model, images, torch.tensor([1, 1000, 2]))
    with torch.no_grad():
        model.heads.head.bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite logits"):
        explain(method, model, images, targets)
