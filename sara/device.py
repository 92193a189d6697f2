"""Which device a run uses."""

from __future__ import annotations

import torch


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; any other name as torch spells it. A CUDA
    device turns TF32 on (:func:`use_tf32`).

    Raises:
        ValueError: CUDA asked for on a machine without it.
    """
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine")
    if device.type == "cuda":
        use_tf32()
    return device


def use_tf32() -> None:
    """fp32 matmuls and convolutions in TF32 on CUDA (tensor cores; what stays fp32 in a bf16
    run — the aligner, the projectors' masters, fp32 runs — is then several times faster),
    set once for the process with torch's per-backend switches."""
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"
