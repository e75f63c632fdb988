import itertools

import numpy as np
import pytest

from temposplit.host.sources import open_source
from temposplit.model import data


@pytest.mark.parametrize("backend", ["av", "cv2"])
def test_both_readers_give_the_same_rgb_frames(backend):
    path = data.vtest_path()
    if not path.is_file():
        pytest.skip("data/vtest.avi is not fetched (run `make data`)")
    src = open_source(str(path), backend)
    assert src.fps == pytest.approx(10.0) and src.count == 795
    frames = list(itertools.islice(src.frames(), 3))
    ref = list(itertools.islice(data.read_video(path), 3))
    for a, b in zip(frames, ref, strict=True):
        assert a.shape == (576, 768, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0  # decoders may differ by rounding
