"""What the integrity checks cost, as ratios to the work they guard.

- the saliency file's checksum (seal at write, verify at every read) against the
  saliency job's computation of the same maps and the metrics job's scoring of them;
- the checkpoint's content digest against loading the checkpoint;
- the saliency job's model check: the cheap fingerprint (storage, version counters,
  modes, hooks) after every method call against that call, and the full one (every
  weight's sum and norm, taken at the job's start and end) against the job's maps.

Measured on the default experiment's model (SmallResNet width 16, 32 px, 200 maps,
batches of 64) and on torchvision's ResNet-50 at 224 px (fingerprint and digest only).
Best of ``--repeats`` runs; all in one process, so the ratios compare like with like.

    python benchmarks/integrity.py --out benchmarks/results/integrity-cpu.txt
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cambench.allocator import tune_allocator
from cambench.cache import SaliencyWriter, read_saliency
from cambench.checksum import seal, verify
from cambench.metrics import confidence_change, insertion_deletion
from cambench.models import checkpoint_digest, read_checkpoint, save_checkpoint
from cambench.models.guard import changes, fingerprint
from cambench.models.small_resnet import SmallResNet
from cambench.saliency import explain


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def accumulating(spent: list[float]):
    """A decorator that adds each call's wall time to ``spent[0]`` (the time a job
    spends inside the wrapped functions)."""

    def timed(fn):
        def wrapper(*a, **kw):
            tic = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                spent[0] += time.perf_counter() - tic

        return wrapper

    return timed


def guard_lines(
    model: torch.nn.Module, t_batch: float, batch: str, t_job: float, n_batches: int, repeats: int
) -> list[str]:
    """The saliency job's model check: the cheap part after each of ``n_batches``
    method calls, the full fingerprint twice, against a job of ``t_job`` seconds."""
    cheap, full = fingerprint(model, values=False), fingerprint(model)
    t_cheap = best(lambda: changes(cheap, fingerprint(model, values=False)), repeats)
    t_full = best(lambda: changes(full, fingerprint(model)), repeats)
    t_check = n_batches * t_cheap + 2 * t_full
    return [
        f"  model check after each call: {t_cheap * 1e3:.3f} ms = {100 * t_cheap / t_batch:.3f} % "
        f"of a {batch} ({t_batch * 1e3:.1f} ms); the full fingerprint (start and end only) "
        f"{t_full * 1e3:.2f} ms",
        f"  per job of {n_batches} batches: {t_check * 1e3:.2f} ms = {100 * t_check / t_job:.2f} % "
        f"(the full fingerprint after every call would be {100 * t_full / t_batch:.2f} % per batch)",
    ]


def job_lines(tmp: Path, ckpt: Path, repeats: int) -> list[str]:
    """The model check's share of whole saliency jobs (``cambench.jobs.saliency.run``,
    as the workflow runs it, start-up after the imports included): the check's calls
    are timed inside the job."""
    from cambench.data.store import Split, write_split
    from cambench.jobs import saliency as job

    rng = np.random.default_rng(0)
    data = tmp / "test.h5"
    write_split(
        data,
        Split(
            images=torch.from_numpy(rng.integers(0, 256, (200, 3, 32, 32), dtype=np.uint8)),
            labels=torch.from_numpy(rng.integers(0, 10, 200)),
            masks=torch.from_numpy(rng.random((200, 32, 32)) > 0.5),
            class_names=[str(k) for k in range(10)],
            attrs={"dataset": "shapes", "split": "test"},
        ),
    )
    spent = [0.0]
    timed = accumulating(spent)

    originals = job.check_unchanged, job.fingerprint
    job.check_unchanged, job.fingerprint = (timed(f) for f in originals)
    lines = []
    try:
        for method in ("gradcam", "gradient", "scorecam"):
            out = tmp / f"{method}.h5"

            def run_job(method=method, out=out) -> None:
                out.unlink(missing_ok=True)
                spent[0] = 0.0
                with contextlib.redirect_stdout(io.StringIO()):
                    job.run(
                        ckpt,
                        data,
                        out,
                        method,
                        {},
                        None,
                        200,
                        1,
                        0,
                        64,
                        "label",
                        torch.device("cpu"),
                        "baseline",
                        False,
                    )

            times, checks = [], []
            for _ in range(repeats):
                tic = time.perf_counter()
                run_job()
                times.append(time.perf_counter() - tic)
                checks.append(spent[0])
            t_run, t_check = min(times), min(checks)
            lines.append(
                f"saliency job ({method}, default model, 200 images, batches of 64): "
                f"{t_run * 1e3:.0f} ms; the model check in it {t_check * 1e3:.2f} ms = "
                f"{100 * t_check / t_run:.2f} %"
            )
    finally:
        job.check_unchanged, job.fingerprint = originals
    return lines


def file_check_lines(tmp: Path, ckpt: Path, repeats: int) -> list[str]:
    """The file checksums' share of whole saliency and metrics jobs, as the workflow runs
    them: time inside the checksum functions (the saliency file's seal, the split's and
    the saliency file's verify, the checkpoint digest) counted during each job, and the
    saliency job with HDF5's Fletcher-32 filter on and off (before/after)."""
    import h5py

    from cambench import checksum, models
    from cambench.jobs import metrics as metrics_job
    from cambench.jobs import saliency as job

    data = tmp / "test.h5"  # written by job_lines
    spent = [0.0]
    timed = accumulating(spent)

    def saliency(method: str) -> None:
        out = tmp / f"{method}-files.h5"
        out.unlink(missing_ok=True)
        with contextlib.redirect_stdout(io.StringIO()):
            job.run(ckpt, data, out, method, {}, None, 200, 1, 0, 64, "label",
                    torch.device("cpu"), "baseline", False)  # fmt: skip

    def metrics() -> None:
        with contextlib.redirect_stdout(io.StringIO()):
            metrics_job.run(
                model_path=ckpt,
                data_path=data,
                saliency_path=tmp / "gradcam-files.h5",
                out_csv=tmp / "m.csv",
                out_curves=tmp / "m.npz",
                settings={"protocol": "custom", "forward_batch_size": 64, "pointing_tolerance": 0},
                batch_size=64,
                device=torch.device("cpu"),
                model_name="baseline",
                expected={},
                progress=False,
            )

    def measure(fn) -> tuple[float, float]:
        times, inside = [], []
        for _ in range(repeats):
            spent[0] = 0.0
            tic = time.perf_counter()
            fn()
            times.append(time.perf_counter() - tic)
            inside.append(spent[0])
        return min(times), min(inside)

    originals = checksum.seal, checksum.verify, models.checkpoint_digest
    checksum.seal, checksum.verify, models.checkpoint_digest = (timed(f) for f in originals)
    lines = []
    try:
        for name, fn in (
            ("saliency job (gradcam, 200 images)", lambda: saliency("gradcam")),
            ("saliency job (gradient, 200 images)", lambda: saliency("gradient")),
            ("metrics job (gradcam shard, 200 images)", metrics),
        ):
            t_run, t_files = measure(fn)
            lines.append(
                f"{name}: {t_run * 1e3:.0f} ms; checksums in it (seal, verify, checkpoint "
                f"digest) {t_files * 1e3:.2f} ms = {100 * t_files / t_run:.2f} %"
            )
    finally:
        checksum.seal, checksum.verify, models.checkpoint_digest = originals
    create = h5py.Group.create_dataset

    def without_fletcher(self, *a, **kw):
        kw.pop("fletcher32", None)
        return create(self, *a, **kw)

    with_filter = min(measure(lambda: saliency("gradcam"))[0] for _ in range(2))
    h5py.Group.create_dataset = without_fletcher
    try:
        without = min(measure(lambda: saliency("gradcam"))[0] for _ in range(2))
    finally:
        h5py.Group.create_dataset = create
    lines.append(
        f"saliency job (gradcam) with Fletcher-32 on the maps: {with_filter * 1e3:.0f} ms, "
        f"without: {without * 1e3:.0f} ms ({100 * (with_filter / without - 1):+.2f} %)"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    tune_allocator()
    torch.set_num_threads(1)  # as the saliency and metrics jobs
    torch.manual_seed(0)
    lines = [f"# integrity checks' cost, {platform.processor() or platform.machine()}, 1 thread"]
    model = SmallResNet(num_classes=10, width=16, blocks=(1, 1, 1, 1)).eval()
    images = torch.rand(200, 3, 32, 32)
    targets = torch.randint(0, 10, (200,))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        maps = explain("gradcam", model, images, targets)

        def saliency_job() -> None:
            for start in range(0, 200, 64):
                explain("gradcam", model, images[start : start + 64], targets[start : start + 64])

        attrs = {
            "method": "gradcam",
            "params": {},
            "layer": "layer4",
            "model_sha256": "0" * 64,
            "dataset": "shapes",
            "split": "test",
        }
        path = tmp / "shard-0.h5"
        with SaliencyWriter(path, np.arange(200), targets.numpy(), (32, 32), attrs) as writer:
            writer.write(maps, targets, 1.0)
        data = path.read_bytes()[:-82]
        raw = tmp / "raw.h5"

        def seal_once() -> None:
            raw.write_bytes(data)
            seal(raw)

        t_job = best(saliency_job, args.repeats)
        t_seal = best(seal_once, args.repeats) - best(lambda: raw.write_bytes(data), args.repeats)
        t_verify = best(lambda: verify(path), args.repeats)
        t_read = best(lambda: read_saliency(path), args.repeats)

        def metrics_job() -> None:
            confidence_change(model, images, targets, maps, batch_size=64)
            insertion_deletion(model, images, targets, maps, steps=16, batch_size=512)

        t_metrics = best(metrics_job, max(1, args.repeats // 2))
        lines += [
            f"saliency job's maps (Grad-CAM, 200 images, batches of 64): {t_job * 1e3:.1f} ms",
            f"seal (SHA-256 of a {len(data) / 1e3:.0f} kB shard): {max(t_seal, 0) * 1e3:.2f} ms "
            f"= {100 * max(t_seal, 0) / t_job:.2f} % of the saliency job's maps",
            f"verify: {t_verify * 1e3:.2f} ms = {100 * t_verify / t_metrics:.2f} % of the metrics "
            f"job's scoring ({t_metrics * 1e3:.0f} ms); read_saliency with it {t_read * 1e3:.2f} ms",
        ]
        t_batch = best(lambda: explain("gradcam", model, images[:64], targets[:64]), args.repeats)
        lines += guard_lines(model, t_batch, "Grad-CAM batch of 64", t_job, 4, args.repeats)
        ckpt = tmp / "model.pt"
        config = {"kind": "baseline", "arch": "resnet_small", "width": 16, "blocks": [1, 1, 1, 1]}
        save_checkpoint(ckpt, model, config, 10, [str(k) for k in range(10)])
        payload = torch.load(ckpt, weights_only=True)
        t_digest = best(lambda: checkpoint_digest(payload), args.repeats)
        t_load = best(lambda: read_checkpoint(ckpt), args.repeats)
        lines.append(
            f"checkpoint digest (default model): {t_digest * 1e3:.2f} ms = "
            f"{100 * t_digest / t_load:.1f} % of read_checkpoint ({t_load * 1e3:.1f} ms, digest included)"
        )
        lines += job_lines(tmp, ckpt, args.repeats)
        lines += file_check_lines(tmp, ckpt, args.repeats)
    try:
        from torchvision.models import resnet50
    except ImportError:
        resnet50 = None
    if resnet50 is not None:
        big = resnet50().eval()
        x = torch.rand(8, 3, 224, 224)
        t_gc = best(
            lambda: explain("gradcam", big, x, torch.zeros(8, dtype=torch.long), layer="layer4"), 2
        )
        state = {"state_dict": big.state_dict(), "model_config": {}, "num_classes": 1000}
        t_digest = best(lambda: checkpoint_digest(state), 2)
        lines.append(f"ResNet-50, 224 px: checkpoint digest {t_digest * 1e3:.0f} ms")
        lines += guard_lines(
            big, t_gc, "ResNet-50 Grad-CAM batch of 8", 25 * t_gc, 25, args.repeats
        )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
