"""A cheap fingerprint of a model's state, to catch code that changes the model it is
handed (a saliency method that edits weights in place, runs a forward in training mode
so that batch-norm statistics move, or leaves a hook behind), and a check that the
model is deterministic in eval mode (dropout left active).

The fingerprint holds, per parameter and buffer, its storage address, its version
counter (bumped by every in-place operation on the tensor) and, computed on the
tensor's device, its float64 sum and its L2 norm (which also catch edits made
through ``.data``, whose version counter is separate); every module's ``training``
flag and hook counts; every parameter's ``requires_grad``. One pass over the weights:
about a forward's memory traffic of one layer, measured in benchmarks/ against the
saliency job's batches.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).eval()
>>> before = fingerprint(model)
>>> with torch.no_grad():
...     model[0].weight.data[0, 0] += 1.0
>>> changes(before, fingerprint(model))
['parameter 0.weight changed']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


@dataclass(frozen=True)
class Fingerprint:
    tensors: dict[str, tuple]
    modes: dict[str, bool]
    hooks: dict[str, int]
    requires_grad: dict[str, bool]


@torch.no_grad()
def fingerprint(model: nn.Module) -> Fingerprint:
    """The model's fingerprint (see the module's docstring)."""
    named = [("parameter " + k, v) for k, v in model.named_parameters()]
    named += [("buffer " + k, v) for k, v in model.named_buffers()]
    values = [v.detach() for _, v in named]
    floating = [i for i, v in enumerate(values) if v.is_floating_point()]
    sums = torch.stack([v.sum(dtype=torch.float64) for v in values]).tolist() if values else []
    norms = [0.0] * len(values)
    if floating:  # one fused pass over the float tensors
        found = torch._foreach_norm([values[i] for i in floating])
        for i, norm in zip(floating, torch.stack(found).tolist(), strict=True):
            norms[i] = norm
    tensors = {
        name: (tensor.data_ptr(), tensor._version, sums[i], norms[i])
        for i, (name, tensor) in enumerate(named)
    }
    modes = {name or "<model>": module.training for name, module in model.named_modules()}
    hooks = {
        name or "<model>": sum(len(getattr(module, d, {})) for d in _HOOK_DICTS)
        for name, module in model.named_modules()
    }
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    return Fingerprint(tensors, modes, hooks, grads)


def changes(before: Fingerprint, after: Fingerprint) -> list[str]:
    """What differs between two fingerprints, one phrase each (empty: nothing)."""
    found = []
    for name in sorted(set(before.tensors) | set(after.tensors)):
        a, b = before.tensors.get(name), after.tensors.get(name)
        if a is None or b is None:
            found.append(f"{name} {'added' if a is None else 'removed'}")
        elif a[0] != b[0] or a[1] != b[1] or a[2:] != b[2:]:
            found.append(f"{name} changed")
    for name, mode in before.modes.items():
        if after.modes.get(name) != mode:
            found.append(
                f"module {name} left in {'training' if after.modes.get(name) else 'eval'} mode"
            )
    for name, count in before.hooks.items():
        if after.hooks.get(name, 0) != count:
            found.append(f"module {name} has {after.hooks.get(name, 0) - count:+d} hook(s)")
    for name, flag in before.requires_grad.items():
        if after.requires_grad.get(name) != flag:
            found.append(f"parameter {name}'s requires_grad changed")
    return found


@torch.no_grad()
def check_deterministic(model: nn.Module, images: torch.Tensor, what: str) -> None:
    """ValueError naming ``what`` when two forwards of ``images`` give different
    logits (dropout or another random layer active in eval mode)."""
    first = _logits(model(images))
    second = _logits(model(images))
    if first.shape != second.shape or not torch.allclose(first, second, rtol=1e-4, atol=1e-5):
        gap = float((first - second).abs().max()) if first.shape == second.shape else float("nan")
        raise ValueError(
            f"{what}: two forwards of the same images give different outputs (max difference "
            f"{gap:.3g}); a random layer (dropout?) is active in eval mode, so its maps and "
            "metrics would not be reproducible"
        )


def _logits(out: object) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits",):
        if isinstance(out, dict) and key in out:
            return out[key]
        if hasattr(out, key):
            return getattr(out, key)
    if isinstance(out, (tuple, list)) and out:
        return _logits(out[0])
    raise ValueError(f"cannot read logits from a {type(out).__name__}")
