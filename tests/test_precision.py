"""Float32 is IEEE float32 on every device (mtbench/precision.py): TF32 is turned off for CUDA cells."""
import torch

from mtbench.precision import float32_mode, full_float32


def test_full_float32_turns_tf32_off_and_says_so():
    backends = torch.backends
    saved = backends.fp32_precision, backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision
    try:
        backends.cudnn.conv.fp32_precision = "tf32"  # torch's default for cuDNN convolutions
        assert float32_mode() == "tf32"
        full_float32()
        assert float32_mode() == "ieee"
        assert backends.cudnn.conv.fp32_precision == backends.cuda.matmul.fp32_precision == "ieee"
        assert backends.cudnn.rnn.fp32_precision == "ieee"
    finally:
        backends.fp32_precision = saved[0]
        backends.cudnn.conv.fp32_precision, backends.cuda.matmul.fp32_precision = saved[1:]
