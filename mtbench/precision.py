"""Float32 means IEEE float32 on every device.

On Ampere and later GPUs, PyTorch runs float32 convolutions in TF32 by default (10-bit mantissa inputs).
On an H200 that made MAML's float32 meta-gradient differ from the float64 one by 1.6e-2 (plain loop) and
1.5e-1 (grouped, vmap) in relative terms, against under 1e-6 on the CPU (benchmarks/maml_step.py, issue 10 H).
A GPU row and a CPU row of one experiment must differ by float32 rounding only, so mtbench turns TF32 off for
every cell it runs on CUDA and records that in the result's environment.
"""
from __future__ import annotations

import torch


def full_float32() -> None:
    """Turn TF32 off for matrix products, cuDNN convolutions and cuDNN RNNs (a process-wide setting)."""
    backends = torch.backends
    if hasattr(backends, "fp32_precision"):  # torch >= 2.9: the per-operator API (do not mix with allow_tf32)
        backends.fp32_precision = "ieee"
        for part in (backends.cuda.matmul, backends.cudnn.conv, backends.cudnn.rnn):
            part.fp32_precision = "ieee"
    else:
        backends.cuda.matmul.allow_tf32 = False
        backends.cudnn.allow_tf32 = False


def float32_mode() -> str:
    """``ieee`` when float32 convolutions and matrix products run in full precision, else ``tf32``."""
    backends = torch.backends
    if hasattr(backends, "fp32_precision"):
        parts = (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision)
        return "tf32" if "tf32" in parts else "ieee"
    return "tf32" if backends.cuda.matmul.allow_tf32 or backends.cudnn.allow_tf32 else "ieee"
