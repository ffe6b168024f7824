"""Backend selection: the "auto" rule, the process-wide default, and the environment variable."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings
from types import SimpleNamespace

import pytest
import torch

from flowkit.kernels import backend, fused_affine, get_backend, resolve_backend, set_backend, use_backend


def test_auto_is_the_reference_on_cpu():
    x, h = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
    assert resolve_backend("auto", x, h) == "torch"
    assert resolve_backend("triton", x, h) == "triton"  # forcing is allowed; the launch checks the device


def test_auto_sends_float64_to_the_reference():
    x, h = torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)
    assert resolve_backend("auto", x, h) == "torch"


def cuda_like(dtype: torch.dtype) -> SimpleNamespace:
    """Only the attributes the "auto" rule reads: a CUDA tensor's route without a GPU (the self-check
    runs on its ``device``, the CPU, where the kernels run under the interpreter)."""
    return SimpleNamespace(is_cuda=True, dtype=dtype, device=torch.device("cpu"))


def test_auto_leaves_compiled_code_to_inductor(monkeypatch):
    # The kernels passed their self-check on this "device": what is left is the compile rule.
    monkeypatch.setattr(backend, "_self_checked", {(torch.device("cpu"), torch.float32, torch.float32): True})
    cuda_tensor = cuda_like(torch.float32)
    eager = resolve_backend("auto", cuda_tensor, cuda_tensor)
    assert eager == ("triton" if importlib.util.find_spec("triton") else "torch")
    assert resolve_backend("auto", cuda_tensor, cuda_tensor, compiling=True) == "torch"
    # Asking for the kernels explicitly still gets them under torch.compile (as the custom op).
    if importlib.util.find_spec("triton"):
        assert resolve_backend("triton", cuda_tensor, cuda_tensor, compiling=True) == "triton"


def test_use_backend_restores_the_default_even_after_an_error():
    before = get_backend()
    with pytest.raises(KeyError), use_backend("triton"):
        assert get_backend() == "triton"
        assert resolve_backend("auto", torch.randn(1, 1), torch.randn(1, 2)) == "triton"
        raise KeyError("boom")
    assert get_backend() == before


def test_set_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match="must be one of 'auto', 'triton', 'torch'; got 'gpu'"):
        set_backend("gpu")


def test_explicit_argument_beats_the_default():
    x, h = torch.randn(2, 3), torch.randn(2, 6)
    with use_backend("triton"):
        assert resolve_backend("torch", x, h) == "torch"


def test_auto_checks_the_kernels_once_per_device_and_dtype_and_falls_back(monkeypatch):
    checked = []

    def fake_check(device, dtype, h_dtype):
        checked.append(dtype)
        return "the forward kernel raised RuntimeError: boom" if dtype == torch.bfloat16 else None

    monkeypatch.setattr(backend, "check_triton_kernels", fake_check)
    monkeypatch.setattr(backend, "_self_checked", {})
    monkeypatch.setattr(backend, "_TRITON_INSTALLED", True)
    fp32, bf16 = cuda_like(torch.float32), cuda_like(torch.bfloat16)
    assert [resolve_backend("auto", fp32, fp32) for _ in range(3)] == ["triton"] * 3
    with pytest.warns(RuntimeWarning) as caught:
        assert resolve_backend("auto", bf16, bf16) == "torch"
    message = str(caught[0].message)
    assert "self-check on cpu for torch.bfloat16: the forward kernel raised RuntimeError: boom" in message
    assert "now uses the PyTorch reference" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: no second warning
        assert resolve_backend("auto", bf16, bf16) == "torch"
        assert resolve_backend("auto", fp32, fp32) == "triton"
    assert checked == [torch.float32, torch.bfloat16]
    # Forcing the kernels skips the check: a broken kernel then fails loudly where it runs.
    assert resolve_backend("triton", bf16, bf16) == "triton"
    with use_backend("triton"):
        assert resolve_backend("auto", bf16, bf16) == "triton"
    assert checked == [torch.float32, torch.bfloat16]


def test_a_kernel_that_raises_sends_auto_to_the_reference(kernels, device, monkeypatch):
    # The real self-check, with the backward kernel failing as an unsupported GPU would make it.
    def broken(*args, **kwargs):
        raise RuntimeError("out of resources: shared memory")

    monkeypatch.setattr(kernels, "affine_backward", broken)
    monkeypatch.setattr(backend, "_self_checked", {})
    with pytest.warns(RuntimeWarning, match="the forward map's backward kernel raised RuntimeError: out of resources"):
        assert resolve_backend("auto", cuda_like(torch.float32), cuda_like(torch.float32)) == "torch"
    # backend="triton" keeps the kernels and their error.
    x = torch.randn(2, 3, 4, device=device, requires_grad=True)
    y, logdet = fused_affine(x, torch.randn(2, 6, 4, device=device), backend="triton")
    with pytest.raises(RuntimeError, match="out of resources"):
        (y.sum() + logdet.sum()).backward()


def run_fresh(code: str, **env: str) -> subprocess.CompletedProcess:
    hidden = ("TRITON_INTERPRET", "FLOWKIT_KERNEL_BACKEND")
    environment = {k: v for k, v in os.environ.items() if k not in hidden}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment,
                          capture_output=True, text=True, timeout=120)


def test_environment_variable_and_compiled_kernels_on_cpu():
    # A fresh interpreter: the variable is read at import, and without TRITON_INTERPRET the kernels
    # are compiled ones, which must refuse CPU tensors with an error that says what to do.
    done = run_fresh(
        """
        import torch
        from flowkit.kernels import fused_affine, get_backend
        print(get_backend())
        x, h = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
        try:
            fused_affine(x, h)
        except RuntimeError as error:
            print(error)
        """,
        FLOWKIT_KERNEL_BACKEND="triton",
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "triton"
    assert "run on CUDA tensors, or on CPU tensors when TRITON_INTERPRET=1" in lines[1]
    assert "use backend='torch'" in lines[1]

    bad = run_fresh("import flowkit", FLOWKIT_KERNEL_BACKEND="cuda")
    assert bad.returncode != 0
    assert "FLOWKIT_KERNEL_BACKEND must be one of 'auto', 'triton', 'torch'; got 'cuda'" in bad.stderr


def test_flowkit_imports_without_triton():
    # Hiding the package: flowkit still imports, "auto" picks the reference, "triton" says what is missing.
    done = run_fresh(
        """
        import sys
        sys.modules["triton"] = None
        import importlib.util
        _find = importlib.util.find_spec
        importlib.util.find_spec = lambda name, *a: None if name == "triton" else _find(name, *a)
        import torch
        from flowkit.kernels import fused_affine
        from flowkit.layers import AffineCoupling
        x = torch.randn(2, 4, 3, 3)
        print(AffineCoupling(4)(x)[0].shape)
        try:
            fused_affine(x[:, :2], torch.randn(2, 4, 3, 3), backend="triton")
        except RuntimeError as error:
            print(error)
        """
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "torch.Size([2, 4, 3, 3])"
    assert "needs the triton package, which is not installed" in lines[1]
