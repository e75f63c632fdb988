"""Bad input to the models' commands and loaders (model/): one line on stderr and exit
status 2, or one ConfigError / FormatError naming the file, before any calibration.

Nothing here calibrates or loads real weights: a refusal that came late would reach a
stand-in that fails the test.
"""

import json
import pickle

import numpy as np
import pytest

import temposplit.model as model_pkg
from temposplit.cli import main
from temposplit.errors import ConfigError
from temposplit.model import numpy_m1 as nm

torch = pytest.importorskip("torch")


@pytest.fixture
def no_model(monkeypatch):
    """Loading a detector or calibrating fails the test."""
    from temposplit.model import quantize

    monkeypatch.setattr(model_pkg, "load_detector", lambda *a, **k: pytest.fail("a detector was loaded"))
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: pytest.fail("calibrated"))


# ---------------------------------------------------------------------------- D1: --weights files


def _text(p):
    p.write_text("print('not weights')\n")


def _empty(p):
    p.write_bytes(b"")


def _npz(p):
    with open(p, "wb") as f:
        np.savez(f, a=np.zeros(3))


def _list(p):
    torch.save([1, 2], p)


def _plain_pickle(p):
    p.write_bytes(pickle.dumps({"a": object}))


def _truncated(p):
    torch.save({"a": torch.zeros(100)}, p)
    p.write_bytes(p.read_bytes()[:200])


@pytest.mark.parametrize(
    "make, name, message",
    [
        (_text, "w.pt", "not a weights file"),
        (_empty, "w.pt", "not a weights file"),
        (_npz, "w.pt", "not a weights file"),
        (_list, "w.pt", "holds a list, not a state dict"),
        (_plain_pickle, "w.pt", "not a weights file"),
        (_truncated, "w.pt", "not a weights file"),
        (_text, "w.pb", "not a frozen SSD graph"),
        (lambda p: p.write_bytes(bytes([0x0B]) * 40), "w.pb", "not a frozen SSD graph"),
    ],
)
def test_ssd_weights_that_are_not_weights(tmp_path, capsys, make, name, message, one_line):
    from temposplit.model import ssd

    path = tmp_path / name
    make(path)
    with pytest.raises(ConfigError, match=message) as e:
        ssd.load_state_dict(path)
    assert str(e.value).startswith(str(path)) and len(str(e.value).splitlines()) == 1
    assert main(["models", "--model", "ssd-mobilenet-v2", "--weights", str(path)]) == 2
    one_line(str(path), message)


def test_ssd_weights_of_other_shapes(tmp_path, capsys, one_line):
    path = tmp_path / "shapes.pt"
    torch.save({"features.0.conv.weight": torch.zeros(1)}, path)
    assert main(["models", "--model", "ssd-mobilenet-v2", "--weights", str(path)]) == 2
    one_line(str(path), "size mismatch")


def test_torchvision_weights_that_are_not_weights(tmp_path, capsys):
    from temposplit.model.torchvision_models import build_model

    name = "fasterrcnn-mobilenet-v3-large-fpn"
    text = tmp_path / "w.pth"
    _text(text)
    with pytest.raises(ConfigError, match="w.pth: not a weights file"):
        build_model(name, str(text), min_size=64, max_size=64)
    _list(text)
    with pytest.raises(ConfigError, match="holds a list, not a state dict"):
        build_model(name, str(text), min_size=64, max_size=64)
    torch.save({"a": torch.zeros(1)}, text)
    with pytest.raises(ConfigError, match=f"w.pth: not {name} weights"):
        build_model(name, str(text), min_size=64, max_size=64)


# ---------------------------------------------------------------------------- D2: M1 exports


def _m1(path, graph=None, raw=None, **arrays):
    blob = raw if raw is not None else json.dumps(graph).encode()
    np.savez(path, graph=np.frombuffer(blob, np.uint8), **arrays)


M1 = {"format": "temposplit-numpy-m1", "version": 2}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "not a readable .npz (EOFError"),
        (lambda p: p.write_bytes(b"PK\x03\x04 cut short"), "not a readable .npz (BadZipFile"),
        (lambda p: p.write_text("text"), "not a readable .npz"),
        (lambda p: np.save(open(p, "wb"), np.zeros(3)), "a single array"),
        (lambda p: _m1(p, [1, 2]), "the graph is a JSON list"),
        (lambda p: _m1(p, "hello"), "the graph is a JSON str"),
        (lambda p: _m1(p, raw=b"\xff\xfe"), "the graph is not JSON"),
        (lambda p: _m1(p, raw=b"{nope"), "the graph is not JSON"),
        (lambda p: _m1(p, {**M1, "version": [2]}), "format version [2] is not a whole number"),
        (lambda p: _m1(p, {**M1, "version": "two"}), "format version 'two' is not a whole number"),
        (lambda p: _m1(p, M1), "no 'output_names' entry"),
        (lambda p: _m1(p, {**M1, "output_names": [], "outputs": [], "nodes": "abc"}), "not a valid M1 graph"),
        (lambda p: _m1(p, {**M1, "output_names": [], "outputs": [], "nodes": [{"op": "conv"}]}), "no 'name' entry"),
        (lambda p: _m1(p, {**M1, "output_names": [], "outputs": [], "nodes": [], "input": "ssd"}), "'input' is a str"),
        (lambda p: _m1(p, {**M1, "output_names": [3], "outputs": [], "nodes": []}), "'output_names' holds"),
    ],
)
def test_an_m1_file_that_is_not_an_export_is_a_format_error_naming_it(tmp_path, make, message):
    path = tmp_path / "m1.npz"
    make(path)
    with pytest.raises(nm.FormatError) as e:
        nm.load(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value), str(e.value)


def test_a_well_formed_m1_still_loads(tmp_path):
    path = tmp_path / "m1.npz"
    _m1(path, {**M1, "output_names": [], "outputs": [], "nodes": [], "input": {"kind": "tensor"}})
    assert nm.load(path).names == []


# ---------------------------------------------------------------------------- F1-F3: options


@pytest.mark.parametrize("threads", ["0", "-3", "257", "99999999999"])
@pytest.mark.parametrize(
    "argv",
    [
        ["models", "--model", "ssd-mobilenet-v2"],
        ["models", "fixtures", "--out", "{tmp}"],
        ["bench", "models", "--only", "ssd"],
    ],
)
def test_threads_outside_1_to_256(tmp_path, capsys, monkeypatch, no_model, argv, threads, one_line):
    from temposplit.model import bench

    monkeypatch.setattr(bench, "bench_ssd", lambda *a, **k: pytest.fail("the bench ran"))
    before = torch.get_num_threads()
    argv = [a.format(tmp=tmp_path / "fx") for a in argv]
    assert main([*argv, "--threads", threads]) == 2
    one_line("--threads must be 1 to 256")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("frames", ["0", "-1"])
def test_fixtures_with_no_frames_is_refused_before_calibrating(tmp_path, capsys, no_model, frames, one_line):
    assert main(["models", "fixtures", "--out", str(tmp_path / "fx"), "--frames", frames, "--threads", "1"]) == 2
    one_line("--frames must be 1..64")
    assert not (tmp_path / "fx").exists()


def test_fixtures_past_the_end_of_the_video_is_refused_before_calibrating(
    tmp_path, capsys, monkeypatch, no_model, one_line
):
    from temposplit.model import data
    from temposplit.model.fixtures import write_fixtures

    monkeypatch.setattr(data, "read_video", lambda *a, **k: iter(()))  # what a start past the end yields
    with pytest.raises(ConfigError, match="no frame at or after --start 1000000"):
        write_fixtures(tmp_path / "fx", start=1_000_000)
    assert main(["models", "fixtures", "--out", str(tmp_path / "fx"), "--start", "1000000", "--threads", "1"]) == 2
    one_line("no frame at or after --start 1000000")
    assert not (tmp_path / "fx").exists()


def test_fixtures_into_a_file(tmp_path, capsys, no_model, one_line):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["models", "fixtures", "--out", str(out), "--threads", "1"]) == 2
    one_line("is a file, not a folder")


@pytest.mark.parametrize("repeats", ["0", "-3"])
def test_bench_models_needs_a_repeat(capsys, monkeypatch, repeats, one_line):
    from temposplit.model import bench

    monkeypatch.setattr(bench, "bench_ssd", lambda *a, **k: pytest.fail("the bench ran"))
    assert main(["bench", "models", "--only", "ssd", "--threads", "1", "--repeats", repeats]) == 2
    one_line("--repeats must be at least 1")


@pytest.mark.parametrize("n_bits", ["0", "1", "9", "-1", "99999999999"])
def test_bench_fabric_n_bits_outside_2_to_8(capsys, n_bits, one_line):
    assert main(["bench", "fabric", f"--n-bits={n_bits}"]) == 2
    one_line("--n-bits", "2..8")


# ---------------------------------------------------------------------------- G3: export-m1 --out


def test_export_m1_into_a_folder_is_refused_before_calibrating(tmp_path, capsys, monkeypatch, no_model, one_line):
    from temposplit.model import export

    monkeypatch.setattr(export, "export_cut", lambda *a, **k: pytest.fail("exported"))
    assert main(["models", "export-m1", "--out", str(tmp_path)]) == 2
    one_line("is a folder")
    under_a_file = tmp_path / "f"
    under_a_file.write_text("x")
    assert main(["models", "export-m1", "--out", str(under_a_file / "m1.npz")]) == 2
    one_line("is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_export_m1_leaves_no_temporary_file(tmp_path, monkeypatch):
    from temposplit.model import export

    graph = {**M1, "output_names": [], "outputs": [], "nodes": []}
    monkeypatch.setattr(export, "m1_graph", lambda q: (graph, {}))  # no node: no array
    folder = tmp_path / "dir"
    folder.mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        export.export_m1(object(), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]

    def refuse(source, target):
        raise OSError(21, "Is a directory")

    monkeypatch.setattr("temposplit.files.os.replace", refuse)  # the rename onto the output fails
    with pytest.raises(OSError, match="Is a directory"):
        export.export_m1(object(), tmp_path / "m1.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]
    monkeypatch.undo()
    monkeypatch.setattr(export, "m1_graph", lambda q: (graph, {}))  # no node: no array
    assert nm.load(export.export_m1(object(), tmp_path / "m1.npz")).names == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "m1.npz"]


@pytest.mark.parametrize(
    "cpus, omp, expected",
    [(16, None, 2), (1, None, 1), (16, "1", 1), (16, "8", 2), (16, "junk", 2)],
)
def test_the_default_thread_count_is_2_or_the_cpus_the_process_may_use(monkeypatch, cpus, omp, expected):
    """Never more threads than the process was given (two test workers on two cores each
    told one): oversubscribed, PyTorch's OpenMP barriers wait on descheduled threads."""
    import os

    from temposplit.model.cli import default_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert default_threads() == expected


# ---------------------------------------------------------------------------- the listing's options before a subcommand


@pytest.fixture
def handlers(monkeypatch):
    """The models' subcommands' handlers replaced by stand-ins that record the arguments
    they were given (and return 0): ``handlers[name]`` is the namespace ``name`` ran with."""
    from temposplit.model import cli

    ran = {}
    for name in ("fixtures", "accuracy", "qat", "recipes", "sensitivity", "export_m1", "compare_opencv"):
        monkeypatch.setattr(cli, f"_cmd_{name}", lambda args, name=name: ran.setdefault(name, args) and 0)
    return ran


@pytest.mark.parametrize(
    "argv, said",
    [
        (["models", "--json", "accuracy", "--frames", "3"], "--json given before `accuracy`"),
        (["models", "--threads", "0", "accuracy"], "--threads given before `accuracy`"),
        (["models", "--threads", "1", "compare-opencv"], "(temposplit models compare-opencv --threads THREADS ...)"),
        (["models", "--json", "--threads", "1", "recipes"], "--json, --threads given before `recipes`"),
        (["models", "--json", "sensitivity"], "a subcommand's options go after it"),
        (["models", "--threads", "1", "qat", "--out", "x.npz"], "--threads given before `qat`"),
        (["models", "--model", "ssd-mobilenet-v2", "export-m1", "--out", "x.npz"], "--model given before `export-m1`"),
        (
            ["models", "--model", "nope", "--weights", "/nonexist.pth", "compare-opencv", "--frames", "1"],
            "`models compare-opencv` does not take --model, --weights: they are options of the bare",
        ),
        (["models", "--model", "retinanet-resnet50-fpn", "accuracy"], "`models accuracy` does not take --model"),
        (["models", "--input-size", "64x64", "fixtures"], "`models fixtures` does not take --input-size"),
        (["models", "--threads", "1", "export-m1", "--out", "x.npz"], "`models export-m1` does not take --threads"),
    ],
)
def test_the_listings_options_before_a_subcommand_are_refused(argv, said, handlers, no_model, one_line):
    """`models --json accuracy` printed text, `models --threads 0 accuracy` ran, `models
    --model X accuracy` scored the SSD: the subcommand's defaults overwrote the listing's
    options, or nothing read them. Now one line before the subcommand runs."""
    assert main(argv) == 2
    (sub,) = {"accuracy", "recipes", "sensitivity", "qat", "export-m1", "compare-opencv", "fixtures"} & set(argv)
    assert one_line(said).startswith(f"temposplit models {sub}: error: ")
    assert handlers == {}


def test_a_subcommands_options_after_it_reach_it(handlers, no_model):
    assert main(["models", "accuracy", "--json", "--threads", "1", "--video", "cup"]) == 0
    args = handlers["accuracy"]
    assert (args.json, args.threads, args.video) == (True, 1, "cup")
    assert main(["models", "export-m1", "--model", "retinanet-resnet50-fpn", "--out", "x.npz"]) == 0
    assert handlers["export_m1"].model == "retinanet-resnet50-fpn"
    assert main(["models", "recipes"]) == 0
    assert (handlers["recipes"].json, handlers["recipes"].threads) == (False, None)


def test_the_bare_listing_still_takes_its_options(monkeypatch, capsys, tmp_path):
    from temposplit.model import costs

    loaded = []
    monkeypatch.setattr(model_pkg, "load_detector", lambda name, weights=None: loaded.append((name, weights)) or name)
    monkeypatch.setattr(costs, "report", lambda det, size: {"model": det, "input_size": list(size), "cuts": []})
    weights = str(tmp_path / "w.pt")
    before = torch.get_num_threads()
    argv = ["--json", "--model", "ssd-mobilenet-v2", "--input-size", "64x96", "--weights", weights, "--threads", "1"]
    try:
        assert main(["models", *argv]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert loaded == [("ssd-mobilenet-v2", weights)]
    assert json.loads(capsys.readouterr().out) == {
        "models": [{"model": "ssd-mobilenet-v2", "input_size": [64, 96], "cuts": []}]
    }


# ---------------------------------------------------------------------------- a video that is no file


@pytest.mark.parametrize("command, option", [("accuracy", "--video"), ("sensitivity", "--videos")])
def test_a_video_that_is_a_device_a_pipe_or_a_folder_is_said_to_be_one(tmp_path, command, option, no_model, one_line):
    """`--video /dev/null` was "video /dev/null not found"; `eval` says what it is."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for video, said in [
        ("/dev/null", "/dev/null is not a regular file (a device or a pipe)"),
        (str(fifo), f"{fifo} is not a regular file (a device or a pipe)"),
        (str(tmp_path), f"{tmp_path} is a folder, not a video file"),
        (str(tmp_path / "none.mp4"), f"video {tmp_path / 'none.mp4'} not found"),
    ]:
        assert main(["models", command, option, video, "--frames", "2", "--threads", "1"]) == 2
        one_line(said)


def _fake_network(monkeypatch, frames: int):
    """vtest's first ``frames`` frames and a two-cut network that needs no model (what
    write_fixtures reads of them)."""
    from types import SimpleNamespace as NS

    from temposplit.model import calibration, data, quantize

    monkeypatch.setattr(data, "read_video", lambda *a, **k: iter([np.zeros((4, 4, 3), np.uint8)] * frames))
    monkeypatch.setattr(calibration, "calibration_frames", lambda *a, **k: [])
    tensor = NS(shape=(2, 3, 3), codes=np.ones((2, 3, 3), np.uint8), scale=0.1, zero_point=3, name="t")
    split = NS(m1=lambda x: None, cut_tensors=lambda tensors, i: [tensor])
    monkeypatch.setattr(quantize, "quantize", lambda *a, **k: NS(split=lambda name: split))
    det = NS(cuts=[NS(name="a"), NS(name="b")], preprocess=lambda f: NS(tensor=None))
    monkeypatch.setattr(model_pkg, "load_detector", lambda *a, **k: det)


def test_fixtures_the_video_cannot_fill_are_refused_before_calibrating(tmp_path, monkeypatch):
    # Before, --start 794 --frames 3 on vtest's 795 frames wrote 1 frame and recorded the default command.
    from temposplit.model.fixtures import write_fixtures

    _fake_network(monkeypatch, frames=1)
    monkeypatch.setattr("temposplit.model.quantize.quantize", lambda *a, **k: pytest.fail("calibrated"))
    with pytest.raises(ConfigError, match=r"has only 1 frame\(s\) at or after --start 794; --frames 3 needs 3"):
        write_fixtures(tmp_path / "fx", start=794, count=3, log=None)
    assert not (tmp_path / "fx").exists()


def test_fixtures_interrupted_while_written_leave_the_old_files_whole(tmp_path, monkeypatch):
    # Before, each file was written in place: an interrupt left a shorter zip that loads.
    from temposplit.model.fixtures import write_fixtures

    _fake_network(monkeypatch, frames=2)
    out = tmp_path / "fx"
    out.mkdir()
    old = {name: f"old {name}".encode() for name in ("ssd-a.npz", "ssd-b.npz")}
    for name, data in old.items():
        (out / name).write_bytes(data)
    real, calls = np.savez_compressed, []

    def interrupted(file, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the second file, part written
            (file.write if hasattr(file, "write") else open(file, "wb").write)(b"PK\x03\x04 half")
            raise KeyboardInterrupt
        real(file, **arrays)

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_fixtures(out, start=0, count=2, log=None)
    assert (out / "ssd-b.npz").read_bytes() == old["ssd-b.npz"]  # whole, as it was
    assert sorted(p.name for p in out.iterdir()) == ["ssd-a.npz", "ssd-b.npz"]  # no temporary left
    assert list(np.load(out / "ssd-a.npz")["frames"]) == [0, 1]  # the first file was written whole


@pytest.mark.parametrize("option", ["--model", "--weights"])
def test_an_empty_model_or_weights_in_the_listing_is_refused(no_model, one_line, option):
    # Before, --model "" listed all four models (and --model "" --weights w said --weights needs --model).
    argv = ["models", option, ""] + (["--model", "ssd-mobilenet-v2"] if option == "--weights" else [])
    assert main(argv) == 2
    one_line(f"{option} is empty: give a name, or leave {option} out")
