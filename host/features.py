"""``temposplit features``: a clip's int8 M1 cut tensors in a feature file, for replay.

The file is the codec's feature file (``temposplit encode`` reads it; docs/bitstream.md,
Feature files) plus the identity of what made it: the model and cut names, the model
hash the server checks (the stream header's), the source frames' size and the clip's
frame rate. ``temposplit edge --replay`` streams it without loading a model
(:class:`temposplit.host.sources.Replay`), which is what ``temposplit bench server``
runs many of at once.
"""

from __future__ import annotations

import contextlib

import numpy as np


def write_features(path: str, model, frames, fps: float, block: int | None = None, log=None) -> dict:
    """Run ``model``'s M1 (an :class:`~temposplit.host.pipeline.EdgeModel` or
    ``NumpyEdgeModel``) on ``frames`` (RGB uint8) and write the feature file ``path``.

    Each frame's codes go to an unnamed spool file as M1 gives them (beside ``path``; the
    system's temporary folder where ``path`` is no regular file), and the file is written
    from it: memory holds one frame's tensors whatever the frame count (a camera's
    ``--frames`` of hours included). A spool that cannot be written (a folder that takes no
    file, a full disk) is a :class:`~temposplit.errors.ConfigError` naming ``path``.

    A source that fails after some frames (a camera gone, a damaged file: a
    :class:`~temposplit.errors.TemposplitError` from ``frames``) leaves the file of the frames
    before it written, and its error is raised again saying so: a capture of hours is not
    lost to its last minute.

    Returns a summary: frames, tensors (name and shape), model, cut.
    """
    import os
    import tempfile

    from temposplit.errors import ConfigError, TemposplitError

    log = log or (lambda msg: None)
    # Beside the file it becomes; for an output that is no file (/dev/null: /dev is in RAM) the
    # system's temporary folder.
    regular = not os.path.exists(path) or os.path.isfile(path)
    folder = os.path.dirname(os.path.realpath(path)) if regular else None
    spools: list = []
    sample = None
    size = None
    n = 0
    failed = None
    frames = iter(frames)
    with contextlib.ExitStack() as stack:
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except TemposplitError as exc:  # the source's: the frames before it are kept
                if sample is None:
                    raise
                failed = exc
                break
            cut = model.m1([frame])[0]
            if sample is None:
                sample, size = cut, frame.shape[:2]
                with _spooling(path, folder):
                    for _ in cut:
                        spools.append(stack.enter_context(tempfile.TemporaryFile(dir=folder)))
            for spool, t, first in zip(spools, cut, sample, strict=True):
                c = np.ascontiguousarray(t.codes, dtype=np.uint8)
                if c.shape != np.shape(first.codes):
                    raise ConfigError(f"tensor {t.name!r} is {c.shape} at frame {n}, not {np.shape(first.codes)}")
                with _spooling(path, folder):
                    spool.write(c.tobytes())
            n += 1
            if n % 10 == 0:
                log(f"  {n} frames")
        if sample is None:
            raise ConfigError("the video has no frames")
        codes = []
        for spool, t in zip(spools, sample, strict=True):
            with _spooling(path, folder):
                spool.flush()
            codes.append(np.memmap(spool, np.uint8, "r", shape=(n, *np.shape(t.codes))))  # read as written
        summary = _write(path, model, sample, size, fps, block, codes)
    if failed is not None:
        failed.args = (f"{failed}; the {n} frame(s) before it are written to {path}",)  # its type kept
        raise failed
    return summary


@contextlib.contextmanager
def _spooling(path: str, folder: str | None):
    """The spool's OSError (a folder that takes no file, a full disk) as a ConfigError naming
    the output, not the spool's own nameless or random temporary file."""
    from temposplit.errors import ConfigError

    try:
        yield
    except OSError as exc:
        where = f"beside it, in {folder}" if folder else "in the temporary folder"
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc} (its frames spool {where})") from None


def _write(path: str, model, sample, size, fps: float, block, codes) -> dict:
    from temposplit.codec import features

    specs = model.tensor_specs(sample, block)
    clip = features.FeatureClip(
        [t.name for t in sample],
        codes,
        [float(t.scale) for t in sample],
        [int(t.zero_point) for t in sample],
        [s.block for s in specs],
    )
    identity = {
        "model": np.array(model.model),
        "cut": np.array(model.cut.name),
        "model_hash": np.frombuffer(model.model_hash(sample), np.uint8),
        "frame_size": np.array(size, np.int32),
        "fps": np.float64(fps),
    }
    from temposplit.files import output_file

    # Written beside it and renamed into place: a failure part way leaves ``path`` as it was.
    with output_file(path) as f:  # a file object: NumPy would append ".npz" to another name
        features.save(f, clip, identity)
    return {
        "frames": clip.frames,
        "model": model.model,
        "cut": model.cut.name,
        "tensors": [(t.name, tuple(t.shape)) for t in sample],
    }
