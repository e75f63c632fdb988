"""Convolutions with int16 weights inside the int8 M1: exact integer arithmetic, quint8 in and out.

MobileNetV2's depthwise convolutions have nine taps per output channel, and with the
BatchNorm folded in a channel's taps differ by orders of magnitude: one int8 scale per
channel (``max |w| / 127.5``) leaves the small taps a few steps, or none (the sensitivity
study, docs/models.md: in ``features.1``'s depthwise 11 % of the taps lie within 2 steps
of zero, and their rounding alone costs more mAP than every other layer's together).
Equalization cannot help: it rescales whole channels, not taps within one.

:class:`WideConv2d` keeps such a convolution's weights at 16 bits (per-channel symmetric,
``max |w| / 32767``) and everything else as the int8 network has it: quint8 per-tensor
input and output with the calibrated scales, an int32 bias, qnnpack's fp32
requantization. The arithmetic, written once here and in the board runtime
(``model/numpy_m1.py``, docs/numpy-m1.md, "File format", int16 weights):

    acc = sum_taps (x - x_zp) * w16 + bias32              (exact integers, |acc| < 2**53)
    y   = clamp(rint(float32(acc) * requant_scale[o]) + y_zp, qmin, qmax)

``float32(acc)`` is the one rounding of the exact integer to float32 (nearest, ties to
even), ``requant_scale = (w_scale * x_scale) * (1 / y_scale)`` each step in float32 (as
qnnpack's), ``rint`` rounds half to even; padding holds ``x_zp`` (value 0). PyTorch has
no int16-weight kernel, so the depthwise sums run as int32 multiply-adds over the taps'
strided views (|acc| < 9 * 255 * 32767 + |bias| < 2**31, checked; otherwise a float64
convolution, exact below 2**53), and the NumPy runtime's (float64 BLAS) give the same
integers: the two M1s stay equal code for code (tested).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WEIGHT_QMAX = 32767  # symmetric int16 codes -32767..32767


def wide_grid(w: torch.Tensor) -> torch.Tensor:
    """The per-channel scale of int16 weights, ``max |w| / 32767`` (O, 1, 1, 1), float32."""
    amax = w.detach().abs().flatten(1).amax(1).clamp(min=1e-12)
    return (amax / WEIGHT_QMAX).to(torch.float32).reshape(-1, 1, 1, 1)


def round_wide(w: torch.Tensor) -> torch.Tensor:
    """Round to nearest on the int16 grid, in float32 as :meth:`WideConv2d.from_float`
    rounds the float32 weights (what the weights become); returned in ``w``'s dtype."""
    w32 = w.float()
    s = wide_grid(w32)
    return (torch.clamp(torch.round(w32 / s), -WEIGHT_QMAX, WEIGHT_QMAX) * s).to(w.dtype)


def wide_params(weight_scale: np.ndarray, bias: np.ndarray, in_scale: float, out_scale: float):
    """The int32 bias and float32 requantization scale of an int16-weight convolution for an
    input scale: ``bias32 = rint(bias / (float64(w_scale) * in_scale))`` (half to even, as
    qnnpack's QuantizeBias), ``requant = (w_scale * in_scale) * (1 / out_scale)`` in float32."""
    ws = np.asarray(weight_scale, np.float32)
    b = np.rint(np.asarray(bias, np.float32).astype(np.float64) / (ws.astype(np.float64) * float(in_scale)))
    if np.abs(b).max(initial=0) >= 2**31:
        raise ValueError("int16-weight convolution: bias out of the int32 range")
    requant = (ws * np.float32(in_scale)) * (np.float32(1.0) / np.float32(out_scale))
    return b.astype(np.int32), requant.astype(np.float32)


class WideConv2d(nn.Module):
    """A convolution with int16 per-channel weights between quint8 tensors (module docstring).

    Built by :meth:`from_float` from the float convolution (BatchNorm folded in) and the
    converted int8 module it replaces (which holds the calibrated output scale and zero
    point, the stride, padding, groups and whether a ReLU is fused).
    """

    def __init__(self, codes, weight_scale, bias, stride, padding, groups, out_scale, out_zp, relu):
        super().__init__()
        codes = torch.as_tensor(codes, dtype=torch.int16)
        self.register_buffer("weight_codes", codes)
        self.register_buffer("weight_scale", torch.as_tensor(weight_scale, dtype=torch.float32))
        self.register_buffer("bias_float", torch.as_tensor(bias, dtype=torch.float32))
        self.stride = tuple(int(s) for s in stride)
        self.padding = tuple(int(p) for p in padding)
        self.groups = int(groups)
        self.out_channels, _, kh, kw = codes.shape
        self.kernel_size = (int(kh), int(kw))
        self.in_channels = int(codes.shape[1]) * self.groups
        self.scale = float(out_scale)
        self.zero_point = int(out_zp)
        self.relu = bool(relu)
        self.qmin = self.zero_point if self.relu else 0  # a fused ReLU clamps at the zero point
        self.qmax = 255  # the ReLU6's calibrated range ends at 6: saturating at code 255
        self._w64 = codes.to(torch.float64)
        self._cache: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None, qconv: nn.Module) -> WideConv2d:
        from torch.ao.nn.intrinsic.quantized import ConvReLU2d

        w = weight.detach().to(torch.float32)
        s = wide_grid(w)
        codes = torch.clamp(torch.round(w / s), -WEIGHT_QMAX, WEIGHT_QMAX).to(torch.int16)
        b = torch.zeros(w.shape[0]) if bias is None else bias.detach().to(torch.float32)
        return cls(
            codes,
            s.flatten(),
            b,
            qconv.stride,
            qconv.padding,
            qconv.groups,
            qconv.scale,
            qconv.zero_point,
            isinstance(qconv, ConvReLU2d),
        )

    def params(self, in_scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(int32 bias, float32 requantization scale) for an input scale (:func:`wide_params`)."""
        return wide_params(self.weight_scale.numpy(), self.bias_float.numpy(), in_scale, self.scale)

    def _torch_params(self, in_scale: float):
        if in_scale not in self._cache:
            bias, requant = self.params(in_scale)
            # int32 arithmetic when no sum can leave it (always, for 3x3 depthwise int16 weights)
            bound = self._w64.abs().flatten(1).sum(1).numpy() * 255 + np.abs(bias.astype(np.float64))
            dtype = torch.int32 if bound.max(initial=0) < 2**31 else torch.float64
            self._cache[in_scale] = (
                torch.from_numpy(bias.astype(np.int64)).to(dtype).reshape(1, -1, 1, 1),
                torch.from_numpy(requant).reshape(1, -1, 1, 1),
            )
        return self._cache[in_scale]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_quantized or x.dtype != torch.quint8:
            raise TypeError(f"WideConv2d takes a quint8 tensor, got {x.dtype}")
        bias, requant = self._torch_params(float(x.q_scale()))
        # NCHW for the strided tap views (qnnpack's tensors are channels-last: 6x slower)
        xc = x.int_repr().contiguous().to(bias.dtype) - int(x.q_zero_point())
        if any(self.padding):
            ph, pw = self.padding
            xc = F.pad(xc, (pw, pw, ph, ph))  # the zero point, value 0
        acc = self._sums(xc)
        acc += bias
        y = acc.to(torch.float32) * requant  # the exact integer rounded once to float32
        y = torch.clamp(torch.round(y) + float(self.zero_point), self.qmin, self.qmax)
        return torch._make_per_tensor_quantized_tensor(y.to(torch.uint8), self.scale, self.zero_point)

    def _sums(self, xc: torch.Tensor) -> torch.Tensor:
        """The exact integer sums, in ``xc``'s dtype (int32, or float64 holding integers).
        Depthwise: one multiply-add per tap over strided views in int32 (PyTorch's grouped
        float64 convolution is ~50x slower here); otherwise a float64 convolution."""
        kh, kw = self.kernel_size
        if self.groups == 1 or self.groups != self.out_channels or self.in_channels != self.groups:
            return F.conv2d(xc.to(torch.float64), self._w64, None, self.stride, 0, 1, self.groups).to(xc.dtype)
        sh, sw = self.stride
        ho = (xc.shape[2] - kh) // sh + 1
        wo = (xc.shape[3] - kw) // sw + 1
        w = self._w64.to(xc.dtype)
        acc = None
        for i in range(kh):
            for j in range(kw):
                view = xc[:, :, i : i + sh * (ho - 1) + 1 : sh, j : j + sw * (wo - 1) + 1 : sw]
                tap = w[:, 0, i, j].reshape(1, -1, 1, 1)
                acc = view * tap if acc is None else acc.addcmul_(view, tap)
        return acc

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._w64 = self.weight_codes.to(torch.float64)
        self._cache = {}

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"groups={self.groups}, weights=int16, scale={self.scale}, zero_point={self.zero_point}, relu={self.relu}"
        )


def depthwise_names(net: nn.Module, scope: str) -> list[str]:
    """The backbone's depthwise convolutions that get int16 weights: ``first`` =
    ``features.1.depthwise``; ``all`` = every block's depthwise up to ``features.18``."""
    from temposplit.model.ptq import backbone_convs

    names = [name for name, mod in backbone_convs(net) if name.endswith(".depthwise")]
    if scope == "first":
        return names[:1]
    if scope == "all":
        return names
    raise ValueError(f"unknown int16 scope {scope!r}")


__all__ = ["WEIGHT_QMAX", "WideConv2d", "depthwise_names", "round_wide", "wide_grid", "wide_params"]
