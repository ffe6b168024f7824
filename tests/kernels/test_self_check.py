"""The self-check of the Triton kernels: passes on working kernels, names what fails otherwise."""

from __future__ import annotations

import pytest
import torch

from flowkit.kernels.self_check import check_triton_kernels


@pytest.mark.parametrize(("dtype", "h_dtype"), [(torch.float32, None), (torch.bfloat16, None),
                                                (torch.float32, torch.bfloat16)], ids=str)
def test_working_kernels_pass(kernels, device, dtype, h_dtype):
    assert check_triton_kernels(device, dtype, h_dtype) is None


def test_an_exception_is_reported_with_the_failing_step(kernels, device, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("PTX .version 8.7 does not support .target sm_120")

    monkeypatch.setattr(kernels, "affine_forward", broken)
    assert check_triton_kernels(device, torch.float32) == (
        "the forward kernel raised RuntimeError: PTX .version 8.7 does not support .target sm_120"
    )


@pytest.mark.parametrize(("inverse", "wrong", "dtype", "expected"), [
    (True, 0, torch.bfloat16, "the inverse kernel's output is off by up to"),
    (False, 1, torch.bfloat16, "the forward kernel's log-det is off by up to"),
    (False, 0, torch.float32, "the forward kernel's output is off by up to"),
])
def test_a_wrong_forward_result_is_reported(kernels, device, monkeypatch, inverse, wrong, dtype, expected):
    # 3%: four units in the last place of bfloat16 at least (its spacing is 2**-8 to 2**-7 relative).
    forward = kernels.affine_forward

    def off(x, h, **options):
        result = list(forward(x, h, **options))
        if options["inverse"] == inverse:
            result[wrong] = result[wrong] * 1.03
        return tuple(result)

    monkeypatch.setattr(kernels, "affine_forward", off)
    assert (check_triton_kernels(device, dtype) or "").startswith(expected)


def test_a_wrong_gradient_is_reported(kernels, device, monkeypatch):
    backward = kernels.affine_backward

    def nan_dh(*args, **options):
        dx, dh = backward(*args, **options)
        return dx, dh.fill_(float("nan"))

    monkeypatch.setattr(kernels, "affine_backward", nan_dh)
    assert check_triton_kernels(device, torch.float32) == "the forward map's backward kernel's dh is off by up to inf (tolerance 1e-05)"
