"""Read a dataset as the user has it (a folder, a zip or a tar archive) without extracting anything.

The standard few-shot datasets arrive in many wrappings: an extracted folder, ``mini-imagenet.zip``,
``CUB_200_2011.tgz``, ``cifar-100-binary.tar.gz``. :class:`Source` gives all of them one read-only view:
the names of the regular files inside (POSIX paths), and their bytes, streamed in storage order so that
a compressed tar is decompressed once per pass instead of once per member. Nothing is written to disk, so
a hostile archive cannot place files outside its folder, and links inside archives are ignored (links in
a folder are the user's own and are followed).

Also here: :func:`restricted_unpickle`, the only way mtbench reads a pickle (the CIFAR-100 python
archive, tieredImageNet's label files): it admits dicts, lists, strings, numbers and plain numpy arrays,
and refuses every other global before anything is called.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from contextlib import contextmanager
from typing import Any, BinaryIO, Collection, Iterator

import numpy as np

from mtbench import DataError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, OSError, ValueError)


class Source:
    """A read-only view of a folder, zip or tar archive; ``what`` names the dataset in error messages."""

    def __init__(self, path: Path | str, what: str) -> None:
        self.path = Path(path).expanduser()
        self.what = what
        if not self.path.exists():
            raise DataError(f"{what} source {self.path} does not exist")
        name = self.path.name.lower()
        if self.path.is_dir():
            self.kind = "folder"
        elif name.endswith(".zip"):
            self.kind = "zip"
        elif name.endswith(TAR_SUFFIXES):
            self.kind = "tar"
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
        elif _is_tar(self.path):
            self.kind = "tar"
        else:
            raise DataError(f"{what} source {self.path} is not a folder, a zip or a tar archive")
        self._names: list[str] | None = None

    def corrupt(self, exc: BaseException) -> DataError:
        return DataError(f"corrupt archive {self.path} ({type(exc).__name__}: {exc}); copy it again from "
                         f"the original")

    def names(self) -> list[str]:
        """Every regular file inside, as a POSIX path relative to the source (one pass over a tar)."""
        if self._names is None:
            try:
                if self.kind == "folder":  # the user's own folder: symlinks (e.g. into ImageNet) are followed
                    self._names = sorted((Path(d) / f).relative_to(self.path).as_posix()
                                         for d, _, files in os.walk(self.path, followlinks=True) for f in files
                                         if (Path(d) / f).is_file())
                elif self.kind == "zip":
                    with zipfile.ZipFile(self.path) as zf:
                        self._names = [_clean(i.filename) for i in zf.infolist() if not i.is_dir()]
                else:
                    with tarfile.open(self.path, "r:*") as tf:
                        self._names = [_clean(m.name) for m in tf if m.isfile()]
            except ARCHIVE_ERRORS as exc:
                raise self.corrupt(exc) from None
        return self._names

    def stream(self, wanted: Collection[str]) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) of each wanted member, in storage order; a damaged member is a DataError."""
        wanted = set(wanted)
        try:
            if self.kind == "folder":
                for name in sorted(wanted):
                    yield name, (self.path / name).read_bytes()
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf:
                    for info in zf.infolist():
                        if _clean(info.filename) in wanted:
                            yield _clean(info.filename), zf.read(info)
            else:
                with tarfile.open(self.path, "r:*") as tf:
                    for member in tf:
                        if member.isfile() and _clean(member.name) in wanted:
                            handle = tf.extractfile(member)
                            yield _clean(member.name), handle.read() if handle else b""
        except ARCHIVE_ERRORS as exc:
            raise self.corrupt(exc) from None

    @contextmanager
    def open(self, name: str) -> Iterator[BinaryIO]:
        """A file object for one (possibly huge) member, read without loading it whole."""
        try:
            if self.kind == "folder":
                with (self.path / name).open("rb") as fh:
                    yield fh
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf, zf.open(name) as fh:
                    yield fh
            else:
                with tarfile.open(self.path, "r:*") as tf:
                    member = next((m for m in tf if m.isfile() and _clean(m.name) == name), None)
                    handle = tf.extractfile(member) if member is not None else None
                    if handle is None:
                        raise DataError(f"{self.what}: {name} is missing from {self.path}")
                    yield handle
        except ARCHIVE_ERRORS as exc:
            raise self.corrupt(exc) from None

    def read_many(self, names: Collection[str]) -> dict[str, bytes]:
        return dict(self.stream(names))

    def root(self, required: list[str], hint: str) -> str:
        """The folder inside the source (``""`` or ``"dir/"``) that holds every ``required`` file.

        The shallowest folder holding all of them wins; when none does, the error names what is missing
        from the folder that holds the most of them.
        """
        have: dict[str, set[str]] = {}
        for name in self.names():
            path = PurePosixPath(name)
            if path.name in required:
                prefix = "" if str(path.parent) == "." else f"{path.parent}/"
                have.setdefault(prefix, set()).add(path.name)
        complete = [p for p, found in have.items() if len(found) == len(required)]
        if complete:
            return min(complete, key=lambda p: (p.count("/"), p))
        best = max(have, key=lambda p: (len(have[p]), -p.count("/")), default=None)
        missing = [r for r in required if best is None or r not in have[best]]
        where = f"{self.path}/{best}" if best else str(self.path)
        raise DataError(f"{self.what} source {where} has no {', '.join(missing)} ({hint})")

    def fingerprint(self) -> str:
        """Names, sizes and modification times of the source (cheap; recorded with the prepared cache)."""
        if self.kind == "folder":
            items = [[n, (self.path / n).stat().st_size, (self.path / n).stat().st_mtime_ns] for n in self.names()]
        else:
            stat = self.path.stat()
            items = [[self.path.name, stat.st_size, stat.st_mtime_ns]]
        return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:16]


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except ARCHIVE_ERRORS:
        return False


# numpy pickles a plain array as _reconstruct(ndarray, shape, dtype) plus its raw bytes
_NUMPY_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only dicts, lists, strings, numbers "
                                     f"and numpy arrays are admitted")


def restricted_unpickle(blob: bytes, where: str) -> Any:
    """Unpickle data that may hold only builtin containers/scalars and numpy arrays; never runs code.

    Python 2 pickles (CIFAR-100) are read with ``encoding="bytes"``; dict keys that arrive as bytes are
    decoded, so callers see ``"data"`` whichever Python wrote the file.
    """
    try:
        value = _RestrictedUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{where}: {exc}") from None
    except Exception as exc:  # truncated or garbled data
        raise DataError(f"{where} is not a readable pickle ({type(exc).__name__}: {exc})") from None
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise DataError(f"{where} holds an object array; only plain numeric arrays are admitted")
    return _decode_keys(value)


def _decode_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in value.items()}
    return value
