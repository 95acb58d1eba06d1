"""The method registry: one entry per saliency method, with its parameters.

A method is a function ``fn(model, images, targets, layer, **params) -> raw`` returning
a raw score map ``S`` (B, h, w) at any resolution; :func:`cambench.saliency.explain`
applies ReLU (where the method defines it), bilinear upsampling and min-max
normalization, so every method obeys the same output contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cambench.names import check_name
from cambench.plugins import source_file

MethodFn = Callable[..., torch.Tensor]
CheckFn = Callable[[dict[str, Any]], None]


class ParamError(ValueError):
    """A method parameter's value is invalid. ``param`` names it, so the config parser
    reports the key ``methods.<method>.<param>``; raised by a method's ``check`` hook
    (see :func:`register`) and by the helpers :func:`check_int`, :func:`check_number`
    and :func:`check_choice`."""

    def __init__(self, param: str, message: str, method: str | None = None) -> None:
        where = f"method {method!r} parameter {param!r}" if method else f"parameter {param!r}"
        super().__init__(f"{where}: {message}")
        self.param, self.message, self.method = param, message, method


def check_int(params: dict[str, Any], name: str, minimum: int) -> None:
    """ParamError unless ``params[name]`` is an int (not a bool) ``>= minimum``."""
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParamError(name, f"must be an integer >= {minimum}, got {value!r}")


def check_number(
    params: dict[str, Any], name: str, low: float, high: float, open_low: bool = False
) -> None:
    """ParamError unless ``params[name]`` is a number in ``[low, high]`` (``(low, high]``
    with ``open_low``)."""
    value = params[name]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (value > low if open_low else value >= low) or not value <= high:
        interval = f"{'(' if open_low else '['}{low}, {high}]"
        raise ParamError(name, f"must be a number in {interval}, got {value!r}")


def check_choice(params: dict[str, Any], name: str, choices: tuple[str, ...]) -> None:
    """ParamError unless ``params[name]`` is one of ``choices``."""
    if params[name] not in choices:
        raise ParamError(name, f"must be one of {', '.join(choices)}; got {params[name]!r}")


@dataclass(frozen=True)
class Method:
    """A registered saliency method."""

    name: str
    fn: MethodFn
    defaults: dict[str, Any] = field(default_factory=dict)
    uses_layer: bool = True
    relu: bool = True
    summary: str = ""
    check: CheckFn | None = None
    needs_masks: bool = False

    def resolve_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``params``; unknown names are an error, and so is a
        value the method's ``check`` hook refuses (a :class:`ParamError`)."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(
                f"method {self.name!r} has no parameter {unknown}; valid parameters: {valid}"
            )
        resolved = {**self.defaults, **params}
        if self.check is not None:
            try:
                self.check(resolved)
            except ParamError as err:
                raise ParamError(err.param, err.message, self.name) from None
        return resolved

    @property
    def source(self) -> str | None:
        """The plug-in file that defines the method (``None`` for cambench's own)."""
        return source_file(self.fn)

    def describe(self) -> str:
        """``'name'``, with its plug-in file for a plug-in method (for error messages)."""
        return f"{self.name!r}" + (f" (plug-in {self.source})" if self.source else "")

    def __call__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        targets: torch.Tensor,
        layer: nn.Module | None,
        **params: Any,
    ) -> torch.Tensor:
        return self.fn(model, images, targets, layer, **params)


METHODS: dict[str, Method] = {}


def register(
    name: str,
    *,
    defaults: dict[str, Any] | None = None,
    uses_layer: bool = True,
    relu: bool = True,
    check: CheckFn | None = None,
    needs_masks: bool = False,
) -> Callable[[MethodFn], MethodFn]:
    """Decorator adding ``fn`` to :data:`METHODS` under ``name``.

    ``check(params)``, optional, validates the full parameters (defaults overlaid)
    and raises :class:`ParamError` naming the bad one; it runs whenever the parameters
    are resolved: when the workflow's config is parsed (before any job, the error
    naming ``methods.<name>.<param>``) and at every :func:`explain` call. A method
    with a ``check`` validates its parameters' types itself; one without gets the
    config parser's generic check (each value of its default's type).

    ``needs_masks``: the method reads the images' ground-truth object masks, passed as
    ``fn(..., object_masks=(B, H, W) bool)`` (``explain(..., object_masks=...)``; the saliency job
    gives the split's). The workflow refuses it on a dataset without masks.
    """

    def decorate(fn: MethodFn) -> MethodFn:
        try:
            check_name(name, "saliency method")
        except ValueError as err:
            where = source_file(fn)
            raise ValueError(
                f"{err}{f' (registered by plug-in {where})' if where else ''}"
            ) from None
        if name in METHODS:
            raise ValueError(
                f"saliency method {name!r} registered twice ({METHODS[name].describe()} exists)"
            )
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        METHODS[name] = Method(
            name, fn, dict(defaults or {}), uses_layer, relu, summary, check, needs_masks
        )
        return fn

    return decorate


def _no_peer_methods(name: str) -> Method:
    raise ValueError(f"saliency method {name!r}: peer library methods are not loaded")


#: How a ``captum:<Class>``/``pytorch_grad_cam:<Class>`` name becomes a Method: set by
#: :mod:`cambench.saliency.adapters` when it is imported (the package imports it), so
#: this module does not import the adapters that build on it.
PEER_METHODS: list[Callable[[str], Method]] = [_no_peer_methods]


def resolve_entry(label: str, params: dict[str, Any]) -> tuple[Method, dict[str, Any]]:
    """A ``methods:`` entry as a job gets it, its ``label`` and ``params`` (a variant's
    params carry the method it runs under ``"method"``, by default the label): the
    method and its resolved parameters (:meth:`Method.resolve_params`)."""
    params = dict(params)
    spec = get_method(params.pop("method", label))
    return spec, spec.resolve_params(params)


def get_method(name: str) -> Method:
    """The registered method ``name``, a peer library's method for a
    ``captum:<Class>``/``pytorch_grad_cam:<Class>`` name
    (:func:`cambench.saliency.adapters.adapter_method`), or a ValueError listing the
    valid names."""
    if isinstance(name, str) and ":" in name:
        return PEER_METHODS[0](name)
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown saliency method {name!r}; valid methods: {', '.join(sorted(METHODS))}"
        ) from None
