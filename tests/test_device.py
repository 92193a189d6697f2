"""Which device a run gets, and what a CUDA device switches on: TF32, the flash attention kernel."""

import pytest
import torch

from sara.config.parallel import ParallelConfig
from sara.device import pick_device
from sara.parallel.context import attention_backend


@pytest.fixture
def precision():
    """torch's fp32 precision switches, as they were before the test."""
    before = torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision
    yield
    torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision = before


def test_a_cuda_device_computes_fp32_matmuls_in_tf32(monkeypatch, precision):
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    assert pick_device("cpu").type == "cpu" and torch.backends.cuda.matmul.fp32_precision == "ieee"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto").type == "cuda"
    assert torch.backends.cuda.matmul.fp32_precision == "tf32" and torch.backends.cudnn.conv.fp32_precision == "tf32"


def test_cuda_asked_for_without_it_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device cuda: CUDA is not available"):
        pick_device("cuda")


def test_attention_is_flash_on_cuda_in_half_precision_and_native_elsewhere():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert attention_backend(ParallelConfig(), cuda) == "_native_flash"  # auto: bf16 on CUDA
    assert attention_backend(ParallelConfig(param_dtype="float32"), cuda) == "native"  # no fp32 flash kernel
    assert attention_backend(ParallelConfig(), cpu) == "native"
    assert attention_backend(ParallelConfig(attention="_native_cudnn"), cpu) == "_native_cudnn"  # as asked
