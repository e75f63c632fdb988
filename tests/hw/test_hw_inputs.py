"""The hardware side's software with odd inputs: the driver's arguments, a closed transport,
an overlay that cannot load, the engine's refusals and fallbacks, build parameters the
registers cannot report and the generators' output folders. Without the RTL: a transport
that keeps registers in a dict (and ``sim/pynqsim.py``'s ``pynq`` for the overlay)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from temposplit.codec.errors import CodecError
from temposplit.errors import TemposplitError
from temposplit.hw import regmap
from temposplit.hw.driver import Accelerator, AcceleratorError, PynqTransport

ROOT = Path(__file__).resolve().parents[2]


class _Fake:
    """Registers in a dict, a build's PARAMS and BAND_PARAMS; an operation's output empty."""

    def __init__(self, params=regmap.DEFAULT, band=True, params_word=None):
        self.log = []
        self.regs = {}
        self.params_word = params_word
        if params_word is None:
            self.params_word = params.params_word()
        self.band_word = 0
        if band:
            self.band_word = regmap.pack(
                "BAND_PARAMS",
                CHUNK_LOG2=params.band_bytes.bit_length() - 1,
                BLOCKS_LOG2=params.band_blocks.bit_length() - 1,
                GROUP_BLOCKS=params.band_group_blocks,
            )

    def write(self, offset, value):
        self.regs[offset] = value
        self.log.append(("write", offset, value))

    def read(self, offset):
        answers = {
            "ID": regmap.ID_MAGIC,
            "PARAMS": self.params_word,
            "BAND_PARAMS": self.band_word,
            "STATUS": regmap.pack("STATUS", DONE=1),
        }
        return next((v for k, v in answers.items() if regmap.REG[k].offset == offset), 0)

    def stream(self, data, max_out):
        self.log.append(("stream", len(data), max_out))
        return b""


def _probed(**kw):
    t = _Fake(**kw)
    accel = Accelerator(t)
    accel.probe()
    return t, accel


MAP = np.zeros((8, 8, 16), np.uint8)

BAD_CALLS = {
    "motion: z_N a float": lambda a: a.motion(MAP, z8=0, n_bits=4, zn_ref=1.5, block=4, search=7),
    "motion: z_N None": lambda a: a.motion(MAP, z8=0, n_bits=4, zn_ref=None, block=4, search=7),
    "motion: z_N over 2^N": lambda a: a.motion(MAP, z8=0, n_bits=4, zn_ref=200, block=4, search=7),
    "ctx_anchor: z_N negative": lambda a: a.ctx_anchor(MAP, z8=0, n_bits=4, z_n=-1),
    "ctx_anchor: z_N over ZN_REF's 9 bits": lambda a: a.ctx_anchor(MAP, z8=0, n_bits=4, z_n=1000),
    "ctx_anchor: changes of 5": lambda a: a.ctx_anchor(MAP, z8=0, n_bits=4, ref=MAP, ref_changes=np.full(MAP.shape, 5)),
    "ctx_anchor: float changes": lambda a: a.ctx_anchor(
        MAP, z8=0, n_bits=4, ref=MAP, ref_changes=np.full(MAP.shape, 0.5)
    ),
    "ctx_anchor: codes over N bits": lambda a: a.ctx_anchor(MAP + 255, z8=0, n_bits=4, requant=False),
    "ctx_anchor: reference over N bits": lambda a: a.ctx_anchor(MAP, z8=0, n_bits=4, ref=MAP + 255),
    "encode: an alphabet over the histogram's 256": lambda a: a.encode(np.zeros(16, np.uint8), 300),
    "encode: an alphabet of 0": lambda a: a.encode(np.zeros(16, np.uint8), 0),
    "encode: N of 9": lambda a: a.encode(np.zeros(16, np.uint8), 16, requant=True, n_bits=9),
    "encode_anchor: an alphabet of 1000": lambda a: a.encode_anchor(MAP, z8=0, n_bits=4, alphabet=1000),
    "histogram: an alphabet of 2.5": lambda a: a.histogram(MAP, 2.5, z8=0, n_bits=4),
    "requantize: z8 of 256": lambda a: a.requantize(MAP, z8=256, n_bits=4),
    "load_reference: padding z_N of 300": lambda a: a.load_reference(MAP[:, :, :5], zn_ref=300),
    "encode_motion_vectors: a vector outside the search": lambda a: a.encode_motion_vectors(
        np.full((2, 2, 2), 100, np.int8), search=7, lengths=[4] * 15
    ),
    "encode_motion_vectors: p of 4": lambda a: a.encode_motion_vectors(np.zeros((2, 2, 2)), search=4, lengths=[1, 1]),
    "load_table: float lengths": lambda a: a.load_table([1.5, 1.5]),
    "load_table: a negative length": lambda a: a.load_table([-1, 1]),
    "encode: requant of 2": lambda a: a.encode(np.zeros(16, np.uint8), 16, requant=2, n_bits=4),
    "encode: store_ref of 2": lambda a: a.encode(np.zeros(16, np.uint8), 16, store_ref=2),
    "encode_anchor: store_ref of 2": lambda a: a.encode_anchor(MAP, z8=0, n_bits=4, store_ref=2),
    "histogram: requant of 2": lambda a: a.histogram(MAP, z8=0, n_bits=4, requant=2),
    "histogram: store_ref of 0.5": lambda a: a.histogram(MAP, z8=0, n_bits=4, store_ref=0.5),
    "requantize: store_ref of 2": lambda a: a.requantize(MAP, z8=0, n_bits=4, store_ref=2),
    "ctx_anchor: requant of 2": lambda a: a.ctx_anchor(MAP, z8=0, n_bits=4, requant=2),
    "ctx_anchor: store_ref of 'yes'": lambda a: a.ctx_anchor(MAP, z8=0, n_bits=4, store_ref="yes"),
}


@pytest.mark.parametrize("call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
def test_bad_arguments_are_refused_before_any_register_is_written(call):
    t, accel = _probed()
    with pytest.raises((AcceleratorError, CodecError)):
        call(accel)
    assert t.log == []


def test_an_encode_output_shorter_than_its_bits_is_an_accelerator_error():
    """BITS counts 100 bits (13 bytes) but the output packet brought none: refused, not a
    short section returned as if whole."""
    t, accel = _probed()
    bits = regmap.REG["BITS"].offset
    t.read = lambda offset, read=t.read: 100 if offset == bits else read(offset)
    accel.load_table([1, 1])
    with pytest.raises(AcceleratorError, match="ENCODE sent 0 bytes but counted 100 bits"):
        accel.encode(np.zeros(16, np.uint8), 2)


def test_an_accelerator_error_is_a_temposplit_error_so_the_command_line_says_it_in_one_line():
    assert issubclass(AcceleratorError, TemposplitError)


def test_build_parameters_no_build_has_are_an_accelerator_error():
    word = regmap.pack("PARAMS", LANES=regmap.LANES, REF_LOG2=0, BLOCK_LOG2=15)
    with pytest.raises(AcceleratorError, match="build parameters"):
        Accelerator(_Fake(params_word=word)).probe()


class _Buffer(np.ndarray):
    def flush(self):
        pass

    def invalidate(self):
        pass

    def freebuffer(self):
        pass


def test_a_closed_pynq_transport_refuses_instead_of_allocating_again():
    t = _Fake()
    dma = SimpleNamespace(buffer_max_size=(1 << 26) - 1, sendchannel=None, recvchannel=None)
    allocated = []

    def allocate(shape, dtype):
        allocated.append(shape)
        return np.zeros(shape, dtype).view(_Buffer)

    transport = PynqTransport(t, dma, allocate=allocate)
    accel = Accelerator(transport)
    assert accel.probe() == regmap.DEFAULT
    accel.close()
    accel.close()  # twice: nothing left to release
    for use in (accel.probe, lambda: transport.stream(b"\0" * 8, 8)):
        with pytest.raises(AcceleratorError, match="closed"):
            use()
    assert allocated == []


@pytest.fixture
def pynq_stand_in():
    """``import pynq`` -> ``sim/pynqsim.py`` (no simulation starts: these overlays do not load)."""
    saved = {k: sys.modules.get(k) for k in ("pynq", "pynqsim", "temposplit.hw.pynq_driver")}
    spec = importlib.util.spec_from_file_location("pynqsim", ROOT / "sim" / "pynqsim.py")
    pynqsim = importlib.util.module_from_spec(spec)
    sys.modules["pynqsim"] = pynqsim
    spec.loader.exec_module(pynqsim)
    pynqsim.install(regmap.DEFAULT, None, bridge=lambda: pytest.fail("an overlay that cannot load started"))
    sys.modules.pop("temposplit.hw.pynq_driver", None)
    yield importlib.import_module("temposplit.hw.pynq_driver")
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


def test_an_overlay_that_is_missing_or_damaged_is_an_accelerator_error(pynq_stand_in, tmp_path):
    with pytest.raises(AcceleratorError, match="cannot load the overlay .*missing.bit"):
        pynq_stand_in.open_overlay(str(tmp_path / "missing.bit"))  # no .hwh beside it: pynq's ValueError
    bad = tmp_path / "bad.bit"
    bad.write_bytes(b"not a bitstream")
    bad.with_suffix(".hwh").write_text("not XML either")
    with pytest.raises(AcceleratorError, match="cannot load the overlay .*bad.bit"):
        pynq_stand_in.open_overlay(str(bad))


TENSOR = SimpleNamespace(name="t", zero_point=3, block=4)


@pytest.mark.parametrize("shape", [(1100, 4, 4), (4, 1100, 4), (2, 2, 5000)])
def test_a_ctx_anchor_over_the_shape_registers_is_coded_from_value_records(shape):
    from temposplit.hw.backend import FabricEngine

    engine = FabricEngine(Accelerator(_Fake()))
    codes = engine.requantize(TENSOR, np.zeros(shape, np.uint8), 4)
    sections, changes = engine.ctx_anchor_sections(TENSOR, codes, None, None, 4, 1)
    assert len(sections) == 1 and changes.shape == shape
    assert engine.passes["CTX (records)"] == 1 and "CTX" not in engine.passes


def test_a_build_without_band_motion_codes_a_large_anchor_and_falls_back_for_its_motion():
    from temposplit.codec.entropy import Alphabet
    from temposplit.hw.backend import FabricEngine

    engine = FabricEngine(Accelerator(_Fake(band=False)))
    q8 = np.zeros((100, 100, 32), np.uint8)  # over the 256 KiB reference RAM
    coded = engine.code_anchor(TENSOR, q8, 4, "huffman", Alphabet.anchor(4, 0), [4] * 16)
    codes = engine.requantize(TENSOR, q8, 4)
    engine.ctx_anchor_sections(TENSOR, codes, None, None, 4, 1)
    mvs, _ = engine.motion_search(TENSOR, coded.codes, q8, 4, 7, False)
    assert mvs.shape == (25, 25, 2)
    assert engine.fallbacks == {"TSS over the fabric's limits": 1}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"ref_bytes": 1 << 27}, "ref_bytes must be at most"),
        ({"block_bytes": 1 << 23}, "block_bytes must be at most"),
        ({"ref_bytes": 16}, "ref_bytes must be a multiple of band_bytes"),
    ],
)
def test_params_the_registers_cannot_report_are_refused_naming_the_option(kw, match):
    with pytest.raises(ValueError, match=match):
        regmap.Params(**kw)


@pytest.mark.parametrize("module", ["generate", "synth", "vivado"])
def test_an_output_folder_that_is_a_file_is_one_line_not_a_traceback(module, tmp_path, capsys):
    main = importlib.import_module(f"temposplit.hw.{module}").main
    out = tmp_path / "a-file"
    out.write_text("")
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {out}: File exists" in err


def test_vivado_refuses_jobs_below_one_before_writing_anything(tmp_path, capsys):
    from temposplit.hw import vivado

    with pytest.raises(SystemExit) as exc:
        vivado.main(["--out", str(tmp_path / "v"), "--jobs", "0"])
    assert exc.value.code == 2 and "--jobs must be 1 or more" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_a_closed_simulation_bridge_is_an_accelerator_error():
    """The RTL back end's failures (the simulation did not start, failed a request, the bridge
    closed) are one line from the CLI, not an internal error."""
    from temposplit.errors import TemposplitError
    from temposplit.hw.driver import AcceleratorError
    from temposplit.hw.simbridge import BridgeError, BridgeTransport

    bridge = BridgeTransport.__new__(BridgeTransport)  # as close() leaves it, without a simulation
    bridge._conn = None
    with pytest.raises(AcceleratorError, match="the bridge is closed"):
        bridge.write(0, 0)
    assert issubclass(BridgeError, TemposplitError)


def _bridge_over(conn, tmp_path):
    """A BridgeTransport on ``conn`` as if the simulation ran behind it (its thread ended)."""
    import threading

    from temposplit.hw.simbridge import BridgeTransport

    bridge = BridgeTransport.__new__(BridgeTransport)
    bridge._conn, bridge._listener, bridge._run_dir = conn, SimpleNamespace(close=lambda: None), tmp_path / "run"
    bridge._thread = threading.Thread(target=lambda: None)
    bridge._thread.start()
    return bridge


@pytest.mark.parametrize("when", ["before the request", "after the request"])
def test_a_simulation_that_stops_is_a_bridge_error_and_the_bridge_closes(when, tmp_path):
    """The simulator killed or crashed under a running bridge (its end of the connection
    closed before the request was sent, or while it was being served): a BridgeError, one
    line from the CLI, not the connection's bare EOFError or BrokenPipeError."""
    import threading
    from multiprocessing.connection import Pipe

    from temposplit.hw.simbridge import BridgeError

    ours, theirs = Pipe()
    if when == "before the request":
        theirs.close()
    else:  # the server reads the request and dies without answering
        server = threading.Thread(target=lambda: (theirs.recv(), theirs.close()))
        server.start()
    bridge = _bridge_over(ours, tmp_path)
    with pytest.raises(BridgeError, match="the RTL simulation stopped"):
        bridge.read(0)
    assert ours.closed
    with pytest.raises(BridgeError, match="the bridge is closed"):
        bridge.write(0, 0)
    bridge.close()  # nothing left to release
