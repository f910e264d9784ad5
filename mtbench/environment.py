"""Facts about the machine and code stored with every result (so a figure can be traced to its run)."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .errors import PluginLoadError
from .precision import float32_mode

if TYPE_CHECKING:
    from .plugins import Plugins


def git_commit(cwd: Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` if modified), or None outside git."""
    try:
        where = cwd or Path(__file__).resolve().parent
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info(device: torch.device, plugins: "Plugins | None" = None) -> dict[str, Any]:
    from . import __version__

    info: dict[str, Any] = {
        "mtbench": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "git_commit": git_commit(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["float32"] = float32_mode()
    if plugins is not None:
        info["plugins"] = plugins.versions()
        for impl in plugins.pm.hook.update_environment_info.get_hookimpls():
            try:
                impl.function(info=info)
            except Exception as exc:  # a broken plugin is the plugin's fault, told in one line
                raise PluginLoadError(f"{plugins.info(impl.plugin_name).label} failed in update_environment_info: "
                                      f"{type(exc).__name__}: {exc}") from exc
    return info
