"""The Python API as the docs present it, used as a library by a programmer.

Every fenced ```python block of README.md and docs/*.md is listed in ``SNIPPETS`` (by its
document and first line) and run as written, in a temporary folder, with real data; the
names a block leaves to its reader (``frames``, ``s8``, ``x``: what its comments describe)
are given by its context here. A block that needs the board (the PYNQ driver) has its calls
checked against the driver's signatures instead. A new block fails
``test_every_python_block_of_the_docs_is_listed`` until it is listed with its context.

The rest of the file holds what a programmer met beyond the snippets: mistakes that were a
raw TypeError, AttributeError or IndexError deep inside (or, for one frame passed alone to
the detector, an allocation of tens of gigabytes) and are now the project's typed errors at
the boundary (``ConfigError``; the codec's ``ConfigurationError``; the board's NumPy M1,
which imports nothing of ours, ``ValueError``).
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from temposplit.codec import features
from temposplit.codec.decoder import Decoder, decode_stream
from temposplit.codec.encoder import CodecConfig, Encoder, TensorSpec
from temposplit.codec.errors import ConfigurationError
from temposplit.errors import ConfigError
from temposplit.model import data

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FEATURES_13 = ROOT / "tests" / "fixtures" / "features" / "ssd-features.13.npz"
FENCE = re.compile(r"^(`{3,}|~{3,})\s*python\s*$")


def python_blocks() -> dict[tuple[str, str], str]:
    """(document, first line) -> the block's text, for every fenced ```python block."""
    blocks = {}
    for path in DOCS:
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            opened = FENCE.match(lines[i])
            i += 1
            if not opened:
                continue
            body = []
            while i < len(lines) and lines[i].strip() != opened.group(1):
                body.append(lines[i])
                i += 1
            i += 1
            text = "\n".join(body) + "\n"
            blocks[(path.relative_to(ROOT).as_posix(), body[0].strip())] = text
    return blocks


def _real_features_13() -> tuple[list[np.ndarray], float, int]:
    """Three frames of real SSD codes at features.13 (vtest.avi, the feature fixture: 33 of its
    96 channels), widened to the (96, 19, 19) the snippet names by repeating channels."""
    z = np.load(FEATURES_13)
    codes = z["codes_0"]
    clip = [np.ascontiguousarray(np.concatenate([c, c, c[:30]])) for c in codes]
    return clip, float(z["scale_0"]), int(z["zero_point_0"])


def _codec_context():
    clip, s8, z8 = _real_features_13()
    return {"clip": clip, "s8": s8, "z8": z8}


def _jpeg_act_context():
    clip, s8, z8 = _real_features_13()
    return {"x": ((clip[0].astype(np.float32) - z8) * np.float32(s8))}


def _vtest_frames_context():
    return {"frames": list(data.read_video(data.vtest_path(), max_frames=2))}


def _numpy_m1_context():
    from temposplit.model import numpy_m1

    sys.modules.setdefault("numpy_m1", numpy_m1)  # the board's `import numpy_m1` (the file beside the script)
    return {**_vtest_frames_context(), "r50_weights": None}  # None: random weights (plumbing, no download)


RUN, DRIVER = "run", "driver"
MODELS, SLOW = pytest.mark.models, pytest.mark.slow

# (document, first line of the block) -> (how it is checked, its context, marks)
SNIPPETS = {
    ("docs/bitstream.md", "from temposplit.codec import bitstream"): (RUN, _codec_context, []),
    ("docs/baselines.md", "from temposplit.codec import jpeg_act"): (RUN, _jpeg_act_context, []),
    ("docs/baselines.md", "import numpy as np, torch"): (RUN, dict, [MODELS, SLOW]),
    ("docs/baselines.md", "from temposplit.evaluation.baselines import encode_h264"): (RUN, dict, [SLOW]),
    ("docs/models.md", "from temposplit.model import load_detector, cuts, default_cut"): (RUN, dict, [MODELS, SLOW]),
    ("docs/numpy-m1.md", "# on the machine with PyTorch (temposplit.model.export)"): (
        RUN,
        _numpy_m1_context,
        [MODELS, SLOW],
    ),
    ("docs/fabric.md", "from temposplit.hw.pynq_driver import open_overlay   # on the board (docs/pynq-z2.md)"): (
        DRIVER,
        None,
        [],
    ),
    ("docs/pynq-z2.md", "from temposplit.hw.pynq_driver import open_overlay"): (DRIVER, None, []),
}


def test_every_python_block_of_the_docs_is_listed():
    found = set(python_blocks())
    assert found - set(SNIPPETS) == set(), "a new ```python block: list it in SNIPPETS with what it needs"
    assert set(SNIPPETS) - found == set(), "a listed block is gone from the docs (or its first line changed)"


def _cases(how):
    chosen = [(key, marks) for key, (h, _, marks) in SNIPPETS.items() if h == how]
    return [pytest.param(key, marks=marks, id=f"{key[0]}:{key[1][:40]}") for key, marks in chosen]


@pytest.fixture
def in_a_fresh_folder(tmp_path, monkeypatch):
    """A snippet's files land in a temporary folder; `data/...` paths read the repository's data."""
    (tmp_path / "data").symlink_to(data.data_dir(), target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("key", _cases(RUN))
def test_a_documented_snippet_runs_as_written(key, in_a_fresh_folder):
    if not data.have_data():
        pytest.skip("data/ is absent: run `make data`")
    if MODELS in SNIPPETS[key][2]:
        pytest.importorskip("torch")
    text = python_blocks()[key]
    namespace = {"__name__": "__doc_snippet__", **SNIPPETS[key][1]()}
    exec(compile(text, f"{key[0]} ({key[1]})", "exec"), namespace)  # noqa: S102 - the docs' own code


# ---------------------------------------------------------------- the driver's calls, without a board


RESULTS = {  # an operation -> the fields of what it returns (ctx_records: one section, or S slices)
    "encode_anchor": ("EncodeResult",),
    "histogram": ("HistogramResult",),
    "ctx_records": ("CtxResult", "CtxSlicesResult"),
}


@pytest.mark.parametrize("key", _cases(DRIVER))
def test_the_documented_driver_calls_match_the_driver(key):
    """Each ``accel.op(...)`` of the block binds to that operation's signature, every keyword a
    named parameter (``help(accel.motion)`` showed ``*args, **kwargs``: the operations are
    generated), and the result fields the block reads exist."""
    from temposplit.hw import driver

    def fields(*ops):
        return {f for op in ops for name in RESULTS[op] for f in getattr(driver, name).__dataclass_fields__}

    tree = ast.parse(python_blocks()[key])
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    ops = [c for c in calls if isinstance(c.func.value, ast.Name) and c.func.value.id == "accel"]
    assert ops
    for call in ops:
        sig = inspect.signature(getattr(driver.Accelerator, call.func.attr))
        named = {p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        keywords = {k.arg for k in call.keywords}
        assert keywords <= named, (call.func.attr, sig)
        sig.bind(None, *call.args, **{k: None for k in keywords})
    results = {}  # a name bound to operations' results (`res` is reused) -> those operations
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            op = getattr(node.value.func, "attr", None)
            if op in RESULTS and isinstance(node.targets[0], ast.Name):
                results.setdefault(node.targets[0].id, set()).add(op)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call):  # accel.histogram(...).histogram
            op = getattr(node.value.func, "attr", None)
            if op in RESULTS:
                assert node.attr in fields(op), (op, node.attr)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in results:
            assert node.attr in fields(*results[node.value.id]), (node.value.id, node.attr)
    pynq_driver = ast.parse((ROOT / "hw" / "pynq_driver.py").read_text())  # imports pynq: read, not imported
    assert any(isinstance(n, ast.FunctionDef) and n.name == "open_overlay" for n in pynq_driver.body)


def test_the_driver_operations_show_their_own_arguments():
    from temposplit.hw.driver import Accelerator, AsyncAccelerator

    for cls in (Accelerator, AsyncAccelerator):
        sig = inspect.signature(cls.motion)
        assert list(sig.parameters)[1:] == ["cur", "z8", "n_bits", "zn_ref", "block", "search", "reference"]
        assert cls.motion.__qualname__ == f"{cls.__name__}.motion"
    assert inspect.iscoroutinefunction(AsyncAccelerator.motion)


# ---------------------------------------------------------------- the codec's calls


def _encoder() -> Encoder:
    clip, s8, z8 = _real_features_13()
    return Encoder(CodecConfig([TensorSpec("features.13", (96, 19, 19), s8, z8)], structure="uni-4"))


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda clip: None, "a frame is a list of uint8 arrays, one per tensor, not NoneType"),
        (lambda clip: (c for c in clip[:1]), "not generator"),
        (lambda clip: clip[0], "push([codes])"),  # the array itself, not a list of one
    ],
    ids=["None", "a generator", "one array"],
)
def test_a_frame_that_is_not_a_list_of_tensors_is_a_configuration_error(make, needle):
    """``push(None)`` was a TypeError; one (C, H, W) array was read as C tensors ('a frame has 1
    tensors, not 96'), as the API section's loop once showed it (``enc.push(frame)``)."""
    with pytest.raises(ConfigurationError, match=re.escape(needle)):
        _encoder().push(make(_real_features_13()[0]))


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda enc: Decoder(None), "Decoder takes a StreamHeader or a stream's bytes, not NoneType"),
        (lambda enc: Decoder(enc.header).decode(None), "decode takes a Packet"),
        (lambda enc: Decoder(enc.header).decode(enc.header_bytes()), "not bytes"),
        (lambda enc: decode_stream(None), "decode_stream takes the stream's bytes, not NoneType"),
        (lambda enc: decode_stream("stream.tsp"), "not str"),  # a file name where its bytes belong
    ],
    ids=["Decoder(None)", "decode(None)", "decode(bytes)", "decode_stream(None)", "decode_stream(a name)"],
)
def test_the_decoder_refuses_what_is_not_a_stream_or_a_packet(call, needle):
    """These were a TypeError or an AttributeError ('bytes' object has no attribute 'payload')."""
    with pytest.raises(ConfigurationError, match=re.escape(needle)):
        call(_encoder())


def test_features_load_and_save_refuse_what_is_no_feature_file(tmp_path):
    """``features.load(None)`` was an AttributeError ('seek'); ``save`` wrote codes without their
    frame axis, a file ``load`` (and ``temposplit encode``) then refused."""
    with pytest.raises(ConfigurationError, match="features.load takes a file name, not NoneType"):
        features.load(None)
    codes = _real_features_13()[0][0]  # one frame's (C, H, W): the (T, C, H, W) axis missing
    clip = features.FeatureClip(["features.13"], [codes], [0.1], [0], [None])
    with pytest.raises(ConfigurationError, match=re.escape("must be uint8 (T, C, H, W)")):
        features.save(str(tmp_path / "f.npz"), clip)
    assert not (tmp_path / "f.npz").exists()
    clip.codes = [codes[None]]
    features.save(str(tmp_path / "f.npz"), clip)
    assert np.array_equal(features.load(str(tmp_path / "f.npz")).codes[0], codes[None])


# ---------------------------------------------------------------- the frame baselines


def test_an_unknown_x264_preset_is_a_config_error(vtest_frames):
    """It was av's ArgumentError from the encoder's open (after x264 printed its own line)."""
    from temposplit.evaluation.baselines import encode_video

    with pytest.raises(ConfigError, match="unknown h264 preset 'fastest'"):
        encode_video(vtest_frames[:2], fps=10, preset="fastest")


# ---------------------------------------------------------------- the models API


def test_the_numpy_m1_refuses_one_frame_passed_alone(vtest_frames):
    """A frame (H, W, 3) where a list of frames belongs was read as H frames of its rows, each
    resized to a (300, 300, 300) float32 block: a vtest frame alone asked for 62 GB (the
    process was killed). A corner of a real frame keeps this test small without the check."""
    from temposplit.model import numpy_m1

    with pytest.raises(ValueError, match=re.escape("pass [frame] for one RGB frame")):
        numpy_m1.preprocess_ssd(vtest_frames[0][:1, :2])
    with pytest.raises(ValueError, match=re.escape("frame 0 must be an RGB uint8 array (H, W, 3), not float32")):
        numpy_m1.preprocess_ssd([vtest_frames[0].astype(np.float32)])


def test_a_pillow_image_is_a_frame_and_one_of_another_mode_is_named():
    """A Pillow image of mode RGB is read as NumPy reads it (it was refused as "not Image": it
    has ``__array_interface__``, not ``__array__``); another mode is refused, saying how to
    make it one."""
    from PIL import Image

    from temposplit.model import numpy_m1

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    (got,) = numpy_m1.check_frames([Image.fromarray(rgb)])
    assert isinstance(got, np.ndarray) and np.array_equal(got, rgb)
    assert np.array_equal(numpy_m1.preprocess_ssd([Image.fromarray(rgb)]), numpy_m1.preprocess_ssd([rgb]))
    with pytest.raises(ValueError, match=re.escape("not a RGBA image (image.convert('RGB') makes it one)")):
        numpy_m1.check_frames([Image.fromarray(rgb).convert("RGBA")])


@pytest.fixture(scope="module")
def ssd():
    pytest.importorskip("torch")
    from temposplit.model import load_detector

    return load_detector()


BAD_FRAMES = [  # (what a programmer passed, made from a real frame; what the error says)
    pytest.param(lambda f: f[:1, :2], "pass [frame] for one RGB frame", id="one frame alone"),
    pytest.param(lambda f: [f.astype(np.float32)], "not float32 (576, 768, 3)", id="float"),
    pytest.param(lambda f: [f[..., 0]], "not uint8 (576, 768)", id="grey"),
    pytest.param(lambda f: [np.dstack([f, f[..., :1]])], "not uint8 (576, 768, 4)", id="RGBA"),
    pytest.param(lambda f: [f[:0]], "not uint8 (0, 768, 3)", id="empty frame"),
    pytest.param(lambda f: [], "no frames", id="no frames"),
    pytest.param(lambda f: None, "not NoneType", id="None"),
]


@MODELS
@pytest.mark.parametrize("make, needle", BAD_FRAMES)
def test_the_detectors_preprocess_refuses_what_is_no_list_of_rgb_frames(ssd, vtest_frames, make, needle):
    """A float frame was taken as 0..255 values, a grey one became 300 channels (then a conv
    error), an empty one an IndexError, no frames numpy's 'need at least one array to stack';
    one frame alone, gigabytes (the NumPy M1's test above: the same resize)."""
    with pytest.raises(ConfigError, match=re.escape(needle)):
        ssd.preprocess(make(vtest_frames[0]))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        ssd.detect(make(vtest_frames[0]))


@MODELS
@pytest.mark.parametrize("make, needle", BAD_FRAMES[:3] + BAD_FRAMES[5:6])
def test_a_torchvision_detectors_preprocess_refuses_them_too(torchvision_detector, vtest_frames, make, needle):
    """A permute() RuntimeError, an IndexError, or (float frames) a silent result."""
    with pytest.raises(ConfigError, match=re.escape(needle)):
        torchvision_detector.preprocess(make(vtest_frames[0]))


@pytest.fixture(scope="module")
def torchvision_detector():
    pytest.importorskip("torchvision")
    from temposplit.model import load_detector

    return load_detector("fasterrcnn-mobilenet-v3-large-fpn")  # random weights: the input checks only


@MODELS
def test_the_halves_refuse_what_they_cannot_run(ssd, vtest_frames):
    """Each was a TypeError, AttributeError, RuntimeError or IndexError from inside torch."""
    torch = pytest.importorskip("torch")
    batch = ssd.preprocess(vtest_frames[:2])
    split = ssd.split("features.13")
    tensors = split.m1(batch)
    with pytest.raises(ConfigError, match=re.escape("expected a Batch (detector.preprocess(frames)), not list")):
        ssd.forward(vtest_frames[:2])
    with pytest.raises(ConfigError, match="m1 takes the network input, a float tensor .* not ndarray"):
        split.m1(vtest_frames[0])
    with pytest.raises(ConfigError, match=re.escape("not torch.uint8 (1, 3, 300, 300)")):
        split.m1(torch.zeros(1, 3, 300, 300, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="m2 takes the list of tensors m1 returns, not NoneType"):
        split.m2(None, batch.meta)
    with pytest.raises(ConfigError, match=re.escape("features.13: expected (N, 96, H, W)")):
        split.m2([t[:, :32] for t in tensors], batch.meta)
    with pytest.raises(ConfigError, match="the meta describes 1 frames, the tensors 2"):
        split.m2(tensors, ssd.preprocess(vtest_frames[:1]).meta)
    with pytest.raises(ConfigError, match="a cut is named by a string such as 'features.10', not int"):
        ssd.split(10)


@MODELS
def test_the_int8_halves_refuse_what_they_cannot_run(ssd):
    """QuantizedSplit.m2 dequantized before Split.m2 checked: TypeError, AttributeError."""
    from temposplit.model.quantize import QuantizedSplit

    qs = QuantizedSplit(ssd, ssd.get_cut("features.13"), ssd.net)  # m2 runs the float half
    for bad, name in ((None, "NoneType"), ([np.zeros((1, 96, 19, 19), np.float32)], "list")):
        with pytest.raises(ConfigError, match=f"m2 takes the list of tensors m1 returns, not {name}"):
            qs.m2(bad)


@MODELS
def test_quantize_m1_checks_its_frames_and_batch_size_before_it_calibrates(vtest_frames):
    """quantize_m1(det, cut, None) was a TypeError; batch_size 0 calibrated on every frame at once."""
    from temposplit.model import load_detector
    from temposplit.model.quantize import quantize_m1

    r50 = load_detector("fasterrcnn-resnet50-fpn", weights=None, min_size=64, max_size=64)
    with pytest.raises(ConfigError, match="no calibration frames"):
        quantize_m1(r50, "layer1", None)
    for size in (0, -1):
        with pytest.raises(ConfigError, match=f"batch_size must be a positive integer, not {size}"):
            quantize_m1(r50, "layer1", vtest_frames[:2], batch_size=size)


@MODELS
def test_cut_tensors_refuses_an_index_outside_the_batch_and_tensors_that_are_no_quint8(ssd, vtest_frames):
    torch = pytest.importorskip("torch")
    from temposplit.model.quantize import QuantizedSplit

    split = QuantizedSplit(ssd, ssd.get_cut("features.13"), ssd.net)  # cut_tensors reads only its names
    (t,) = ssd.split("features.13").m1(ssd.preprocess(vtest_frames[:2]))
    q8 = [torch.quantize_per_tensor(t, 0.15, 117, torch.quint8)]
    assert split.cut_tensors(q8, index=1)[0].shape == (96, 19, 19)
    with pytest.raises(ConfigError, match="frame index 2 is not one of the batch's 2 frames"):
        split.cut_tensors(q8, index=2)
    with pytest.raises(ConfigError, match="expected a per-tensor affine quint8 tensor, got ndarray"):
        split.cut_tensors([t.numpy()], index=0)
    with pytest.raises(ConfigError, match=re.escape("expected the list of m1's 1 tensors (features.13)")):
        split.cut_tensors(q8 * 2, index=0)


def _no_calibration(message):
    raise AssertionError(f"the calibration started ({message}): the frames were not checked first")


@MODELS
@pytest.mark.parametrize(
    "frames, kwargs, needle",
    [
        (None, {}, "no calibration frames: temposplit.model.calibration.calibration_frames()"),
        ("float", {}, "frame 0 must be an RGB uint8 array (H, W, 3), not float32"),
        ("vtest", {"batch_size": 0}, "batch_size must be a positive integer, not 0"),
    ],
    ids=["None", "float frames", "batch size 0"],
)
def test_quantize_checks_its_frames_before_it_calibrates(ssd, vtest_frames, frames, kwargs, needle):
    """``quantize(det, None)`` was a TypeError; float frames were calibrated on as if they were
    0..255; a batch size of 0 calibrated on every frame in one batch."""
    from temposplit.model.quantize import quantize

    frames = {"float": [vtest_frames[0].astype(np.float32)], "vtest": vtest_frames[:1]}.get(frames, frames)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        quantize(ssd, frames, log=_no_calibration, **kwargs)
