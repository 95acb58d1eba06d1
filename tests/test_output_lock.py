"""Two writers of one output: the second fails at once naming the live holder, never
touches the first one's temporary file, and a dead writer's lock is released."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch
from test_cache import ATTRS

from cambench.atomic import atomic_output, lock_path, temporary_path
from cambench.cache import SaliencyWriter, read_saliency

INDEX = np.arange(6)


def _writer(path) -> SaliencyWriter:
    return SaliencyWriter(path, INDEX, INDEX % 3, (4, 4), ATTRS)


def _holder_script(path, kind: str, then: str) -> str:
    """A child process that starts writing ``path`` (``kind``: saliency or atomic),
    writes one batch, prints ``ready`` and then either waits for a line on stdin and
    finishes (``then == "finish"``) or sleeps until it is killed."""
    return textwrap.dedent(
        f"""
        import sys, time
        import numpy as np, torch
        from cambench.atomic import atomic_output
        from cambench.cache import SaliencyWriter
        path = {str(path)!r}
        index = np.arange(6)
        attrs = {ATTRS!r}
        if {kind!r} == "saliency":
            with SaliencyWriter(path, index, index % 3, (4, 4), attrs) as w:
                w.write(torch.full((3, 4, 4), 0.5), torch.zeros(3, dtype=torch.long), 0.1)
                print("ready", flush=True)
                if {then!r} == "finish":
                    sys.stdin.readline()
                    w.write(torch.full((3, 4, 4), 0.5), torch.zeros(3, dtype=torch.long), 0.1)
                else:
                    time.sleep(600)
        else:
            with atomic_output(path) as tmp:
                tmp.write_text("first")
                print("ready", flush=True)
                sys.stdin.readline()
        """
    )


def _start(path, kind: str, then: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", _holder_script(path, kind, then)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    return child


def test_second_saliency_writer_in_this_process_fails_naming_the_holder(tmp_path):
    path = tmp_path / "s.h5"
    holder = f"process {os.getpid()} on {socket.gethostname()}"
    with _writer(path) as first:
        first.write(torch.rand(3, 4, 4), torch.zeros(3, dtype=torch.long), 0.1)
        message = rf"s\.h5: another writer is writing it \({holder}"
        with pytest.raises(ValueError, match=message), _writer(path):
            pass
        assert temporary_path(path).exists()  # the first writer's file is untouched
        first.write(torch.rand(3, 4, 4), torch.zeros(3, dtype=torch.long), 0.1)
    assert read_saliency(path).maps.shape == (6, 4, 4)
    assert not lock_path(path).exists()  # released and removed
    with _writer(path) as again:  # a new writer after the first finished
        again.write(torch.rand(6, 4, 4), torch.zeros(6, dtype=torch.long), 0.1)


def test_second_writer_fails_while_another_process_writes(tmp_path):
    path = tmp_path / "s.h5"
    child = _start(path, "saliency", "finish")
    try:
        with pytest.raises(ValueError, match=rf"s\.h5: .*process {child.pid} on "), _writer(path):
            pass
        with h5py.File(temporary_path(path), "r", locking=False) as f:
            assert f.attrs["n_done"] == 3  # the live writer's file was not deleted
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=120) == 0
    finally:
        child.kill()
    maps = read_saliency(path).maps
    assert torch.equal(maps, torch.full((6, 4, 4), 0.5))  # the child's result, whole
    with _writer(path) as writer:  # the lock went with the child
        assert writer.n_done == 0
        writer.write(torch.zeros(6, 4, 4), torch.ones(6, dtype=torch.long), 0.1)
    assert torch.equal(read_saliency(path).maps, torch.zeros(6, 4, 4))


def test_dead_writer_releases_the_lock_and_its_file_resumes(tmp_path):
    path = tmp_path / "s.h5"
    child = _start(path, "saliency", "sleep")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert lock_path(path).exists()  # left behind by the dead writer, but not held
    with _writer(path) as writer:
        assert writer.n_done == 3  # resumed after the dead writer's batch
        writer.write(torch.full((3, 4, 4), 0.25), torch.zeros(3, dtype=torch.long), 0.1)
    maps = read_saliency(path).maps
    assert torch.equal(maps[:3], torch.full((3, 4, 4), 0.5))
    assert torch.equal(maps[3:], torch.full((3, 4, 4), 0.25))


def test_atomic_output_second_writer_fails_and_leaves_the_first(tmp_path):
    path = tmp_path / "table.csv"
    child = _start(path, "atomic", "finish")
    try:
        message = rf"table\.csv: .*process {child.pid} on "
        with pytest.raises(ValueError, match=message), atomic_output(path) as tmp:
            tmp.write_text("second")
        assert temporary_path(path).read_text() == "first"
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.wait(timeout=120) == 0
    finally:
        child.kill()
    assert path.read_text() == "first"
    with atomic_output(path) as tmp:
        tmp.write_text("second")
    assert path.read_text() == "second" and not lock_path(path).exists()


def test_atomic_output_releases_the_lock_on_failure(tmp_path):
    path = tmp_path / "table.csv"
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("job failed")
    assert not path.exists() and not temporary_path(path).exists()
    with atomic_output(path) as tmp:
        tmp.write_text("whole")
    assert path.read_text() == "whole"
