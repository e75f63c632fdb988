"""Int16-weight convolutions inside the int8 M1 (model/wide.py): the PyTorch module and the
board runtime compute the same exact integers and the same codes."""

import numpy as np
import pytest
import torch

from temposplit.model import numpy_m1 as nm
from temposplit.model.export import _Builder
from temposplit.model.wide import WEIGHT_QMAX, WideConv2d, round_wide, wide_grid, wide_params

pytestmark = [pytest.mark.models, pytest.mark.filterwarnings("ignore:torch.quantize_per:UserWarning")]


def _reference(codes, zp, w16, bias32, requant, stride, pad, out_zp, qmin):
    """The documented arithmetic in int64 and float32, one channel at a time."""
    x = np.pad(codes.astype(np.int64) - zp, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, w = x.shape
    ho, wo = (h - 3) // stride + 1, (w - 3) // stride + 1
    acc = np.zeros((n, c, ho, wo), np.int64)
    for i in range(3):
        for j in range(3):
            view = x[:, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            acc += view * w16[:, 0, i, j].astype(np.int64).reshape(1, -1, 1, 1)
    acc += bias32.astype(np.int64).reshape(1, -1, 1, 1)
    y = acc.astype(np.float32) * requant.reshape(1, -1, 1, 1)
    return np.clip(np.rint(y) + out_zp, qmin, 255).astype(np.uint8)


class _Converted:
    """What WideConv2d.from_float reads of the int8 module it replaces."""

    def __init__(self, stride, padding, groups, scale, zero_point):
        self.stride, self.padding, self.groups = (stride, stride), (padding, padding), groups
        self.scale, self.zero_point = scale, zero_point


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 0)])
def test_wide_depthwise_equals_the_integer_reference_and_the_board_runtime(stride, pad):
    g = torch.Generator().manual_seed(stride)
    c = 16
    # BatchNorm-folded depthwise kernels: taps spanning orders of magnitude within a channel
    w = torch.randn(c, 1, 3, 3, generator=g) * torch.logspace(-3, 1, 9).reshape(1, 1, 3, 3)
    w[0, 0, 0, 0] = 40.0  # one channel's range set by a single large tap
    bias = torch.randn(c, generator=g)
    mod = WideConv2d.from_float(w, bias, _Converted(stride, pad, c, 0.05, 0))
    assert mod.weight_codes.dtype == torch.int16 and int(mod.weight_codes.abs().max()) == WEIGHT_QMAX
    x = torch.rand(2, c, 13, 11, generator=g) * 5 - 1
    in_scale, in_zp = 6 / 255, 43
    qx = torch.quantize_per_tensor(x, in_scale, in_zp, torch.quint8)
    out = mod(qx)
    assert out.dtype == torch.quint8 and out.q_scale() == 0.05 and out.q_zero_point() == 0

    bias32, requant = mod.params(in_scale)
    codes = qx.int_repr().numpy()
    ref = _reference(codes, in_zp, mod.weight_codes.numpy(), bias32, requant, stride, pad, 0, 0)
    assert np.array_equal(out.int_repr().numpy(), ref)
    # channels-last input (what qnnpack's convolutions return) gives the same codes
    cl = torch.quantize_per_tensor(x.contiguous(memory_format=torch.channels_last), in_scale, in_zp, torch.quint8)
    assert np.array_equal(mod(cl).int_repr().numpy(), ref)

    b = _Builder()
    src = b.quantize("q", in_scale, in_zp)
    b.conv("dw", src, mod)
    assert b.arrays["dw.weight"].dtype == np.int16
    graph = {"format": nm.FORMAT, "version": nm.VERSION, "outputs": ["dw"], "output_names": ["dw"], "nodes": b.nodes}
    runtime = nm.NumpyM1(graph, b.arrays)
    assert runtime._ops["dw"].dw.split  # int16 taps: two exact float32 halves
    (got,) = runtime.run(x.numpy())
    assert np.array_equal(got.codes, ref)


def test_int16_grid_is_finer_than_int8():
    from temposplit.model.ptq import round_weights

    g = torch.Generator().manual_seed(3)
    w = torch.randn(32, 1, 3, 3, generator=g) * torch.logspace(-2, 1, 9).reshape(1, 1, 3, 3)
    err16 = (round_wide(w) - w).abs().max(dim=-1).values.max(dim=-1).values.flatten()
    err8 = (round_weights(w) - w).abs().max(dim=-1).values.max(dim=-1).values.flatten()
    assert torch.all(err16 <= wide_grid(w).flatten() / 2 + 1e-9)
    assert torch.all(err16 * 200 < err8)


def test_bias_out_of_int32_is_refused():
    with pytest.raises(ValueError):
        wide_params(np.array([1e-9], np.float32), np.array([100.0], np.float32), 1e-3, 0.1)


def test_a_non_quantized_input_is_refused():
    mod = WideConv2d.from_float(torch.ones(4, 1, 3, 3), None, _Converted(1, 1, 4, 0.1, 0))
    with pytest.raises(TypeError):
        mod(torch.zeros(1, 4, 5, 5))
