"""Safe files: plain-data conversion, checksums and reading with ``weights_only=True``.

Every ``.pt`` file ebm writes (models, training checkpoints, chains) is read back with
``torch.load(weights_only=True)``: tensors and plain containers only, so a crafted file
cannot run code when it is loaded. Objects that are not plain data (sampler states are
dataclasses, some holding Pyro's adaptation accumulators) go through ``to_plain`` before
saving and ``from_plain`` after loading:

- dataclasses become ``{"__ebm__": "dataclass", "class": "module:qualname", "fields": {...}}``
  and are rebuilt only when the class is a dataclass defined in an ``ebm.*`` module (or
  registered with ``register_safe_class``); their constructors are not called;
- Pyro's ``DualAveraging`` and ``WelfordCovariance`` keep their attributes
  (``"__ebm__": "object"``) and are rebuilt through ``__new__`` and ``__dict__``;
- tuples, sets, frozensets, ``torch.Size``, dicts with non-string keys, ``torch.dtype``,
  ``torch.device`` and ``torch.Generator`` (its state tensor) are tagged plain containers.

Anything else is refused with a ``TypeError`` naming where it sits, at save time.

``checksum`` is a SHA-256 over every value of a plain record in a fixed order (tensor
dtypes, shapes and bytes; scalars and strings), stored beside the record and verified on
load, so that a corrupted file is rejected rather than silently giving other numbers. It
detects accidental damage (bit flips, truncation), not deliberate tampering: whoever edits
a file can recompute it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import numbers
import pickle
import struct
import sys
import warnings
import zipfile
from pathlib import Path

import torch

TAG = "__ebm__"
#: classes outside ``ebm`` whose instances are restored attribute by attribute (plain values only)
_SAFE_OBJECTS = {
    "pyro.ops.dual_averaging:DualAveraging",
    "pyro.ops.welford:WelfordCovariance",
}
_registered: dict[str, type] = {}


class UnsafeFileError(ValueError):
    """A file asks to rebuild an object that ebm does not restore from files."""


def register_safe_class(cls: type) -> type:
    """Allow ``from_plain`` to rebuild dataclass ``cls`` (e.g. the state of your own sampler),
    which must hold only plain data. Usable as a class decorator."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_safe_class takes a dataclass, got {cls!r}")
    _registered[_class_path(cls)] = cls
    return cls


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _is_ebm_module(name: str) -> bool:
    return (name == "ebm" or name.startswith("ebm.")) and not _is_main(name)


def _is_main(name: str) -> bool:
    """A program's entry module (``__main__``, ``pkg.__main__``): importing it runs the program."""
    return name.rpartition(".")[2] == "__main__"


# ------------------------------------------------------------------ to plain data
def to_plain(obj, where: str = "state"):
    """``obj`` as nested dicts (string keys), lists, tensors, numbers, strings and ``None``.

    Raises:
        TypeError: ``obj`` holds something that cannot be stored safely; names its path.
    """
    if obj is None or type(obj) in (bool, int, float, str) or isinstance(obj, torch.Tensor):
        return obj
    # subclasses (numpy scalars, enums) would be pickled as their own class: store the value
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, torch.Size):
        return {TAG: "size", "items": list(obj)}
    if isinstance(obj, (torch.dtype, torch.device)):
        return {TAG: type(obj).__name__, "name": str(obj)}
    if isinstance(obj, torch.Generator):
        return {TAG: "generator", "device": str(obj.device), "state": obj.get_state()}
    if isinstance(obj, list):
        return [to_plain(x, f"{where}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, (tuple, set, frozenset)):
        kind = {tuple: "tuple", set: "set", frozenset: "frozenset"}.get(type(obj))
        if kind is None:  # a namedtuple or another subclass
            return _refuse(obj, where)
        items = list(obj) if kind == "tuple" else sorted(obj, key=repr)
        return {TAG: kind, "items": [to_plain(x, f"{where}[{i}]") for i, x in enumerate(items)]}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and TAG not in obj:
            return {k: to_plain(v, f"{where}.{k}") for k, v in obj.items()}
        pairs = [[to_plain(k, f"{where} key"), to_plain(v, f"{where}[{k!r}]")] for k, v in obj.items()]
        return {TAG: "dict", "items": pairs}
    cls = type(obj)
    if (
        dataclasses.is_dataclass(obj)
        and not isinstance(obj, type)
        and (_is_ebm_module(cls.__module__) or _class_path(cls) in _registered)
    ):
        fields = {f.name: to_plain(getattr(obj, f.name), f"{where}.{f.name}") for f in dataclasses.fields(obj)}
        return {TAG: "dataclass", "class": _class_path(cls), "fields": fields}
    if _class_path(cls) in _SAFE_OBJECTS:
        return {TAG: "object", "class": _class_path(cls), "state": to_plain(dict(vars(obj)), f"{where}.__dict__")}
    return _refuse(obj, where)


def _refuse(obj, where: str):
    cls = type(obj)
    hint = ""
    if cls.__module__.startswith("pyro."):
        hint = " (Pyro's kernels, as in ebm.NUTS's state, cannot be stored; checkpoint with another sampler)"
    elif dataclasses.is_dataclass(obj):
        hint = " (a dataclass from outside ebm: allow it with ebm.serialization.register_safe_class)"
    raise TypeError(
        f"cannot store {cls.__module__}.{cls.__qualname__} at {where}: ebm files hold tensors and plain data only{hint}"
    )


# ------------------------------------------------------------------ from plain data
def from_plain(obj, where: str = "state"):
    """Invert ``to_plain``. Raises ``UnsafeFileError`` for a class ebm does not restore."""
    if isinstance(obj, list):
        return [from_plain(x, f"{where}[{i}]") for i, x in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    kind = obj.get(TAG)
    if kind is None:
        return {k: from_plain(v, f"{where}.{k}") for k, v in obj.items()}
    if kind in ("tuple", "set", "frozenset"):
        items = [from_plain(x, where) for x in obj["items"]]
        return {"tuple": tuple, "set": set, "frozenset": frozenset}[kind](items)
    if kind == "size":
        return torch.Size(obj["items"])
    if kind == "dtype":
        dtype = getattr(torch, obj["name"].removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype):
            raise UnsafeFileError(f"unknown dtype {obj['name']!r} at {where}")
        return dtype
    if kind == "device":
        return torch.device(obj["name"])
    if kind == "generator":
        state = obj["state"]
        if not isinstance(state, torch.Tensor):
            raise UnsafeFileError(f"the generator state at {where} is not a tensor")
        generator = torch.Generator(device=obj["device"])
        generator.set_state(state.cpu())
        return generator
    if kind == "dict":
        return {from_plain(k, where): from_plain(v, f"{where}[{k!r}]") for k, v in obj["items"]}
    if kind == "dataclass":
        cls = _restorable_dataclass(obj["class"], where)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(obj["fields"]) - set(fields)
        if unknown:
            raise UnsafeFileError(f"{where} sets {sorted(unknown)}, which are not fields of {obj['class']}")
        instance = cls.__new__(cls)
        for name, field in fields.items():
            if name in obj["fields"]:
                value = from_plain(obj["fields"][name], f"{where}.{name}")
            elif field.default is not dataclasses.MISSING:
                value = field.default
            elif field.default_factory is not dataclasses.MISSING:
                value = field.default_factory()
            else:
                raise ValueError(f"{where} lacks the field {name!r} of {obj['class']} (written by another ebm version)")
            # object.__setattr__ also sets the fields of frozen dataclasses
            object.__setattr__(instance, name, value)
        return instance
    if kind == "object":
        if obj["class"] not in _SAFE_OBJECTS:
            raise UnsafeFileError(f"{where} asks for a {obj['class']}, which ebm does not restore from files")
        cls = _resolve(obj["class"], where)
        instance = cls.__new__(cls)
        instance.__dict__.update(from_plain(obj["state"], f"{where}.__dict__"))
        return instance
    raise UnsafeFileError(f"unknown record kind {kind!r} at {where}")


def _resolve(path: str, where: str) -> type:
    module_name, _, qualname = str(path).partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise UnsafeFileError(f"{where} names {path}, which does not exist in this version of ebm") from None
    return obj


def _restorable_dataclass(path: str, where: str) -> type:
    if path in _registered:
        return _registered[path]
    module_name = str(path).partition(":")[0]
    if not _is_ebm_module(module_name):
        raise UnsafeFileError(
            f"{where} asks for {path}: ebm restores only its own dataclasses and those passed to register_safe_class"
        )
    cls = _resolve(path, where)
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise UnsafeFileError(f"{where} names {path}, which is not a dataclass")
    return cls


# ------------------------------------------------------------------ checksums
def checksum(record) -> str:
    """SHA-256 (hex) of a plain record: keys, scalars and every tensor's dtype, shape and
    bytes, visited in the record's order."""
    digest = hashlib.sha256()
    _feed(digest, record)
    return digest.hexdigest()


def _feed(digest, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{t.dtype!s}{tuple(obj.shape)}".encode())
        if t.numel():
            digest.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        digest.update(b"D%d" % len(obj))
        for k, v in obj.items():
            _feed(digest, k)
            _feed(digest, v)
    elif isinstance(obj, (list, tuple)):
        digest.update(b"L%d" % len(obj))
        for x in obj:
            _feed(digest, x)
    elif isinstance(obj, float):
        digest.update(b"F" + struct.pack("<d", obj))
    else:
        # None, bool, int, str and what weights_only loads besides (dtypes, devices)
        digest.update(f"{type(obj).__name__}:{obj!r}".encode())


def seal(record: dict) -> dict:
    """``record`` with its checksum under ``"sha256"``."""
    return {**record, "sha256": checksum(record)}


def verify(record: dict, path) -> None:
    """Raise ``ValueError`` when ``record``'s stored checksum does not match its content."""
    stored = record.get("sha256")
    body = {k: v for k, v in record.items() if k != "sha256"}
    if stored is not None and stored != checksum(body):
        raise ValueError(f"{path} is corrupted: its checksum does not match its content (a damaged file)")


# ------------------------------------------------------------------ reading files
def read_record(path, what: str, map_location="cpu") -> dict:
    """``torch.load(path, weights_only=True)`` of a dict, with one-line ``ValueError``s that
    name ``path`` for a missing, empty, truncated, unsafe or foreign file.

    Only zip archives (what ``torch.save`` writes) are opened: raw pickles and other bytes
    are refused without being unpickled at all.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {what} at {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a {what}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty, not a {what}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a {what}: not a torch.save archive (truncated, or another kind of file)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols are not the user's concern
            record = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line.strip() for line in str(error).splitlines()]
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")
        raise UnsafeFileError(
            f"{path} holds Python objects beyond tensors and plain data ({reason.rstrip('.')}); refused, since "
            f"loading them could run code (not a {what})"
        ) from None
    except Exception as error:  # torch raises assorted types (RuntimeError, KeyError, EOFError) on damaged archives
        reason = " ".join(str(error).split())[:100] or type(error).__name__
        raise ValueError(f"{path} is not a readable {what}: damaged archive ({reason})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a {what} (it holds a {type(record).__name__})")
    return record


def importable_class(path: str, base: type, what: str) -> type:
    """The class named ``"module:qualname"`` in a file, checked to be a subclass of ``base``
    before anything is called."""
    module_name, _, qualname = str(path).partition(":")
    if module_name == "__main__" and not hasattr(sys.modules.get("__main__"), qualname.split(".")[0]):
        raise ValueError(
            f"{what} was saved from a class {qualname} defined in a script's __main__; define it in an "
            f"importable module (or import it into this __main__) to load it"
        )
    if module_name != "__main__" and _is_main(module_name):
        raise UnsafeFileError(f"{what} names {path}, a program's entry module, which ebm never imports; refused")
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError) as error:
        raise ValueError(
            f"{what} needs the class {qualname} from module {module_name!r}, which cannot be imported here "
            f"({error}); the model's class must be importable where it is loaded"
        ) from None
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise UnsafeFileError(f"{what} names {path}, which is not an ebm {base.__name__} class; refused")
    return obj
