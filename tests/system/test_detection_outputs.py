"""What a deployment's consumer reads: the server's detections.jsonl and annotated video,
checked against a known object. A real photograph's person (the calibration set's
voc-2011_000003.jpg) is pasted into synthetic clips (PyAV, libx264) at a known place that
moves from frame to frame; the clips are streamed by the real edge to a real server on
loopback, and the records are compared with the float detector run locally on the same
decoded frames (docs/protocol.md, "The outputs")."""

import json
from pathlib import Path

import numpy as np
import pytest
from rawclient import wait_for

from temposplit.codec.encoder import PRESETS
from temposplit.host.edge import Edge
from temposplit.host.resume import ResumeState, source_identity
from temposplit.host.sources import open_source
from temposplit.model import data

pytestmark = [pytest.mark.slow, pytest.mark.models]

CODEC = {**PRESETS["recommended"], "fps": 10.0}
BOX_COLOUR = (255, 64, 32)  # what AnnotatedVideo draws a box's edges in
PERSON = (9, 12, 135, 229)  # the person's box in the crop below (the float SSD's, rounded)


def _crop() -> np.ndarray:
    path = data.data_dir() / "calibration" / "voc-2011_000003.jpg"
    if not path.is_file():
        pytest.skip("the calibration set is not fetched (run `make data`)")
    return data.read_image(path)[100:338, 180:325]  # a person standing, 145x238


def _scene(height: int, width: int, n: int):
    """``n`` upright frames with the person pasted at 60 % of the frame's height, moving left
    to right over a gradient; and each frame's expected person box (x1, y1, x2, y2)."""
    import cv2

    crop = _crop()
    s = 0.6 * min(height / crop.shape[0], width / crop.shape[1])
    person = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_AREA)
    ph, pw = person.shape[:2]
    sx, sy = pw / crop.shape[1], ph / crop.shape[0]
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.repeat((90 + 60 * xx / width + 30 * yy / height).astype(np.uint8)[..., None], 3, 2)
    frames, boxes = [], []
    for i in range(n):
        frame = background.copy()
        x0, y0 = int((width - pw) * (0.1 + 0.8 * i / (n - 1))), (height - ph) // 2
        frame[y0 : y0 + ph, x0 : x0 + pw] = person
        frames.append(frame)
        x1, y1, x2, y2 = PERSON
        boxes.append((x0 + x1 * sx, y0 + y1 * sy, x0 + x2 * sx, y0 + y2 * sy))
    return frames, boxes


def _clip(path: Path, frames, rotation=None) -> Path:
    """``frames`` as an H.264 clip (4:4:4 where a side is odd), with a display rotation if given."""
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height = w, h
        s.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        s.options = {"crf": "16"}
        if rotation is not None:
            s.set_display_rotation(rotation)
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")))
        c.mux(s.encode(None))
    return path


def _lines(log: Path) -> list[str]:
    """The log's complete lines: a server may be writing the last one as it is read."""
    return log.read_text().split("\n")[:-1] if log.is_file() else []


def _records(out_dir: Path, stream: str) -> dict[int, dict]:
    return {r["frame"]: r for r in map(json.loads, _lines(out_dir / stream / "detections.jsonl"))}


def _xyxy(d: dict) -> tuple:
    x, y, w, h = d["bbox"]
    return (x, y, x + w, y + h)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _person(dets: list[dict]):
    """The best person box of a frame's records at score 0.5 or more, or None."""
    people = [d for d in dets if d["label"] == "person" and d["score"] >= 0.5]
    return _xyxy(max(people, key=lambda d: d["score"])) if people else None


# (name, upright H, W, display rotation): the stored picture of a rotated clip is the upright
# one turned the other way (as a phone stores a portrait clip in landscape).
SHAPES = [
    ("landscape", 360, 640, None),
    ("portrait", 640, 360, None),
    ("phone", 640, 360, 90),
    ("odd", 241, 321, None),
    ("tiny", 64, 96, None),
    ("full-hd", 1080, 1920, None),
]


@pytest.mark.parametrize("name,height,width,rotation", SHAPES, ids=[s[0] for s in SHAPES])
def test_each_frames_boxes_are_its_own_in_source_frame_pixels(
    make_server, edge_model, tmp_path, name, height, width, rotation
):
    """Every record follows the documented schema (COCO ids and names, [x, y, w, h] within the
    upright frame, scores falling), and frame i's person box is where the person of source
    frame i is: where the float model finds it on the same decoded frame, and where it was
    pasted, not where it is in the frame before or after."""
    from temposplit.model.detections import coco_names

    n = 4
    shown, expected = _scene(height, width, n)
    stored = shown if rotation is None else [np.rot90(f, -1) for f in shown]
    path = _clip(tmp_path / f"{name}.mp4", stored, rotation)
    decoded = list(data.read_video(path))
    assert decoded[0].shape[:2] == (height, width)  # upright, as the stream announces it
    srv = make_server()
    report = Edge(edge_model, dict(CODEC), srv.address, name).run(decoded, total=n)
    assert not report.errors
    recs = _records(srv.out_dir, name)
    assert sorted(recs) == list(range(n))
    names = coco_names()
    for rec in recs.values():
        assert set(rec) == {"frame", "time", "kind", "n_bits", "bytes", "detections"}
        assert rec["time"] == rec["frame"] / CODEC["fps"]  # frames given as arrays: their position at the rate
        assert isinstance(rec["n_bits"], int) and isinstance(rec["bytes"], int) and rec["bytes"] > 0
        scores = [d["score"] for d in rec["detections"]]
        assert scores == sorted(scores, reverse=True) and all(0.05 <= s <= 1 for s in scores)
        for d in rec["detections"]:
            assert set(d) == {"bbox", "score", "category_id", "label"}
            x, y, w, h = d["bbox"]
            assert 0 <= x and 0 <= y and w >= 0 and h >= 0
            assert x + w <= width + 0.02 and y + h <= height + 0.02  # rounded to 0.01 px
            assert 1 <= d["category_id"] <= 90 and d["label"] == names[d["category_id"]]
    reference = edge_model.detector.detect(decoded)
    found = 0
    for i in range(n):
        got = _person(recs[i]["detections"])
        ref = reference[i].above(0.5)
        ref = [tuple(b) for b, label in zip(ref.boxes.tolist(), ref.labels, strict=True) if label == "person"]
        if got is None or not ref:  # a borderline score on one side of 0.5: not a place to compare
            continue
        found += 1
        assert _iou(got, ref[0]) > 0.8, (i, got, ref[0])  # the float model on the same frame, up to the codec
        matches = [_iou(got, e) for e in expected]
        assert int(np.argmax(matches)) == i and matches[i] > 0.7, (i, got, expected[i])
    assert found >= n - 1


def test_a_resumed_video_segment_draws_the_frames_recorded_past_its_start(make_server, edge_model, tmp_path):
    """A bidirectional structure records frames out of order (1, 0, 2, 4, ...): a server
    stopped with frame 4 recorded and frame 3 not resumes the stream's video at frame 3. The
    edge sends frame 4 again and gets `duplicate`: the new segment drew frame 4 as lost,
    without the person its record holds; it is drawn from its record."""
    import av

    n = 8
    shown, _ = _scene(360, 640, n)
    path = _clip(tmp_path / "walk.mp4", shown)
    codec = {"n_bits": 4, "structure": "bi-3", "coder": "huffman", "fps": 10.0}
    video = {"video": str(path), "max_frames": n, "fps": 10.0}
    rs = ResumeState(tmp_path / "state", "127.0.0.1:7300", "walk")
    source = source_identity(str(path))

    class Crash(Exception):
        pass

    sent = []

    def crash(i, chan):
        sent.append(i)
        if i == 4:
            raise Crash

    srv = make_server(local_video=True)
    first = Edge(edge_model, dict(codec), srv.address, "walk", resume_state=rs, source_id=source)
    first.fault = crash
    with pytest.raises(Crash):
        first.run(open_source(str(path)).frames(), video=video, total=n)
    first.chan.close()
    log = srv.out_dir / "walk" / "detections.jsonl"
    wait_for(lambda: len(_lines(log)) >= len(sent), "the frames sent recorded")
    assert 3 not in sent and sorted(_records(srv.out_dir, "walk")) == [0, 1, 2, 4]
    srv.shutdown()
    again = make_server(local_video=True)
    second = Edge(edge_model, dict(codec), again.address, "walk", resume_state=rs, source_id=source)
    report = second.run(open_source(str(path)).frames(), video=video, total=n)
    assert not report.errors
    out = again.out_dir / "walk"
    assert report.summary["videos"][-1] == str(out / "annotated.1.mp4")
    recs = _records(again.out_dir, "walk")
    with av.open(str(out / "annotated.1.mp4")) as c:
        pictures = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(pictures) == n - 3  # frames 3 to 7
    assert _person(recs[4]["detections"]) is not None  # the frame drawn from its record: checked below
    for k, picture in enumerate(pictures):
        box = _person(recs[3 + k]["detections"])
        if box is None:
            continue
        x1, y1, x2, y2 = (int(v) for v in box)
        edge = picture[y1 + 20 : y2 - 20, x1].astype(int).mean(axis=0)  # the box's left edge, as drawn
        assert np.abs(edge - BOX_COLOUR).max() < 40, (3 + k, edge.round().tolist())


def test_a_record_with_a_number_that_is_not_finite_is_not_drawn_from():
    """JSON takes NaN: a hand-edited box of NaN passed recorded_detections and failed the resumed
    video's drawing (int(NaN)), so every resume of that stream failed."""
    from temposplit.server.outputs import recorded_detections

    good = {"bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9, "category_id": 1, "label": "person"}
    assert recorded_detections([good]).boxes.tolist() == [[1.0, 2.0, 4.0, 6.0]]
    for bad in ({**good, "bbox": [float("nan"), 2.0, 3.0, 4.0]}, {**good, "score": float("inf")}):
        with pytest.raises(ValueError, match="not a finite number"):
            recorded_detections([bad])
