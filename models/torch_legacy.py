"""Read a legacy-format (pre-1.6, non-zip) PyTorch state dict into NumPy arrays,
without torch.

The file is four pickles in a row (magic number, protocol version, system info, the
state dict whose tensors point at storages by persistent id), then the list of storage
keys, then each storage as an 8-byte little-endian element count and its raw bytes.
Only what a state dict of float tensors needs is understood; anything else is refused,
and no class from the file is ever imported (find_class allows a fixed list).
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0x1950A86A20F9469CFC6C

_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _StorageRef:
    key: str
    dtype: type
    size: int


@dataclass
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple
    stride: tuple


def _rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, size, *_view = pid
        if kind != "storage" or _view and _view[0] is not None:
            raise pickle.UnpicklingError("unsupported storage reference")
        return _StorageRef(str(key), _DTYPES[storage_type.name], int(size))


def load_state_dict(path: Path | str) -> dict[str, np.ndarray]:
    with open(path, "rb") as fh:
        if pickle.load(fh) != MAGIC:
            raise ValueError(f"{path} is not a legacy PyTorch file (a zip-format one?)")
        if pickle.load(fh) != 1001:
            raise ValueError("unsupported legacy protocol version")
        pickle.load(fh)  # sys_info: endianness and type sizes
        state = _Unpickler(fh).load()
        keys = pickle.load(fh)
        storages: dict[str, np.ndarray] = {}
        refs = {t.storage.key: t.storage for t in state.values() if isinstance(t, _TensorRef)}
        for key in keys:
            (count,) = struct.unpack("<q", fh.read(8))
            dtype = np.dtype(refs[key].dtype if key in refs else np.float32)
            storages[key] = np.frombuffer(fh.read(count * dtype.itemsize), dtype=dtype)
    out = {}
    for name, t in state.items():
        if not isinstance(t, _TensorRef):
            continue
        flat = storages[t.storage.key]
        item = flat.itemsize
        arr = np.lib.stride_tricks.as_strided(
            flat[t.offset :], shape=t.shape, strides=[s * item for s in t.stride]
        )
        out[name] = np.array(arr)  # copy: own, contiguous memory
    return out
