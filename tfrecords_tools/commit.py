"""A dataset is written aside, in a sibling staging folder, and swapped in only when complete.

So `kill -9` at any moment of `write --overwrite` leaves the old dataset readable in `--out`
or the new one complete there: never neither. Locally the swap is one `renameat2` exchange
(Linux) or two renames (elsewhere, or file systems without the exchange): then a kill between
the two leaves `--out` missing and both complete datasets in hidden siblings, which the next
write clears. Remote folders (`gs://`), and local ones that also hold files of the user's own,
get the files moved in one by one, the manifest last; a kill during those moves (a
server-side copy per file on GCS) leaves `--out` without a manifest, which `verify` reports.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Sequence

import tensorflow as tf

from tfrecords_tools.schema import MANIFEST_NAME

# Hidden folder inside `out` of a replaced dataset, also left there by earlier versions.
OLD_PREFIX = ".old-"
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _split(out: str) -> tuple[str, str]:
    """The parent folder and the name of `out`."""
    if "://" in out:
        return posixpath.split(out.rstrip("/"))
    return os.path.split(os.path.abspath(out))


def _sibling_pattern(name: str, kinds: str) -> re.Pattern:
    return re.compile(r"\." + re.escape(name) + rf"\.({kinds})-[0-9a-f]+-[0-9a-f]+$")


def make_staging(out: str) -> str:
    """Creates and returns an empty sibling folder of `out` to write the new dataset into."""
    parent, name = _split(out)
    tf.io.gfile.makedirs(parent)
    # Staging folders of killed runs go now, so that repeated kills do not pile them up; a
    # replaced (`old`) one may be the only whole dataset left, so it waits for the commit.
    for leftover in sibling_leftovers(out, kinds="new"):
        remove_tree(leftover)
    staging = _sibling(parent, name, "new")
    tf.io.gfile.makedirs(staging)
    return staging


def _sibling(parent: str, name: str, kind: str) -> str:
    # The name matches `_sibling_pattern`, so that a later run knows it for a leftover.
    return f"{parent}/.{name}.{kind}-{os.getpid():x}-{secrets.token_hex(4)}"


def sibling_leftovers(out: str, kinds: str = "new|old") -> list[str]:
    """Staging (`new`) and replaced (`old`) folders next to `out` that killed writes left."""
    parent, name = _split(out)
    if not tf.io.gfile.isdir(parent):
        return []
    pattern = _sibling_pattern(name, kinds)
    return [f"{parent}/{n.rstrip('/')}" for n in tf.io.gfile.listdir(parent) if pattern.match(n)]


def remove_tree(path: str) -> None:
    """Removes a folder and everything in it, if it exists."""
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)


def exchange(first: str, second: str) -> bool:
    """Swaps two local paths in one atomic step; False where the platform cannot."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc 2.28+
    except (AttributeError, OSError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    done = renameat2(
        _AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE
    )
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False  # the kernel or the file system (e.g. some overlay or network ones) lacks it
    raise OSError(code, os.strerror(code), first)


def commit(staging: str, out: str, replaced: Sequence[str]) -> None:
    """Puts the complete dataset in `staging` in place of `out`, whose dataset files (and
    leftovers) are `replaced`; then deletes the old dataset and leftovers of killed runs."""
    local = "://" not in out
    if local and not os.path.exists(out):
        os.rename(staging, out)
    elif local and set(os.listdir(out)) <= {name.rstrip("/") for name in replaced}:
        _swap_folders(staging, out)
    else:
        tf.io.gfile.makedirs(out)
        _move_files(staging, out, replaced)
    for leftover in sibling_leftovers(out):
        remove_tree(leftover)


def _swap_folders(staging: str, out: str) -> None:
    # The new folder gets the old one's permissions (a shared dataset stays shared).
    os.chmod(staging, stat.S_IMODE(os.stat(out).st_mode))
    if exchange(staging, out):
        shutil.rmtree(staging)  # now the old dataset
        return
    parent, name = _split(out)
    old = _sibling(parent, name, "old")
    os.rename(out, old)
    os.rename(staging, out)
    shutil.rmtree(old)


def _move_files(staging: str, out: str, replaced: Sequence[str]) -> None:
    """Moves the old dataset's files aside (manifest first) and the new ones in (manifest last)."""
    trash = None
    if "://" not in out:
        trash = os.path.join(out, f"{OLD_PREFIX}{secrets.token_hex(4)}")
        os.mkdir(trash)
    for name in sorted(replaced, key=lambda n: n.rstrip("/") != MANIFEST_NAME):
        path = f"{out}/{name.rstrip('/')}"
        if trash is not None and os.path.lexists(path):
            os.rename(path, os.path.join(trash, name.rstrip("/")))
        elif tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)
    for name in sorted(tf.io.gfile.listdir(staging), key=lambda n: n == MANIFEST_NAME):
        tf.io.gfile.rename(f"{staging}/{name}", f"{out}/{name}", overwrite=True)
    if trash is not None:
        shutil.rmtree(trash)
    remove_tree(staging)
