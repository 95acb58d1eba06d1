"""The workflow through a real SLURM cluster (tests/cluster/slurm-up.sh), against a local run.

The module fixture brings up a one-node SLURM cluster on this machine (root, apt), runs
the tiny experiment (with the smallest ROAR block: one retrain) once locally and once
through Snakemake's SLURM executor plugin with profiles/slurm, and the tests compare the
two. Because that installs packages and
starts daemons, those tests run only when asked: ``CAMBENCH_SLURM_TESTS=1 pytest``
(``.ci/run`` sets it); otherwise they are skipped with a message that says so. The dry
run of profiles/slurm changes nothing and always runs. Deselect all with ``-m "not slurm"``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.slurm

CLUSTER = REPO / "tests" / "cluster"
PARTITION, ACCOUNT = "debug", "cambench"  # what slurm-up.sh creates
SLURM_RULES = {
    "train",
    "saliency",
    "metrics",
    "roar_saliency",
    "roar_retrain",
}  # the rest: localrules
# The default config also runs the randomization sanity check, a GPU job too.
GPU_RULES = {"train", "saliency", "metrics", "randomization"}
RUN_TIMEOUT_S = 1500
# The tiny experiment plus the smallest ROAR block (issue: one retrain through the real
# cluster, equal to the local one): the random maps of the whole train and test split,
# one retrain at fraction 0.5, its aggregate.
ROAR_BLOCK = {
    "roar": {
        "models": ["baseline"],
        "methods": ["random"],
        "fractions": [0.5],
        "modes": ["roar"],
        "seeds": 1,
        "shards": 1,
    }
}
CONFIG = "slurm.yaml"


def write_config(workdir: Path) -> None:
    config = yaml.safe_load((workdir / "tiny.yaml").read_text())
    (workdir / CONFIG).write_text(yaml.safe_dump({**config, "protocols": ROAR_BLOCK}))


OPT_IN = "CAMBENCH_SLURM_TESTS"
OPT_IN_SKIP = (
    f"the SLURM cluster tests install SLURM, munge and MariaDB with apt-get and start their "
    f"daemons; run them with {OPT_IN}=1 pytest (as root on Debian/Ubuntu)"
)


def opted_in() -> bool:
    return os.environ.get(OPT_IN, "").strip().lower() not in ("", "0", "false", "no")


def plugin_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None


def require_plugin() -> None:
    if not plugin_installed():
        pytest.fail(
            "snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')",
            pytrace=False,
        )


def cluster_skip_reason() -> str | None:
    if not opted_in():
        return OPT_IN_SKIP
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (tests/cluster/slurm-up.sh)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        return "the SLURM test cluster needs apt-get (Debian/Ubuntu) or SLURM installed"
    return None


def cluster_is_up() -> bool:
    if shutil.which("scontrol") is None:
        return False
    proc = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return proc.returncode == 0 and "UP" in proc.stdout


def slurm_profile(dest: Path) -> Path:
    """profiles/slurm with the test cluster's partition and account filled in."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_partition=PARTITION, slurm_account=ACCOUNT)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile))
    return dest


def default_sigint() -> None:
    # A shell's background job inherits SIGINT ignored; Snakemake needs SIGINT to cancel
    # its SLURM jobs (SIGTERM leaves them running).
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_snakemake(workdir: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=default_sigint,
    )


def finish(proc: subprocess.Popen, what: str, deadline: float) -> str:
    """Wait for ``proc``; on timeout stop it with SIGINT (Snakemake then cancels its SLURM jobs)."""
    try:
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        raise AssertionError(f"{what} timed out after {RUN_TIMEOUT_S} s:\n{out[-6000:]}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{what} failed (exit {proc.returncode}):\n{out[-6000:]}")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, request):
    reason = cluster_skip_reason()
    if reason:
        pytest.skip(reason)
    require_plugin()

    timings = {}
    was_up = cluster_is_up()
    start = time.monotonic()
    up = subprocess.run(
        ["bash", str(CLUSTER / "slurm-up.sh")], capture_output=True, text=True, timeout=900
    )
    timings["slurm-up"] = time.monotonic() - start
    if not was_up:  # leave a cluster that someone brought up by hand running
        request.addfinalizer(
            lambda: subprocess.run(["bash", str(CLUSTER / "slurm-down.sh")], capture_output=True)
        )
    if up.returncode != 0:
        pytest.fail(f"slurm-up.sh failed:\n{up.stdout[-4000:]}\n{up.stderr[-4000:]}", pytrace=False)

    base = tmp_path_factory.mktemp("slurm")
    local = copy_workflow(base / "local")
    cluster = copy_workflow(base / "cluster")
    profile = slurm_profile(base / "profile")
    for workdir in (local, cluster):
        write_config(workdir)
    submitted_after = datetime.now() - timedelta(minutes=1)

    # --cores 2 caps every job's threads at 2 in both runs (train declares 4; the test
    # node has 2 CPUs), so both runs compute with the same thread counts.
    start = time.monotonic()
    local_out = finish(
        start_snakemake(local, "--cores", "2", "--configfile", CONFIG),
        "the local run",
        start + RUN_TIMEOUT_S,
    )
    timings["local run"] = time.monotonic() - start
    start = time.monotonic()
    slurm_out = finish(
        start_snakemake(
            cluster,
            "--profile",
            str(profile),
            "--configfile",
            CONFIG,
            "--cores",
            "2",
            "--slurm-init-seconds-before-status-checks",
            "1",
        ),
        "the SLURM run",
        start + RUN_TIMEOUT_S,
    )
    timings["SLURM run"] = time.monotonic() - start
    print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))

    return {
        "local": local,
        "cluster": cluster,
        "local_out": local_out,
        "slurm_out": slurm_out,
        "submitted_after": submitted_after,
    }


def results(workdir: Path) -> Path:
    return workdir / "results" / "tiny"


def test_saliency_maps_equal_the_local_run(runs):
    local, cluster = results(runs["local"]), results(runs["cluster"])
    files = sorted(p.relative_to(local) for p in local.glob("saliency/**/*.h5"))
    assert files, "the local run wrote no saliency maps"
    assert files == sorted(p.relative_to(cluster) for p in cluster.glob("saliency/**/*.h5"))
    for name in files:
        with h5py.File(local / name) as a, h5py.File(cluster / name) as b:
            for key in ("saliency", "index", "target", "label"):
                assert np.array_equal(a[key][()], b[key][()]), f"{name}: {key} differs"


def test_per_image_metrics_equal_the_local_run(runs):
    local, cluster = results(runs["local"]), results(runs["cluster"])
    files = sorted(p.relative_to(local) for p in local.glob("metrics/**/*.csv"))
    assert files, "the local run wrote no metrics"
    assert files == sorted(p.relative_to(cluster) for p in cluster.glob("metrics/**/*.csv"))
    for name in files:
        a, b = (
            pd.read_csv(root / name).drop(columns="seconds", errors="ignore")
            for root in (local, cluster)
        )
        pd.testing.assert_frame_equal(a, b, obj=str(name))


def test_the_roar_retrain_equals_the_local_run(runs):
    """The retrain job ran on the cluster (test below) and gave the local accuracy."""
    local, cluster = results(runs["local"]), results(runs["cluster"])
    for name in ("roar.csv", "roar_auc.csv"):
        a, b = (pd.read_csv(root / name) for root in (local, cluster))
        assert len(a) == 1 if name == "roar.csv" else len(a) >= 1, a
        pd.testing.assert_frame_equal(a, b, obj=name)
    for split in ("train", "test"):
        name = f"roar/maps/{split}/baseline/random/shard-0.h5"
        with h5py.File(local / name) as a, h5py.File(cluster / name) as b:
            assert np.array_equal(a["saliency"][()], b["saliency"][()]), name


def sacct_jobs(run_id: str, since: datetime, expected: int) -> list[dict[str, str]]:
    """This run's SLURM jobs as sacct reports them (records reach slurmdbd with a delay)."""
    fields = ["JobID", "JobName", "Comment", "State", "AllocTRES"]
    for _ in range(30):
        proc = subprocess.run(
            [
                "sacct",
                "-n",
                "-X",
                "-P",
                f"--name={run_id}",
                f"--starttime={since:%Y-%m-%dT%H:%M:%S}",
            ]
            + [f"--format={','.join(fields)}"],
            capture_output=True,
            text=True,
            check=True,
        )
        jobs = [
            dict(zip(fields, line.split("|"), strict=True))
            for line in proc.stdout.splitlines()
            if line
        ]
        if len(jobs) >= expected and all(j["State"] == "COMPLETED" for j in jobs):
            break
        time.sleep(1)
    return jobs


def test_cluster_rules_ran_through_slurm_and_localrules_did_not(runs):
    run_id = re.search(r"SLURM run ID: (\S+)", runs["slurm_out"]).group(1)
    config = yaml.safe_load((runs["cluster"] / CONFIG).read_text())
    # a shard's saliency and metrics jobs run as one cluster job (group
    # eval-<model>-<method>, profiles/slurm's group-components); ROAR: the maps of
    # each split (group roar-maps-<model>-<method>) and the one retrain
    n_maps = len(config["methods"]) * config["eval"]["shards"]
    expected = {"train": len(config["models"]), "eval": n_maps, "roar-maps": 2, "roar_retrain": 1}
    jobs = sacct_jobs(run_id, runs["submitted_after"], sum(expected.values()))

    # the plugin writes rule_<rule or group>[_wildcards_<values>] into each job's comment
    def kind(comment: str) -> str:
        for group in ("eval", "roar-maps"):
            if comment.startswith(f"rule_{group}-"):
                return group
        return comment.split("_wildcards_")[0]

    rules = [kind(j["Comment"]).removeprefix("rule_") for j in jobs]
    assert {rule: rules.count(rule) for rule in set(rules)} == expected, jobs
    assert all(j["State"] == "COMPLETED" for j in jobs), jobs
    for job, rule in zip(jobs, rules, strict=True):
        tres = job["AllocTRES"]
        assert "mem=" in tres and "cpu=" in tres, job  # mem_mb and threads were requested
        assert "gres/gpu" not in tres, job  # device: cpu declares gpu=0
        if rule in ("train", "roar_retrain"):
            assert "cpu=2" in tres, job  # threads: 4, capped by --cores 2
    # the localrules ran in the Snakemake process itself
    for rule in ("prepare_data", "summarize", "plot_experiment", "plot_model", "roar_aggregate"):
        assert f"localrule {rule}:" in runs["slurm_out"]
    for rule in SLURM_RULES:  # saliency and metrics inside their group job
        assert re.search(rf"\n\s*rule {rule}:", runs["slurm_out"]), rule


def test_slurm_profile_requests_gpus_on_the_default_config(tmp_path):
    """A dry run of the default experiment (device: auto) with profiles/slurm."""
    require_plugin()
    workdir = copy_workflow(tmp_path / "workflow")
    proc = snakemake(workdir, "-n", "--profile", str(REPO / "profiles" / "slurm"))
    out = proc.stdout + proc.stderr
    assert set(GPU_RULES) <= set(planned_jobs(proc.stdout))
    # top-level jobs and the jobs inside group jobs (indented): a rule line, then its
    # indented body
    blocks = re.findall(r"^\s*(?:local)?rule (\w+):\n((?:[ ]{4,}\S.*\n)+)", out, re.M)
    resources = {}
    for rule, body in blocks:
        line = re.search(r"^\s+resources: (.*)$", body, re.M)
        method = re.search(r"method=(\w+)", body)
        cheap = rule == "saliency" and method and method.group(1) in ("fakecam", "random")
        resources.setdefault(rule, []).append(((line.group(1) if line else ""), cheap))
    for rule in GPU_RULES:
        for res, cheap in resources[rule]:
            # fakecam/random maps need no forward: their saliency asks for no GPU
            gpus = "0" if cheap else "1"
            assert re.search(rf"(^|, )gpu={gpus}(,|$)", res), (rule, res)
            assert re.search(r"(^|, )mem_mb=\d+", res) and re.search(r"(^|, )runtime=\d+", res)
            assert "slurm_partition=<your-partition>" in res, (rule, res)
    for rule in set(resources) - GPU_RULES:
        for res, _ in resources[rule]:
            assert "gpu=" not in res, (rule, res)


def test_cluster_tests_are_opt_in_and_the_skip_says_how(tmp_path):
    """Without the variable, a cluster test is skipped (nothing is installed or started),
    and the skip reason names the variable that turns it on."""
    env = {k: v for k, v in os.environ.items() if k != OPT_IN}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(Path(__file__)), "-q", "-rs", "-p", "no:cacheprovider"]
        + ["-k", "test_saliency_maps_equal_the_local_run", "--basetemp", str(tmp_path / "t")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert re.search(r"\b1 skipped\b", out) and " passed" not in out, out
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1 and f"{OPT_IN}=1 pytest" in skips[0], out
