"""Atomic export directories: write into a hidden temp directory beside the target, fsync, rename into place.

Temp names are ``.NAME.tmp-PID-*`` (and ``.NAME.old-PID-*`` for a replaced directory), hidden and not numeric,
so a version watcher ignores them; those of a process that is gone (a killed export) are removed by the next
export into the same parent directory.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["write_version_atomically"]

_TMP_RE = re.compile(r"^\.(.+)\.(tmp|old)-(\d+)-[A-Za-z0-9_]+$")


def _remove_stale(parent):
    """Remove hidden temp/old directories left by exports whose process is gone (e.g. killed)."""
    for child in parent.iterdir():
        m = _TMP_RE.match(child.name)
        if not m or not child.is_dir():
            continue
        pid = int(m.group(3))
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(child, ignore_errors=True)


def _fsync_tree(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_version_atomically(target: Path, write: Callable[[Path], None], overwrite: bool) -> None:
    """Call ``write(tmp)`` on a fresh hidden directory beside ``target``, then rename it to ``target``.

    An existing ``target`` is replaced only with ``overwrite`` (FileExistsError otherwise, also when it
    appears during the write); on any error the temp directory is removed and ``target`` is untouched.
    """
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a server running as another user must read it
    try:
        write(tmp)
        _fsync_tree(tmp)
        old = None
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"export path {str(target)!r} appeared during the export")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
