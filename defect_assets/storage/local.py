"""A local folder as an ObjectStore: atomic writes by temporary file + os.replace.

Only regular files inside the root are objects: a symlink (to a file or a folder, inside the root
or out of it), a FIFO, a device or a socket put into the folder by hand is neither listed nor
read, so a landing folder cannot smuggle in a file from elsewhere on the machine."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from defect_assets.storage.base import ObjectInfo, ObjectStore, StoreKeyError, normalize_key

_TMP_PREFIX = ".tmp-"


def _etag(st: os.stat_result) -> str:
    # Every write is a new file renamed into place, so the inode changes even when a same-size
    # rewrite lands within the file system's timestamp granularity.
    return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


class LocalObjectStore(ObjectStore):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    @property
    def url(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / normalize_key(key)

    @contextlib.contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def write_new(self, key: str, data: bytes) -> bool:
        """Complete temporary file, then a hard link to the key: link() refuses an existing name
        atomically, so of two writers of the same new key exactly one wins."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _open_regular(self, key: str) -> int:
        """A descriptor of the object's regular file, opened without following a symlink in any
        component below the root and without blocking on a FIFO; StoreKeyError otherwise."""
        path = self._path(key)
        missing = StoreKeyError(f"no object {key!r} in {self.root}")
        if os.path.realpath(path) != str(path):  # a symlinked folder on the way, or a link as the key
            raise missing
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise missing from None
        except OSError as e:
            if e.errno == errno.ELOOP:  # the last component became a symlink since realpath
                raise missing from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise missing
        return fd

    def read_bytes(self, key: str) -> bytes:
        with os.fdopen(self._open_regular(key), "rb") as f:
            return f.read()

    def open_read(self, key: str) -> BinaryIO:
        return os.fdopen(self._open_regular(key), "rb")

    def info(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = path.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode) or os.path.realpath(path) != str(path):
            return None
        return ObjectInfo(key=normalize_key(key), size=st.st_size, etag=_etag(st))

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        # walk only below the prefix's folder part ("images/ab/abc" -> images/ab)
        start = self.root / normalize_key(prefix.rsplit("/", 1)[0]) if "/" in prefix.strip("/") else self.root
        if not start.is_dir() or os.path.realpath(start) != str(start):
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue  # a write in progress (or one that crashed) is not an object
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.lstat()
                    if not stat.S_ISREG(st.st_mode):
                        continue  # symlinks, FIFOs, devices, sockets are not objects
                    out.append(ObjectInfo(key, st.st_size, _etag(st)))
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def local_path(self, key: str) -> str | None:
        return str(self._path(key))
