"""A cheap fingerprint of a model's state, to catch code that changes the model it is
handed (a saliency method that edits weights in place, runs a forward in training mode
so that batch-norm statistics move, or leaves a hook behind), and a check that the
model is deterministic in eval mode (dropout left active).

The fingerprint holds, per parameter and buffer, its storage address and its version
counter (bumped by every in-place operation through the tensor itself: ``mul_``,
``copy_``, ``load_state_dict``, a batch-norm's ``num_batches_tracked``); every module's
``training`` flag and hook counts; every parameter's ``requires_grad``. That part
costs a few microseconds per tensor and never reads the weights, so the saliency job
takes it after every method call (:func:`check_unchanged` with ``values=False``).

Some edits move no version counter: writes through ``.data`` (a separate counter) and
the running means and variances a batch-norm forward in training mode updates inside
its kernel. ``values=True`` adds, per tensor, its float64 sum and L2 norm, computed on
the tensor's device in one fused pass over the weights — about a forward's memory
traffic of one layer, so the job takes it only at its start and after its last batch,
where a change fails the job before its file is complete.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2)).eval()
>>> before, cheap = fingerprint(model), fingerprint(model, values=False)
>>> _ = model.register_forward_hook(lambda module, inputs, output: None)
>>> changes(cheap, fingerprint(model, values=False))
['module <model> has +1 hook(s)']
>>> model[0].weight.data[0, 0] += 1.0  # through .data: no version counter moves
>>> changes(cheap, fingerprint(model, values=False))[:1]
['module <model> has +1 hook(s)']
>>> changes(before, fingerprint(model))
['parameter 0.weight changed', 'module <model> has +1 hook(s)']
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules import module as _module

_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
#: Hooks registered for every module (``nn.modules.module.register_module_forward_hook``).
_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
)


@dataclass(frozen=True)
class Fingerprint:
    tensors: dict[str, tuple]  # (data_ptr, _version) or (data_ptr, _version, sum, norm)
    modes: dict[str, bool]
    hooks: dict[str, int]
    requires_grad: dict[str, bool]


@torch.no_grad()
def fingerprint(model: nn.Module, values: bool = True) -> Fingerprint:
    """The model's fingerprint (see the module's docstring); ``values=False`` leaves
    out the sums and norms, the only part that reads the weights."""
    named, modes, hooks, grads = [], {}, {}, {}
    for prefix, module in model.named_modules():  # one walk over the module tree
        key = prefix or "<model>"
        modes[key] = module.training
        hooks[key] = sum(len(getattr(module, d, ())) for d in _HOOK_DICTS)
        dot = prefix + "." if prefix else ""
        for k, p in module._parameters.items():
            if p is not None:
                named.append(("parameter " + dot + k, p))
                grads[dot + k] = p.requires_grad
        for k, b in module._buffers.items():
            if b is not None:
                named.append(("buffer " + dot + k, b))
    hooks["<global>"] = sum(len(getattr(_module, d, ())) for d in _GLOBAL_HOOK_DICTS)
    if not values:
        tensors = {name: (tensor.data_ptr(), tensor._version) for name, tensor in named}
        return Fingerprint(tensors, modes, hooks, grads)
    detached = [v.detach() for _, v in named]
    floating = [i for i, v in enumerate(detached) if v.is_floating_point()]
    sums = torch.stack([v.sum(dtype=torch.float64) for v in detached]).tolist() if named else []
    norms = [0.0] * len(detached)
    if floating:  # one fused pass over the float tensors
        found = torch._foreach_norm([detached[i] for i in floating])
        for i, norm in zip(floating, torch.stack(found).tolist(), strict=True):
            norms[i] = norm
    tensors = {
        name: (tensor.data_ptr(), tensor._version, sums[i], norms[i])
        for i, (name, tensor) in enumerate(named)
    }
    return Fingerprint(tensors, modes, hooks, grads)


def changes(before: Fingerprint, after: Fingerprint) -> list[str]:
    """What differs between two fingerprints, one phrase each (empty: nothing)."""
    if before == after:  # the common case, compared at C speed
        return []
    found = []
    for name in sorted(set(before.tensors) | set(after.tensors)):
        a, b = before.tensors.get(name), after.tensors.get(name)
        if a is None or b is None:
            found.append(f"{name} {'added' if a is None else 'removed'}")
        elif a[:2] != b[:2] or (len(a) > 2 and len(b) > 2 and a[2:] != b[2:]):
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


def check_unchanged(before: Fingerprint, model: nn.Module, what: str) -> None:
    """ValueError naming ``what`` (e.g. the method and batch) when ``model``'s
    fingerprint differs from ``before``; sums and norms are compared when ``before``
    holds them."""
    values = any(len(t) > 2 for t in before.tensors.values())
    changed = changes(before, fingerprint(model, values=values))
    if changed:
        raise ValueError(
            f"{what} changed the model it explains: {'; '.join(changed[:5])}"
            f"{f' (and {len(changed) - 5} more)' if len(changed) > 5 else ''}. A method "
            "must leave the model's weights, buffers, mode and hooks as it found them"
        )


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
