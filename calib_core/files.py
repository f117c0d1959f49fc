"""Writing files and folders so that a kill, a crash or a full disk never leaves a partial result,
and checking output destinations before any work starts.

Everything is written to a temporary sibling named `.calib-tmp-<pid>-<start>-<name>-<random>` and
renamed into place only when complete. The pid and the process start time in the name tell a live
writer's temporary from a killed one's: `clean_stale_temporaries` removes only the latter (at the
next save into the same folder, and when the CLI or the app starts). Written files and folders get
the permissions the user's umask gives, as ordinary files do (not mkstemp's 0600).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError
from .processes import process_gone, process_start

TMP_PREFIX = ".calib-tmp-"
_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
_DISK_MESSAGES = {errno.ENOSPC: "No space left on device", errno.EDQUOT: "Disk quota exceeded",
                  errno.EROFS: "Read-only file system"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


_OWN_TAG = f"{os.getpid()}-{int(process_start())}"


def _temporary_name(target: Path) -> str:
    return f"{TMP_PREFIX}{_OWN_TAG}-{target.name[:80]}-"


def _is_stale(name: str) -> bool:
    """A temporary whose writer (pid and start time in its name) is no longer running."""
    parts = name[len(TMP_PREFIX):].split("-", 2)
    if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return True  # not ours to keep: no writer can claim it
    return process_gone(int(parts[0]), float(parts[1]))  # the name keeps whole seconds: within the 1 s slack


def clean_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of killed writers in `folder`; returns what was removed."""
    folder = Path(folder)
    removed = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
    except OSError:
        return removed
    for path in entries:
        if _is_stale(path.name):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _disk_error(exc: Exception, target: Path) -> OutputError | None:
    """An OutputError for a failure of the disk itself, None for any other error. Writers such as
    safetensors report a full disk in their own exception types, hence the message test."""
    code = getattr(exc, "errno", None)
    if code not in _DISK_ERRORS:
        text = str(exc)
        code = next((c for c, words in _DISK_MESSAGES.items() if words in text), None)
        if code is None:
            return None
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
              errno.EROFS: "the file system is read-only"}.get(code, os.strerror(code))
    return OutputError(f"Could not write '{target}': {reason}. Nothing was left there; free space or choose "
                       f"another destination.")


@contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary path next to `path`; when the block ends without error it becomes `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_name(path))
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except Exception as exc:
        error = _disk_error(exc, path)
        if error is None:
            raise
        raise error from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def npz_archive(path: str | os.PathLike):
    """Yield `add(arrays)`, which writes arrays into an .npz at `path` as they come (the format of
    np.savez, which np.load reads, and reads lazily): only the arrays being added are in memory, and the
    file appears whole when the block ends without error."""
    import zipfile

    import numpy as np

    with atomic_file(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        def add(arrays: dict) -> None:
            for key, array in arrays.items():
                with archive.open(f"{key}.npy", "w", force_zip64=True) as entry:
                    np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)

        yield add


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, data, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=indent))


@contextmanager
def atomic_folder(target: str | os.PathLike, overwrite: bool = False):
    """Yield an empty temporary folder next to `target`; when the block ends without error it
    replaces `target` (which must be absent or empty unless `overwrite`). A kill at any moment leaves
    either the old target or the complete new one, plus at most a stale temporary."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target.parent)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temporary_name(target)))
    old = None
    try:
        yield tmp
        _chmod_tree(tmp)
        if not target.exists():
            os.replace(tmp, target)
        else:
            _check_replaceable(target, overwrite)
            if not _exchange(tmp, target):  # no atomic swap here: move the old folder aside first
                old = Path(tempfile.mkdtemp(dir=target.parent, prefix=_temporary_name(target)))
                os.replace(target, old / target.name)
                os.replace(tmp, target)
    except Exception as exc:
        if old is not None and not target.exists():  # put the previous folder back
            os.replace(old / target.name, target)
        error = _disk_error(exc, target)
        if error is None:
            raise
        raise error from exc
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def scratch_folder(parent: str | os.PathLike, name: str = "scratch"):
    """Yield a new temporary folder in `parent`, removed when the block ends (whatever the outcome);
    named like our temporaries, so that the one a killed process leaves is cleaned at the next start."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=_temporary_name(parent / name)))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 RENAME_EXCHANGE), so a kill never leaves
    neither; False where the system or file system does not offer it."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _chmod_tree(folder: Path) -> None:
    os.chmod(folder, 0o777 & ~_UMASK)
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~_UMASK)
        for name in files:
            os.chmod(os.path.join(root, name), 0o666 & ~_UMASK)


def _check_replaceable(target: Path, overwrite: bool) -> None:
    if target.is_symlink() or not target.is_dir():
        raise OutputError(f"'{target}' exists and is not a folder: choose a folder path to save into.")
    if not overwrite and any(target.iterdir()):
        raise OutputError(f"Folder '{target}' is not empty: choose a new folder, or pass --overwrite to replace "
                          f"it (its files are removed).")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_parent(path: Path) -> None:
    anchor = _nearest_existing(path.parent)
    if not anchor.is_dir():
        raise OutputError(f"Cannot write '{path}': '{anchor}' is a file, not a folder.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write '{path}': no write permission in '{anchor}'.")


def check_output_folder(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Fail now, before any work, if `path` cannot become a saved folder."""
    path = Path(path).expanduser().absolute()
    if path.exists():
        _check_replaceable(path, overwrite)
    _check_writable_parent(path)
    return path


def check_output_file(path: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> Path:
    """Fail now, before any work, if `path` cannot become a written file (an existing file is replaced)."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise OutputError(f"'{path}' is a folder: give a file name.")
    if suffixes and path.suffix.lower() not in suffixes:
        raise OutputError(f"'{path.name}': write a {' or '.join(suffixes)} file.")
    _check_writable_parent(path)
    return path


def check_free_space(path: str | os.PathLike, needed_bytes: int) -> None:
    """Fail when the disk that will hold `path` has less than `needed_bytes` (+10%) free."""
    anchor = _nearest_existing(Path(path).expanduser().absolute())
    free = shutil.disk_usage(anchor).free
    if free < needed_bytes * 1.1:
        raise OutputError(f"Not enough disk space for '{path}': it needs about {needed_bytes / 1024**2:.0f} MB, "
                          f"{free / 1024**2:.0f} MB are free.")
