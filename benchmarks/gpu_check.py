#!/usr/bin/env python
"""A GPU check of cambench in a few minutes (run by ``benchmarks/gpu_check.sh``).

On the CUDA device it checks, each step reported PASS or FAIL with its numbers:

1. the device (name, capability, memory) and versions;
2. training: the default experiment's baseline model (config.yaml ``models.baseline``)
   for one epoch on a small ``shapes`` split read from an HDF5 file (the streaming
   reader with its prefetch thread), with bf16 autocast and channels-last (the CUDA
   defaults of :class:`cambench.training.loop.TrainConfig`); the loss must be finite;
3. every registered saliency method on one batch of test images, on CUDA and on the
   CPU, with the trained model (TF32 off, so both compute in fp32): the maps must
   agree (mean absolute difference at most ``--map-tolerance`` on [0, 1] maps);
   methods that do not apply to the model (``ValueError``) are listed as n/a;
4. insertion/deletion AUCs of Grad-CAM maps on CUDA against the CPU (at most
   ``--auc-tolerance`` apart) and their time;
5. the gradient CAMs' part of ``benchmarks/saliency.py`` (timing on the device);
6. the methods added later (the other CAMs, the input attributions, Occlusion, RISE)
   beside their reference libraries (pytorch-grad-cam, torchcam, Captum, where
   installed) on ResNet-18 and the small ViT at 64 px: ``benchmarks/saliency.py``'s
   ratio to the peer and to the method's floor, on the device. The CPU dry run times
   two of them on ResNet-18 only (to stay short).

The report goes to ``benchmarks/results/gpu-<card>.txt`` (``--output`` to choose);
the exit status is 1 when a step failed. ``--cpu`` runs the same steps with the CPU
as "device" (a dry run of this script: what a machine without a GPU can check).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow"))

from cambench.data.shapes import CLASS_NAMES, generate_shapes  # noqa: E402
from cambench.data.store import Split, read_split, write_split  # noqa: E402
from cambench.metrics import insertion_deletion  # noqa: E402
from cambench.models import build_model  # noqa: E402
from cambench.saliency import explain  # noqa: E402
from cambench.saliency.registry import METHODS  # noqa: E402
from cambench.training.loop import TrainConfig, train_model  # noqa: E402

GRADIENT_CAMS = "gradcam,gradcampp,xgradcam,layercam"
ADDED_METHODS = (
    "hirescam,gradcam_elementwise,eigencam,eigengradcam,fullgrad,sscam,iscam,smoothgradcampp,"
    "input_x_gradient,integrated_gradients,smoothgrad,vargrad,occlusion,rise"
)
FAST_PARAMS = {"opticam": {"iterations": 20}}  # enough to compare, quick


class Report:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed: list[str] = []

    def say(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def step(self, name: str, fn) -> object:
        tic = time.perf_counter()
        try:
            result = fn()
        except Exception as err:  # every step reports, the others still run
            self.failed.append(name)
            self.say(f"FAIL {name}: {type(err).__name__}: {err}")
            self.say("  " + traceback.format_exc().strip().replace("\n", "\n  "))
            return None
        self.say(f"PASS {name} ({time.perf_counter() - tic:.1f} s)")
        return result


def default_model(classes: int) -> tuple[torch.nn.Module, dict]:
    entry = yaml.safe_load((REPO / "config.yaml").read_text())["models"]["baseline"]
    entry = {k: entry[k] for k in ("kind", "arch", "width", "blocks") if k in entry}
    torch.manual_seed(0)
    return build_model(entry, classes), entry


def write_data(folder: Path, n_train: int, n_test: int, size: int) -> tuple[Path, Path]:
    paths = []
    for name, n, seed in (("train", n_train, 0), ("test", n_test, 1)):
        images, labels, masks = generate_shapes(n, image_size=size, num_classes=10, seed=seed)
        path = folder / f"{name}.h5"
        write_split(path, Split(images, labels, masks, list(CLASS_NAMES[:10])))
        paths.append(path)
    return paths[0], paths[1]


def card_slug(device: torch.device) -> str:
    if device.type != "cuda":
        return "cpu-dry-run"
    name = torch.cuda.get_device_name(device).lower().replace("nvidia", "")
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-") or "cuda"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="dry run: the CPU as the device")
    parser.add_argument("--train-images", type=int, default=2048)
    parser.add_argument("--test-images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16, help="images of the map comparison")
    parser.add_argument("--map-tolerance", type=float, default=0.01)
    parser.add_argument("--auc-tolerance", type=float, default=0.01)
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    parser.add_argument("--skip-benchmark", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)

    if not args.cpu and not torch.cuda.is_available():
        print("no CUDA device: nothing to check on a GPU (use --cpu for a dry run)")
        return 0
    device = torch.device("cpu" if args.cpu else "cuda")
    cpu = torch.device("cpu")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = Report()
    report.say(
        f"# benchmarks/gpu_check.py — {datetime.datetime.now():%Y-%m-%d %H:%M} — "
        f"{platform.node()}, torch {torch.__version__}, python {platform.python_version()}"
    )

    def device_info():
        if device.type == "cuda":
            props = torch.cuda.get_device_properties(device)
            report.say(
                f"  device: {props.name}, capability {props.major}.{props.minor}, "
                f"{props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
                f"cuDNN {torch.backends.cudnn.version()}, bf16 {torch.cuda.is_bf16_supported()}"
            )
        else:
            report.say("  device: CPU (--cpu dry run)")

    report.step("device", device_info)
    tmp = tempfile.TemporaryDirectory()
    folder = Path(tmp.name)
    train_path, test_path = write_data(folder, args.train_images, args.test_images, 32)
    model, entry = default_model(10)

    def train():
        config = TrainConfig(epochs=1, batch_size=128, lr=0.1, amp=True, channels_last=True)
        with read_split(train_path) as tr, read_split(test_path) as te:
            history = train_model(model, tr, te, config, device, progress=False)
        entry_ = history[-1]
        report.say(
            f"  {entry}: 1 epoch, {args.train_images} images, bf16 autocast "
            f"{device.type == 'cuda'}, channels_last {device.type == 'cuda'}: loss "
            f"{entry_['train_loss']:.4f}, train acc {entry_['train_acc']:.3f}, test acc "
            f"{entry_['test_acc']:.3f}, {entry_['seconds']:.1f} s"
        )
        if not torch.isfinite(torch.tensor(entry_["train_loss"])):
            raise AssertionError("training loss is not finite")

    report.step("train (bf16 AMP, channels_last)", train)
    model.eval()
    model_cpu = copy.deepcopy(model).to(cpu).eval()
    model_dev = model.to(device).eval()
    with read_split(test_path) as te:
        images = te.float_images(slice(0, args.batch))
        targets = te.labels[: args.batch]

    def maps_on(method, on_model, on_device):
        params = FAST_PARAMS.get(method, {})
        maps = explain(
            method, on_model, images.to(on_device), targets.to(on_device), None, **params
        )
        return maps.float().cpu()

    def compare_maps():
        names = args.methods.split(",") if args.methods else sorted(METHODS)
        bad = []
        report.say(f"  {'method':<20} {'mean |Δ|':>9} {'max |Δ|':>9} {'device s':>9}")
        for name in names:
            try:
                reference = maps_on(name, model_cpu, cpu)
            except ValueError as err:
                report.say(f"  {name:<20} n/a ({str(err).splitlines()[0][:70]})")
                continue
            tic = time.perf_counter()
            got = maps_on(name, model_dev, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - tic
            diff = (got - reference).abs()
            mean, worst = float(diff.mean()), float(diff.max())
            ok = got.shape == reference.shape and mean <= args.map_tolerance
            report.say(
                f"  {name:<20} {mean:>9.2e} {worst:>9.2e} {seconds:>9.3f}{'' if ok else '  FAIL'}"
            )
            if not ok:
                bad.append(name)
        if bad:
            raise AssertionError(f"maps differ from the CPU's: {bad}")

    report.step("every saliency method, device vs CPU", compare_maps)

    def auc():
        maps = maps_on("gradcam", model_cpu, cpu)
        results = {}
        for where, m in ((cpu, model_cpu), (device, model_dev)):
            tic = time.perf_counter()
            curves = insertion_deletion(
                m, images.to(where), targets.to(where), maps.to(where), steps=16, batch_size=256
            )
            if where.type == "cuda":
                torch.cuda.synchronize()
            results[where.type] = (
                curves.insertion_auc.cpu(),
                curves.deletion_auc.cpu(),
                time.perf_counter() - tic,
            )
        (ins_c, del_c, t_c), (ins_d, del_d, t_d) = results["cpu"], results[device.type]
        ins, dele = float((ins_c - ins_d).abs().max()), float((del_c - del_d).abs().max())
        report.say(
            f"  insertion AUC mean {float(ins_d.mean()):.4f} (max |Δ| vs CPU {ins:.1e}), "
            f"deletion {float(del_d.mean()):.4f} (max |Δ| {dele:.1e}); {device.type} "
            f"{t_d:.2f} s, CPU {t_c:.2f} s for {args.batch} images × 2 × 17 forwards"
        )
        if max(ins, dele) > args.auc_tolerance:
            raise AssertionError(f"AUCs differ from the CPU's by {max(ins, dele):.3g}")

    report.step("insertion/deletion on the device", auc)

    def saliency_benchmark(options: list[str]) -> None:
        proc = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "saliency.py"), "--device", device.type]
            + ["--quick", *options],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        for line in proc.stdout.strip().splitlines():
            report.say("  | " + line)
        if proc.returncode != 0:
            raise RuntimeError(
                f"benchmarks/saliency.py exited {proc.returncode}: {proc.stderr[-2000:]}"
            )

    if args.cpu:  # a dry run: the small model, and two of the added methods on one model
        cpu = ["--threads", "2"]
        gradient_cams = ["--methods", GRADIENT_CAMS, "--models", "small", *cpu]
        added = ["--models", "resnet18", "--methods", "hirescam,input_x_gradient", *cpu]
        added += ["--max-seconds", "30"]
    else:
        gradient_cams = ["--methods", GRADIENT_CAMS]
        added = ["--models", "resnet18,vit", "--methods", ADDED_METHODS, "--max-seconds", "60"]
    if not args.skip_benchmark:
        report.step(
            "gradient CAMs timing (benchmarks/saliency.py)",
            lambda: saliency_benchmark(gradient_cams),
        )
        report.step(
            "added methods beside their peers (benchmarks/saliency.py)",
            lambda: saliency_benchmark(added),
        )
    tmp.cleanup()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report.say(f"peak RSS of this process: {peak:.0f} MB")
    if device.type == "cuda":
        report.say(
            f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated() / 2**20:.0f} MB"
        )
    report.say(
        f"RESULT: {'FAIL (' + ', '.join(report.failed) + ')' if report.failed else 'all passed'}"
    )
    output = args.output or REPO / "benchmarks" / "results" / f"gpu-{card_slug(device)}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(report.lines) + "\n")
    print(f"report written to {output}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
