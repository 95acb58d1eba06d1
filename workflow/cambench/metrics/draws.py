"""Seeded random draws of the stochastic metrics (ROAD's noise, the random subsets of
faithfulness correlation, the perturbation values of monotonicity correlation).

Every draw is a hash of (seed, the image's position in its split, a stream number,
the element), not the state of a generator: a metric's value for an image does not
depend on the batch it was scored in, nor on the order of the jobs, and a test can
hand the very same draws to a reference implementation.
"""

from __future__ import annotations

import math

import torch

from cambench.data.degrade import _hash32

__all__ = [
    "CPU_FORWARD_BATCH",
    "hash_normal",
    "hash_uniform",
    "hash_uniform_at",
    "model_output",
    "pearson_rows",
]

#: On CPU the metrics forward at most this many images at a time, whatever their
#: ``batch_size`` (which bounds the perturbed images built at once): the activations
#: of 64 images stay in cache. The default model at 32 px (inference copy, one thread,
#: benchmarks/metrics.py) took 0.8 ms per image at 32-64 images per forward and
#: 1.9 ms at 512 on the reference machine.
CPU_FORWARD_BATCH = 64


def hash_uniform(index: torch.Tensor, n: int, seed: int, stream: int) -> torch.Tensor:
    """(B, n) float64 uniform in (0, 1): 53 bits of two chained 32-bit hashes of
    (``seed``, image position ``index``, ``stream``, element 0..n-1).

    Example::
        >>> import torch
        >>> from cambench.metrics.draws import hash_uniform
        >>> u = hash_uniform(torch.tensor([3, 4]), 5, seed=0, stream=1)
        >>> u.shape, bool(((u > 0) & (u < 1)).all())
        (torch.Size([2, 5]), True)
        >>> torch.equal(u[1:], hash_uniform(torch.tensor([4]), 5, seed=0, stream=1))
        True
    """
    element = torch.arange(n, dtype=torch.int64, device=index.device)
    return hash_uniform_at(index, element[None, :], seed, stream)


def hash_uniform_at(
    index: torch.Tensor, elements: torch.Tensor, seed: int, stream: int
) -> torch.Tensor:
    """The draws of :func:`hash_uniform` at the given ``elements`` only ((B, m) or
    (1, m) int64), (B, m) float64: ``hash_uniform(index, n, seed, stream)`` gathered at
    ``elements``, without hashing the elements a metric does not use.

    Example::
        >>> import torch
        >>> from cambench.metrics.draws import hash_uniform, hash_uniform_at
        >>> at = torch.tensor([[4, 0], [2, 2]])
        >>> torch.equal(hash_uniform_at(torch.tensor([3, 4]), at, 0, 1),
        ...             hash_uniform(torch.tensor([3, 4]), 5, 0, 1).gather(1, at))
        True
    """
    index = index.to(torch.int64)
    image = _hash32(index * 0x9E3779B1 + int(seed) * 0x85EBCA77 + int(stream) * 0x27D4EB2F)
    image = _hash32(image ^ (int(stream) * 0x165667B1))
    high = _hash32(image[:, None] ^ (elements.to(torch.int64) * 0xC2B2AE3D))
    low = _hash32(high ^ 0x68E31DA4) >> 11  # 21 bits
    return (high.double() * 2.0**21 + low.double() + 0.5) / 2.0**53


def hash_normal(index: torch.Tensor, n: int, seed: int, stream: int) -> torch.Tensor:
    """(B, n) float64 standard normal draws (Box-Muller of two :func:`hash_uniform`
    streams, ``2 * stream`` and ``2 * stream + 1``)."""
    u1 = hash_uniform(index, n, seed, 2 * stream)
    u2 = hash_uniform(index, n, seed, 2 * stream + 1)
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


def model_output(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    output: str,
    batch_size: int,
) -> torch.Tensor:
    """(n,) float32: the target's softmax probability (``output="probability"``), its
    logit (``"logit"``) or 1.0 where the predicted class is the target
    (``"accuracy"``), forwarded ``batch_size`` images at a time (at most
    :data:`CPU_FORWARD_BATCH` on CPU)."""
    if output not in ("probability", "logit", "accuracy"):
        raise ValueError(f"output must be probability, logit or accuracy, got {output!r}")
    if images.device.type == "cpu":
        batch_size = min(batch_size, CPU_FORWARD_BATCH)
    out = torch.empty(images.shape[0], dtype=torch.float32, device=images.device)
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start : start + batch_size]).float()
            t = targets[start : start + batch_size]
            if output == "probability":
                value = logits.softmax(dim=1).gather(1, t[:, None]).squeeze(1)
            elif output == "logit":
                value = logits.gather(1, t[:, None]).squeeze(1)
            else:
                value = (logits.argmax(dim=1) == t).float()
            out[start : start + logits.shape[0]] = value
    return out


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row pair of (B, N) ``a`` and ``b``, float64; 0 where
    either row is constant (no linear relation can be measured)."""
    a = a.double() - a.double().mean(dim=1, keepdim=True)
    b = b.double() - b.double().mean(dim=1, keepdim=True)
    num = (a * b).sum(dim=1)
    den = torch.sqrt((a * a).sum(dim=1) * (b * b).sum(dim=1))
    return torch.where(den > 0, num / torch.where(den > 0, den, 1.0), 0.0)
