"""The board (32-bit ARM) has no numba: the codec must run, bit for bit, as plain Python."""

import subprocess
import sys
import textwrap

import numpy as np

from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
from temposplit.codec.synthetic import correlated_clip

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["numba"] = None  # import numba fails, as on the board
    import numpy as np
    from temposplit.codec.encoder import CodecConfig, Encoder, ResidualConfig, TensorSpec
    from temposplit.codec.decoder import decode_stream
    from temposplit.codec.synthetic import correlated_clip

    frames = correlated_clip(np.random.default_rng(3), 5, (8, 9, 10))
    res = ResidualConfig(threshold=0.2)
    held = ResidualConfig(threshold=0.2, hysteresis=3)
    for coder, residual in (("huffman", None), ("zrl", res), ("ctx", res), ("ctx", held)):
        enc = Encoder(CodecConfig([TensorSpec("x", (8, 9, 10), 0.1, 4, 4)], structure="bi-5", coder=coder,
                                  residual=residual))
        data = enc.header_bytes() + b"".join(p.to_bytes() for f in frames for p in enc.push([f]))
        data += b"".join(p.to_bytes() for p in enc.flush())
        assert len(decode_stream(data)[1]) == 5
        sys.stdout.write(data.hex() + "\\n")
    """
)


def test_the_codec_runs_without_numba_and_writes_the_same_bytes():
    """The NumPy passes (requantization, the residual decision, hysteresis) and the Python
    kernels write what the compiled ones write."""
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    streams = run.stdout.split()
    frames = correlated_clip(np.random.default_rng(3), 5, (8, 9, 10))
    for got, (coder, residual) in zip(
        streams,
        (
            ("huffman", None),
            ("zrl", ResidualConfig(threshold=0.2)),
            ("ctx", ResidualConfig(threshold=0.2)),
            ("ctx", ResidualConfig(threshold=0.2, hysteresis=3)),
        ),
        strict=True,
    ):
        enc = Encoder(
            CodecConfig([TensorSpec("x", (8, 9, 10), 0.1, 4, 4)], structure="bi-5", coder=coder, residual=residual)
        )
        data = enc.header_bytes() + b"".join(p.to_bytes() for f in frames for p in enc.push([f]))
        data += b"".join(p.to_bytes() for p in enc.flush())
        assert bytes.fromhex(got) == data
