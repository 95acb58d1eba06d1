"""The experiment configuration, parsed once into typed specs.

The Snakefile validates ``config.yaml`` (merged with an experiment file, see
:func:`apply_experiment`) against ``workflow/schemas/config.schema.yaml``; Snakemake's
``validate()`` fills the schema's defaults, so every default lives in the schema and
nowhere else. :func:`parse_config` then checks what the schema cannot express
(method names and parameter types, CA-Stream bases, shard counts) and returns an
:class:`Experiment` that the rules read. The jobs receive the parts they need as
JSON (``ModelSpec.config``, ``MetricsSpec.to_dict()``, …) through the command line.

This module imports no torch at import time (the Snakefile parses it on every run).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"

# Mappings an experiment file replaces instead of extending: a smaller experiment
# must not silently inherit every model and method of the default config (nor the
# default's list of methods for the sanity check, which names methods).
REPLACED_KEYS = ("models", "methods", "sanity")

KINDS = ("baseline", "castream", "gradalign", "pretrained")
# Keys that only one kind reads, and keys a castream model takes from its base.
ONLY_FOR = {
    "base": "castream",
    "blocks_at": "castream",
    "lambda": "gradalign",
    "distance": "gradalign",
    "num_classes": "pretrained",
}
# Training keys: a pretrained model is evaluated as it is, never trained.
TRAINING_KEYS = (
    "epochs",
    "batch_size",
    "optimizer",
    "nesterov",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "step_size",
    "milestones",
    "gamma",
    "warmup_epochs",
    "label_smoothing",
    "hflip",
    "amp",
    "channels_last",
    "seed",
)
FROM_BASE = ("arch", "width", "blocks", "weights")
# cambench.saliency.attention's methods: ViT-style models only (ModelSpec.applies).
ATTENTION_METHODS = ("attention", "attention_rollout", "attention_gradient")


def apply_experiment(config: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merged ``config`` with :data:`REPLACED_KEYS` taken whole from ``overrides``.

    Snakemake has already deep-merged ``--configfile``/``--config`` values over the
    Snakefile's ``configfile:``; this undoes the merge for the replaced keys.
    """
    for key in REPLACED_KEYS:
        if key in overrides:
            config[key] = copy.deepcopy(overrides[key])
    return config


def check_schema(config: dict[str, Any]) -> None:
    """ValueError in one line naming the first key ``config`` breaks the schema at and
    the rule it breaks (``config key 'eval.n_images': 0 is less than the minimum of 1``),
    instead of the validator's dump of the whole schema."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(config)
    )
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        rule = error.schema.get("description") if error.validator == "pattern" else None
        hint = f" ({rule})" if rule else ""
        raise ValueError(f"config key {where!r}: {error.message}{hint}")


def complete_model_entry(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A model's config entry with the schema's defaults filled in, as the workflow's
    validation fills them: for a ``cambench train``/``convert`` run by hand with a
    partial entry. A value the schema refuses is a ValueError naming the key."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(SCHEMA.read_text())["properties"]["models"]["additionalProperties"]
    base = jsonschema.Draft202012Validator
    fill = base.VALIDATORS["properties"]

    def properties_with_defaults(validator, properties, instance, schema_):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from fill(validator, properties, instance, schema_)

    filling = jsonschema.validators.extend(base, {"properties": properties_with_defaults})
    entry = copy.deepcopy(entry)
    error = jsonschema.exceptions.best_match(filling(schema).iter_errors(entry))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path)
        raise ValueError(
            f"config key 'models.{name}{'.' + where if where else ''}': {error.message}"
        )
    return entry


def check_model_entry(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` completed with the schema's defaults and checked: its architecture and
    weights (:func:`cambench.models.check_model_config`) and its training keys
    (:class:`cambench.training.TrainConfig`); ValueError naming ``models.<name>.<key>``."""
    from cambench.models import check_model_config
    from cambench.training.loop import TrainConfig, TrainConfigError

    entry = complete_model_entry(name, entry)
    check_model_config(name, entry)
    try:
        TrainConfig.from_model_config(entry)
    except TrainConfigError as err:
        raise ValueError(f"config key 'models.{name}.{err.key}': {err.problem}") from None
    return entry


def as_json(value: Any) -> str:
    """Canonical JSON: equal configs give equal strings, so params trigger reruns exactly."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ModelSpec:
    """One entry of ``models``: ``config`` is the validated entry (schema defaults
    filled), what the train job receives. A CA-Stream model's architecture is its
    base's (``arch`` names it); ``base`` is the base model's name."""

    name: str
    kind: str
    config: dict[str, Any]
    arch: str
    base: str | None
    layer: str
    gpus: int

    @property
    def is_castream(self) -> bool:
        return self.kind == "castream"

    @property
    def training_config(self) -> dict[str, Any]:
        """The config entry without the evaluation-only ``layer``: what the train and
        convert jobs get, so choosing another target layer retrains nothing."""
        return {k: v for k, v in self.config.items() if k != "layer"}

    @property
    def is_pretrained(self) -> bool:
        """Evaluated as given (the convert job), not trained."""
        return self.kind == "pretrained"

    def applies(self, method: str) -> bool:
        """Whether ``method`` is defined for this model: ``cam`` needs a GAP → Linear
        head (not CA-Stream), ``castream_attention`` a CA-Stream model, ``fullgrad`` a
        conv/BN bias it can read. The workflow
        skips the other pairs."""
        from cambench.models import has_gap_linear_head

        if method == "castream_attention":
            return self.is_castream
        if method == "cam":
            return not self.is_castream and has_gap_linear_head(self.arch)
        if method in ATTENTION_METHODS:  # ViT-style models (built on the meta device)
            from cambench.saliency.attention import config_has_attention

            return not self.is_castream and config_has_attention(self.config)
        if method == "fullgrad":  # needs conv/BN biases (built on the meta device)
            from cambench.saliency.fullgrad import config_has_bias_layers

            return config_has_bias_layers(self.config)
        return True


def _check_attention_methods(models: dict[str, ModelSpec], methods: dict[str, str]) -> None:
    """ValueError naming ``methods.<name>`` and the models when an attention method (or
    ``fullgrad``) applies to none of them (a CNN has no attention blocks; FullGrad needs
    a conv/BN bias); where some models fit, the others' pairs are skipped like ``cam``
    on CA-Stream."""
    needs = {
        **{
            m: "attention methods need a ViT-style model with a class token and attention "
            "blocks (torchvision VisionTransformer, timm ViT/DeiT)"
            for m in ATTENTION_METHODS
        },
        "fullgrad": "fullgrad needs bias terms it reads from nn.Conv2d or nn.BatchNorm2d layers",
    }
    for label, method in methods.items():  # label -> registered method
        if method in needs and not any(m.applies(method) for m in models.values()):
            described = ", ".join(f"{n} ({m.kind} {m.arch})" for n, m in models.items())
            raise ValueError(
                f"config key 'methods.{label}': {needs[method]}; none of the models has "
                f"them: {described}"
            )


def _check_image_size(
    methods: dict[str, dict[str, Any]], image_size: int, registered: dict[str, str]
) -> None:
    """ValueError naming ``methods.<name>.<param>`` when a parameter does not fit the
    dataset's ``image_size`` × ``image_size`` images (an occlusion window larger than
    the image), before any job runs instead of in every saliency job."""
    from cambench.saliency.attribution import check_occlusion_fits
    from cambench.saliency.registry import ParamError

    for name, params in methods.items():
        if registered.get(name, name) != "occlusion":
            continue
        try:
            check_occlusion_fits(params, image_size, image_size)
        except ParamError as err:
            raise ValueError(
                f"config key 'methods.{name}.{err.param}': {err.message} (dataset.image_size)"
            ) from None


def _model_spec(name: str, entry: dict[str, Any], models: dict[str, Any]) -> ModelSpec:
    from cambench.models import CASTREAM_BASE_ARCHS

    kind = entry["kind"]
    key = f"config key 'models.{name}"
    for option, owner in ONLY_FOR.items():
        if option in entry and kind != owner:
            raise ValueError(f"{key}.{option}': only {owner} models use it (this one is {kind})")
    if kind == "pretrained":
        for option in TRAINING_KEYS:
            if option in entry:
                raise ValueError(f"{key}.{option}': pretrained models are not trained")
        from cambench.models import ARCH_FACTORIES

        if "weights" not in entry and entry["arch"] not in ARCH_FACTORIES:
            raise ValueError(
                f"{key}.weights': a pretrained model needs weights (a torchvision weights "
                "name, a state dict or a cambench checkpoint)"
            )
    if kind != "castream":
        return ModelSpec(
            name, kind, entry, entry["arch"], None, entry.get("layer", ""), entry["gpus"]
        )
    for option in FROM_BASE:
        if option in entry:
            raise ValueError(
                f"{key}.{option}': a castream model takes its architecture from its base "
                f"model {entry['base']!r}"
            )
    base = entry["base"]
    if base not in models:
        raise ValueError(f"{key}.base': no model named {base!r}")
    if base == name or models[base]["kind"] == "castream":
        raise ValueError(
            f"{key}.base': the base of a CA-Stream model must be a baseline or gradalign "
            f"model, not {base!r}"
        )
    arch = models[base]["arch"]
    if arch not in CASTREAM_BASE_ARCHS:
        raise ValueError(
            f"{key}.base': CA-Stream supports {', '.join(CASTREAM_BASE_ARCHS)}; base model "
            f"{base!r} is {arch!r}"
        )
    return ModelSpec(name, kind, entry, arch, base, entry.get("layer", ""), entry["gpus"])


def reference_pairs(models: dict[str, ModelSpec]) -> list[tuple[str, str, str]]:
    """``(model, reference, relation)`` for every model that has a reference: a
    ``castream`` model and its ``base``; a ``gradalign`` model and the first
    ``baseline``-kind model (config order)."""
    baselines = [n for n, m in models.items() if m.kind == "baseline"]
    pairs = []
    for name, model in models.items():
        if model.is_castream and model.base in models:
            pairs.append((name, model.base, "castream vs its base"))
        elif model.kind == "gradalign" and baselines:
            pairs.append((name, baselines[0], "gradalign vs the first baseline"))
    return pairs


@dataclass(frozen=True)
class EvalSpec:
    """Which test images are explained, in how many shards, which class."""

    n_images: int
    shards: int
    batch_size: int
    target: str


@dataclass(frozen=True)
class StatisticsSpec:
    resamples: int
    confidence: float
    seed: int


@dataclass(frozen=True)
class MetricsSpec:
    """The ``metrics`` mapping: the insertion/deletion protocol's keys (resolved for
    the images' height by the metrics job), forward batch, pointing tolerance, and
    the summary's statistics."""

    protocol: dict[str, Any]
    forward_batch_size: int
    pointing_tolerance: float
    statistics: StatisticsSpec
    include: tuple[str, ...] = ()
    params: dict[str, dict[str, Any]] | None = None
    quantus: dict[str, dict[str, Any]] | None = None

    def job_settings(self) -> dict[str, Any]:
        """What a metrics job reads (the statistics belong to the summary). The chosen
        columns and the added metrics' parameters only when they are not the default
        set (the default run's settings, hence its jobs, stay as they were)."""
        from cambench.metric_table import DEFAULT_COLUMNS

        extra: dict[str, Any] = {}
        if self.include and tuple(self.include) != DEFAULT_COLUMNS:
            extra = {"include": list(self.include), "metric_params": self.params or {}}
        if self.quantus:  # metrics.quantus: its classes and parameters
            extra["quantus"] = self.quantus
        return {
            **self.protocol,
            "forward_batch_size": self.forward_batch_size,
            "pointing_tolerance": self.pointing_tolerance,
            **extra,
        }


@dataclass(frozen=True)
class DataRandomizationSpec:
    """``sanity.data_randomization``: retrain ``model``'s architecture on permuted labels
    (permutation seed ``seed``; ``epochs`` or the model's own) and compare ``methods``'
    maps of the first ``n_images`` test images on both models."""

    model: str
    methods: tuple[str, ...]
    n_images: int
    epochs: int | None
    seed: int


@dataclass(frozen=True)
class SanitySpec:
    randomization: bool
    methods: tuple[str, ...]
    n_images: int
    seed: int
    threshold: float
    data_randomization: DataRandomizationSpec | None = None
    #: the optional checks run beside the cascade (sanity.random_logit, smooth_mprt,
    #: efficient_mprt), their settings with defaults filled; empty when none is on
    checks: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True)
class RoarSpec:
    """The ``protocols.roar`` block: ROAR/KAR retrains (:mod:`cambench.jobs.roar`)."""

    models: tuple[str, ...]
    methods: tuple[str, ...]
    fractions: tuple[float, ...]
    modes: tuple[str, ...]
    imputation: str
    noise: float
    seeds: int
    shards: int

    def retrains(self) -> list[tuple[str, str, str, float, int]]:
        """Every (model, mode, method, fraction, seed) retrain, in config order."""
        return [
            (model, mode, method, fraction, seed)
            for model in self.models
            for mode in self.modes
            for method in self.methods
            for fraction in self.fractions
            for seed in range(self.seeds)
        ]


def _roar_spec(
    block: dict[str, Any] | None, models: dict[str, ModelSpec], methods: dict
) -> RoarSpec | None:
    """The ROAR spec of a validated ``protocols.roar`` block (``None`` when absent);
    ValueError naming the key for a model or method that is not configured, a model
    that is not trained from scratch, or a method that does not apply to a model."""
    if not block:
        return None
    for name in block["models"]:
        if name not in models:
            raise ValueError(
                f"config key 'protocols.roar.models': {name!r} is not a configured model "
                f"({', '.join(models)})"
            )
        if models[name].kind not in ("baseline", "gradalign"):
            raise ValueError(
                f"config key 'protocols.roar.models': {name!r} is a {models[name].kind} "
                "model; ROAR retrains from scratch, which only baseline and gradalign "
                "models do"
            )
    for method in block["methods"]:
        if method not in methods:
            raise ValueError(
                f"config key 'protocols.roar.methods': {method!r} is not a configured "
                f"method ({', '.join(methods)})"
            )
        for name in block["models"]:
            if not models[name].applies(method):
                raise ValueError(
                    f"config key 'protocols.roar.methods': {method!r} does not apply to "
                    f"model {name!r}"
                )
    return RoarSpec(
        models=tuple(block["models"]),
        methods=tuple(block["methods"]),
        fractions=tuple(float(f) for f in block["fractions"]),
        modes=tuple(block.get("modes") or ("roar",)),
        imputation=block.get("imputation", "mean"),
        noise=float(block.get("noise", 0.01)),
        seeds=int(block.get("seeds", 1)),
        shards=int(block.get("shards", 1)),
    )


@dataclass(frozen=True)
class Experiment:
    """The whole validated configuration."""

    name: str
    plugins: tuple[str, ...]
    device: str
    dataset: dict[str, Any]
    models: dict[str, ModelSpec]
    methods: dict[str, dict[str, Any]]
    eval: EvalSpec
    metrics: MetricsSpec
    sanity: SanitySpec
    grid_images: int
    roar: RoarSpec | None = None
    # label -> registered method, where a `methods:` entry names one (`method:` key)
    registered: dict[str, str] = field(default_factory=dict)

    def method_of(self, label: str) -> str:
        """The registered method (or ``captum:``/``pytorch_grad_cam:`` name) that the
        ``methods:`` entry ``label`` runs: its ``method:`` key, by default the label."""
        return self.registered.get(label, label)

    def methods_for(self, model: str) -> list[str]:
        """The configured methods (labels) that apply to ``model``, in config order:
        applicability follows the registered method, not the label."""
        return [m for m in self.methods if self.models[model].applies(self.method_of(m))]

    def pairs(self) -> list[tuple[str, str]]:
        """Every applicable (model, method)."""
        return [(model, method) for model in self.models for method in self.methods_for(model)]

    def sanity_pairs(self) -> list[tuple[str, str]]:
        return [pair for pair in self.pairs() if pair[1] in self.sanity.methods]

    def data_randomization_pairs(self) -> list[tuple[str, str]]:
        """(model, method) of the data randomization check (none when it is off)."""
        d = self.sanity.data_randomization
        return [] if d is None else [(d.model, m) for m in d.methods]


def method_names(methods: dict[str, Any]) -> dict[str, str]:
    """Each ``methods:`` entry's label -> the method it runs: its ``method:`` key (a
    registered name or ``captum:<Class>``/``pytorch_grad_cam:<Class>``), by default the
    label itself (``{opticam_10: {method: opticam, iterations: 10}}``)."""
    return {label: (entry or {}).get("method", label) for label, entry in methods.items()}


def _method_params(methods: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every entry's full parameters by label (without its ``method:`` key); a label
    that is no valid name, an unknown method, unknown parameters (for a peer library's
    method: not in its signatures), values its ``check`` hook refuses and (for a method
    without one) values of another type than the default's fail naming the key."""
    from cambench.names import check_name
    from cambench.saliency import METHODS, get_method
    from cambench.saliency.registry import ParamError

    out = {}
    for name, method in method_names(methods).items():
        params = {k: v for k, v in (methods[name] or {}).items() if k != "method"}
        try:
            check_name(name, "method")
        except ValueError as err:
            raise ValueError(f"config key 'methods.{name}': {err}") from None
        where = f"methods.{name}.method" if method != name else f"methods.{name}"
        if not isinstance(method, str) or (":" not in method and method not in METHODS):
            raise ValueError(
                f"config key '{where}': unknown saliency method {method!r}; valid methods: "
                f"{', '.join(sorted(METHODS))}, captum:<Class>, pytorch_grad_cam:<Class>"
            )
        try:
            spec = get_method(method)  # a peer library's class is checked here
        except ValueError as err:
            raise ValueError(f"config key '{where}': {err}") from None
        try:
            out[name] = spec.resolve_params(params)
        except ParamError as err:
            raise ValueError(f"config key 'methods.{name}.{err.param}': {err.message}") from None
        except ValueError as err:
            raise ValueError(f"config key 'methods.{name}': {err}") from None
        if spec.check is not None:
            continue  # the hook checked every value, types included
        for param, value in params.items():
            if param not in spec.defaults:
                continue  # a peer library's parameter: checked against its signature
            default = spec.defaults[param]
            if not _same_type(value, default):
                raise ValueError(
                    f"config key 'methods.{name}.{param}': expected "
                    f"{type(default).__name__} like the default {default!r}, got {value!r}"
                )
    return out


def dataset_has_masks(dataset: dict[str, Any]) -> bool:
    """Whether the configured dataset stores object masks: the synthetic shapes, and an
    image folder with ``boxes`` (CIFAR has none)."""
    name = dataset.get("name", "shapes")
    return name == "shapes" or (name == "imagefolder" and bool(dataset.get("boxes")))


def _check_mask_methods(
    methods: dict[str, Any], dataset: dict[str, Any], registered: dict[str, str] | None = None
) -> None:
    """ValueError naming ``methods.<name>`` for a method that reads object masks
    (``mask_oracle``) on a dataset without them."""
    from cambench.saliency import get_method

    for name in methods:
        method = (registered or {}).get(name, name)  # a label's registered method
        if get_method(method).needs_masks and not dataset_has_masks(dataset):
            raise ValueError(
                f"config key 'methods.{name}': the method reads the images' object masks, "
                f"but dataset {dataset.get('name')!r} has none (only shapes, and imagefolder "
                "with dataset.boxes, have masks)"
            )


def _sanity_checks(s: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    """``sanity.random_logit`` / ``smooth_mprt`` / ``efficient_mprt``, settings over
    their defaults (``None`` when none is on); they extend the randomization check, so
    each needs ``sanity.randomization: true`` (ValueError naming the key)."""
    from cambench.jobs.sanity import CHECKS

    on = {
        name: {**CHECKS[name], **(s[name] if isinstance(s.get(name), dict) else {})}
        for name in CHECKS
        if (s.get(name) if name == "random_logit" else s.get(name) is not None)
    }
    if on and not s["randomization"]:
        raise ValueError(
            f"config key 'sanity.{next(iter(on))}': runs beside the randomization check; "
            "set sanity.randomization: true (and sanity.methods) to run it"
        )
    return on or None


def _check_quantus(entries: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``metrics.quantus`` checked (:func:`cambench.metrics.quantus_adapter.check_quantus`)."""
    if not entries:
        return {}
    from cambench.metrics.quantus_adapter import check_quantus

    return check_quantus(entries)


def _check_rerun_methods(
    methods: dict[str, Any], metrics: MetricsSpec, registered: dict[str, str] | None = None
) -> None:
    """ValueError naming ``metrics.include`` and ``methods.<name>`` when a metric that
    re-runs the method on perturbed inputs (robustness, and Quantus metrics) meets a
    method whose maps are not a function of the input alone: one that reads the
    object masks (``mask_oracle``: a perturbed image keeps its clean mask)."""
    from cambench.metric_table import BY_COLUMN, RERUNS_METHOD
    from cambench.saliency import get_method

    rerun = [c for c in metrics.include if BY_COLUMN[c].group in RERUNS_METHOD]
    rerun += [f"quantus_{name}" for name in metrics.quantus or {}]
    if not rerun:
        return
    for name in methods:
        method = (registered or {}).get(name, name)
        if get_method(method).needs_masks:
            raise ValueError(
                f"config key 'metrics.include' / 'metrics.quantus': {', '.join(rerun)} "
                f"re-run the method on perturbed images, but method {method!r} (config key "
                f"'methods.{name}') is not a function of the image alone: it reads the "
                "object masks. Score it in another experiment without these metrics"
            )


def _data_randomization(
    d: dict[str, Any] | None,
    models: dict[str, ModelSpec],
    methods: dict[str, Any],
    available: int | None,
) -> DataRandomizationSpec | None:
    """The checked ``sanity.data_randomization`` block (``None`` when absent)."""
    if d is None:
        return None
    key = "config key 'sanity.data_randomization"
    model = d.get("model")
    if model not in models:
        raise ValueError(f"{key}.model': {model!r} is not a configured model ({', '.join(models)})")
    if models[model].kind in ("pretrained", "castream"):
        raise ValueError(
            f"{key}.model': {model!r} is a {models[model].kind} model; the check retrains "
            "a whole model on permuted labels (a baseline or gradalign model)"
        )
    chosen = tuple(d.get("methods") or [m for m in methods if models[model].applies(m)])
    for method in chosen:
        if method not in methods:
            raise ValueError(
                f"{key}.methods': {method!r} is not a configured method ({', '.join(methods)})"
            )
        if not models[model].applies(method):
            raise ValueError(f"{key}.methods': {method!r} does not apply to model {model!r}")
    n_images = int(d.get("n_images", 32))
    if n_images < 1:
        raise ValueError(f"{key}.n_images': must be at least 1, got {n_images}")
    if available is not None and n_images > available:
        raise ValueError(
            f"{key}.n_images': {n_images} images, but the test split holds {available}"
        )
    epochs = d.get("epochs")
    return DataRandomizationSpec(
        model, chosen, n_images, None if epochs is None else int(epochs), int(d.get("seed", 0))
    )


def _same_type(value: Any, default: Any) -> bool:
    """A parameter value fits its default's type (an int where a float is expected
    does; a bool is not a number; a None default takes anything)."""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def parse_config(config: dict[str, Any]) -> Experiment:
    """The :class:`Experiment` of a validated ``config`` (schema defaults filled).

    ValueError naming the key on what the schema cannot check.
    """
    from cambench.plugins import load_plugins

    # plug-ins first: they register the methods and architectures checked below
    load_plugins(config.get("plugins") or [])

    models_config = config["models"]
    models = {}
    from cambench.models.external import check_weights_available
    from cambench.models.layer_check import check_target_layer
    from cambench.saliency import get_method

    methods = _method_params(config["methods"])
    registered = method_names(config["methods"])

    uses_layer = any(get_method(registered[m]).uses_layer for m in methods)
    image_size = int(config["dataset"]["image_size"])
    for name, entry in models_config.items():
        models[name] = _model_spec(name, entry, models_config)
        completed = check_model_entry(name, entry)
        check_weights_available(name, completed)  # a missing file fails before any job
        classes = int(completed.get("num_classes") or config["dataset"].get("num_classes") or 10)
        if uses_layer:
            if models[name].is_castream:  # built on its base, as the train job builds it
                base = entry["base"]
                completed = {
                    **completed,
                    "base_config": check_model_entry(base, models_config[base]),
                }
            check_target_layer(name, completed, classes, image_size)
    _check_attention_methods(models, registered)
    _check_image_size(methods, image_size, registered)
    dataset = config["dataset"]
    _check_mask_methods(methods, dataset, registered)
    root = dataset.get("root")
    if (
        dataset["name"] != "shapes"
        and not dataset.get("download")
        and root
        and not Path(root).is_dir()
    ):
        raise ValueError(
            f"config key 'dataset.root': {root!r} is not a folder (relative to the "
            f"working directory {Path.cwd()})"
        )
    ev = config["eval"]
    evaluation = EvalSpec(
        int(ev["n_images"]), int(ev["shards"]), int(ev["batch_size"]), ev["target"]
    )
    if evaluation.shards > evaluation.n_images:
        raise ValueError(
            f"config key 'eval.shards': {evaluation.shards} shards of {evaluation.n_images} "
            "images (eval.n_images) would leave shards empty"
        )
    from cambench.data import test_split_size

    available = test_split_size(dataset)
    if available is not None and evaluation.n_images > available:
        raise ValueError(
            f"config key 'eval.n_images': {evaluation.n_images} images, but the test split "
            f"of dataset {dataset['name']!r} holds {available}"
            + (" (dataset.test_size)" if dataset["name"] == "shapes" else "")
        )
    m = config["metrics"]
    from cambench.metrics.protocols import PROTOCOL_KEYS, resolve_protocol

    # the protocol must agree with the config before any job runs (the metrics job
    # resolves it again for the images' actual height)
    resolve_protocol(m, int(config["dataset"]["image_size"]), evaluation.target)
    from cambench.metric_table import ALL_COLUMNS, resolve_include, resolve_params

    include = resolve_include(m.get("include") or ["default"])
    quantus = _check_quantus(m.get("quantus"))
    chosen = {*include, *(f"quantus_{name}" for name in quantus)}
    metrics = MetricsSpec(
        protocol={k: v for k, v in m.items() if k in PROTOCOL_KEYS},
        forward_batch_size=int(m["forward_batch_size"]),
        pointing_tolerance=float(m["pointing_tolerance"]),
        statistics=StatisticsSpec(**m["statistics"]),
        quantus=quantus or None,
        include=tuple(c for c in ALL_COLUMNS if c in chosen),
        params=resolve_params(m.get("params"), include, int(config["dataset"]["image_size"])),
    )
    _check_rerun_methods(methods, metrics, registered)
    from cambench.metric_table import QUANTUS_READS_MASKS

    for name in quantus:
        if name in QUANTUS_READS_MASKS and not dataset_has_masks(dataset):
            raise ValueError(
                f"config key 'metrics.quantus.{name}': scores the maps against the object "
                f"masks, but dataset {dataset.get('name')!r} has none"
            )
    s = config["sanity"]
    sanity_methods = tuple(s.get("methods") or methods) if s["randomization"] else ()
    for method in sanity_methods:
        if method not in methods:
            raise ValueError(
                f"config key 'sanity.methods': {method!r} is not a configured method "
                f"({', '.join(methods)})"
            )
    if sanity_methods and available is not None and int(s["n_images"]) > available:
        raise ValueError(
            f"config key 'sanity.n_images': {s['n_images']} images, but the test split "
            f"of dataset {dataset['name']!r} holds {available}"
        )
    sanity = SanitySpec(
        bool(s["randomization"]),
        sanity_methods,
        int(s["n_images"]),
        int(s["seed"]),
        float(s["threshold"]),
        _data_randomization(s.get("data_randomization"), models, methods, available),
        _sanity_checks(s),
    )
    return Experiment(
        name=config["experiment"],
        plugins=tuple(config.get("plugins") or ()),
        device=config["device"],
        dataset=dict(config["dataset"]),
        models=models,
        methods=methods,
        eval=evaluation,
        metrics=metrics,
        sanity=sanity,
        grid_images=int(config["plots"]["grid_images"]),
        roar=_roar_spec((config.get("protocols") or {}).get("roar"), models, methods),
        registered={k: v for k, v in registered.items() if k != v},
    )


def statistics_dict(spec: StatisticsSpec) -> dict[str, Any]:
    return asdict(spec)
