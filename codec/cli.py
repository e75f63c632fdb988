"""``temposplit encode``, ``decode`` and ``bench codec``: the codec from the command line."""

from __future__ import annotations

import argparse
import sys

# decode: the frames it could decode are written, but packets were damaged or repeated
from temposplit.cli import PARTIAL


def register(sub) -> None:
    p = sub.add_parser(
        "encode", help="feature maps (.npz) -> stream", description="Encode a feature file into a stream."
    )
    p.add_argument("input", help=".npz feature file (docs/bitstream.md, Feature files)")
    p.add_argument("output", help="stream file to write")
    add_codec_options(p)
    p.add_argument(
        "--stats",
        action="store_true",
        help="also print the bytes of each kind of frame (KEY, anchor, predicted) and of each tensor",
    )
    p.set_defaults(handler=_encode)

    p = sub.add_parser(
        "decode", help="stream -> feature maps (.npz)", description="Decode a stream into a feature file."
    )
    p.add_argument("input", help="stream file")
    p.add_argument("output", help=".npz file to write")
    p.set_defaults(handler=_decode)


def register_bench(sub) -> None:
    p = sub.add_parser(
        "codec",
        help="codec speed at the ResNet-50 cut shapes (bi-3 + Huffman; the recommended preset with ctx) "
        "and at the SSD cuts",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per shape per line")
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames per shape, 1..256 (default: the fewest whole groups of at least 9 frames, so that anchors "
        "take their long-stream share: 9 for bi-3, 16 for uni-8)",
    )
    p.add_argument("--shapes", default="all", help="'all', 'small' (the two smaller shapes) or CxHxW[:B],...")
    p.add_argument("--no-ssd", action="store_true", help="leave out the rows of the SSD cuts")
    p.set_defaults(handler=_bench)


def add_codec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--preset",
        choices=["recommended", "thesis"],
        default="recommended",
        help="starting point: 'recommended' (uni-8, chain, residual over 4 steps, ctx, N=5; the default) or 'thesis' "
        "(bi-3, no residual, huffman, N=4); the options below override it",
    )
    p.add_argument("--bits", "-n", type=int, default=None, help="N, bits per anchor code (2..8)")
    p.add_argument("--structure", default=None, help="intra, uni-G or bi-G")
    p.add_argument("--coder", default=None, help="raw, zvc, huffman, zrl or ctx (bitstream v2)")
    # (default None: an option given is told from the default, which intra refuses: config_from_args)
    p.add_argument("--search-range", "-p", type=int, default=None, help="TSS search range: 3, 7 or 15 (default 7)")
    p.add_argument(
        "--block", "-B", type=int, default=None, help="block size for every tensor (default: the file's, else 4)"
    )
    p.add_argument("--per-channel", action="store_true", default=None, help="one vector per block and channel")
    p.add_argument(
        "--residual",
        choices=["threshold", "rd", "none"],
        default=None,
        help="code residuals of predicted blocks (or not)",
    )
    p.add_argument(
        "--residual-threshold",
        type=float,
        default=None,
        help="code a block whose mean |error| per active element exceeds this, in 8-bit steps "
        "(default: the preset's; 1.5 where it has none)",
    )
    p.add_argument("--lam", type=float, default=None, help="rate-distortion lambda for --residual rd (default 4)")
    p.add_argument(
        "--dead-zone",
        type=float,
        default=None,
        help="drop residual values up to this size, in 8-bit steps (residual modes; default 0: rebuild coded "
        "blocks exactly)",
    )
    p.add_argument(
        "--hysteresis",
        type=int,
        default=None,
        metavar="M",
        help="keep a predicted frame's code while its int8 value stays within the code's cell widened by M "
        "8-bit steps (residual modes; default: the preset's, 0 where it has none: fresh codes; "
        "docs/bitstream.md, section 5)",
    )
    p.add_argument(
        "--refine-vectors",
        action="store_true",
        default=None,
        help="give coded residual blocks the vector their residual is cheapest with (encoder only; "
        "same reconstruction; docs/bitstream.md, Measured compression of ctx)",
    )
    p.add_argument("--reference", choices=["anchor", "chain"], default=None, help="what predicted frames use")
    p.add_argument("--refresh", type=float, default=None, help="make a frame an anchor above this mean TSS cost")
    p.add_argument("--rate", type=float, default=None, help="target MB/s at --fps: rate control picks N and g")
    p.add_argument(
        "--fps", type=float, default=None, help="frame rate for rates (default 30; the edge's: its source's)"
    )
    p.add_argument(
        "--table-policy",
        choices=["previous", "own"],
        default=None,
        help="an anchor's Huffman/ZRL table from the previous anchor's histogram (one pass, as the fabric; the "
        "default) or its own (two passes); only with those coders; docs/bitstream.md, section 7",
    )
    p.add_argument("--key-interval", type=int, default=16, help="anchors between self-contained KEY anchors")


DEFAULT_FPS = 30.0  # --fps where neither it nor a source gives a rate


def config_from_args(args, tensors):
    """A CodecConfig from a preset and the options given on the command line."""
    from temposplit.codec.encoder import PRESETS, CodecConfig, ResidualConfig
    from temposplit.codec.entropy import uses_table
    from temposplit.codec.errors import ConfigurationError
    from temposplit.codec.structure import Structure

    kwargs = dict(PRESETS[getattr(args, "preset", None) or "recommended"])
    if args.rate is not None and getattr(args, "bits", None) is not None:  # it would be ignored
        raise ConfigurationError("--rate chooses N for each group: give --rate or --bits, not both")
    for option, field in (
        ("bits", "n_bits"),
        ("structure", "structure"),
        ("coder", "coder"),
        ("reference", "reference"),
    ):
        if getattr(args, option, None) is not None:
            kwargs[field] = getattr(args, option)
    hysteresis = getattr(args, "hysteresis", None)
    # the residual's options, as given (None: the preset's, else the ResidualConfig default)
    given = {
        field: getattr(args, option, None)
        for option, field in (
            ("residual_threshold", "threshold"),
            ("lam", "lam"),
            ("dead_zone", "dead_zone"),
            ("refine_vectors", "refine_vectors"),
        )
    }
    if Structure.parse(kwargs["structure"]).kind == "intra":  # options of predicted frames would be ignored
        # (given ones only: None is an option not given; a preset's values stand, unread)
        flags = {
            "--search-range": args.search_range,
            "--per-channel": args.per_channel,
            "--reference": getattr(args, "reference", None),
            "--refresh": args.refresh,
            f"--residual {args.residual}": None if args.residual == "none" else args.residual,
            "--residual-threshold": given["threshold"],
            "--lam": given["lam"],
            "--dead-zone": given["dead_zone"],
            "--refine-vectors": given["refine_vectors"],
            "--hysteresis": hysteresis or None,  # 0: fresh codes, what intra codes anyway
        }
        ignored = [flag for flag, value in flags.items() if value is not None]
        if ignored:
            verb = "changes" if len(ignored) == 1 else "change"
            raise ConfigurationError(
                f"{', '.join(ignored)} {verb} nothing with --structure intra (every frame an anchor: "
                "no motion search, no predicted frame)"
            )
    if args.residual == "none":
        kwargs["residual"] = None
    elif args.residual is not None or kwargs.get("residual") is not None:
        preset = kwargs.get("residual") or ResidualConfig()
        if hysteresis is None:
            hysteresis = preset.hysteresis
        kwargs["residual"] = ResidualConfig(
            mode=args.residual or preset.mode,
            hysteresis=hysteresis,
            **{field: getattr(preset, field) if value is None else value for field, value in given.items()},
        )
    res = kwargs.get("residual")
    if res is not None:  # an option of the other residual mode would be ignored
        other = {"threshold": ("lam", "--lam", "rd"), "rd": ("threshold", "--residual-threshold", "threshold")}
        field, flag, mode = other[res.mode]
        if given[field] is not None:
            raise ConfigurationError(f"{flag} applies to --residual {mode}, not {res.mode}")
    if kwargs.get("residual") is None:  # options that would be ignored
        flags = {"threshold": "--residual-threshold", "lam": "--lam", "dead_zone": "--dead-zone"}
        flags["refine_vectors"] = "--refine-vectors"
        ignored = [flags[field] for field, value in given.items() if value is not None]
        ignored += ["--hysteresis"] if hysteresis else []
        if ignored:
            verb = "applies" if len(ignored) == 1 else "apply"
            raise ConfigurationError(f"{', '.join(ignored)} {verb} to a residual mode (--residual threshold or rd)")
    if args.table_policy is not None and not uses_table(kwargs["coder"]):  # it would be ignored
        raise ConfigurationError(
            f"--table-policy applies to the coders with tables (huffman, zrl), not --coder {kwargs['coder']}"
        )
    if args.table_policy is not None:
        kwargs["table_policy"] = args.table_policy
    if args.search_range is not None:
        kwargs["search_range"] = args.search_range
    if args.per_channel is not None:
        kwargs["per_channel"] = args.per_channel
    return CodecConfig(
        tensors=tensors,
        refresh_threshold=args.refresh,
        key_interval=args.key_interval,
        rate_target=args.rate,
        fps=DEFAULT_FPS if args.fps is None else args.fps,
        **kwargs,
    )


def _encode(args) -> int:
    from temposplit.codec.encoder import Encoder, TensorSpec
    from temposplit.codec.motion import check_block

    check_output(args.output, args.input)
    clip = _load_features(args.input)
    block = args.block
    if block is not None:
        check_block(block)  # 0 is an error, not "the default"
    tensors = [
        TensorSpec(
            n, tuple(c.shape[1:]), s, z, next(v for v in (block, b, 4) if v is not None)
        )  # a stored 0 is refused
        for n, c, s, z, b in zip(clip.names, clip.codes, clip.scales, clip.zero_points, clip.blocks, strict=True)
    ]
    config = config_from_args(args, tensors)
    enc = Encoder(config)  # validates the configuration against the decoder's limits
    report = summary_stream(args.output)
    header = enc.header_bytes()
    enc.set_total_frames(clip.frames)
    from temposplit.files import output_file

    tally = FrameTally(len(clip.names))
    with output_file(args.output) as f:  # written beside it, renamed over it once complete
        f.write(header)
        for t in range(clip.frames):
            for p in enc.push(clip.frame(t)):
                f.write(p.to_bytes())
            tally.take(enc)
        for p in enc.flush():
            f.write(p.to_bytes())
        tally.take(enc)
    total = tally.total
    elements = sum(c[0].size for c in clip.codes)
    rate = total / clip.frames * config.fps / 1e6  # MB/s
    print(  # the rates are the packets' (what a stream sends per frame); the header is said apart
        f"{clip.frames} frames, {total} bytes of packets (+{len(header)} header; {total / clip.frames:.0f} per frame, "
        f"{8 * total / (elements * clip.frames):.3f} bits per element, "
        f"{rate:.3f} MB/s at {config.fps:g} fps) -> {args.output}",
        file=report,
    )
    if config.rate_target is not None and rate > 1.5 * config.rate_target:  # the stream is good, the aim missed
        print(
            f"warning: {rate:.3g} MB/s is {rate / config.rate_target:.3g}x the target {config.rate_target:g} MB/s: "
            + rate_miss(enc, tally.anchor_bits),
            file=sys.stderr,
        )
    if args.stats:
        for line in tally.lines(clip.names):
            print(line, file=report)
    return 0


class FrameTally:
    """Running totals of the encoder's per-frame statistics: what ``encode``'s summary,
    ``--stats`` (:func:`frame_stats`) and :func:`rate_miss` need, so that ``Encoder.frames``
    can be trimmed as the clip goes (a record and its motion vectors per frame, for the whole
    clip, grew with it: about 740 bytes a frame)."""

    def __init__(self, tensors: int):
        self.total = 0  # bytes of packets
        self.count = {kind: 0 for kind in ("key", "anchor", "pred")}
        self.bytes = {kind: 0 for kind in self.count}
        self.tensor_bytes = {kind: [0] * tensors for kind in self.count}
        self.anchor_bits: set[int] = set()  # the N of every anchor (KEY or not)
        self._taken = 0  # records at the start of enc.frames already counted

    def add(self, frames) -> None:
        for e in frames:
            self.total += e.packet_bytes
            self.count[e.kind] += 1
            self.bytes[e.kind] += e.packet_bytes
            per_tensor = self.tensor_bytes[e.kind]
            for i, b in enumerate(e.tensor_bytes):
                per_tensor[i] += b
            if e.kind != "pred":
                self.anchor_bits.add(e.n_bits)

    def take(self, enc) -> None:
        """Count the records ``enc`` appended since the last call, then drop all but the last
        (the encoder completes its newest record after appending it, as the edge trims:
        host/edge.py)."""
        self.add(enc.frames[self._taken :])
        del enc.frames[:-1]
        self._taken = len(enc.frames)

    def lines(self, names) -> list[str]:
        """:func:`frame_stats`'s lines from the totals."""
        lines = []
        for kind, n in self.count.items():
            if not n:
                continue
            total = self.bytes[kind]
            per_tensor = ", ".join(f"{name} {self.tensor_bytes[kind][i] / n:.0f}" for i, name in enumerate(names))
            lines.append(f"  {kind}: {n} frames, {total} bytes ({total / n:.0f} per frame; per tensor: {per_tensor})")
        return lines


def summary_stream(output: str):
    """Where a command's summary goes: standard output, unless the output file is not a regular
    file (``/dev/stdout`` into a pipe) or is standard output's own file (``/dev/stdout`` with
    stdout sent to a file): standard error then, so that the summary never joins the output
    (and standard output where the output is standard error's file)."""
    import os
    import stat

    try:
        st = os.stat(output)
    except OSError:  # not there yet: a new regular file
        return sys.stdout

    def same(stream) -> bool:  # the output is this stream's own file
        try:
            f = os.fstat(stream.fileno())
        except (OSError, ValueError, AttributeError):  # no file behind it (captured, closed)
            return False
        return (f.st_dev, f.st_ino) == (st.st_dev, st.st_ino)

    if same(sys.stderr):  # /dev/stderr as the output: the summary on stdout
        return sys.stdout
    if not stat.S_ISREG(st.st_mode) or same(sys.stdout):
        return sys.stderr
    return sys.stdout


def rate_miss(enc, anchor_bits=None) -> str:
    """Why a rate-controlled stream came out above its target: the ladder's cheapest point
    costs more on this clip, or the controller chose a finer N from estimates that came out
    low and the clip ended before later groups repaid the overshoot. ``anchor_bits``: the N
    of the clip's anchors (:class:`FrameTally`'s), where ``enc.frames`` no longer holds them all."""
    lowest = min(n for n, _ in enc.rate.ladder)
    if anchor_bits is None:
        anchor_bits = {e.n_bits for e in enc.frames if e.kind != "pred"}
    above = sorted(n for n in set(anchor_bits) if n > lowest)
    if not above:
        return (
            f"the rate control's operating points (down to N = {lowest} and the longest group --structure allows) "
            "do not reach it on this clip"
        )
    return (
        f"the rate control chose N = {', '.join(map(str, above))} for some groups on estimates this clip came out "
        "above, and repays such an overshoot only over the groups after it (a short clip ends first): "
        "a lower --rate or a fixed --bits gives a smaller stream"
    )


def check_output(output: str, input_path: str) -> None:
    """Refuse an output that is a folder or the input itself (it would be overwritten)."""
    import os

    from temposplit.codec.errors import ConfigurationError

    if not output:
        raise ConfigurationError("the output file name is empty")
    if os.path.isdir(output):
        raise ConfigurationError(f"{output} is a folder: name the file to write")
    folder = os.path.dirname(os.path.realpath(output))
    if not os.path.isdir(folder):
        raise ConfigurationError(f"cannot write {output}: {folder} is not a folder")
    try:
        same = os.path.samefile(input_path, output)
    except OSError:  # one of them does not exist
        same = os.path.realpath(input_path) == os.path.realpath(output)
    if same:
        raise ConfigurationError(f"the output {output} is the input file: it would be overwritten")


def frame_stats(frames, names) -> list[str]:
    """A line per kind of frame: how many, their packets' bytes, and each tensor's section
    bytes per frame (what ``encode --stats`` prints)."""
    tally = FrameTally(len(names))
    tally.add(frames)
    return tally.lines(names)


def _load_features(path: str):
    """The feature file; every defect is a ConfigurationError naming the file and field. A
    decoded file (it has ``n_bits``) is refused unless every frame is at N = 8: its codes are
    N-bit while its scale and zero point are the 8-bit codes', so encoding them means nothing."""
    from temposplit.codec import features
    from temposplit.codec.errors import ConfigurationError

    clip = features.load(path)
    if clip.n_bits is not None and (clip.n_bits != 8).any():
        found = ", ".join(str(n) for n in sorted({int(n) for n in clip.n_bits}))
        raise ConfigurationError(
            f"{path}: a decoded stream (N = {found} bits), not 8-bit features: encode the feature file it came from"
        )
    return clip


# `decode` refuses a clip whose decoded output (codes and float32 values, 5 bytes per
# element, before compression) would pass this (docs/bitstream.md, 12): a stream of a few
# bytes per predicted frame can announce frames of 2^24 codes.
MAX_DECODED_BYTES = 1 << 34
# A stream that is not a regular file (a pipe) is read whole, up to this size.
MAX_PIPED_STREAM = 1 << 28


def _read_stream(f):
    """The header and the stream's bytes: a regular file is mapped, not read; the header
    (its magic first) is checked on the first bytes, before anything else is read."""
    import mmap
    import os
    import stat

    from temposplit.codec.bitstream import MAX_HEADER, StreamHeader
    from temposplit.codec.errors import LimitError

    head = f.read(MAX_HEADER)
    header = StreamHeader.from_bytes(head)  # a file that is not a stream fails here
    if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
        return header, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data = head + f.read(MAX_PIPED_STREAM + 1 - len(head))
    if len(data) > MAX_PIPED_STREAM:
        raise LimitError(f"a stream read from a pipe or device may hold {MAX_PIPED_STREAM} bytes; save it to a file")
    return header, data


def _decode(args) -> int:
    import os
    import sys
    import tempfile
    from array import array

    from temposplit.codec.decoder import FrameError, iter_stream
    from temposplit.codec.errors import BitstreamError, LimitError

    check_output(args.output, args.input)
    report = summary_stream(args.output)
    spool_dir = os.path.dirname(os.path.realpath(args.output))
    if os.path.exists(args.output) and not os.path.isfile(args.output):
        spool_dir = None  # /dev/null and the like: the system's temporary folder
    with open(args.input, "rb") as f:
        header, data = _read_stream(f)
    names = [t.name for t in header.tensors]
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:  # the feature file keys its arrays by name: one tensor would be lost
        raise BitstreamError(f"the stream names two tensors {twice!r}: a feature file cannot hold both (use the API)")
    sizes = [t.elements for t in header.tensors]
    most = max(1, MAX_DECODED_BYTES // (5 * sum(sizes)))
    # Frames go to a spool file as they are decoded (memory holds the decoder's references
    # and one frame), then into the output in index order.
    indices, n_bits = array("q"), array("B")
    n_errors, first_error = 0, None
    try:
        spool = tempfile.TemporaryFile(dir=spool_dir)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {args.output}: {exc.strerror}") from exc
    with spool:
        try:
            for d in iter_stream(data, header):
                if isinstance(d, FrameError):
                    n_errors += 1
                    first_error = first_error or d.error
                    continue
                if len(indices) >= most:
                    raise LimitError(
                        f"the decoded clip would pass {MAX_DECODED_BYTES} bytes (codes and float32 values of "
                        f"{most} frames of {sum(sizes)} elements): decode it with the Decoder API, packet by packet"
                    )
                for c in d.codes:
                    spool.write(c.tobytes())  # (C, H, W), C order
                indices.append(d.index)
                n_bits.append(d.n_bits)
        finally:
            if not isinstance(data, bytes):
                data.close()
        if not indices:
            raise BitstreamError(
                f"no frame could be decoded ({first_error})" if first_error else "the stream has no frames"
            )
        kept, repeated = _first_copies(indices)
        from temposplit.files import output_file

        with output_file(args.output) as out:
            _write_decoded(out, header, spool, sizes, kept, indices, n_bits)
    print(f"{len(kept)} frames decoded -> {args.output}", file=report)
    if repeated is not None:
        count, first = repeated
        print(
            f"temposplit decode: {count} packets repeat a frame already decoded (first: frame "
            f"{first}); the first copy of each frame was kept",
            file=sys.stderr,
        )
    if n_errors:
        print(f"temposplit decode: {n_errors} packet(s) could not be decoded; first: {first_error}", file=sys.stderr)
    return PARTIAL if n_errors or repeated is not None else 0


def _first_copies(indices):
    """The spool slots to write, in frame-index order, keeping the first copy of an index met
    again (a duplicated packet), and (how many copies were dropped, the first one's index) or None."""
    import numpy as np

    idx = np.frombuffer(indices, dtype=np.int64)
    order = np.argsort(idx, kind="stable")
    first = np.ones(len(order), dtype=bool)
    first[1:] = idx[order[1:]] != idx[order[:-1]]
    dropped = order[~first]
    repeated = (len(dropped), int(idx[dropped.min()])) if len(dropped) else None
    return order[first], repeated


def _write_decoded(out, header, spool, sizes, kept, indices, n_bits) -> None:
    """The decoded feature file (docs/bitstream.md, 12), each array streamed into the .npz
    frame by frame from the spool."""
    import os
    import stat
    import zipfile

    import numpy as np

    from temposplit.codec.quantize import dequantize

    if not stat.S_ISREG(os.fstat(out.fileno()).st_mode):
        out = _Unseekable(out)  # /dev/null accepts a seek and tells 0: zipfile would write a broken end record
    frame_bytes = sum(sizes)
    offsets = np.cumsum([0, *sizes[:-1]])

    def codes(i, slot):
        t = header.tensors[i]
        spool.seek(int(slot) * frame_bytes + int(offsets[i]))
        return np.frombuffer(spool.read(sizes[i]), dtype=np.uint8).reshape(t.shape)

    def member(zf, name, array):
        with zf.open(f"{name}.npy", "w", force_zip64=True) as fp:
            np.lib.format.write_array(fp, np.asanyarray(array), allow_pickle=False)

    def streamed(zf, name, dtype, shape, chunks):
        with zf.open(f"{name}.npy", "w", force_zip64=True) as fp:
            np.lib.format.write_array_header_1_0(
                fp, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
            )
            for chunk in chunks:
                fp.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for i, t in enumerate(header.tensors):
            shape = (len(kept), *t.shape)
            streamed(zf, f"codes/{t.name}", np.uint8, shape, (codes(i, s) for s in kept))
            member(zf, f"scale/{t.name}", np.float32(t.scale))
            member(zf, f"zero_point/{t.name}", np.int32(t.zero_point))
            member(zf, f"block/{t.name}", np.int32(t.block))
        member(zf, "index", np.array([indices[s] for s in kept], dtype=np.int64))
        member(zf, "n_bits", np.array([n_bits[s] for s in kept], dtype=np.int64))
        for i, t in enumerate(header.tensors):
            shape = (len(kept), *t.shape)
            chunks = (dequantize(codes(i, s), t.scale, t.zero_point, n_bits[s]) for s in kept)
            streamed(zf, f"values/{t.name}", np.float32, shape, chunks)


class _Unseekable:
    """An output that zipfile writes as it writes a pipe (no seek back to patch the sizes)."""

    def __init__(self, f):
        self._f = f

    def write(self, data) -> int:
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def tell(self) -> int:
        raise OSError("not seekable")


def _bench(args) -> int:
    from temposplit.codec.bench import main

    return main(args)
