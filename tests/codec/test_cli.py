import json

import numpy as np
import pytest

from temposplit.cli import main
from temposplit.codec import features, quantize
from temposplit.codec.synthetic import correlated_clip


@pytest.fixture
def feature_file(tmp_path):
    rng = np.random.default_rng(0)
    a = np.stack(correlated_clip(rng, 7, (16, 19, 19)))
    b = np.stack(correlated_clip(rng, 7, (8, 10, 10)))
    path = tmp_path / "f.npz"
    features.save(str(path), features.FeatureClip(["features.13", "x"], [a, b], [0.1, 0.2], [0, 3], [4, None]))
    return path, [a, b]


@pytest.mark.parametrize(
    "options, anchors",
    [
        ([], [0]),  # the recommended preset: uni-8
        (["--preset", "thesis"], [1, 4]),  # bi-3
        (["--coder", "zrl", "--residual", "rd", "--structure", "uni-4", "-n", "6"], [0, 4]),
    ],
)
def test_encode_then_decode_gives_the_codes_back(tmp_path, feature_file, capsys, options, anchors):
    path, clips = feature_file
    assert main(["encode", str(path), str(tmp_path / "s.tsp"), *options]) == 0
    assert "bits per element" in capsys.readouterr().out
    assert main(["decode", str(tmp_path / "s.tsp"), str(tmp_path / "d.npz")]) == 0
    out = features.load(str(tmp_path / "d.npz"))
    assert out.names == ["features.13", "x"]
    # Each tensor keeps its own scale and zero point (the fixture's 0.1/0 and 0.2/3), as the
    # header's float32 carries them.
    scales, zero_points = [float(np.float32(s)) for s in (0.1, 0.2)], [0, 3]
    assert out.scales == scales and out.zero_points == zero_points
    with np.load(tmp_path / "d.npz") as npz:
        assert list(npz["index"]) == list(range(7))
        n_bits = [int(n) for n in npz["n_bits"]]
        for codes, clip, name, s, z in zip(out.codes, clips, out.names, scales, zero_points, strict=True):
            assert codes.shape == clip.shape
            for t in anchors:
                assert (codes[t] == quantize.requantize(clip[t], z, n_bits[t])).all(), (name, t)
            values = npz[f"values/{name}"]
            assert values.dtype == np.float32
            want = np.stack([quantize.dequantize(c, s, z, n) for c, n in zip(codes, n_bits, strict=True)])
            assert (values == want).all(), name


def test_encode_stats_split_the_bytes_by_kind_of_frame_and_tensor(tmp_path, feature_file, capsys):
    path, _ = feature_file
    out = tmp_path / "s.tsp"
    assert main(["encode", str(path), str(out), "--structure", "uni-4", "--stats"]) == 0
    lines = capsys.readouterr().out.splitlines()
    total = int(lines[0].split(" bytes ")[0].split()[-1])
    kinds = {line.split(":")[0].strip(): line for line in lines[1:]}
    assert sorted(kinds) == ["anchor", "key", "pred"]  # frames 0 (KEY) and 4 anchors, the rest predicted
    counts = {k: int(v.split(": ")[1].split()[0]) for k, v in kinds.items()}
    assert counts == {"key": 1, "anchor": 1, "pred": 5}
    summed = sum(int(v.split(" frames, ")[1].split()[0]) for v in kinds.values())
    assert summed == total  # every packet's bytes in exactly one kind
    assert all("features.13 " in v and ", x " in v for v in kinds.values())


def test_the_encode_summary_says_its_bytes_leave_the_header_out(tmp_path, capsys):
    """One frame: "639 bytes" of a 725-byte file. The summary counts the packets (what its
    per-frame and MB/s figures are) and now gives the header's bytes beside them."""
    path, out = tmp_path / "f.npz", tmp_path / "s.tsp"
    codes = np.stack(correlated_clip(np.random.default_rng(0), 1, (8, 10, 10)))
    features.save(str(path), features.FeatureClip(["x"], [codes], [0.1], [0], [4]))
    assert main(["encode", str(path), str(out)]) == 0
    line = capsys.readouterr().out.strip()
    packets = int(line.split(" bytes of packets (+")[0].split()[-1])
    header = int(line.split(" bytes of packets (+")[1].split(" header;")[0])
    assert packets + header == out.stat().st_size and packets < out.stat().st_size, line


def test_bench_codec_codes_the_ctx_slices_of_a_row_on_one_thread(monkeypatch):
    """The bench says "one core", but a tensor of 2^19 elements or more is coded in slices
    on a thread pool as wide as the process's cores. A row now codes them in turn."""
    import os
    import threading

    from temposplit.codec import bench, ctx

    if not ctx.COMPILED:
        pytest.skip("without numba the slices run in turn anyway")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    each, calls = ctx._each, []

    def spy(fn, items):
        def where(item):
            calls.append((len(items), threading.current_thread().name))
            return fn(item)

        return each(where, items)

    monkeypatch.setattr(ctx, "_each", spy)
    bench.bench_shape((2048, 16, 16), 4, frames=1, setting="recommended-ctx")  # 2^19 elements: 2 slices
    assert any(n >= 2 for n, _ in calls), calls
    assert {name for _, name in calls} == {"MainThread"}, calls
    assert ctx.SLICE_THREADS is None  # (as it was, after the row)


def test_options_keep_the_presets_residual_threshold_unless_given():
    """--residual-threshold overrides the preset's threshold only when it is given."""
    import argparse

    from temposplit.codec.cli import add_codec_options, config_from_args
    from temposplit.codec.encoder import PRESETS, TensorSpec

    parser = argparse.ArgumentParser()
    add_codec_options(parser)
    tensors = [TensorSpec("t", (4, 5, 5), 0.1, 3)]
    cfg = config_from_args(parser.parse_args([]), tensors)
    assert cfg.residual.threshold == PRESETS["recommended"]["residual"].threshold
    assert cfg.n_bits == PRESETS["recommended"]["n_bits"]
    assert config_from_args(parser.parse_args(["--residual-threshold", "2.5"]), tensors).residual.threshold == 2.5
    thesis = config_from_args(parser.parse_args(["--preset", "thesis", "--residual", "threshold"]), tensors)
    assert thesis.residual.threshold == 1.5


def test_refine_vectors_flag_reaches_the_residual_config_and_keeps_the_reconstruction(tmp_path, feature_file):
    import argparse
    from dataclasses import replace

    from temposplit.codec.cli import add_codec_options, config_from_args
    from temposplit.codec.encoder import PRESETS, TensorSpec

    parser = argparse.ArgumentParser()
    add_codec_options(parser)
    tensors = [TensorSpec("t", (4, 5, 5), 0.1, 3)]
    assert config_from_args(parser.parse_args([]), tensors).residual.refine_vectors is False
    assert config_from_args(parser.parse_args(["--refine-vectors"]), tensors).residual.refine_vectors is True
    on = replace(PRESETS["recommended"]["residual"], refine_vectors=True)
    original = PRESETS["recommended"]["residual"]
    PRESETS["recommended"]["residual"] = on
    try:  # a preset that refines keeps refining when the threshold is given
        cfg = config_from_args(parser.parse_args(["--residual-threshold", "2"]), tensors)
        assert cfg.residual.refine_vectors is True and cfg.residual.threshold == 2
    finally:
        PRESETS["recommended"]["residual"] = original
    path, _ = feature_file
    decoded = []
    for extra in ([], ["--refine-vectors"]):
        stream, out = tmp_path / f"s{len(extra)}.tsp", tmp_path / f"d{len(extra)}.npz"
        options = ["--structure", "uni-4", "--residual-threshold", "0.2", *extra]
        assert main(["encode", str(path), str(stream), *options]) == 0
        assert main(["decode", str(stream), str(out)]) == 0
        npz = np.load(out)
        decoded.append([npz["codes/features.13"], npz["codes/x"]])
    assert all((a == b).all() for a, b in zip(decoded[0], decoded[1], strict=True))


def test_bad_input_gives_one_line_and_a_non_zero_exit(tmp_path, feature_file, capsys):
    path, _ = feature_file
    assert main(["encode", str(tmp_path / "missing.npz"), str(tmp_path / "s.tsp")]) == 2
    assert main(["encode", str(path), str(tmp_path / "s.tsp"), "--structure", "bi-4"]) == 2
    (tmp_path / "junk.tsp").write_bytes(b"not a stream at all")
    assert main(["decode", str(tmp_path / "junk.tsp"), str(tmp_path / "d.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("temposplit ") and "error:" in line for line in err)
    assert "Traceback" not in capsys.readouterr().err


def test_a_damaged_stream_decodes_what_it_can_and_exits_non_zero(tmp_path, feature_file, capsys):
    path, _ = feature_file
    main(["encode", str(path), str(tmp_path / "s.tsp"), "--structure", "intra", "--coder", "raw"])
    data = bytearray((tmp_path / "s.tsp").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "s.tsp").write_bytes(bytes(data))
    assert main(["decode", str(tmp_path / "s.tsp"), str(tmp_path / "d.npz")]) == 3  # written in part
    with np.load(tmp_path / "d.npz") as npz:
        assert len(npz["index"]) == 6
    assert "could not be decoded" in capsys.readouterr().err


def test_bench_codec_prints_one_json_object_per_shape_and_setting(capsys):
    assert main(["bench", "codec", "--json", "--shapes", "16x12x12:4,8x9x9", "--frames", "3", "--no-ssd"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert [json.loads(line)["setting"] for line in lines] == ["thesis", "recommended-ctx"] * 2
    for line in lines:
        r = json.loads(line)
        assert {"shape", "encode_fps", "decode_fps", "bits_per_element"} <= r.keys()
        assert r["encode_fps"] > 0 and r["decode_fps"] > 0 and 0 < r["bits_per_element"] < 8


def test_bench_codec_has_rows_for_the_ssd_cuts(capsys):
    assert main(["bench", "codec", "--json", "--shapes", "8x9x9", "--frames", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    cuts = [(r["cut"], r["setting"]) for r in rows if "cut" in r]
    assert ("features.13", "recommended-ctx") in cuts and ("features.13", "recommended-zrl") in cuts
    for r in rows:
        assert r["encode_decode_ms_per_frame"] > 0


def test_bench_codec_measures_whole_groups_so_anchors_take_their_stream_share(capsys):
    # By default a row is the fewest whole groups of at least 9 frames: 9 frames of uni-8
    # would hold two anchors (one in 4.5) where a stream holds one in 8.
    assert main(["bench", "codec", "--json", "--shapes", "8x9x9", "--no-ssd"]) == 0
    rows = {r["setting"]: r for r in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    assert (rows["thesis"]["frames"], rows["thesis"]["anchors"]) == (9, 3)  # three bi-3 groups
    assert (rows["recommended-ctx"]["frames"], rows["recommended-ctx"]["anchors"]) == (16, 2)  # two uni-8 groups
    ctx = rows["recommended-ctx"]
    for key in ("encode_anchor_ms", "encode_predicted_ms", "decode_anchor_ms", "decode_predicted_ms"):
        assert ctx[key] > 0, key
    # A bi-directional group comes out of the encoder at once: no encode time per kind.
    assert rows["thesis"]["encode_anchor_ms"] is None and rows["thesis"]["decode_anchor_ms"] > 0


def test_bench_codec_refuses_a_frame_count_under_one(capsys):
    assert main(["bench", "codec", "--frames", "0", "--no-ssd"]) == 2
    err = capsys.readouterr().err
    assert "--frames must be 1..256" in err and len(err.strip().splitlines()) == 1


def test_encode_warns_when_the_target_rate_is_out_of_reach(feature_file, tmp_path, capsys):
    """A --rate below what N = 4 and the longest group reach: the stream is written, and a
    warning on stderr says how far above the target it came out (it once said nothing)."""
    path, _ = feature_file
    out = tmp_path / "s.tsp"
    assert main(["encode", str(path), str(out), "--rate", "1e-9", "--fps", "10"]) == 0
    assert out.is_file()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: ") and "x the target 1e-09 MB/s" in err[0], err
    assert main(["encode", str(path), str(out), "--rate", "1000", "--fps", "10"]) == 0  # within reach: silent
    assert capsys.readouterr().err == ""
