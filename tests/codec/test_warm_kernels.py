"""``warm_kernels`` (what `make demo` runs before its clock, docs/testing.md): after it, coding
a clip with the same settings compiles no kernel signature that it did not, so the demo's
stage times hold no compilation (a fresh machine's first demo averaged 94 ms an encode)."""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    from numba.core.registry import CPUDispatcher
    from temposplit.codec import _kernels, ctx
    from temposplit.codec.bench import warm_kernels
    from temposplit.codec.decoder import Decoder
    from temposplit.codec.encoder import PRESETS, CodecConfig, Encoder, TensorSpec
    from temposplit.codec.synthetic import correlated_clip
    import importlib, pkgutil, temposplit.codec as codec_pkg

    def compiled():
        out = {}
        for info in pkgutil.iter_modules(codec_pkg.__path__):
            module = importlib.import_module(f"temposplit.codec.{info.name}")
            for name, value in vars(module).items():
                if isinstance(value, CPUDispatcher):
                    out[f"{info.name}.{name}"] = sorted(str(s) for s in value.signatures)
        return out

    codec = {**PRESETS["recommended"], "fps": 10.0}
    warm_kernels(codec)
    warmed = compiled()
    enc = Encoder(CodecConfig([TensorSpec("m", (16, 12, 20), 0.02, 3, 4)], **codec))
    enc.set_total_frames(20)
    packets = []
    for f in correlated_clip(np.random.default_rng(5), 20, (16, 12, 20), dx=1):
        packets += enc.push([f])
    packets += enc.flush()
    dec = Decoder(enc.header_bytes())
    for p in packets:
        dec.decode(p)
    after = compiled()
    print(json.dumps({"warmed": warmed, "after": after}))
    """
)


def test_after_warm_kernels_a_clip_of_the_same_settings_compiles_nothing_new():
    import json

    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    warmed, after = result["warmed"], result["after"]
    assert any(warmed.values()), "warm_kernels compiled nothing"
    new = {k: sorted(set(v) - set(warmed.get(k, []))) for k, v in after.items() if set(v) - set(warmed.get(k, []))}
    assert not new, f"kernels first compiled after the warm-up: {new}"
