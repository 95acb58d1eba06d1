"""Atomic file writes: a reader never sees a half-written output, and two writers of
one output never run at once.

An output is written to a sibling temporary file (:func:`temporary_path`) and renamed
onto its path when complete. A writer holds an exclusive ``flock`` on a lock file
beside it (:func:`lock_path`), which records the holder's PID and host; a second writer
of the same output fails at once, naming the holder, instead of deleting or
interleaving with the first one's temporary file. The kernel releases the lock when the
holder exits or dies, so a killed writer's temporary file can be resumed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path


def temporary_path(path: str | os.PathLike) -> Path:
    """The sibling temporary file an output is written to before the rename."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def lock_path(path: str | os.PathLike) -> Path:
    """The sibling lock file its writer holds while writing ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class OutputLock:
    """Exclusive, non-blocking lock of one output's writer; ``ValueError`` naming the
    output and the live holder when another process (or file descriptor) holds it.

    The lock file is removed on release while still locked; an acquirer that locked a
    file removed meanwhile (its inode no longer at the path) retries on the new file, so
    two writers can never both hold the lock.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.lock = lock_path(self.path)
        self.fd: int | None = None

    def acquire(self) -> None:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                os.close(fd)
                raise ValueError(
                    f"{self.path}: another writer is writing it ({holder or 'a live process'} "
                    f"holds {self.lock.name}); wait for it to finish or stop it"
                ) from None
            try:
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # locked a file its holder removed on release: retry
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        self.lock.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


#: Free bytes below which a failed write is taken for a full disk (torch's zip writer
#: reports ENOSPC as "enforce fail at inline_container.cc ... file write failed").
FULL_DISK_BYTES = 16 * 1024 * 1024


def is_disk_full(err: BaseException, path: str | os.PathLike) -> bool:
    """Whether ``err``, raised while writing ``path``, comes from a full disk."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    if not isinstance(err, (OSError, RuntimeError)):
        return False
    if "No space left" in str(err):
        return True
    try:
        return shutil.disk_usage(Path(path).parent).free < FULL_DISK_BYTES
    except OSError:
        return False


class DiskFullError(ValueError):
    """A write failed on a full disk; the message names the path."""


def disk_full_error(path: str | os.PathLike) -> DiskFullError:
    """The error a write to ``path`` on a full disk raises instead of the writer's own."""
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free:,} bytes free"
    except OSError:
        free = "free space unknown"
    return DiskFullError(
        f"{path}: no space left on device ({free}); free some space and rerun (the "
        "partial output was removed)"
    )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; rename it onto ``path`` only if the block succeeds.

    The writer holds the output's :class:`OutputLock` throughout, so a second writer of
    ``path`` fails at once and never deletes this one's temporary file.
    """
    path = Path(path)
    with OutputLock(path):
        tmp = temporary_path(path)
        tmp.unlink(missing_ok=True)
        try:
            yield tmp
            os.replace(tmp, path)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            if is_disk_full(err, tmp):
                raise disk_full_error(path) from err
            raise
