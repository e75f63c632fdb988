"""The SSD's input resize (TensorFlow 1's ResizeBilinear, ``numpy_m1.resize_bilinear_tf1``,
which the PyTorch port imports too): the same result as the whole-frame definition, bit
for bit, with memory that does not grow with the frame (the board has 512 MB): the four
source pixels of each output are picked as uint8, then taken to float32."""

import tracemalloc

import numpy as np
import pytest

from temposplit.model.numpy_m1 import resize_bilinear_tf1


def whole_frame(image, size):
    """The definition: the whole frame as float32, then the four samples of each output."""
    in_h, in_w = image.shape[:2]
    out_h, out_w = size
    img = image.astype(np.float32)
    sy = np.arange(out_h, dtype=np.float32) * np.float32(in_h / out_h)
    sx = np.arange(out_w, dtype=np.float32) * np.float32(in_w / out_w)
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, in_h - 1), np.minimum(x0 + 1, in_w - 1)
    dy = (sy - y0).astype(np.float32)[:, None, None]
    dx = (sx - x0).astype(np.float32)[None, :, None]
    top = img[y0][:, x0] + (img[y0][:, x1] - img[y0][:, x0]) * dx
    bottom = img[y1][:, x0] + (img[y1][:, x1] - img[y1][:, x0]) * dx
    return (top + (bottom - top) * dy).astype(np.float32)


@pytest.mark.parametrize(
    "shape", [(1, 1, 3), (2, 3, 3), (7, 5, 3), (300, 300, 3), (301, 299, 3), (576, 768, 3), (5, 5000, 3), (100, 200, 1)]
)
@pytest.mark.parametrize("size", [(300, 300), (320, 320), (33, 17)])
def test_the_resize_equals_its_whole_frame_definition(shape, size):
    image = np.random.default_rng(sum(shape) + size[0]).integers(0, 256, shape, dtype=np.uint8)
    out = resize_bilinear_tf1(image, size)
    assert out.dtype == np.float32 and np.array_equal(out, whole_frame(image, size))


def test_a_non_contiguous_bgr_view_is_resized_as_its_copy():
    view = np.random.default_rng(1).integers(0, 256, (301, 2 * 299, 3), dtype=np.uint8)[:, ::2, ::-1]
    assert np.array_equal(resize_bilinear_tf1(view, (300, 300)), whole_frame(np.ascontiguousarray(view), (300, 300)))


@pytest.mark.parametrize("shape", [(2160, 3840, 3), (4, 65536, 3)], ids=["4k", "4x65536"])
def test_a_frame_is_resized_in_memory_that_does_not_grow_with_it(shape):
    """The whole frame as float32 (and its 300-row gathers) peaked at 118 MB for 3840 x 2160;
    two float32 rows per output row at 33 MB, and 531 MB for a 4 x 65536 frame (0.8 MB),
    more than the board has. The four source pixels of each output, picked first: 8.7 MB."""
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    tracemalloc.start()
    try:
        out = resize_bilinear_tf1(image, (300, 300))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16e6, f"{peak / 1e6:.1f} MB"
    assert np.array_equal(out, whole_frame(image, (300, 300)))
