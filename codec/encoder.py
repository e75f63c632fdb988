"""The encoder: frames of quint8 cut tensors in, packets out (docs/bitstream.md, sections 4-10).

Typical use::

    enc = Encoder(CodecConfig(tensors=[TensorSpec("features.13", (96, 19, 19), s8, z8)]))
    stream = enc.header_bytes()
    for frame in frames:               # each a list of (C, H, W) uint8 arrays
        for packet in enc.push(frame):
            stream += packet.to_bytes()
    for packet in enc.flush():
        stream += packet.to_bytes()

``push`` returns the packets that became ready: with a bi-directional structure the
frames before a group's anchor wait for it (one frame of latency for bi-3).
"""

from __future__ import annotations

import copy
import math
import numbers
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np

from temposplit.codec import _kernels as K
from temposplit.codec import ctx, entropy, huffman
from temposplit.codec.bitstream import (
    ANCHOR,
    FLAG_GROUP_START,
    KEY,
    MAX_CHANNELS,
    MAX_FPS_MILLI,
    MAX_FRAME_ELEMENTS,
    MAX_NAME,
    MAX_SIDE,
    MAX_TENSOR_ELEMENTS,
    MAX_TENSORS,
    PRED,
    Packet,
    StreamHeader,
    TensorInfo,
    control_character,
    wire_fps_ok,
    wire_scale_ok,
)
from temposplit.codec.errors import BitstreamError, ConfigurationError
from temposplit.codec.motion import check_block, check_search_range, grid_shape
from temposplit.codec.payload import (
    AnchorTensor,
    PredTensor,
    anchor_alphabet,
    gather_blocks,
    has_group_tables,
    write_anchor,
    write_pred,
)
from temposplit.codec.quantize import check_bits, check_zero_point, hold, hold_tables, lut, zero_point_n
from temposplit.codec.ratecontrol import RateController, default_ladder
from temposplit.codec.structure import MAX_GROUP, REFERENCES, Structure, group_plan


@dataclass(frozen=True)
class TensorSpec:
    """A tensor crossing the cut: name, shape (C, H, W), quint8 scale and zero point, block size B."""

    name: str
    shape: tuple[int, int, int]
    scale: float
    zero_point: int
    block: int = 4

    def info(self) -> TensorInfo:
        c, h, w = self.shape
        return TensorInfo(self.name, int(c), int(h), int(w), float(self.scale), int(self.zero_point), int(self.block))


@dataclass(frozen=True)
class ResidualConfig:
    """Per block of a predicted frame: skip (the compensated block stands) or code the residual.

    ``mode="threshold"``: code a block when its mean |current - prediction|, measured in
    8-bit steps (an N-bit step is 2^(8-N) of them, so one threshold means the same error
    at every N), exceeds ``threshold`` times the tensor's *activity* in that frame: the
    fraction of its int8 codes that differ from z8. The threshold is thus per active
    element and means the same on a dense tensor (signed taps: activity about 0.98) and a
    sparse one (ReLU6 taps: about 0.2, where a block mean over mostly zeros would hide the
    error). ``mode="rd"``: code it when the squared error it removes (on the 8-bit grid)
    exceeds ``lam`` times the bits its residual costs.

    ``dead_zone``: in a coded block, residual values of at most this much, in 8-bit steps
    like the threshold (|r| * 2^(8-N) <= dead_zone), are sent as 0; 0 (the default) sends
    every value and the block is rebuilt exactly. The smallest residuals are mostly the
    quantizer's flicker between neighbouring codes; dropping them keeps the reconstruction
    within the dead zone of the current frame for a fraction of the bits. A dead zone below
    one N-bit step (e.g. 4 at N <= 5) changes nothing. A block left with nothing to send is
    skipped. The decoder is the same.

    ``refine_vectors``: after the decisions (taken with TSS's vectors), give each coded
    block the vector under which it is cheapest to code (the zero vector, the left and
    upper blocks' vectors, those within +-1 of TSS's). A coded block is rebuilt as the
    current codes whatever its vector, and a skipped one keeps TSS's, so the reconstruction
    is the same, bit for bit. It applies only where coded blocks are exact (no dead zone of
    one N-bit step or more). Measured on the SSD's cuts it saves at most 0.5 % (docs/
    bitstream.md, "Measured compression of `ctx`"), so no preset uses it.

    ``hysteresis`` (m, whole 8-bit steps): before the decisions, each element of the frame
    keeps the prediction's code while its int8 code stays within that code's cell widened
    by m steps on each side (:func:`quantize.hold`), so a value that wavers across a cell
    boundary is not sent back and forth; 0 (the default) takes the fresh codes. Coded
    blocks then end within half a cell plus m of the current frame; anchors keep their
    fresh codes (and refresh the chain). The decoder is the same.
    """

    mode: str = "threshold"
    threshold: float = 1.5
    lam: float = 4.0
    dead_zone: float = 0.0
    refine_vectors: bool = False
    hysteresis: int = 0

    def __post_init__(self):
        if self.mode not in ("threshold", "rd"):
            raise ConfigurationError(f"residual mode must be 'threshold' or 'rd', not {self.mode!r}")
        for what in ("threshold", "lam", "dead_zone"):
            _check_real(f"residual {what}", getattr(self, what))
        if not self.threshold >= 0 or not self.lam >= 0:
            raise ConfigurationError("residual threshold and lambda must be non-negative")
        if not self.dead_zone >= 0:
            raise ConfigurationError(f"residual dead zone must be non-negative, not {self.dead_zone!r}")
        _check_flag("refine_vectors", self.refine_vectors)
        h = self.hysteresis
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)) or not 0 <= h <= 255:
            raise ConfigurationError(f"hysteresis must be a whole number of 8-bit steps in 0..255, not {h!r}")
        # Python's numbers from here on (a frozen dataclass: set as its own __init__ does)
        for what in ("threshold", "lam", "dead_zone"):
            object.__setattr__(self, what, float(getattr(self, what)))
        object.__setattr__(self, "hysteresis", int(h))
        object.__setattr__(self, "refine_vectors", bool(self.refine_vectors))


def _as_list(value):
    """An iterable other than a string as a list (read once); anything else as it is, for the
    checks to name."""
    if value is None or isinstance(value, (list, str, bytes)):
        return value
    try:
        return list(value)
    except TypeError:  # not iterable
        return value


def _check_flag(what: str, value) -> bool:
    """A yes/no parameter: a bool (or 0 and 1), not any object with a truth value."""
    if not isinstance(value, (bool, np.bool_)) and not (isinstance(value, numbers.Integral) and value in (0, 1)):
        raise ConfigurationError(f"{what} must be True or False, not {value!r}")
    return bool(value)


def _check_real(what: str, value) -> None:
    """A parameter that must be a real number (its range is checked where it is used)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{what} must be a number, not {value!r}")


# Operating points a user starts from (CodecConfig keyword arguments).
PRESETS = {
    # The thesis's method (chapter 3): bi-directional TSS, no residual, Huffman, N = 4.
    "thesis": {"n_bits": 4, "structure": "bi-3", "coder": "huffman", "reference": "anchor", "residual": None},
    # The setting chosen on the pooled multi-clip evaluation (docs/results/notes.md): groups of
    # 8 predicted along a chain of reconstructions, anchors at N = 5, residual blocks over 4
    # 8-bit steps per active element, coded with the v2 coder ctx (docs/bitstream.md, 6.2).
    # At the default cut it costs what N = 4 with residuals over 1.5 steps cost, at a higher
    # mAP@[.5:.95] on the four evaluation clips pooled.
    "recommended": {
        "n_bits": 5,
        "structure": "uni-8",
        "coder": "ctx",
        "reference": "chain",
        "residual": ResidualConfig("threshold", 4.0),
    },
}


# the fabric's ctx lane units, 3 engines of 2 lanes (docs/fabric.md "Slices"): the default
# slice count of large tensors
CTX_UNITS = 6
SLICE_ELEMENTS_LOG2 = 18  # a slice per 2^18 elements of the largest tensor, up to CTX_UNITS


def ctx_slices_for(elements: int) -> int:
    """The default ctx slice count of a tensor of ``elements`` (docs/bitstream.md 6.2.6):
    one under 2^19 elements, so for every SSD cut; up to the fabric's lane units above."""
    return min(CTX_UNITS, max(1, elements >> SLICE_ELEMENTS_LOG2))


def default_ctx_slices(tensors) -> int:
    """The encoder's default slice count S of a stream: the largest tensor's."""
    return ctx_slices_for(max(int(np.prod(t.shape)) for t in tensors))


@dataclass
class CodecConfig:
    """Every coding parameter of a stream. Defaults are the thesis's method (bi-3, N = 4,
    Huffman, p = 7, no residual) with the one-pass table policy."""

    tensors: list[TensorSpec]  # any iterable: kept as a list
    n_bits: int = 4
    structure: str = "bi-3"
    coder: str = "huffman"
    search_range: int = 7
    per_channel: bool = False
    residual: ResidualConfig | None = None
    reference: str = "anchor"
    refresh_threshold: float | None = None  # mean |error| per element (8-bit steps) that forces an anchor
    table_policy: str = "previous"  # "previous" (one pass, as the fabric) or "own" (two pass)
    key_interval: int = 16  # anchors between self-contained KEY anchors
    rate_target: float | None = None  # MB/s at `fps`; None: fixed N and g
    # rate control's (N, g) points, best quality first (any iterable: kept as a list); None or empty: the
    # default ladder. Only with rate_target.
    ladder: list[tuple[int, int]] | None = None
    fps: float = 30.0
    model_id: str = ""
    cut_id: str = ""
    model_hash: bytes = bytes(32)
    ctx_slices: int | None = None  # ctx: S of docs/bitstream.md 6.2.6; None: default_ctx_slices

    def __post_init__(self):
        self._listed()

    def _listed(self) -> None:
        """The tensors and the ladder as lists, read once: a generator read by a check would be
        empty for the encoder, and a NumPy array has no truth value."""
        self.tensors = _as_list(self.tensors)
        self.ladder = _as_list(self.ladder)

    def validate(self) -> Structure:
        """Check every parameter, and that the stream header carries them: the decoder's
        limits (:mod:`~temposplit.codec.bitstream`) and the header's field ranges, so the
        encoder never writes a stream the decoder refuses."""
        self._listed()  # fields set after construction too
        if not isinstance(self.tensors, list):
            raise ConfigurationError(f"a stream's tensors are a list of TensorSpecs, not {type(self.tensors).__name__}")
        if not self.tensors:
            raise ConfigurationError("a stream needs at least one tensor")
        if len(self.tensors) > MAX_TENSORS:
            raise ConfigurationError(f"{len(self.tensors)} tensors per frame (a stream carries 1..{MAX_TENSORS})")
        total = 0
        names = set()
        for t in self.tensors:
            if not isinstance(t, TensorSpec):
                raise ConfigurationError(f"a stream's tensors are TensorSpecs, not {type(t).__name__}")
            _check_name(f"tensor name {t.name!r}", t.name)
            if t.name in names:  # a feature file keys its arrays by name: a second one would be lost
                raise ConfigurationError(f"two tensors are named {t.name!r}: each tensor needs its own name")
            names.add(t.name)
            try:
                shape = tuple(t.shape)
            except TypeError:  # not a sequence
                shape = ()
            if len(shape) != 3 or not all(isinstance(v, numbers.Integral) and v >= 1 for v in shape):
                raise ConfigurationError(f"tensor {t.name!r}: shape must be (C, H, W), not {t.shape}")
            c, h, w = (int(v) for v in shape)
            if c > MAX_CHANNELS or h > MAX_SIDE or w > MAX_SIDE:
                raise ConfigurationError(
                    f"tensor {t.name!r}: shape {c}x{h}x{w} is past the stream's limits "
                    f"(C <= {MAX_CHANNELS}, H and W <= {MAX_SIDE})"
                )
            if c * h * w > MAX_TENSOR_ELEMENTS:
                raise ConfigurationError(
                    f"tensor {t.name!r}: {c * h * w} elements, more than a stream carries ({MAX_TENSOR_ELEMENTS})"
                )
            total += c * h * w
            check_block(t.block)
            check_zero_point(t.zero_point)
            if not wire_scale_ok(t.scale):
                raise ConfigurationError(
                    f"tensor {t.name!r}: scale must be positive and below 2^120 as a float32 "
                    f"(every dequantized value then finite), not {t.scale!r}"
                )
        if total > MAX_FRAME_ELEMENTS:
            raise ConfigurationError(f"a frame of {total} elements, more than a stream carries ({MAX_FRAME_ELEMENTS})")
        _check_name("model id", self.model_id)
        _check_name("cut id", self.cut_id)
        _check_model_hash(self.model_hash)
        check_bits(self.n_bits)
        check_search_range(self.search_range)
        entropy.check_coder(self.coder)
        _check_flag("per_channel", self.per_channel)  # the header's flag bit: 2 would set the next flag
        if self.reference not in REFERENCES:
            raise ConfigurationError(f"reference must be one of {REFERENCES}, not {self.reference!r}")
        if self.table_policy not in ("previous", "own"):
            raise ConfigurationError(f"table policy must be 'previous' or 'own', not {self.table_policy!r}")
        if isinstance(self.key_interval, bool) or not isinstance(self.key_interval, numbers.Integral):
            raise ConfigurationError(f"key_interval must be an integer, not {self.key_interval!r}")
        if self.key_interval < 1:
            raise ConfigurationError("key_interval must be at least 1")
        if self.residual is not None and not isinstance(self.residual, ResidualConfig):
            raise ConfigurationError(f"residual must be a ResidualConfig or None, not {self.residual!r}")
        if not wire_fps_ok(self.fps):
            raise ConfigurationError(
                f"fps must be in 0.001..{MAX_FPS_MILLI / 1000} (the header's millihertz), not {self.fps!r}"
            )
        for what in ("refresh_threshold", "rate_target"):
            if getattr(self, what) is not None:
                _check_real(what, getattr(self, what))
        if self.refresh_threshold is not None and not self.refresh_threshold >= 0:
            raise ConfigurationError("refresh_threshold must be non-negative")
        if self.rate_target is not None and not 0 < self.rate_target < math.inf:  # NaN fails both
            raise ConfigurationError(f"the target rate must be positive and finite (MB/s), not {self.rate_target!r}")
        if self.ctx_slices is not None:
            if isinstance(self.ctx_slices, bool) or not isinstance(self.ctx_slices, numbers.Integral):
                raise ConfigurationError(f"ctx_slices must be an integer, not {self.ctx_slices!r}")
            if not 1 <= self.ctx_slices <= ctx.MAX_SLICES:
                raise ConfigurationError(f"ctx_slices must be 1..{ctx.MAX_SLICES}, not {self.ctx_slices}")
            if self.ctx_slices > 1 and self.coder != "ctx":
                raise ConfigurationError(f"ctx_slices {self.ctx_slices} needs the coder 'ctx', not {self.coder!r}")
        structure = Structure.parse(self.structure)
        if self.ladder is not None:
            if not isinstance(self.ladder, list):
                raise ConfigurationError(f"a ladder is a list of (N, g) pairs, not {type(self.ladder).__name__}")
            if self.rate_target is None:  # it would be ignored: N and g are fixed
                raise ConfigurationError("a ladder needs rate_target: without it N and the group size are fixed")
            _check_ladder(self.ladder, structure)
        self._plain_numbers()
        return structure

    def _plain_numbers(self) -> None:
        """Once checked, keep the numbers as Python's: the checks take NumPy scalars, whose
        fixed-width arithmetic in the encoder would wrap (an np.uint8 N: ``1 << (N + 1)``; an
        np.uint8 p: ``-p``) or give NumPy booleans (an np.int64 group size), failing in push()."""
        self.tensors = [
            replace(t, shape=tuple(int(v) for v in t.shape), zero_point=int(t.zero_point), block=int(t.block))
            for t in self.tensors
        ]
        self.n_bits, self.search_range = int(self.n_bits), int(self.search_range)
        self.key_interval = int(self.key_interval)
        self.per_channel = bool(self.per_channel)
        self.fps = float(self.fps)
        for what in ("refresh_threshold", "rate_target"):
            if getattr(self, what) is not None:
                setattr(self, what, float(getattr(self, what)))
        if self.ctx_slices is not None:
            self.ctx_slices = int(self.ctx_slices)
        if self.ladder:
            self.ladder = [(int(n), int(g)) for n, g in self.ladder]

    def slices(self) -> int:
        """The stream's ctx slice count S (1: no slices)."""
        if self.coder != "ctx":
            return 1
        return default_ctx_slices(self.tensors) if self.ctx_slices is None else int(self.ctx_slices)

    def header(self) -> StreamHeader:
        """The stream header, checked by the decoder's own parser (a ConfigurationError
        for a configuration it would refuse)."""
        s = self.validate()
        max_group = s.group
        if self.rate_target is not None:
            max_group = max(g for _, g in (self.ladder or default_ladder(s.kind, s.group)))
        if not 1 <= max_group <= MAX_GROUP:
            raise ConfigurationError(f"group size must be in 1..{MAX_GROUP}, not {max_group}")
        header = StreamHeader(
            structure=s.kind,
            group=max_group,
            coder=self.coder,
            search_range=self.search_range,
            n_bits=self.n_bits,
            tensors=tuple(t.info() for t in self.tensors),
            residual=self.residual is not None,
            chain=self.reference == "chain",
            per_channel=self.per_channel,
            rate_control=self.rate_target is not None,
            refresh=self.refresh_threshold is not None,
            fps=self.fps,
            model_id=self.model_id,
            cut_id=self.cut_id,
            model_hash=self.model_hash,
            ctx_slices=self.slices(),
        )
        try:
            StreamHeader.from_bytes(header.to_bytes())
        except (BitstreamError, ValueError) as exc:
            raise ConfigurationError(f"the stream header cannot carry this configuration: {exc}") from exc
        return header


def _check_model_hash(model_hash) -> None:
    if not isinstance(model_hash, (bytes, bytearray)) or len(model_hash) != 32:
        raise ConfigurationError(f"model_hash must be 32 bytes (a SHA-256 digest), not {model_hash!r:.80}")


def _private_copy(config: CodecConfig) -> CodecConfig:
    """The encoder's own copy of ``config``. A field that cannot be copied (a memoryview as
    the model hash, a lock) is a ConfigurationError naming it, not the copy's TypeError."""
    try:
        return copy.deepcopy(config)
    except (TypeError, copy.Error, pickle.PicklingError) as exc:
        reason = exc
    if not isinstance(config.model_hash, (bytes, bytearray)):
        _check_model_hash(config.model_hash)  # the field's own message: it must be bytes
    for f in fields(config):
        try:
            copy.deepcopy(getattr(config, f.name))
        except (TypeError, copy.Error, pickle.PicklingError) as exc:
            reason = f"{f.name} {getattr(config, f.name)!r:.80} cannot be copied ({exc})"
            break
    raise ConfigurationError(f"the configuration cannot be copied for the encoder: {reason}")


def _check_ladder(ladder, structure: Structure) -> None:
    """Rate control's operating points (N, g): each a point the stream's structure can code
    (g = 1 for intra, odd for bi), so that the encoder never writes a predicted frame into an
    all-anchor stream or fails at a group it cannot plan."""
    for point in ladder:
        try:
            n, g = point
        except (TypeError, ValueError):
            raise ConfigurationError(f"a rate control operating point is a pair (N, g), not {point!r}") from None
        check_bits(n)
        if isinstance(g, bool) or not isinstance(g, numbers.Integral) or not 1 <= g <= MAX_GROUP:
            raise ConfigurationError(f"operating point {point!r}: group size must be an integer in 1..{MAX_GROUP}")
        if structure.kind == "intra" and g != 1:
            raise ConfigurationError(f"operating point {point!r}: the structure 'intra' codes groups of 1 frame")
        if structure.kind == "bi" and g % 2 == 0:
            raise ConfigurationError(f"operating point {point!r}: a bi-directional ladder needs odd group sizes")


def _check_name(what: str, name) -> None:
    """A name the header carries: a string of at most MAX_NAME bytes of UTF-8, without control
    characters (a feature file's zip member name ends at a NUL; docs/bitstream.md, 8)."""
    try:
        size = len(name.encode("utf-8"))
    except (AttributeError, UnicodeError) as exc:
        raise ConfigurationError(f"{what} must be a UTF-8 string") from exc
    if size > MAX_NAME:
        raise ConfigurationError(f"{what} is {size} bytes of UTF-8, more than a stream carries ({MAX_NAME})")
    bad = control_character(name)
    if bad is not None:
        raise ConfigurationError(f"{what} holds the control character U+{ord(bad):04X}: a stream's names hold none")


@dataclass
class EncodedFrame:
    """What the encoder knows of a frame it coded (for evaluation and statistics)."""

    index: int
    kind: str  # "key", "anchor" or "pred"
    n_bits: int
    reference: int | None
    packet_bytes: int
    tensor_bytes: list[int]
    reconstruction: list[np.ndarray] | None = None  # (C, H, W) N-bit codes (read-only), if asked for
    cost_per_element: float = 0.0  # mean TSS cost per element (predicted frames)
    coded_blocks: int = 0
    vectors: list[np.ndarray] | None = None  # per tensor, the motion vectors (predicted frames)


@dataclass
class _Group:
    start: int
    length: int
    n_bits: int
    anchor: int  # offset
    frames: dict[int, list[np.ndarray]] = field(default_factory=dict)  # index -> HWC quint8 codes
    plan: list[tuple[int, int | None]] = field(default_factory=list)
    done: int = 0  # entries of plan coded
    recon: dict[int, list[np.ndarray]] = field(default_factory=dict)  # index -> HWC N-bit codes
    changes: dict[int, list[np.ndarray]] = field(default_factory=dict)  # index -> ctx change maps
    anchors: dict[int, int] = field(default_factory=dict)  # side -> index of a refresh anchor
    bytes: int = 0
    pred_bytes: list[int] = field(default_factory=list)


@dataclass
class AnchorCoding:
    """What :meth:`SoftwareEngine.code_anchor` returns for one tensor of an anchor."""

    codes: np.ndarray  # (H, W, C) N-bit codes: the reference of the group's predicted frames
    histogram: np.ndarray | None  # token counts (the next anchor's table source); None: no table coder
    table: np.ndarray | None  # the code lengths the section was coded with
    section: tuple[bytes, int]  # the coded section (bytes, bits)


class SoftwareEngine:
    """The operations an accelerator can take over, in software (the golden path).

    A hardware back end subclasses this and returns the same values bit for bit; the
    encoder does the rest (table policy, residual decisions, packets) around it.
    :meth:`code_anchor` is the anchor's one call (the fabric's one pass); the others are
    the predicted frames' motion search and the residual's requantization.
    """

    def code_anchor(self, tensor: TensorInfo, q8: np.ndarray, n_bits: int, coder: str, alphabet, table):
        """Code one anchor tensor in one call: requantize the quint8 codes (H, W, C), code them
        with ``table`` (code lengths known before the pass: the previous anchor's) or, when
        ``table`` is None, with the table of their own histogram (a self-contained anchor),
        count the histogram for the next anchor, and keep the codes as the reference."""
        q_n = self.requantize(tensor, q8, n_bits)
        hist = entropy.histogram(coder, q_n, alphabet) if entropy.uses_table(coder) else None
        if hist is not None and table is None:
            table = huffman.table_lengths(hist)
        return AnchorCoding(q_n, hist, table, self.anchor_section(tensor, coder, q_n, alphabet, table))

    def close(self) -> None:
        """Release what the engine holds: nothing in software (a fabric engine's accelerator)."""

    def requantize(self, tensor: TensorInfo, q8: np.ndarray, n_bits: int) -> np.ndarray:
        """quint8 codes (H, W, C) -> N-bit codes."""
        table = lut(tensor.zero_point, n_bits)
        return K.apply_lut(np.ascontiguousarray(q8), table) if K.COMPILED else table[q8]

    def anchor_section(self, tensor: TensorInfo, coder: str, q_n: np.ndarray, alphabet, table):
        """The coded anchor section (bytes, bits) of N-bit codes (H, W, C), element order."""
        return entropy.encode(coder, q_n.reshape(-1), alphabet, table)

    def motion_search(
        self, tensor: TensorInfo, ref_n: np.ndarray, q8: np.ndarray, n_bits: int, p: int, per_channel: bool
    ):
        """TSS of the current quint8 codes against the reference's N-bit codes (both (H, W, C))."""
        k, z_n = 8 - n_bits, zero_point_n(tensor.zero_point, n_bits)
        ref_c = K.centred(ref_n, z_n, k, self._scratch("ref", ref_n.shape))
        cur_c = K.centred(q8, tensor.zero_point, 0, self._scratch("cur", q8.shape))
        search = K.tss_per_channel if per_channel else K.tss_shared
        return search(ref_c, cur_c, tensor.block, p, False)

    def _scratch(self, name: str, shape) -> np.ndarray:
        """An int16 work array of ``shape`` kept between calls (the search's centred maps)."""
        cache = self.__dict__.setdefault("_scratch_arrays", {})
        key = (name, tuple(shape))
        if key not in cache:
            cache[key] = np.empty(shape, np.int16)
        return cache[key]

    def ctx_anchor_sections(self, tensor: TensorInfo, q_n: np.ndarray, ref, ref_changes, n_bits: int, slices: int):
        """The ``ctx`` sections (one per slice, docs/bitstream.md 6.2.6) of an anchor's N-bit
        codes (H, W, C), temporal against the reference's codes and change map (or intra
        when ``ref`` is None): (list of bytes, change map)."""
        zn = zero_point_n(tensor.zero_point, n_bits)
        return ctx.encode_anchor_slices(q_n, ref, ref_changes, n_bits, zn, slices)

    def ctx_pred_sections(
        self, tensor: TensorInfo, mvs, p: int, flags, pred, recon, ref_changes, n_bits: int, slices: int
    ):
        """The ``ctx`` sections of a predicted frame: its vectors (nby, nbx, lanes, 2) and,
        with ``flags``, the flagged blocks of ``recon`` against the prediction ``pred``
        (H, W, C), the reference's change map as context, in ``slices`` slices (one without
        ``flags``): (list of bytes, change map)."""
        return ctx.encode_pred_slices(mvs, p, flags, pred, recon, ref_changes, tensor.block, n_bits, slices)


MAX_FRAME_INDEX = 0xFFFFFFFF  # the packets' u32 frame index


def _read_only(a: np.ndarray) -> np.ndarray:
    """A read-only view of a reconstruction the coder still references: a caller's edit in
    place would silently change the prediction of later frames."""
    view = a.view()
    view.flags.writeable = False
    return view


MV_PRIOR_SHIFT = 10
RESIDUAL_PRIOR_SHIFT = 14

# Vector refinement (ResidualConfig.refine_vectors): candidates within this of TSS's vector,
# and the cost model, in 1/16 bit: a residual value r costs REFINE_NONZERO + REFINE_STEP * |r|
# when r != 0 (zeros are free), a vector component v REFINE_VECTOR + REFINE_STEP * |v| when v != 0.
# The heavy vector weight was the best of the weights tried on cup's and Megamind's features.6
# and .10 (docs/bitstream.md, Measured compression of ctx): choosing for fewer non-zero
# residuals alone gained nothing there; what gains is a coded block leaving a moving vector.
REFINE_RADIUS = 1
REFINE_NONZERO = 16
REFINE_STEP = 16
REFINE_VECTOR = 400


def refine_costs(n_bits: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(residual cost by |r|, vector cost by |component|) for :func:`_kernels.refine_shared`."""
    r = np.arange(1 << n_bits, dtype=np.int64)
    v = np.arange(p + 1, dtype=np.int64)
    rcost = np.where(r > 0, REFINE_NONZERO + REFINE_STEP * r, 0)
    vcost = np.where(v > 0, REFINE_VECTOR + REFINE_STEP * v, 0)
    return rcost, vcost


class Encoder:
    def __init__(
        self,
        config: CodecConfig,
        keep_reconstruction: bool = False,
        first_index: int = 0,
        engine: SoftwareEngine | None = None,
    ):
        if not isinstance(config, CodecConfig):
            raise ConfigurationError(f"an Encoder takes a CodecConfig, not {type(config).__name__}")
        config._listed()  # a generator set as the tensors or the ladder: read once, before the copy
        # A private copy: the caller may change (or reuse for a sweep) its configuration after
        # this, and the encoder reads it for the whole stream.
        self.config = config = _private_copy(config)
        self.engine = engine or SoftwareEngine()
        self.structure = config.validate()
        self.header = config.header()
        self.keep_reconstruction = _check_flag("keep_reconstruction", keep_reconstruction)
        self.tensors = self.header.tensors
        if isinstance(first_index, bool) or not isinstance(first_index, numbers.Integral):
            raise ConfigurationError(f"first_index must be an integer, not {first_index!r}")
        if not 0 <= first_index <= MAX_FRAME_INDEX:
            raise ConfigurationError(f"first_index must fit the packets' u32 frame index, not {first_index}")
        self.next_index = int(first_index)  # a stream resumed after a loss starts past 0
        self._first_index = self.next_index
        self._encoded = False  # encode() was called: this encoder's one stream is written
        self.group: _Group | None = None
        self.total_frames: int | None = None
        self.anchors_since_key: int | None = None  # None: the next anchor is a KEY
        self.prev_anchor: list[tuple[int, np.ndarray] | None] = [None] * len(self.tensors)
        self.prev_anchor_index: int | None = None
        self.last_coded = None  # ctx: (index, N, codes, change maps) of the frame coded last
        self.mv_stats = [None] * len(self.tensors)
        self.res_stats: list[dict[int, np.ndarray]] = [{} for _ in self.tensors]
        self.group_tables: list[tuple[np.ndarray | None, np.ndarray | None]] = []
        self.frames: list[EncodedFrame] = []  # statistics of every coded frame, in packet order
        self.rate = None
        if config.rate_target is not None:
            ladder = config.ladder or default_ladder(self.structure.kind, self.structure.group)
            if self.structure.kind == "bi" and any(g % 2 == 0 for _, g in ladder):
                raise ConfigurationError("a bi-directional ladder needs odd group sizes")
            self.rate = RateController(config.rate_target, config.fps, config.coder, ladder)
            self.rate.steer_residual = config.residual is not None

    # ------------------------------------------------------------------ public

    def header_bytes(self) -> bytes:
        return self.header.to_bytes()

    def set_total_frames(self, n: int) -> None:
        """Tell the encoder how many frames the clip has, counted from frame 0 (the index it
        ends at: an encoder resumed at ``first_index`` counts the frames before it too, as the
        edge does), so that the final short group follows the structure's rule exactly
        (otherwise it is settled at :meth:`flush`). A count that falls short is a hint, no
        more: from the frame at the count on, the clip is coded as one of unknown length."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0:
            raise ConfigurationError(f"the clip's frame count must be a whole number, not {n!r}")
        self.total_frames = int(n)

    def encode(self, frames: Sequence[Sequence[np.ndarray]]) -> bytes:
        """A whole clip (any iterable of frames) in one call: its length announced
        (:meth:`set_total_frames`), then the stream header and every packet, in order.

        An encoder codes one stream: encode() is its only call, once (a second clip, or the
        same one again, needs a new Encoder; so does a clip after :meth:`push`)."""
        self._one_stream("encode()")
        if self.next_index != self._first_index:
            raise ConfigurationError(
                "encode() codes a whole stream, but this Encoder has already pushed frames: make a new Encoder"
            )
        try:
            frames = list(frames)
        except TypeError:
            raise ConfigurationError(f"encode() takes a list of frames, not {type(frames).__name__}") from None
        self.set_total_frames(self.next_index + len(frames))
        parts = [self.header_bytes()]
        for frame in frames:
            parts += [p.to_bytes() for p in self._push(frame)]
            self._encoded = True  # from its first coded frame on (a first frame refused leaves it as it was)
        self._encoded = True
        parts += [p.to_bytes() for p in self.flush()]
        return b"".join(parts)

    def _one_stream(self, call: str) -> None:
        if self._encoded:
            raise ConfigurationError(
                f"{call}: encode() has already run on this Encoder (a stream, or part of one before a frame "
                "was refused): an Encoder codes one stream, make a new Encoder"
            )

    def request_key(self) -> list[Packet]:
        """A receiver lost state: end the current group (coding any frames it holds) and make
        the next frame a self-contained KEY anchor. Returns the packets of the frames held."""
        self.anchors_since_key = None  # the frames held, if any, start with a KEY too
        self.last_coded = None
        return self.flush()

    def push(self, frame: Sequence[np.ndarray]) -> list[Packet]:
        """Code one frame (a list of one (C, H, W) uint8 array per tensor): the packets that
        became ready. Not after :meth:`encode`, which codes the encoder's whole stream."""
        self._one_stream("push()")
        return self._push(frame)

    def _push(self, frame: Sequence[np.ndarray]) -> list[Packet]:
        codes = self._check_frame(frame)
        index = self.next_index
        if index > MAX_FRAME_INDEX:
            raise ConfigurationError(
                f"frame {index} is past the packets' u32 frame index (at most {MAX_FRAME_INDEX}): start a new stream"
            )
        self.next_index += 1
        if self.group is None:
            self._start_group(index, codes)
        g = self.group
        g.frames[index] = codes
        return self._drain()

    def close(self) -> None:
        """Release the engine's resources (a fabric back end's simulator or DMA buffers)."""
        self.engine.close()

    def flush(self) -> list[Packet]:
        """Code every frame still waiting (a final short group) and return the packets."""
        g = self.group
        if g is None:
            return []
        if g.done == 0:  # the anchor has not arrived: settle the group on the frames it has
            g.length = len(g.frames)
            g.anchor = self.structure.anchor_offset(g.length)
            g.plan = group_plan(g.start, g.length, g.anchor, self.config.reference)
            return self._drain()
        # The anchor is out: frames after it were coded as they came; the group just ends here.
        self._end_group()
        return []

    # ------------------------------------------------------------------ groups

    def _check_frame(self, frame) -> list[np.ndarray]:
        # A frame is a list of one (C, H, W) array per tensor: push([codes]) for one tensor.
        if not isinstance(frame, (Sequence, np.ndarray)) or (isinstance(frame, np.ndarray) and frame.ndim == 0):
            what = "a 0-d array" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ConfigurationError(f"a frame is a list of uint8 arrays, one per tensor, not {what}")
        if len(frame) != len(self.tensors):
            hint = " (a list of arrays, one per tensor: push([codes]))" if isinstance(frame, np.ndarray) else ""
            raise ConfigurationError(f"a frame has {len(self.tensors)} tensors, not {len(frame)}{hint}")
        out = []
        for t, x in zip(self.tensors, frame, strict=True):
            try:
                x = np.asarray(x)
            except (ValueError, TypeError) as exc:  # a ragged nested list: no array at all
                raise ConfigurationError(
                    f"tensor {t.name!r}: quint8 codes must be a uint8 array of shape {t.shape}, "
                    f"not a {type(x).__name__} that makes no array ({exc})"
                ) from None
            if x.ndim == 4 and x.shape[0] == 1:
                x = x[0]
            if x.dtype != np.uint8:
                raise ConfigurationError(f"tensor {t.name!r}: quint8 codes must be uint8, not {x.dtype}")
            if x.shape != t.shape:
                raise ConfigurationError(f"tensor {t.name!r}: expected shape {t.shape}, got {x.shape}")
            # Always a copy: a frame may wait for its group's anchor (bi-g), and the caller may
            # reuse its buffer for the next frame (ascontiguousarray would keep a view of a
            # channel-last array or of a single-channel one).
            out.append(np.array(x.transpose(1, 2, 0), order="C"))
        return out

    def _start_group(self, index: int, codes: list[np.ndarray]) -> None:
        n_bits, g = self.config.n_bits, self.structure.group
        if self.total_frames is not None and index >= self.total_frames:
            # Past the count announced (a container's header that undercounts its frames): the
            # clip goes on as one of unknown length, not as groups of one anchor each.
            self.total_frames = None
        if self.rate is not None:
            left = None if self.total_frames is None else self.total_frames - index
            key = self.anchors_since_key is None or self.anchors_since_key + 1 >= self.config.key_interval
            temporal_n = self.last_coded[1] if self.config.coder == "ctx" and not key and self.last_coded else None
            frame = [(c, t.zero_point) for c, t in zip(codes, self.tensors, strict=True)]
            n_bits, g = self.rate.choose(frame, left, temporal_n)
        length = g
        if self.total_frames is not None:
            length = max(1, min(g, self.total_frames - index))
        offset = self.structure.anchor_offset(length)
        self.group = _Group(index, length, n_bits, offset)
        self.group.plan = group_plan(index, length, offset, self.config.reference)

    def _drain(self) -> list[Packet]:
        g = self.group
        packets = []
        while g is not None and g.done < len(g.plan) and g.plan[g.done][0] in g.frames:
            index, ref = g.plan[g.done]
            codes = g.frames.pop(index)
            if ref is None:
                packets.append(self._code_anchor(index, codes, group_start=True))
            else:
                packets.append(self._code_pred(index, codes, ref))
            g.done += 1
            if g.done == len(g.plan):
                self._end_group()
                g = None
        return packets

    def _end_group(self) -> None:
        g = self.group
        if self.rate is not None and g is not None:
            self.rate.update(g.bytes, g.done, g.pred_bytes, g.n_bits)
        self.group = None

    def _forget(self, index: int) -> None:
        """Drop the group's reconstructions (and ctx change maps) that no later frame of it
        can reference, once frame ``index`` is coded: the group's anchor, its refresh
        anchors and the frame just coded (a chain's next reference) stay. A group of 255
        frames held every one (4 GiB for a stream's largest tensor); the bytes are the same."""
        g = self.group
        keep = {g.start + g.anchor, index, *g.anchors.values()}
        for k in [k for k in g.recon if k not in keep]:
            del g.recon[k]
            g.changes.pop(k, None)

    def _side(self, index: int) -> int:
        g = self.group
        return (index > g.start + g.anchor) - (index < g.start + g.anchor)

    def _reference(self, index: int, ref: int) -> int:
        """The planned reference, or a refresh anchor that replaced it on this frame's side."""
        g = self.group
        refresh = g.anchors.get(self._side(index))
        if refresh is None:
            return ref
        if self.config.reference == "chain":
            return ref  # the neighbour (possibly the refresh anchor itself)
        return refresh

    # ------------------------------------------------------------------ anchors

    def _code_anchor(self, index: int, codes: list[np.ndarray], group_start: bool) -> Packet:
        g = self.group
        n_bits = g.n_bits
        key = self.anchors_since_key is None or self.anchors_since_key + 1 >= self.config.key_interval
        key = key or not group_start  # a refresh is self-contained
        tables = entropy.uses_table(self.config.coder)
        if group_start:
            self.group_tables = [self._group_tables(i, n_bits) for i in range(len(self.tensors))]
        if self.config.coder == "ctx":
            return self._code_anchor_ctx(index, codes, group_start, key)
        anchors = []
        for i, (t, q8) in enumerate(zip(self.tensors, codes, strict=True)):
            alphabet = anchor_alphabet(t, n_bits)
            table = None  # None: the anchor's own table (carried in the packet)
            prev = self.prev_anchor[i]
            own = key or self.config.table_policy == "own" or prev is None or prev[0] != n_bits
            if tables and not own:
                table = huffman.table_lengths(prev[1])
            res = self.engine.code_anchor(t, q8, n_bits, self.config.coder, alphabet, table)
            if tables:
                self.prev_anchor[i] = (n_bits, res.histogram)
            mv_table, res_table = self.group_tables[i]
            anchors.append(AnchorTensor(res.codes, res.table, own, res.histogram, mv_table, res_table, res.section))
        payload, sizes = write_anchor(self.header, n_bits, g.length, anchors)
        self.anchors_since_key = 0 if key else self.anchors_since_key + 1
        recon = [a.codes for a in anchors]
        g.recon[index] = recon
        if not group_start:
            g.anchors[self._side(index)] = index
        self._forget(index)
        # A KEY names itself; an ANCHOR names the anchor its derived tables come from.
        source = index if key or self.prev_anchor_index is None else self.prev_anchor_index
        self.prev_anchor_index = index
        packet = Packet(KEY if key else ANCHOR, index, source, payload, FLAG_GROUP_START if group_start else 0, sizes)
        g.bytes += len(packet)
        if self.rate is not None and group_start:
            self.rate.start_group(len(packet), g.length, n_bits, temporal=False)
        self._record(packet, n_bits, None, recon)
        return packet

    def _code_anchor_ctx(self, index: int, codes: list[np.ndarray], group_start: bool, key: bool) -> Packet:
        """An anchor with ``ctx``: temporal against the frame coded just before it when that
        frame has the same N (never in a KEY), else intra (docs/bitstream.md, 10)."""
        g = self.group
        n_bits = g.n_bits
        last = self.last_coded
        temporal = not key and last is not None and last[1] == n_bits
        anchors = []
        for i, (t, q8) in enumerate(zip(self.tensors, codes, strict=True)):
            q_n = self.engine.requantize(t, q8, n_bits)
            ref, dref = (last[2][i], last[3][i]) if temporal else (None, None)
            slices = len(self.header.slices(t))
            sections, changes = self.engine.ctx_anchor_sections(t, q_n, ref, dref, n_bits, slices)
            mode = ctx.MODE_TEMPORAL if temporal else ctx.MODE_INTRA
            anchors.append(AnchorTensor(q_n, None, True, None, None, None, None, mode, changes, sections))
        payload, sizes = write_anchor(self.header, n_bits, g.length, anchors)
        self.anchors_since_key = 0 if key else self.anchors_since_key + 1
        recon = [a.codes for a in anchors]
        g.recon[index] = recon
        g.changes[index] = [a.changes for a in anchors]
        self.last_coded = (index, n_bits, recon, g.changes[index])
        if not group_start:
            g.anchors[self._side(index)] = index
        self._forget(index)
        self.prev_anchor_index = index
        source = last[0] if temporal else index
        packet = Packet(KEY if key else ANCHOR, index, source, payload, FLAG_GROUP_START if group_start else 0, sizes)
        g.bytes += len(packet)
        if self.rate is not None and group_start:
            self.rate.start_group(len(packet), g.length, n_bits, temporal=temporal)
        self._record(packet, n_bits, None, recon)
        return packet

    def _group_tables(self, i: int, n_bits: int):
        """MV and residual tables carried by a group's anchor, from the previous groups' statistics."""
        if not has_group_tables(self.header):
            return None, None
        p = self.config.search_range
        if self.mv_stats[i] is None:
            v = np.abs(np.arange(-p, p + 1))
            self.mv_stats[i] = (np.int64(1) << np.maximum(0, MV_PRIOR_SHIFT - 2 * v)).astype(np.int64)
        mv_table = huffman.table_lengths(self.mv_stats[i])
        res_table = None
        if self.config.residual is not None:
            alpha = entropy.Alphabet.residual(n_bits)
            stats = self.res_stats[i].get(n_bits)
            if stats is None:
                r = np.abs(np.arange(alpha.size) - alpha.zero)
                lit = (np.int64(1) << np.maximum(0, RESIDUAL_PRIOR_SHIFT - 2 * r)).astype(np.int64)
                runs = np.full(entropy.token_alphabet(self.config.coder, alpha) - alpha.size, 1 << 6, np.int64)
                stats = np.concatenate([lit, runs])
                self.res_stats[i][n_bits] = stats
            res_table = huffman.table_lengths(stats)
        return mv_table, res_table

    # ------------------------------------------------------------------ predicted frames

    def _code_pred(self, index: int, codes: list[np.ndarray], planned_ref: int) -> Packet:
        g = self.group
        n_bits = g.n_bits
        ref_index = self._reference(index, planned_ref)
        ref = g.recon[ref_index]
        preds, costs, elements = [], 0, 0
        for t, q8, r_n in zip(self.tensors, codes, ref, strict=True):
            mvs, cost = self.engine.motion_search(t, r_n, q8, n_bits, self.config.search_range, self.config.per_channel)
            preds.append((mvs, cost))
            costs += int(cost.sum())
            elements += q8.size
        mean_cost = costs / max(1, elements)
        if self.config.refresh_threshold is not None and mean_cost > self.config.refresh_threshold:
            packet = self._code_anchor(index, codes, group_start=False)
            self.frames[-1].cost_per_element = mean_cost
            return packet
        tensors, recon, changes, coded_total = [], [], [], 0
        for i, (t, q8, r_n, (mvs, _cost)) in enumerate(zip(self.tensors, codes, ref, preds, strict=True)):
            comp = K.compensate_per_channel if self.config.per_channel else K.compensate_shared
            pred, bad = comp(r_n, mvs, t.block)
            assert bad < 0, "TSS produced an invalid vector"
            coded = residual = None
            compensated = pred
            if self.config.residual is not None:
                cur_n = self.engine.requantize(t, q8, n_bits)
                if self.config.residual.hysteresis:
                    cur_n = self._hold(t, q8, cur_n, pred, n_bits)
                if K.COMPILED:
                    active = K.count_not(np.ascontiguousarray(q8), t.zero_point)
                else:
                    active = np.count_nonzero(q8 != t.zero_point)
                activity = active / q8.size
                coded, residual, pred = self._residual(i, t, cur_n, pred, n_bits, activity)
                coded_total += int(coded.sum())
                if self._refines(n_bits) and coded.any():
                    mvs, compensated, residual = self._refine(t, r_n, cur_n, mvs, coded, n_bits)
            pt = PredTensor(mvs, coded, residual)
            if self.config.coder == "ctx":
                nby, nbx = grid_shape(t.height, t.width, t.block)
                lanes = mvs.reshape(nby, nbx, -1, 2)
                dref = g.changes[ref_index][i]
                slices = len(self.header.slices(t))
                pt.slices, pt.changes = self.engine.ctx_pred_sections(
                    t, lanes, self.config.search_range, coded, compensated, pred, dref, n_bits, slices
                )
                changes.append(pt.changes)
            tensors.append(pt)
            recon.append(pred)
            self._learn(i, t, mvs, residual, n_bits)
        mv_tables = [mt for mt, _ in self.group_tables]
        res_tables = [rt for _, rt in self.group_tables]
        payload, sizes = write_pred(self.header, n_bits, tensors, mv_tables, res_tables)
        g.recon[index] = recon
        if self.config.coder == "ctx":
            g.changes[index] = changes
            self.last_coded = (index, n_bits, recon, changes)
        self._forget(index)
        packet = Packet(PRED, index, ref_index, payload, 0, sizes)
        g.bytes += len(packet)
        g.pred_bytes.append(len(packet))
        if self.rate is not None and self.config.residual is not None:
            self.rate.after_pred(len(packet))
        self._record(packet, n_bits, ref_index, recon, mean_cost, coded_total)
        self.frames[-1].vectors = [pt.mvs for pt in tensors]
        return packet

    def _hold(self, t: TensorInfo, q8, cur_n, pred, n_bits: int) -> np.ndarray:
        """The frame's codes after the flicker hysteresis against the prediction (ResidualConfig)."""
        m = int(self.config.residual.hysteresis)
        if not K.COMPILED:
            return hold(q8, cur_n, pred, t.zero_point, n_bits, m)
        lo, hi = hold_tables(t.zero_point, n_bits, m)
        return K.hold_codes(np.ascontiguousarray(q8), np.ascontiguousarray(cur_n), np.ascontiguousarray(pred), lo, hi)

    def _refines(self, n_bits: int) -> bool:
        """Whether coded blocks get refined vectors: asked for, and coded blocks are exact."""
        cfg = self.config.residual
        return cfg is not None and cfg.refine_vectors and cfg.dead_zone < (1 << (8 - n_bits))

    def _refine(self, t: TensorInfo, ref_n, cur_n, mvs, coded, n_bits: int):
        """Coded blocks' vectors chosen for the cost of their residual (ResidualConfig.refine_vectors).
        Returns (vectors, motion-compensated prediction, residual values of the coded blocks);
        the reconstruction is unchanged: coded blocks are the current codes, skipped ones keep
        their vector."""
        rcost, vcost = refine_costs(n_bits, self.config.search_range)
        refine = K.refine_per_channel if self.config.per_channel else K.refine_shared
        mvs = refine(ref_n, cur_n, mvs, coded, t.block, self.config.search_range, REFINE_RADIUS, rcost, vcost)
        comp = K.compensate_per_channel if self.config.per_channel else K.compensate_shared
        pred, bad = comp(ref_n, mvs, t.block)
        assert bad < 0, "refinement produced an invalid vector"
        diff = cur_n.astype(np.int32) - pred.astype(np.int32)
        return mvs, pred, gather_blocks(diff, coded, t.block).astype(np.int32)

    def _residual_gain(self) -> float:
        """How much rate control scales the residual threshold (1 without rate control)."""
        return self.rate.gain(self.group.n_bits) if self.rate is not None else 1.0

    def _residual(self, i: int, t: TensorInfo, cur_n: np.ndarray, pred: np.ndarray, n_bits: int, activity: float):
        """Choose the blocks whose residual is coded; returns (coded, residual values, reconstruction).
        ``activity``: the fraction of the frame's int8 codes of this tensor that are not z8.
        The threshold decision runs compiled where numba is (``K.residual_threshold``, tested
        equal to :meth:`_residual_numpy`), the rest in NumPy."""
        cfg = self.config.residual
        if cfg.mode == "threshold" and K.COMPILED:
            limit = cfg.threshold * activity * self._residual_gain()
            return K.residual_threshold(
                np.ascontiguousarray(cur_n),
                np.ascontiguousarray(pred),
                t.block,
                8 - n_bits,
                float(limit),
                float(cfg.dead_zone),
            )
        return self._residual_numpy(i, t, cur_n, pred, n_bits, activity)

    def _residual_numpy(self, i: int, t: TensorInfo, cur_n: np.ndarray, pred: np.ndarray, n_bits: int, activity: float):
        """:meth:`_residual` in NumPy, both decisions (the readable definition)."""
        cfg = self.config.residual
        b = t.block
        nby, nbx = grid_shape(t.height, t.width, b)
        diff = cur_n.astype(np.int32) - pred.astype(np.int32)
        ph, pw = nby * b - t.height, nbx * b - t.width
        padded = np.pad(diff, ((0, ph), (0, pw), (0, 0)))
        blocks = padded.reshape(nby, b, nbx, b, t.channels)
        sizes = (
            np.outer(np.minimum(b, t.height - b * np.arange(nby)), np.minimum(b, t.width - b * np.arange(nbx)))
            * t.channels
        )
        if cfg.mode == "threshold":
            mean_abs = np.abs(blocks).sum(axis=(1, 3, 4)) * (1 << (8 - n_bits)) / sizes  # in 8-bit steps
            coded = mean_abs > cfg.threshold * activity * self._residual_gain()
        else:
            k = 8 - n_bits
            sse = ((blocks.astype(np.int64) << k) ** 2).sum(axis=(1, 3, 4))
            lengths = self.group_tables[i][1]
            alpha = entropy.Alphabet.residual(n_bits)
            if lengths is None:  # raw/zvc: bits are fixed per symbol
                bits = sizes * alpha.width
            else:
                sym_bits = lengths[: alpha.size].astype(np.int64)
                bits = sym_bits[np.clip(blocks + alpha.zero, 0, alpha.size - 1)].sum(axis=(1, 3, 4))
            coded = sse > cfg.lam * self._residual_gain() * bits
        if cfg.dead_zone:
            diff[(np.abs(diff) << (8 - n_bits)) <= cfg.dead_zone] = 0
            nonzero = np.pad(diff != 0, ((0, ph), (0, pw), (0, 0))).reshape(nby, b, nbx, b, t.channels)
            coded &= nonzero.any(axis=(1, 3, 4))
        recon = pred.copy()
        residual = gather_blocks(diff, coded, b).astype(np.int32)
        if coded.any():
            mask = np.repeat(np.repeat(coded, b, 0), b, 1)[: t.height, : t.width]
            recon[mask] = (pred[mask].astype(np.int32) + diff[mask]).astype(recon.dtype)
        return coded, residual, recon

    def _learn(self, i: int, t: TensorInfo, mvs: np.ndarray, residual, n_bits: int) -> None:
        """Statistics for the next group's carried tables (one pass: past frames only)."""
        if not has_group_tables(self.header):
            return
        p = self.config.search_range
        hist = np.bincount(mvs.reshape(-1).astype(np.intp) + p, minlength=2 * p + 1)  # intp: 32-bit ARM refuses int64
        self.mv_stats[i] = self.mv_stats[i] // 2 + hist  # decaying memory of past groups
        if residual is not None and residual.size:
            alpha = entropy.Alphabet.residual(n_bits)
            h = entropy.histogram(self.config.coder, residual + alpha.zero, alpha)
            self.res_stats[i][n_bits] = self.res_stats[i][n_bits] // 2 + h

    def _record(self, packet, n_bits, ref, recon, cost=0.0, coded=0) -> None:
        chw = [_read_only(r.transpose(2, 0, 1)) for r in recon] if self.keep_reconstruction else None
        self.frames.append(
            EncodedFrame(packet.index, packet.kind, n_bits, ref, len(packet), packet.tensor_bytes, chw, cost, coded)
        )
