"""Downloads with checksum verification: the file appears only once its hash matches."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DataError


def fetch(url: str, dest: Path, md5: str | None = None, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; raise :class:`DataError` on network or checksum failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    hashes = {name: hashlib.new(name) for name, want in (("md5", md5), ("sha256", sha256)) if want}
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
                for h in hashes.values():
                    h.update(chunk)
        for name, want in (("md5", md5), ("sha256", sha256)):
            if want and hashes[name].hexdigest() != want:
                raise DataError(f"checksum mismatch for {url}: expected {name} {want}, got "
                                f"{hashes[name].hexdigest()}; the download is corrupt or the file changed upstream")
        os.replace(tmp, dest)
        return dest
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"could not download {url} ({exc}); check the network or copy the file to {dest}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
