"""Peer libraries' methods by name: ``captum:<AttributionClass>`` and
``pytorch_grad_cam:<CAMClass>``.

:func:`adapter_method` builds, on demand, a :class:`cambench.saliency.registry.Method`
for such a name (``get_method`` calls it for every name with a ``:``), so a peer's
method runs through the same :func:`cambench.saliency.explain` contract, HDF5 cache,
metrics and sanity check as a built-in one. The libraries are optional extras,
imported only when a name asks for them: ``pip install -e '.[captum]'`` or
``pip install -e '.[gradcam]'``; without it the error names the extra.

Captum (Kokhlikyan et al. 2020, https://arxiv.org/abs/2009.07896): the class is built
as ``Class(model)``, or ``Class(model, layer=<target layer>)`` when its constructor
takes a ``layer`` (``LayerGradCam``, ``LayerIntegratedGradients``, ``GuidedGradCam``…),
then ``attribute(images, target=targets, **params)`` with the config entry's other
keys as ``params`` (checked against ``attribute()``'s signature). Its output ``A``
becomes raw scores ``S`` (B, h, w):

- a pixel attribution (B, 3, H, W): ``S = reduce(A)`` over the colour channels with
  ``reduce`` (an adapter option, default ``abs_max`` — Simonyan et al.'s
  ``max_c |A_c|``, as the built-in ``gradient``; also ``abs_sum``, ``sum``, ``l2``:
  :func:`cambench.saliency.perturb.reduce_channels`), no ReLU;
- a layer attribution (B, 1, h, w) or (B, h, w) (a ``Layer*`` class): squeezed, then
  ReLU (a multi-channel layer attribution is reduced like a pixel one first).

``pytorch_grad_cam`` (Gildenblat et al., https://github.com/jacobgil/pytorch-grad-cam):
``Class(model=model, target_layers=[layer], **ctor)`` then
``cam(input_tensor=images, targets=[ClassifierOutputTarget(t) …], **call)``, the entry's
keys split between the constructor and the call by their signatures. The library
returns (B, H, W) maps already ReLU-ed, resized to the input (OpenCV) and min-max
scaled per image, as NumPy (its own per-image loop and NumPy round trip, not ours);
they are the raw scores ``S``.

Either way :func:`cambench.saliency.explain` then applies ReLU where stated, bilinear
upsampling and per-image min-max normalization: ``map = n(up(ReLU(S)))``.

>>> import torch
>>> from cambench.models.small_resnet import SmallResNet
>>> from cambench.saliency import explain
>>> _ = torch.manual_seed(0)
>>> model = SmallResNet(num_classes=10, width=8, blocks=(1, 1, 1, 1)).eval()
>>> images, targets = torch.rand(2, 3, 32, 32), torch.tensor([3, 7])
>>> explain("captum:IntegratedGradients", model, images, targets, n_steps=8).shape
torch.Size([2, 32, 32])
>>> explain("pytorch_grad_cam:GradCAM", model, images, targets).shape
torch.Size([2, 32, 32])
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
from torch import nn

from cambench.saliency.perturb import REDUCTIONS, reduce_channels
from cambench.saliency.registry import PEER_METHODS, Method, ParamError

# prefix -> (importable module, distribution whose version is recorded, extra to install)
LIBRARIES = {
    "captum": ("captum.attr", "captum", "captum"),
    "pytorch_grad_cam": ("pytorch_grad_cam", "grad-cam", "gradcam"),
}
# Parameters the adapter sets itself (or that take Python objects YAML cannot give).
_CAPTUM_SET = {"self", "forward_func", "model", "layer", "inputs", "target"}
_GRADCAM_SET = {
    "self",
    "model",
    "target_layers",
    "input_tensor",
    "targets",
    "reshape_transform",
    "ablation_layer",
    "tta_transforms",
}
DEFAULT_REDUCE = "abs_max"


def is_adapter_name(name: str) -> bool:
    """Whether ``name`` is a ``<library>:<Class>`` name this module resolves."""
    return isinstance(name, str) and name.split(":", 1)[0] in LIBRARIES and ":" in name


def _import(prefix: str, name: str) -> Any:
    module, _, extra = LIBRARIES[prefix]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ValueError(
            f"saliency method {name!r} needs the optional library {prefix}, which is not "
            f"installed: pip install -e '.[{extra}]'"
        ) from None


def library_version(prefix: str) -> str:
    """The installed version of the library behind ``prefix`` (``""`` if unknown)."""
    try:
        return version(LIBRARIES[prefix][1])
    except PackageNotFoundError:
        return ""


def _keyword_params(fn: Any, skip: set[str]) -> dict[str, inspect.Parameter]:
    """``fn``'s named parameters a config entry may set."""
    return {
        n: p
        for n, p in inspect.signature(fn).parameters.items()
        if n not in skip and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _required(fn: Any) -> set[str]:
    return {
        n
        for n, p in inspect.signature(fn).parameters.items()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _captum_classes(attr: Any) -> dict[str, type]:
    """Captum's attribution classes that a config can build: constructed from the model
    (and a layer), explaining a ``target`` class, with no other required argument."""
    from captum.attr._utils.attribution import Attribution

    out = {}
    for name in getattr(attr, "__all__", dir(attr)):
        cls = getattr(attr, name, None)
        if not (inspect.isclass(cls) and issubclass(cls, Attribution)):
            continue
        if not inspect.isfunction(inspect.getattr_static(cls, "attribute", None)):
            continue  # an abstract base (Attribution, LayerAttribution…)
        takes_target = "target" in inspect.signature(cls.attribute).parameters
        if takes_target and _required(cls.__init__) <= {"self", "forward_func", "model", "layer"}:
            out[name] = cls
    return out


def _gradcam_classes(lib: Any) -> dict[str, type]:
    from pytorch_grad_cam.base_cam import BaseCAM

    return {
        n: c
        for n in dir(lib)
        if inspect.isclass(c := getattr(lib, n)) and issubclass(c, BaseCAM) and c is not BaseCAM
    }


@dataclass(frozen=True)
class AdapterMethod(Method):
    """A peer library's method: parameters are checked against its signatures (no
    defaults are filled in: the library's own apply), provenance names the library."""

    library: str = ""
    library_version: str = ""
    allowed: tuple[str, ...] = ()
    required: tuple[str, ...] = ()

    def resolve_params(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(self.allowed))
        if unknown:
            raise ParamError(
                unknown[0],
                f"{self.name} takes no parameter {unknown[0]!r}; valid parameters: "
                f"{', '.join(sorted(self.allowed)) or 'none'}",
                self.name,
            )
        missing = [p for p in self.required if p not in params]
        if missing:
            raise ParamError(missing[0], f"{self.name} needs it (no default)", self.name)
        if "reduce" in params and params["reduce"] not in REDUCTIONS:
            raise ParamError(
                "reduce", f"must be one of {', '.join(REDUCTIONS)}; got {params['reduce']!r}"
            )
        return dict(params)

    def provenance(self) -> dict[str, str]:
        """What the HDF5 file records about the library that computed its maps."""
        return {"library": self.library, "library_version": self.library_version}


def _captum_raw(
    cls: type,
    uses_layer: bool,
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module | None,
    params: dict[str, Any],
) -> torch.Tensor:
    """Captum's attribution of ``targets`` as raw scores (B, h, w) (module docstring)."""
    # YAML lists become the tuples captum expects (sliding_window_shapes=(3, 8, 8))
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    reduce = params.pop("reduce", DEFAULT_REDUCE)
    explainer = cls(model, layer=layer) if uses_layer else cls(model)
    inputs = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = explainer.attribute(inputs, target=targets, **params)
    if isinstance(out, tuple):  # (attributions, delta) with return_convergence_delta
        out = out[0]
    out = out.detach()
    if out.ndim == 4:
        return out[:, 0] if out.shape[1] == 1 else reduce_channels(out, reduce)
    return out


def _gradcam_raw(
    cls: type,
    ctor_names: set[str],
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    layer: nn.Module | None,
    params: dict[str, Any],
) -> torch.Tensor:
    """pytorch_grad_cam's maps (B, H, W) (module docstring) as raw scores."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    ctor = {k: v for k, v in params.items() if k in ctor_names}
    call = {k: v for k, v in params.items() if k not in ctor_names}
    # frozen parameters: the input carries the graph the library's backward needs
    inputs = images.detach().clone().requires_grad_(True)
    wanted = [ClassifierOutputTarget(int(t)) for t in targets.tolist()]
    with torch.enable_grad(), cls(model=model, target_layers=[layer], **ctor) as cam:
        maps = cam(input_tensor=inputs, targets=wanted, **call)
    return torch.as_tensor(maps, dtype=torch.float32, device=images.device)


@functools.cache
def adapter_method(name: str) -> AdapterMethod:
    """The :class:`AdapterMethod` for ``captum:<Class>`` or ``pytorch_grad_cam:<Class>``
    (one object per name and process, so code digests are cached per name). A
    ValueError names a missing library's extra, or an unknown class with the valid
    ones."""
    prefix, _, cls_name = name.partition(":")
    if prefix not in LIBRARIES:
        raise ValueError(
            f"unknown saliency method {name!r}: a library method is captum:<Class> or "
            "pytorch_grad_cam:<Class>"
        )
    lib = _import(prefix, name)
    classes = _captum_classes(lib) if prefix == "captum" else _gradcam_classes(lib)
    if cls_name not in classes:
        raise ValueError(
            f"unknown saliency method {name!r}: {prefix} has no such class; valid: "
            + ", ".join(f"{prefix}:{c}" for c in sorted(classes))
        )
    cls = classes[cls_name]
    if prefix == "captum":
        from captum.attr._utils.attribution import LayerAttribution

        uses_layer = "layer" in inspect.signature(cls.__init__).parameters
        allowed = set(_keyword_params(cls.attribute, _CAPTUM_SET)) | {"reduce"}
        required = tuple(sorted(_required(cls.attribute) - _CAPTUM_SET))

        def captum_method(model, images, targets, layer, **params):
            return _captum_raw(cls, uses_layer, model, images, targets, layer, params)

        fn, relu = captum_method, issubclass(cls, LayerAttribution)
    else:
        ctor_names = set(_keyword_params(cls.__init__, _GRADCAM_SET))
        allowed = ctor_names | set(_keyword_params(cls.__call__, _GRADCAM_SET))
        required = tuple(sorted((_required(cls.__init__) | _required(cls.__call__)) - _GRADCAM_SET))
        uses_layer = True

        def gradcam_method(model, images, targets, layer, **params):
            return _gradcam_raw(cls, ctor_names, model, images, targets, layer, params)

        fn, relu = gradcam_method, True
    summary = (inspect.getdoc(cls) or f"{prefix} {cls_name}").splitlines()[0]
    return AdapterMethod(
        name,
        fn,
        {},
        uses_layer,
        relu,
        summary,
        library=LIBRARIES[prefix][1],
        library_version=library_version(prefix),
        allowed=tuple(sorted(allowed)),
        required=required,
    )


PEER_METHODS[0] = adapter_method
