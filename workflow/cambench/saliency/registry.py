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


@dataclass(frozen=True)
class Method:
    """A registered saliency method."""

    name: str
    fn: MethodFn
    defaults: dict[str, Any] = field(default_factory=dict)
    uses_layer: bool = True
    relu: bool = True
    summary: str = ""

    def resolve_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Defaults overlaid with ``params``; unknown names are an error."""
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(
                f"method {self.name!r} has no parameter {unknown}; valid parameters: {valid}"
            )
        return {**self.defaults, **params}

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
    name: str, *, defaults: dict[str, Any] | None = None, uses_layer: bool = True, relu: bool = True
) -> Callable[[MethodFn], MethodFn]:
    """Decorator adding ``fn`` to :data:`METHODS` under ``name``."""

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
        METHODS[name] = Method(name, fn, dict(defaults or {}), uses_layer, relu, summary)
        return fn

    return decorate


def get_method(name: str) -> Method:
    """The registered method ``name``, or a ValueError listing the valid names."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown saliency method {name!r}; valid methods: {', '.join(sorted(METHODS))}"
        ) from None
