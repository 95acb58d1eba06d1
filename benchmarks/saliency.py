#!/usr/bin/env python
"""Speed and peak memory of every saliency method (a benchmark, not a test).

For each method in ``cambench.saliency.METHODS`` and up to three models (the default
experiment's baseline, a SmallResNet at 32×32 as config.yaml builds it; a torchvision
ResNet-18 with ImageNet normalization inside, 2 images of 64×64, whose layer4 maps are
2×2; a torchvision ResNet-50 at 224×224; a small torchvision ViT at 64×64 for the
attention methods; all randomly initialised, in eval mode) it reports:

- images per second of ``explain`` (best of ``--repeats`` timed calls);
- peak memory of the first call (later calls run without the reset below: they time
  what a job's later batches cost): on CUDA ``torch.cuda.max_memory_allocated`` minus
  the memory allocated before the call (model and images excluded); on CPU the
  increase of the process's peak resident set size over its size before the call
  (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before each call after
  ``malloc_trim`` has returned freed heap memory to the OS, so each method is measured
  alone in one process; memory the allocator still holds is not counted, so small
  numbers are lower bounds); where that reset is not allowed, the increase of
  ``ru_maxrss`` (a high-water mark that can only under-estimate later methods);
- the cost against the forward/backward passes the method needs, measured in the
  same run on the same batch: ``fwd`` = one plain inference forward, ``fwd+bwd`` =
  a forward and a backward to the input, ``(K+1)·fwd`` = one forward per channel
  plus one (Score-CAM, timed with forwards of ``chunk`` images as Score-CAM runs
  them; for Ablation-CAM it is what re-running the whole model per ablated channel
  would cost), ``fwd+it·(fwd+bwd)`` for Opti-CAM;
- where pytorch-grad-cam has the method, its speed and memory at equal settings
  (same images, target layer and rows per forward for Score-CAM/Ablation-CAM) and
  the speed-up of cambench over it. pytorch-grad-cam gets the model as a user
  would pass it (parameters requiring grad). On ResNet-18 its Score-CAM time is its
  best of batch sizes 16 (its default) and 64, timed in every round.

The process sets up as every ``cambench`` command does, so it measures what jobs run:
glibc malloc tuned (:func:`cambench.allocator.tune_allocator`; ``GLIBC_TUNABLES=`` or
``MALLOC_*`` in the environment turn it off) and OpenMP threads that sleep while they
wait (:func:`cambench.openmp.prefer_passive_wait`; a set ``OMP_WAIT_POLICY`` wins). The
header says which applied.

The input attributions (Input × Gradient, Integrated Gradients, SmoothGrad, VarGrad,
Occlusion, RISE) have their own table per case but ResNet-50 (benchmarks/
saliency_attribution.py): time against their floor and against Captum.

Methods that do not apply to a model (``ValueError``, e.g. ``castream_attention``
on a plain CNN) show ``n/a``. Runs that would need more than ``--max-seconds``
(estimated from the measured forward time) are skipped unless ``--full``.

    python benchmarks/saliency.py --device cpu --threads 2 --output benchmarks/results/saliency-cpu.txt
    python benchmarks/saliency.py --device cpu --threads 2 --models resnet18 --methods scorecam
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from statistics import median

os.environ.setdefault("TQDM_DISABLE", "1")  # pytorch-grad-cam's progress bars

from cambench.allocator import tune_allocator  # noqa: E402 - imports nothing heavy
from cambench.openmp import prefer_passive_wait  # noqa: E402

TUNED, PASSIVE = tune_allocator(), prefer_passive_wait()  # before torch loads, as the CLI

import saliency_attribution  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from default_model import default_model  # noqa: E402
from saliency_attribution import ATTRIBUTION, benchmark_attribution  # noqa: E402
from torch import nn  # noqa: E402

import cambench  # noqa: E402
from cambench.models.normalization import Normalize  # noqa: E402
from cambench.saliency import METHODS, explain, resolve_layer  # noqa: E402
from cambench.saliency.core import activations, frozen_eval, target_scores  # noqa: E402

try:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
except ImportError:  # the benchmark still runs without the peer
    pgc = None
try:
    import torchcam.methods as torchcam_methods
except ImportError:
    torchcam_methods = None

PGC_CLASSES = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
    "hirescam": "HiResCAM",
    "gradcam_elementwise": "GradCAMElementWise",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "fullgrad": "FullGrad",
}
# torchcam's methods (the "pgc" columns then hold torchcam's numbers) and the number of
# samples both run with here (torchcam's defaults, 35 and 10, are too slow for a CPU).
TORCHCAM_CLASSES = {"sscam": "SSCAM", "iscam": "ISCAM", "smoothgradcampp": "SmoothGradCAMpp"}
SMOOTH_SAMPLES = {"sscam": 2, "iscam": 2, "smoothgradcampp": 4}
# Methods whose peer also runs on ViT tokens here (given the case's reshape).
PEER_ON_TOKENS = {*list(PGC_CLASSES)[6:], *TORCHCAM_CLASSES}
REFERENCE = {
    "gradient": "fwd+bwd",
    "guided_backprop": "fwd+bwd",
    "scorecam": "(K+1)·fwd",
    "ablationcam": "(K+1)·fwd",
    "opticam": "fwd+it·(fwd+bwd)",
    "attention_gradient": "fwd+bwd",
    "fullgrad": "fwd+bwd",
    "sscam": "(N·K+1)·fwd",
    "iscam": "(N·K+1)·fwd",
    "smoothgradcampp": "fwd+it·(fwd+bwd)",
}
MIB = 2**20
MODELS = ("small", "resnet18", "resnet50", "vit")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class Case:
    """A model to benchmark with its batch and settings."""

    name: str
    model: nn.Module
    layer: str
    images: torch.Tensor
    targets: torch.Tensor
    opticam_iterations: int
    repeats: int
    pgc_chunks: tuple[int, ...] = ()  # pytorch-grad-cam Score-CAM: best of these batch sizes
    peer: bool = True  # compare with pytorch-grad-cam (it needs a reshape for ViT tokens)
    reshape: Callable | None = None  # tokens → (B, C, h, w) for the PEER_ON_TOKENS peers


class NormalizedResNet18(torchvision.models.ResNet):
    """torchvision's ResNet-18 with ImageNet normalization as its first step, so that
    images stay in [0, 1] and ``layer4`` still names its last stage."""

    def __init__(self) -> None:
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
        self.normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.normalize(x))


def build_cases(args: argparse.Namespace, device: torch.device) -> list[Case]:
    cuda = device.type == "cuda"
    gen = torch.Generator().manual_seed(0)
    cases = []
    # Images are drawn in this order whichever models are chosen: a case's batch does
    # not depend on the others.
    small, description, size, classes = default_model()
    n_small = args.batch_size or (256 if cuda else 32 if args.quick else 64)
    small_images = torch.rand(n_small, 3, size, size, generator=gen)
    small_targets = torch.randint(0, classes, (n_small,), generator=gen)
    if "small" in args.models:
        cases.append(
            Case(
                description,
                small,
                "layer4",
                small_images,
                small_targets,
                args.opticam_iterations or (100 if cuda or not args.quick else 20),
                args.repeats or (1 if args.quick else 3),
            )
        )
    if "resnet18" in args.models:
        torch.manual_seed(0)
        n = args.batch_size or 2
        g18 = torch.Generator().manual_seed(18)
        cases.append(
            Case(
                "torchvision ResNet-18 (ImageNet normalization inside), 64x64, 1000 classes",
                NormalizedResNet18().eval(),
                "layer4",
                torch.rand(n, 3, 64, 64, generator=g18),
                torch.randint(0, 1000, (n,), generator=g18),
                args.opticam_iterations or (100 if cuda or not args.quick else 20),
                args.repeats or (2 if args.quick else 5),
                pgc_chunks=(16, 64),
            )
        )
    if "resnet50" in args.models:
        torch.manual_seed(0)
        big = torchvision.models.resnet50(weights=None).eval()
        n_big = args.batch_size or (64 if cuda else 4 if args.quick else 8)
        cases.append(
            Case(
                "torchvision ResNet-50, 224x224, 1000 classes",
                big,
                "layer4",
                torch.rand(n_big, 3, 224, 224, generator=gen),
                torch.randint(0, 1000, (n_big,), generator=gen),
                args.opticam_iterations or (100 if cuda else 1 if args.quick else 2),
                args.repeats or (2 if cuda and not args.quick else 1),
            )
        )
    if "vit" in args.models:
        torch.manual_seed(0)
        vit = torchvision.models.VisionTransformer(
            image_size=64, patch_size=8, num_layers=4, num_heads=4, hidden_dim=64, mlp_dim=128
        )
        nn.init.normal_(vit.heads.head.weight, std=0.02)  # torchvision starts it at zero
        n_vit = args.batch_size or (256 if cuda else 32)
        gvit = torch.Generator().manual_seed(64)
        cases.append(
            Case(
                "torchvision ViT (64x64, patch 8, 4 layers, 4 heads, width 64), 1000 classes",
                vit.eval(),
                "encoder.layers.encoder_layer_3.ln_1",
                torch.rand(n_vit, 3, 64, 64, generator=gvit),
                torch.randint(0, 1000, (n_vit,), generator=gvit),
                args.opticam_iterations or (100 if cuda or not args.quick else 20),
                args.repeats or (2 if args.quick else 5),
                peer=False,
                reshape=lambda t: t[:, 1:, :].reshape(len(t), 8, 8, -1).permute(0, 3, 1, 2),
            )
        )
    for case in cases:
        case.model.to(device)
        case.images = case.images.to(device)
        case.targets = case.targets.to(device)
    return cases


# --- measuring --------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _release_free_heap() -> None:
    """Give memory freed by earlier calls back to the OS (glibc), so it counts again."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def _reset_peak_rss() -> bool:
    _release_free_heap()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _proc_status("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """Peak memory added by the code run inside ``with``, in bytes."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak: int | None = None

    def __enter__(self) -> PeakMemory:
        _sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device)
        elif _reset_peak_rss():
            self.before = _proc_status("VmRSS")
            self.kind = "hwm"
        else:
            self.before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.kind = "maxrss"
        return self

    def __exit__(self, *exc: object) -> None:
        _sync(self.device)
        if self.device.type == "cuda":
            after = torch.cuda.max_memory_allocated(self.device)
        elif self.kind == "hwm":
            after = _proc_status("VmHWM") or 0
        else:
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak = max(0, after - self.before)


class Timer:
    """Best time over calls, and the peak memory of the first call. Only the first call
    resets the peak (``malloc_trim`` included): later calls find the heap as the last
    one left it, as a job's next batch does."""

    def __init__(self, fn: Callable[[], object], device: torch.device) -> None:
        self.fn, self.device = fn, device
        self.times: list[float] = []
        self.peak = 0

    def __call__(self) -> float:
        _sync(self.device)
        first = not self.times
        with PeakMemory(self.device) if first else contextlib.nullcontext() as mem:
            start = time.perf_counter()
            self.fn()
            _sync(self.device)
            self.times.append(time.perf_counter() - start)
        if first:
            self.peak = mem.peak or 0
        return self.times[-1]

    @property
    def best(self) -> float:
        return min(self.times)


def plain_forward(case: Case, images: torch.Tensor | None = None) -> None:
    with torch.no_grad():
        case.model(case.images if images is None else images)


def forward_backward(case: Case) -> None:
    """A forward and a backward to the input, parameters frozen (what gradient maps do)."""
    with frozen_eval(case.model), torch.enable_grad():
        x = case.images.detach().requires_grad_(True)
        torch.autograd.grad(target_scores(case.model(x), case.targets).sum(), x)


def method_params(method: str, case: Case, args: argparse.Namespace) -> dict:
    params = {}
    if "batch_size" in METHODS[method].defaults and args.chunk:
        params["batch_size"] = args.chunk
    if method == "opticam":
        params["iterations"] = case.opticam_iterations
    if method in SMOOTH_SAMPLES:
        params["samples"] = SMOOTH_SAMPLES[method]
    return params


def channels(case: Case) -> int:
    """K, the channels of the layer's output read as a map (a ViT's width, not its
    token count)."""
    _, layer = resolve_layer(case.model, case.layer)
    return int(activations(case.model, case.images[:1], layer)[0].shape[1])


def run_torchcam(method: str, case: Case, chunk: int) -> None:
    """torchcam's method at the settings ``explain`` gets (samples, std, rows per forward)."""
    cls = getattr(torchcam_methods, TORCHCAM_CLASSES[method])
    kwargs = {"num_samples": SMOOTH_SAMPLES[method], "input_shape": tuple(case.images.shape[1:])}
    if method != "smoothgradcampp":
        kwargs["batch_size"] = chunk
    if case.reshape is not None:
        kwargs["reshape_transform"] = case.reshape
    with cls(case.model, case.layer, **kwargs) as cam:
        case.model(case.images)
        cam(class_idx=[int(t) for t in case.targets], normalized=False)
    case.model.zero_grad(set_to_none=True)


def run_pgc(method: str, case: Case, chunk: int) -> None:
    if method in TORCHCAM_CLASSES:
        return run_torchcam(method, case, chunk)
    _, layer = resolve_layer(case.model, case.layer)
    cls = getattr(pgc, PGC_CLASSES[method])
    if method == "fullgrad":
        cam = cls(model=case.model, target_layers=[])
    elif method in PEER_ON_TOKENS:
        cam = cls(model=case.model, target_layers=[layer], reshape_transform=case.reshape)
    elif method == "ablationcam":
        cam = cls(model=case.model, target_layers=[layer], batch_size=chunk)
    else:
        cam = cls(model=case.model, target_layers=[layer])
        if method == "scorecam":
            cam.batch_size = chunk
    with cam:
        cam(
            input_tensor=case.images, targets=[ClassifierOutputTarget(int(t)) for t in case.targets]
        )
    case.model.zero_grad(set_to_none=True)


# --- report -----------------------------------------------------------------------------


COLUMNS = (
    ("method", 17, "<"),
    ("setting", 12, "<"),
    ("img/s", 9, ">"),
    ("peak MiB", 9, ">"),
    ("reference", 17, "<"),
    ("x ref", 7, ">"),
    ("pgc img/s", 10, ">"),
    ("pgc MiB", 8, ">"),
    ("vs pgc", 8, ">"),
)


def row(values: list[str]) -> str:
    return "  ".join(
        f"{v:{align}{width}}" for v, (_, width, align) in zip(values, COLUMNS, strict=True)
    )


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:.3g}" if seconds > 0 else "inf"


def mib(nbytes: int) -> str:
    return f"{nbytes / MIB:.1f}"


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(args: argparse.Namespace, device: torch.device) -> list[str]:
    lines = [
        "# cambench saliency benchmark (benchmarks/saliency.py)",
        f"# date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"# command: python {' '.join(sys.argv)}",
        f"# python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, cambench {cambench.__version__}, "
        f"pytorch-grad-cam {getattr(pgc, '__version__', None) or _pgc_version()}",
        f"# CPU: {cpu_name()}, {os.cpu_count()} logical cores; torch threads: "
        f"{torch.get_num_threads()}",
    ]
    if device.type == "cuda":
        lines.append(f"# device: {torch.cuda.get_device_name(device)}")
    else:
        lines.append("# device: cpu")
    lines.append(
        "# allocator: glibc malloc tuned as by every cambench command (tune_allocator)"
        if TUNED
        else "# allocator: not tuned (MALLOC_*/GLIBC_TUNABLES set, or not glibc)"
    )
    lines.append(
        f"# OpenMP wait policy: {os.environ.get('OMP_WAIT_POLICY') or 'runtime default'}"
        + (" (set here, as by every cambench command)" if PASSIVE else "")
    )
    mem = "max_memory_allocated over the memory allocated before the call"
    if device.type == "cpu":
        mem = (
            "increase of the process's peak RSS over its RSS before the call (VmHWM reset"
            " through /proc/self/clear_refs after glibc malloc_trim)"
            if _reset_peak_rss()
            else "increase of ru_maxrss (under-estimates)"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    lines += [
        f"# load average at start (1, 5, 15 min): {load}",
        f"# peak MiB: first call; {mem}",
        "# img/s: best of the timed calls; x ref: method time / time of the reference"
        " passes on the same batch, timed right before it (median over rounds)",
        "# vs pgc: pytorch-grad-cam's time / cambench's time at equal settings, same round"
        " (median over rounds; >1: cambench faster); Score-CAM on ResNet-18: pytorch-grad-cam's"
        " best of batch sizes 16 and 64",
        "# sscam, iscam, smoothgradcampp: the pgc columns are torchcam's (same samples, std,"
        " rows per forward; N = samples: 2, 2, 4)",
    ]
    return lines


def _pgc_version() -> str:
    try:
        from importlib.metadata import version

        return version("grad-cam")
    except Exception:
        return "not installed"


def benchmark_case(case: Case, methods: list[str], args, device, emit) -> None:
    """One table. The machine may be shared, so every method is timed in rounds that
    also time its reference passes (and pytorch-grad-cam's method) right before it;
    each is reported as its best time, references as the best over the whole case."""
    n = len(case.images)
    emit("")
    emit(
        f"## {case.name}; target layer {case.layer}; {n} images per call; "
        f"{case.repeats} timed round(s); device {device}"
    )
    plain_forward(case)  # warm-up
    forward_backward(case)
    fwd = Timer(lambda: plain_forward(case), device)
    fwd_bwd = Timer(lambda: forward_backward(case), device)
    fwd()
    fwd_bwd()
    k = channels(case)
    emit(row([name for name, _, _ in COLUMNS]))
    emit(row(["-" * width for _, width, _ in COLUMNS]))
    for method in methods:
        params = method_params(method, case, args)
        setting = ""
        chunk = params.get("batch_size", METHODS[method].defaults.get("batch_size", 256))
        if method == "opticam":
            setting = f"{params['iterations']} it"
        elif "batch_size" in METHODS[method].defaults:
            setting = f"chunk {chunk}"
        ref_name = REFERENCE.get(method, "fwd")
        iterations = params.get("iterations", 0)
        # Score-CAM's forwards run on `chunk` masked images at a time: its reference
        # is measured at that batch size (on a CPU, throughput depends on it).
        rows = min(chunk, n * k)
        chunk_images = None
        if method == "scorecam":
            chunk_images = case.images.repeat(-(-rows // n), 1, 1, 1)[:rows]
        fwd_rows = Timer(lambda x=chunk_images: plain_forward(case, x), device)

        ours = Timer(
            lambda m=method, p=params: explain(
                m, case.model, case.images, case.targets, case.layer, **p
            ),
            device,
        )
        peer = None
        peer_chunks = case.pgc_chunks if method == "scorecam" and case.pgc_chunks else (chunk,)
        on_tokens = case.reshape is not None and method in PEER_ON_TOKENS
        has_peer = (pgc is not None and method in PGC_CLASSES) or (
            torchcam_methods is not None and method in TORCHCAM_CLASSES
        )
        if has_peer and (case.peer or on_tokens):
            peers = [Timer(lambda m=method, c=c: run_pgc(m, case, c), device) for c in peer_chunks]
            peer = peers[0]
        samples = params.get("samples", 1)
        ours_cost = (
            (k * samples + 1) * fwd.best if method in ("scorecam", "sscam", "iscam") else 0.0
        )
        peer_cost = max(ours_cost, (k + 1) * fwd.best if method == "ablationcam" else fwd_bwd.best)
        run_ours = ours_cost <= args.max_seconds or args.full
        run_peer = peer is not None and (peer_cost <= args.max_seconds or args.full)
        error = None
        try:
            if run_ours:  # warm-up on one image (also raises ValueError where n/a)
                explain(method, case.model, case.images[:1], case.targets[:1], case.layer, **params)
        except ValueError as err:
            error = str(err)
        # Ratios are taken within a round (reference passes timed right before the
        # method, which sees the same load), then the median over rounds.
        ratios, speedups = [], []
        for _ in range(case.repeats):
            t_fwd = fwd()
            t_fb = fwd_bwd() if "bwd" in ref_name else fwd_bwd.best
            t_rows = fwd_rows() if method == "scorecam" and run_ours else None
            t_ours = ours() if run_ours and error is None else None
            t_peer = min(p() for p in peers) if run_peer else None
            if t_ours is not None:
                reference = {
                    "fwd": t_fwd,
                    "fwd+bwd": t_fb,
                    "(K+1)·fwd": (k + 1) * (t_fwd if t_rows is None else t_rows * n / rows),
                    "fwd+it·(fwd+bwd)": t_fwd + (iterations or samples) * t_fb,
                    "(N·K+1)·fwd": (samples * k + 1) * t_fwd,
                }[ref_name]
                ratios.append(t_ours / reference)
                if t_peer is not None:
                    speedups.append(t_peer / t_ours)
        if error is not None:
            emit(f"#   {method}: n/a ({error[:100]})")
            cells = ["n/a", "", ref_name, ""]
        elif not run_ours:
            cells = [f"skip~{ours_cost:.0f}s", "", ref_name, ""]
        else:
            cells = [rate(n, ours.best), mib(ours.peak), ref_name, f"{median(ratios):.3g}"]
        if peer is None:
            cells += ["", "", ""]
        elif not run_peer:
            cells += [f"skip~{peer_cost:.0f}s", "", ""]
        else:
            speedup = f"{median(speedups):.3g}x" if speedups else ""
            best_peer = min(peers, key=lambda p: p.best)
            cells += [rate(n, best_peer.best), mib(best_peer.peak), speedup]
            if len(peers) > 1:
                emit(
                    f"#   {method}: pytorch-grad-cam's best of batch sizes "
                    + ", ".join(
                        f"{c} ({rate(n, p.best)} img/s)"
                        for c, p in zip(peer_chunks, peers, strict=True)
                    )
                    + ", per round"
                )
        emit(row([method, setting, *cells]))
    emit(
        f"## reference passes (best): fwd {fwd.best * 1e3:.1f} ms ({rate(n, fwd.best)} img/s), "
        f"fwd+bwd {fwd_bwd.best * 1e3:.1f} ms ({rate(n, fwd_bwd.best)} img/s); K = {k} channels"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument(
        "--methods", default=None, help="comma-separated method names (default: all of METHODS)"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="images per explain call (default: CPU 64 small / 8 ResNet-50; CUDA 256 / 64)",
    )
    parser.add_argument(
        "--chunk", type=int, default=None, help="rows per forward of Score-/Ablation-CAM"
    )
    parser.add_argument("--opticam-iterations", type=int, default=None)
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per method (default: 3 small model, 1 ResNet-50 on CPU)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="fewer images and iterations")
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help=f"comma-separated, of {', '.join(MODELS)} (default all)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="skip runs estimated to take longer (default: CPU 120, CUDA 600)",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="the input attributions' table: wall time, or the process's CPU time "
        "(time.process_time: robust on a loaded shared machine)",
    )
    parser.add_argument("--full", action="store_true", help="never skip")
    parser.add_argument("--output", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            parser.error("--device cuda but CUDA is not available")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.max_seconds is None:
        args.max_seconds = 600.0 if device.type == "cuda" else 120.0
    args.models = args.models.split(",")
    if set(args.models) - set(MODELS):
        parser.error(f"--models takes {', '.join(MODELS)}, got {args.models}")
    methods = list(METHODS) if args.methods is None else args.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; valid: {', '.join(METHODS)}")

    lines: list[str] = []

    def emit(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    for line in header(args, device):
        emit(line)
    if args.clock == "cpu":
        saliency_attribution.CLOCK = time.process_time
        emit("# input attributions timed in process CPU time (time.process_time), not wall time")
    start = time.perf_counter()
    attribution = [m for m in methods if m in ATTRIBUTION]  # their own table, vs Captum
    methods = [m for m in methods if m not in ATTRIBUTION]
    for case in build_cases(args, device):
        if methods:
            benchmark_case(case, methods, args, device, emit)
        if attribution and "ResNet-50" not in case.name:  # minutes per method on a CPU
            benchmark_attribution(case, attribution, args.repeats or 3, device, emit)
    emit("")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    emit(f"# total benchmark time {time.perf_counter() - start:.0f} s; load average at end: {load}")
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
