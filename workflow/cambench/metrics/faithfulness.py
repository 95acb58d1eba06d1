"""Faithfulness metrics: confidence change (AD, AI, AG) and insertion / deletion.

Definitions, directions and the choices cambench makes are collected in
``docs/metrics.md``.

Units: every value this module returns is a fraction or a probability in [0, 1]
(per-image AD/AI/AG terms, curves and AUCs). Tables (per-image CSVs, summaries)
report percent; the caller multiplies by 100. Conventions:

- ``images``: float (B, C, H, W) in [0, 1] (C = 3 for cambench's models);
- ``model``: any ``torch.nn.Module`` mapping images to logits (B, K); it includes
  its own input normalization, so masking is ``images * maps`` and the black
  substrate is zeros;
- ``maps``: float (B, H, W) in [0, 1], at input resolution;
- ``targets``: integer (B,), the class explained for each image.

Probabilities are ``softmax(logits)[target]``, computed in float32. Every
function runs batched on the images' device under ``torch.no_grad()``, through an
eval-mode inference copy of the model (:func:`cambench.models.inference.inference_copy`:
batch norm folded, channels-last on CPU), so the model itself is left as found.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cambench.auc import trapezoid_auc
from cambench.models.inference import inference_copy

__all__ = [
    "DEFAULT_BLUR_KERNEL",
    "DEFAULT_BLUR_SIGMA",
    "SUBSTRATES",
    "ConfidenceChange",
    "InsertionDeletion",
    "confidence_change",
    "insertion_deletion",
    "make_substrate",
    "step_pixel_counts",
    "trapezoid_auc",
]

#: Substrates for insertion / deletion: what a pixel becomes when it is not (yet)
#: the image's own.
SUBSTRATES = ("black", "blur", "mean")

#: Default Gaussian blur of the insertion substrate, as in RISE (Petsiuk et al.,
#: 2018) and the Opti-CAM / CA-Stream evaluation code: an 11 x 11 kernel with
#: sigma 5. It removes detail at the scale of a few pixels, which is already
#: strong on small images (32-64 px); the kernel needs H, W >= 6.
DEFAULT_BLUR_SIGMA = 5.0
DEFAULT_BLUR_KERNEL = 11


# --------------------------------------------------------------------------- helpers


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_inputs(
    images: torch.Tensor, targets: torch.Tensor, maps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes; return ``targets`` and ``maps`` on the images' device."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images)
        raise ValueError(f"images must be a (B, C, H, W) tensor, got shape {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    b, _, h, w = images.shape
    if not isinstance(maps, torch.Tensor) or tuple(maps.shape) != (b, h, w):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps)
        raise ValueError(
            f"maps must have shape (B, H, W) = {(b, h, w)} to match images "
            f"{tuple(images.shape)}, got {shape}"
        )
    if maps.dtype == torch.bool or maps.is_complex():
        raise ValueError(f"maps must be a real-valued tensor, got dtype {maps.dtype}")
    if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != (b,):
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets)
        raise ValueError(f"targets must have shape (B,) = ({b},) to match images, got {shape}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor, got dtype {targets.dtype}")
    return targets.to(images.device, torch.long), maps.to(images.device)


_NONFINITE_PROBS = "the model's probabilities (non-finite images or a NaN model output) are"


def _check_finite(values: torch.Tensor, what: str) -> None:
    """A metric is never computed from NaN: name the images (rows of ``values``, (B, ...))
    that hold a non-finite value."""
    bad = ~torch.isfinite(values).flatten(1).all(dim=1)
    if bool(bad.any()):
        raise ValueError(
            f"{what} non-finite (NaN or inf) for images {bad.nonzero().flatten().tolist()} "
            f"of the batch"
        )


def _check_target_range(targets: torch.Tensor, num_classes: int) -> None:
    """Raise ``ValueError`` (not a CUDA device assert) for out-of-range targets."""
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise ValueError(
            f"targets must lie in [0, {num_classes}) for a model with {num_classes} "
            f"classes, got values in [{int(targets.min())}, {int(targets.max())}]"
        )


def _target_probs(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    all_targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax probability of ``targets`` for one batch: (n,) float32.

    ``all_targets``, when given (first batch of a call), is range-checked once
    against the model's number of classes before any gather.
    """
    logits = model(images)
    if logits.ndim != 2 or logits.shape[0] != images.shape[0]:
        raise ValueError(
            f"model must map (n, C, H, W) images to (n, K) logits, got output shape "
            f"{tuple(logits.shape)} for input {tuple(images.shape)}"
        )
    if all_targets is not None:
        _check_target_range(all_targets, logits.shape[1])
    return logits.float().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)


def _batched_probs(
    model: torch.nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """Target probabilities of ``images`` forwarded ``batch_size`` at a time."""
    out = torch.empty(images.shape[0], dtype=torch.float32, device=images.device)
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        out[start:stop] = _target_probs(
            model, images[start:stop], targets[start:stop], targets if start == 0 else None
        )
    return out


# ----------------------------------------------------------------- confidence change


@dataclass
class ConfidenceChange:
    r"""Per-image target probabilities before and after masking with the map, and the
    per-image terms of Average Drop, Average Increase and Average Gain.

    Average Drop and Average Increase are described in `"Grad-CAM++: Improved Visual
    Explanations for Deep Convolutional Networks" <https://arxiv.org/abs/1710.11063>`_
    (Chattopadhyay et al., WACV 2018), Average Gain in `"Opti-CAM: Optimizing saliency
    maps for interpretability" <https://arxiv.org/abs/2301.07002>`_ (Zhang et al.,
    CVIU 2024). Over :math:`N` images:

    .. math::
        AD = \frac{1}{N} \sum_{i=1}^N \frac{\max(0, p_i - o_i)}{p_i}, \qquad
        AI = \frac{1}{N} \sum_{i=1}^N \mathbb{1}[p_i < o_i], \qquad
        AG = \frac{1}{N} \sum_{i=1}^N \frac{\max(0, o_i - p_i)}{1 - p_i}

    where :math:`p_i` is the softmax probability of the explained class :math:`c_i` on
    the image :math:`x_i` and :math:`o_i` the same on the masked image
    :math:`x_i \odot S_i` (:math:`S_i` the saliency map, broadcast over channels).
    AD is better low (↓), AI and AG high (↑).

    ``p``, ``o``: (B,) float32. :meth:`drop`, :meth:`increase` and :meth:`gain` return
    the per-image terms as fractions in [0, 1]; their means are AD, AI and AG (tables
    multiply them by 100).

    Example::
        >>> import torch
        >>> from cambench.metrics import ConfidenceChange
        >>> change = ConfidenceChange(p=torch.tensor([0.8, 0.5]), o=torch.tensor([0.4, 0.75]))
        >>> change.drop(), change.increase(), change.gain()
        (tensor([0.5000, 0.0000]), tensor([0., 1.]), tensor([0.0000, 0.5000]))
    """

    p: torch.Tensor
    o: torch.Tensor

    # ``scale`` multiplies before the division: ``scale=100`` gives the tables' percent
    # with the same rounding as computing in percent; ``scale=1`` (a fraction) is exact.

    def drop(self, scale: float = 1.0) -> torch.Tensor:
        """``scale · max(0, p - o) / p`` (Average Drop term; 0 where ``p == 0``)."""
        p, o = self.p, self.o
        safe = torch.where(p > 0, p, torch.ones_like(p))
        return torch.where(p > 0, scale * (p - o).clamp_min(0) / safe, torch.zeros_like(p))

    def increase(self, scale: float = 1.0) -> torch.Tensor:
        """``scale · [p < o]`` as float (Average Increase term)."""
        return scale * (self.p < self.o).to(self.p.dtype)

    def gain(self, scale: float = 1.0) -> torch.Tensor:
        """``scale · max(0, o - p) / (1 - p)`` (Average Gain term; 0 where ``p == 1``)."""
        p, o = self.p, self.o
        room = 1.0 - p
        safe = torch.where(room > 0, room, torch.ones_like(room))
        return torch.where(room > 0, scale * (o - p).clamp_min(0) / safe, torch.zeros_like(p))


@torch.no_grad()
def confidence_change(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    batch_size: int = 256,
) -> ConfidenceChange:
    """Target probability on each image (``p``) and on the image masked by its map (``o``):
    the inputs of AD, AI and AG (:class:`ConfidenceChange`).

    The masked image is ``images * maps[:, None]``: the model includes its own
    normalization, so a zero in the map is a black pixel. Forwards run
    ``batch_size`` images at a time in eval mode; the model's train/eval flags
    are restored afterwards. ``p`` and ``o`` are float32 on the images' device.

    Raises ``ValueError`` when ``maps`` is not (B, H, W) matching ``images``
    (B, C, H, W), ``targets`` is not an integer (B,) tensor, a target is not a
    class of the model, or a map or a probability is not finite (the message
    names the images of the batch).

    Example::
        >>> import torch
        >>> from cambench.metrics import confidence_change
        >>> from cambench.models.small_resnet import SmallResNet
        >>> _ = torch.manual_seed(0)
        >>> model = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> images, targets = torch.rand(2, 3, 16, 16), torch.tensor([3, 7])
        >>> confidence_change(model, images, targets, torch.ones(2, 16, 16)).drop()
        tensor([0., 0.])
        >>> change = confidence_change(model, images, targets, torch.rand(2, 16, 16))
        >>> ad = change.drop().mean()  # Average Drop of the batch, a fraction
        >>> bool(0 <= ad <= 1)
        True
    """
    targets, maps = _check_inputs(images, targets, maps)
    _check_positive_int("batch_size", batch_size)
    _check_finite(maps, "the maps are")
    model = inference_copy(model, images.device)
    p = _batched_probs(model, images, targets, batch_size)
    o = _batched_probs(model, images * maps[:, None].to(images.dtype), targets, batch_size)
    _check_finite(torch.stack([p, o], dim=1), _NONFINITE_PROBS)
    return ConfidenceChange(p=p, o=o)


# --------------------------------------------------------------- insertion / deletion


@dataclass
class InsertionDeletion:
    """Per-image insertion and deletion curves and their areas.

    ``insertion``: (B, steps + 1) target probability, from the insertion
    substrate (step 0) to the full image (last step). ``deletion``: (B, steps + 1)
    from the full image (step 0) to the deletion substrate (last step).
    ``insertion_auc`` / ``deletion_auc``: (B,) trapezoidal area under each curve
    over the fraction axis ``linspace(0, 1, steps + 1)`` (:func:`trapezoid_auc`),
    in [0, 1].
    """

    insertion: torch.Tensor
    deletion: torch.Tensor
    insertion_auc: torch.Tensor
    deletion_auc: torch.Tensor


def step_pixel_counts(num_pixels: int, steps: int, device: torch.device | str | None = None):
    """Pixels inserted / removed at each step: ``k_s = round(s * num_pixels / steps)``.

    Rounding is half-up, in exact integer arithmetic:
    ``k_s = (2 s N + steps) // (2 steps)`` for ``s = 0 .. steps``, so ``k_0 = 0``
    and ``k_steps = N``. With ``steps = H`` on a square image each step is one
    row of pixels (the Opti-CAM protocol). Returns a (steps + 1,) int64 tensor.

    Example::
        >>> from cambench.metrics import step_pixel_counts
        >>> step_pixel_counts(4, 3)  # 4/3 = 1.33 -> 1, 8/3 = 2.67 -> 3
        tensor([0, 1, 3, 4])
    """
    s = torch.arange(steps + 1, device=device, dtype=torch.long)
    return (2 * s * num_pixels + steps) // (2 * steps)


def make_substrate(
    images: torch.Tensor,
    kind: str,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    blur_kernel: int = DEFAULT_BLUR_KERNEL,
) -> torch.Tensor:
    """The substrate images (B, C, H, W) for ``kind`` in :data:`SUBSTRATES`.

    - ``"black"``: zeros (the model normalizes its input, so this is black);
    - ``"blur"``: ``torchvision.transforms.functional.gaussian_blur`` of the image
      with a ``blur_kernel`` x ``blur_kernel`` kernel of standard deviation
      ``blur_sigma`` and reflect padding;
    - ``"mean"``: each image's per-channel mean colour.

    ``"black"`` and ``"mean"`` are returned as expanded views (no copy).
    """
    if kind not in SUBSTRATES:
        raise ValueError(f"unknown substrate {kind!r}; valid substrates: {', '.join(SUBSTRATES)}")
    if kind == "black":
        return images.new_zeros(()).expand(images.shape)
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand(images.shape)
    _check_positive_int("blur_kernel", blur_kernel)
    if blur_kernel % 2 == 0:
        raise ValueError(f"blur_kernel must be odd, got {blur_kernel}")
    if not blur_sigma > 0:
        raise ValueError(f"blur_sigma must be positive, got {blur_sigma!r}")
    h, w = images.shape[-2:]
    if blur_kernel // 2 >= min(h, w):
        raise ValueError(
            f"blur_kernel {blur_kernel} is too large for {h}x{w} images (reflect padding "
            f"needs blur_kernel // 2 < min(H, W)); pass a smaller blur_kernel"
        )
    return gaussian_blur(images, blur_kernel, blur_sigma)


@torch.no_grad()
def insertion_deletion(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    steps: int = 32,
    insertion_substrate: str = "blur",
    deletion_substrate: str = "black",
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    blur_kernel: int = DEFAULT_BLUR_KERNEL,
    batch_size: int = 256,
) -> InsertionDeletion:
    r"""Insertion and deletion curves of the target probability and their areas, as
    described in `"RISE: Randomized Input Sampling for Explanation of Black-box Models"
    <https://arxiv.org/abs/1806.07421>`_ (Petsiuk et al., BMVC 2018).

    With :math:`N = H W` pixels ordered by decreasing saliency
    :math:`\pi_1, \dots, \pi_N` and :math:`T` = ``steps``, step :math:`s = 0 \dots T`
    perturbs the first :math:`k_s = \mathrm{round}(s N / T)` pixels of that order:

    .. math::
        I_s = \mathrm{softmax}\big(f(\tilde x \oplus_{k_s} x)\big)_c, \qquad
        D_s = \mathrm{softmax}\big(f(x \oplus_{k_s} \bar x)\big)_c, \qquad
        \mathrm{AUC} = \frac{1}{T} \sum_{s=0}^{T-1} \frac{C_s + C_{s+1}}{2}

    where :math:`a \oplus_k b` is the image :math:`a` with the pixels
    :math:`\pi_1 \dots \pi_k` taken from :math:`b`, :math:`x` the image,
    :math:`\tilde x` the insertion substrate (default a Gaussian blur of :math:`x`),
    :math:`\bar x` the deletion substrate (default black), :math:`f` the model,
    :math:`c` the explained class and :math:`C` either curve (trapezoid rule over
    the fraction of pixels :math:`s / T`, see :func:`trapezoid_auc`). Insertion
    AUC is better high (↑), deletion AUC low (↓).

    Pixel order: decreasing saliency, ties broken by position in the flattened
    (row-major) map, first pixel first (stable sort of ``-maps.flatten(1)``).
    With ``N = H * W`` pixels, step ``s`` (``0 .. steps``) has the first
    ``k_s = round(s * N / steps)`` pixels of that order (half-up rounding, see
    :func:`step_pixel_counts`) taken from the image for insertion -- the rest
    from ``insertion_substrate`` -- and replaced by ``deletion_substrate`` for
    deletion. ``steps = H`` gives one row of pixels per step (Opti-CAM protocol);
    ``steps = H / 8`` eight rows (CA-Stream protocol). A pixel is replaced in all
    channels at once.

    Substrates (:func:`make_substrate`): ``"black"``, ``"blur"`` (Gaussian blur,
    default kernel 11 and sigma 5 as in RISE), ``"mean"``. The defaults are
    insertion from a blurred image and deletion to black.

    The area under each curve is the trapezoidal rule on the fraction axis
    ``linspace(0, 1, steps + 1)`` (step ``s`` sits at ``s / steps``, which is
    ``k_s / N`` up to rounding), so it lies in [0, 1].

    All ``B * 2 * (steps + 1)`` perturbed images are built ``batch_size`` at a
    time, each batch by one broadcast ``torch.where`` from the pixel ranks, and
    forwarded as one batch, so memory is bounded by ``batch_size`` images whatever
    ``steps`` is. The result equals a step-by-step loop over images and steps
    (up to the floating-point effect of batch composition on the forward pass).

    Raises ``ValueError`` on the input errors of :func:`confidence_change`
    (including non-finite maps or probabilities, naming the images of the batch),
    an unknown substrate, or a blur kernel that does not fit the images.

    Example::
        >>> import torch
        >>> from cambench.metrics import insertion_deletion
        >>> from cambench.models.small_resnet import SmallResNet
        >>> _ = torch.manual_seed(0)
        >>> model = SmallResNet(num_classes=10, width=4, blocks=(1, 1, 1, 1)).eval()
        >>> images, maps = torch.rand(2, 3, 16, 16), torch.rand(2, 16, 16)
        >>> curves = insertion_deletion(model, images, torch.tensor([3, 7]), maps, steps=16)
        >>> curves.insertion.shape, curves.deletion_auc.shape  # one row per step
        (torch.Size([2, 17]), torch.Size([2]))
        >>> torch.allclose(curves.insertion[:, -1], curves.deletion[:, 0])  # the image
        True
    """
    targets, maps = _check_inputs(images, targets, maps)
    _check_positive_int("steps", steps)
    _check_positive_int("batch_size", batch_size)
    _check_finite(maps, "the maps are")
    for name, kind in (
        ("insertion_substrate", insertion_substrate),
        ("deletion_substrate", deletion_substrate),
    ):
        if kind not in SUBSTRATES:
            raise ValueError(f"unknown {name} {kind!r}; valid substrates: {', '.join(SUBSTRATES)}")

    b, _, h, w = images.shape
    n_pix = h * w
    n_steps = steps + 1
    device = images.device
    ins_sub = make_substrate(images, insertion_substrate, blur_sigma, blur_kernel)
    del_sub = make_substrate(images, deletion_substrate, blur_sigma, blur_kernel)

    # rank[b, y, x] = position of pixel (y, x) in the decreasing-saliency order.
    order = torch.sort(-maps.flatten(1), dim=1, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n_pix, device=device).expand(b, n_pix))
    rank = rank.view(b, h, w)
    counts = step_pixel_counts(n_pix, steps, device)

    # Flat index over (image, curve, step), curve 0 = insertion, 1 = deletion.
    total = b * 2 * n_steps
    probs = torch.empty(total, dtype=torch.float32, device=device)
    model = inference_copy(model, device)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        j = torch.arange(start, stop, device=device)
        img = torch.div(j, 2 * n_steps, rounding_mode="floor")
        is_insertion = (j % (2 * n_steps)) < n_steps
        step = j % n_steps
        # first k_s pixels: from the image (insertion) / from the substrate (deletion)
        first = rank[img] < counts[step][:, None, None]
        from_image = (first == is_insertion[:, None, None])[:, None]
        substrate = torch.where(is_insertion[:, None, None, None], ins_sub[img], del_sub[img])
        batch = torch.where(from_image, images[img], substrate)
        probs[start:stop] = _target_probs(
            model, batch, targets[img], targets if start == 0 else None
        )

    curves = probs.view(b, 2, n_steps)
    _check_finite(curves, _NONFINITE_PROBS)
    insertion, deletion = curves[:, 0], curves[:, 1]
    return InsertionDeletion(
        insertion=insertion,
        deletion=deletion,
        insertion_auc=trapezoid_auc(insertion),
        deletion_auc=trapezoid_auc(deletion),
    )


def gaussian_blur(images: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """Blur (B, C, H, W) ``images`` with a ``kernel`` × ``kernel`` Gaussian of std
    ``sigma`` (pixels), reflect-padded so the size is kept.

    The 2-D kernel is the outer product of the normalized 1-D Gaussian
    ``g(x) = exp(−x²/2σ²) / Σ exp(−x²/2σ²)`` at ``x = −(k−1)/2 … (k−1)/2``, applied per
    channel — the same numbers, in the same order, as torchvision's
    ``transforms.functional.gaussian_blur`` (tested equal), without importing
    torchvision (≈1–2 s per job).

    >>> import torch
    >>> gaussian_blur(torch.ones(1, 1, 5, 5), 3, 1.0).allclose(torch.ones(1, 1, 5, 5))
    True
    """
    half = (kernel - 1) * 0.5
    x = torch.linspace(-half, half, steps=kernel, dtype=images.dtype, device=images.device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    g = pdf / pdf.sum()
    weights = torch.mm(g[:, None], g[None, :]).expand(images.shape[-3], 1, kernel, kernel)
    pad = kernel // 2
    padded = F.pad(images, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(padded, weights, groups=images.shape[-3])
