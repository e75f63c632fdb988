"""The board's software on 32-bit ARM, emulated: ``make board-emu`` (docs/pynq-z2.md, "The
board's userland under emulation").

1. An armhf Debian root (mmdebstrap, the machine's own Debian mirror, main suite only:
   python3, python3-numpy, OpenBLAS; no PyTorch, no numba), cached under
   ``~/.cache/temposplit/armhf/`` (``$TEMPOSPLIT_ARMHF_CACHE``), keyed by the suite, the
   mirror and the package list.
2. The project as the board gets it: ``pip wheel --no-deps``, unpacked into the root and put
   on PYTHONPATH; the int8 M1 exported on the host (``temposplit models export-m1``); the
   first frames of vtest.avi decoded on the host into a ``.npy`` (the root has no video
   decoder, and the same frames go to both machines whatever their decoders do).
3. On the host: ``temposplit serve`` on loopback, a capture proxy in front of it that keeps
   every byte each edge sends, and the fabric: the Verilated accelerator behind the pynq
   stand-in's DMA and MMIO (board/guest/pynq.py says why the RTL runs on the host).
4. Three edges, each ``temposplit edge FRAMES.npy --m1 m1.npz``: on x86 with
   ``--backend golden`` (software codec), on x86 with ``--backend pynq`` (not with
   ``--no-x86-fabric``), and under qemu-arm in the root with ``--backend pynq``, the last one
   recording its own peak RSS and the codes its NumPy M1 gave frame 0 (board/guest/run.py).
5. The check: the codec stream header and every packet byte-identical across the edges,
   every frame acknowledged by the server, frame 0's M1 codes equal on armhf and x86, the
   armhf edge's peak RSS under the limit.

Writes ``OUT/report.json`` and prints one line per check; exit status 0 when all hold,
1 when a check fails, 2 when the emulation cannot be set up (one line on stderr).

    .venv/bin/python board/emu.py [--frames 8] [--out build/board-emu] [--calibration K] [--no-x86-fabric]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import zipfile
from multiprocessing.connection import Listener
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GUEST = Path(__file__).resolve().parent / "guest"
PACKAGES = ("python3", "python3-numpy", "libopenblas0-pthread")
RSS_LIMIT_MB = 400
IN_ROOT = "/opt/temposplit-board"  # where a run's files go inside the root
CACHE_OPTION = "the armhf cache (--cache, $TEMPOSPLIT_ARMHF_CACHE)"


class SetupError(Exception):
    """The emulation cannot be set up here (tool, privilege or mirror missing)."""


def log(msg: str) -> None:
    print(f"board-emu: {msg}", flush=True)


# --------------------------------------------------------------------------- the armhf root


def debian_source() -> tuple[str, str]:
    """(mirror URI, suite) of the machine's own Debian main archive, read at run time."""
    suite = None
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            suite = line.split("=", 1)[1].strip().strip('"')
    if not suite:
        raise SetupError("no VERSION_CODENAME in /etc/os-release: not a Debian release")
    if os.environ.get("TEMPOSPLIT_ARMHF_MIRROR"):
        return os.environ["TEMPOSPLIT_ARMHF_MIRROR"], suite
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + sorted(
        Path("/etc/apt/sources.list.d").glob("*.list")
    )
    if Path("/etc/apt/sources.list").exists():
        files.append(Path("/etc/apt/sources.list"))
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith((" ", "#")):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and suite in fields.get("suites", []):
                    if "main" in fields.get("components", []) and fields.get("uris"):
                        return fields["uris"][0], suite
        else:
            for line in text.splitlines():
                words = line.split()
                if len(words) >= 4 and words[0] == "deb" and not words[1].startswith("["):
                    if words[2] == suite and "main" in words[3:]:
                        return words[1], suite
    raise SetupError(f"no 'deb ... {suite} main' source in /etc/apt: set TEMPOSPLIT_ARMHF_MIRROR")


def ensure_binfmt() -> None:
    """armhf binaries must run through qemu-arm (binfmt_misc), as mmdebstrap needs too."""
    for tool in ("mmdebstrap", "qemu-arm-static"):
        if shutil.which(tool) is None:
            raise SetupError(f"{tool} is not installed (apt-get install mmdebstrap qemu-user-static binfmt-support)")
    if os.geteuid() != 0:
        raise SetupError("building and entering the armhf root needs root (chroot)")
    reg = Path("/proc/sys/fs/binfmt_misc")
    if not (reg / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(reg)], check=False)
    if not (reg / "qemu-arm").exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-arm"], check=False, capture_output=True)
    entry = reg / "qemu-arm"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        raise SetupError("qemu-arm is not registered with binfmt_misc (update-binfmts --enable qemu-arm)")


def remove_tree(path: Path) -> None:
    """``rm -rf`` a root being built, unless something is still mounted in it (a killed
    mmdebstrap can leave /proc, /sys or a bind of /dev there: never delete through those)."""
    if not path.exists():
        return
    real = str(path.resolve())
    with open("/proc/mounts", encoding="utf-8") as f:
        mounted = [line.split()[1] for line in f if line.split()[1].startswith(real + "/")]
    if mounted:
        raise SetupError(f"{path} still has mounts ({', '.join(mounted)}): unmount them first")
    shutil.rmtree(path)


def check_folder(path: Path, what: str) -> Path:
    """``path``, or a SetupError naming ``what`` (the option) where it, or the nearest of its
    parents that exists, is no folder; makes nothing."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                where = "is" if p == path else f"is under {p}, which is"
                raise SetupError(f"{what} {path} {where} a file, not a folder")
            break
    return path


def make_folder(path: Path, what: str) -> Path:
    """``path`` as a folder (made with its parents), or a SetupError naming ``what`` (the option)."""
    check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, no permission, a read-only file system
        raise SetupError(f"{what} {path}: cannot make the folder ({exc.strerror or exc})") from None
    return path


def _in_root(root: Path, rel: str) -> Path | None:
    """The file at ``rel`` inside ``root``, symlinks followed inside the root (an absolute
    link names a path in the root, not on the host); None if it is not there."""
    path = root / rel.lstrip("/")
    for _ in range(16):
        if path.is_symlink():
            target = os.readlink(path)
            path = root / target.lstrip("/") if target.startswith("/") else path.parent / target
            continue
        return path if path.exists() else None
    return None


def root_problem(root: Path) -> str | None:
    """What is missing from a cached root that run() needs (its ``/usr/bin/env``, python3 and
    NumPy, and dpkg's record of PACKAGES installed), or None: read from its files, without
    running the emulator (a ``.complete`` marker alone, or a root cut short since, is no root)."""
    status = root / "var/lib/dpkg/status"
    installed = set()
    if status.is_file():
        for stanza in status.read_text(errors="replace").split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines() if ":" in line and line[:1] != " ")
            if fields.get("Status", "").split() == ["install", "ok", "installed"]:
                installed.add(fields.get("Package", "").strip())
    missing = [p for p in PACKAGES if p not in installed]
    if missing:
        return f"dpkg does not record {', '.join(missing)} as installed"
    for rel in ("usr/bin/env", "usr/bin/python3", "usr/lib/python3/dist-packages/numpy/__init__.py"):
        if _in_root(root, rel) is None:
            return f"/{rel} is missing"
    return None


def ensure_root(cache: Path) -> Path:
    """The cached armhf root, built by mmdebstrap when missing."""
    uri, suite = debian_source()
    key = hashlib.sha1(json.dumps([suite, uri, sorted(PACKAGES)]).encode()).hexdigest()[:12]
    make_folder(cache, CACHE_OPTION)
    root = cache / f"root-{suite}-{key}"
    if (root / ".complete").exists():
        problem = root_problem(root)
        if problem:
            raise SetupError(
                f"the cached armhf root {root} is broken ({problem}): remove it (rm -rf {root}) and run again to"
                " rebuild it"
            )
        log(f"armhf root cached: {root}")
        return root
    tmp = cache / f"root-{suite}-{key}.tmp"
    remove_tree(tmp)
    log(f"building the armhf root ({suite} from {uri}, main only): {', '.join(PACKAGES)}")
    t0 = time.time()
    cmd = [
        "mmdebstrap",
        "--quiet",
        "--arch=armhf",
        "--variant=apt",
        "--include=" + ",".join(PACKAGES),
        suite,
        str(tmp),
        f"deb {uri} {suite} main",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        remove_tree(tmp)
        tail = (res.stderr or res.stdout).strip().splitlines()[-3:]
        raise SetupError(f"mmdebstrap failed ({res.returncode}): {' / '.join(tail)}")
    (tmp / ".complete").write_text(json.dumps({"suite": suite, "uri": uri, "packages": PACKAGES}))
    remove_tree(root)
    tmp.rename(root)
    log(f"armhf root built in {time.time() - t0:.0f} s: {root}")
    return root


# --------------------------------------------------------------------------- what the board gets


def build_wheel(dest: Path) -> Path:
    """``pip wheel --no-deps`` of the checkout, unpacked at ``dest`` (the board's install)."""
    wheels = dest.parent / "wheel"
    shutil.rmtree(wheels, ignore_errors=True)
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        raise SetupError(f"pip wheel failed: {res.stderr.strip().splitlines()[-1:]}")
    (wheel,) = wheels.glob("temposplit-*.whl")
    shutil.rmtree(dest, ignore_errors=True)
    with zipfile.ZipFile(wheel) as z:
        z.extractall(dest)
    return wheel


def export_m1(path: Path, cut: str | None, calibration: int | None = None) -> None:
    """``temposplit models export-m1`` on the host; its failure (a --cut the model has not,
    weights missing) a SetupError with its error line."""
    cmd = [str(Path(sys.executable).parent / "temposplit"), "models", "export-m1", "--out", str(path)]
    if cut:
        cmd += ["--cut", cut]
    if calibration:
        cmd += ["--calibration", str(calibration)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or [f"exit status {res.returncode}"])[-1]
        raise SetupError(f"exporting the M1 failed: {why}")


def decode_frames(path: Path, count: int) -> None:
    """The first ``count`` frames of vtest.avi (PyAV on the host), as (N, H, W, 3) uint8."""

    from temposplit.host.sources import open_source
    from temposplit.model.data import vtest_path

    frames = []
    for frame in open_source(str(vtest_path())).frames():
        frames.append(frame)
        if len(frames) == count:
            break
    np.save(path, np.stack(frames))


def write_overlay(folder: Path) -> Path:
    """The overlay's ``.hwh`` (generated from the register map, as sim/test_pynq.py does)."""
    from temposplit.hw import vivado

    folder.mkdir(parents=True, exist_ok=True)
    bit = folder / "temposplit.bit"
    bit.with_suffix(".hwh").write_text(vivado.hwh(vivado.Design()))
    bit.write_bytes(b"")  # the stand-in reads the .hwh only
    return bit


# --------------------------------------------------------------------------- host services


class FabricServer:
    """The Verilated accelerator for the board's pynq stand-in: one simulation (sim/pynqsim_tb's
    ``dma_server``, the build sim/conftest.py caches under build/sim) per connection, its
    requests forwarded as they come."""

    def __init__(self):
        self.key = secrets.token_bytes(16)
        self.listener = Listener(("127.0.0.1", 0), authkey=self.key)
        host, port = self.listener.address
        self.address = f"{host}:{port}"
        self.errors: list[str] = []
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        from temposplit.hw import regmap
        from temposplit.hw.simbridge import BridgeTransport

        sim = None
        try:
            sim = BridgeTransport(regmap.DEFAULT, root=REPO / "build" / "sim", test_module="pynqsim_tb",
                                  testcase="dma_server")  # fmt: skip
            while True:
                try:
                    req = conn.recv()
                except (EOFError, OSError):
                    return
                if req[0] == "close":
                    conn.send(("ok", None))
                    return
                try:
                    conn.send(("ok", sim.call(*req)))
                except Exception as exc:  # noqa: BLE001 - the board side raises it
                    conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            if sim is not None:
                sim.close()
            conn.close()

    def close(self):
        self.listener.close()


class CaptureProxy:
    """A loopback proxy in front of the server that keeps each connection's edge-to-server bytes."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.captures: list[bytearray] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            buf = bytearray()
            self.captures.append(buf)
            threading.Thread(target=self._pump, args=(client, server, buf), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    @staticmethod
    def _pump(src, dst, buf):
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    break
                if buf is not None:
                    buf += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def take(self) -> list[bytes]:
        out = [bytes(b) for b in self.captures]
        self.captures.clear()
        return out

    def close(self):
        self.sock.close()


def parse_stream(raw: bytes) -> dict:
    """An edge's bytes -> its codec stream header (from HELLO) and its packets' bodies, in
    order: a PACKET_AT's with its frame's times (docs/protocol.md, "Frame times"), which
    the comparisons then check too (a feature file's frames are timed frame / fps on every
    machine)."""
    from temposplit import protocol as P

    head = struct.Struct("<BI")  # docs/protocol.md: u8 type, u32 length
    header, packets, pos = None, [], 0
    while pos + head.size <= len(raw):
        mtype, length = head.unpack_from(raw, pos)
        msg = P.Message(mtype, raw[pos + head.size : pos + head.size + length])
        pos += head.size + length
        if msg.type == P.HELLO and header is None:
            header = msg.stream_header()
        elif msg.type in (P.PACKET, P.PACKET_AT):
            packets.append(msg.body)
    return {"hello": header, "packets": packets}


def take_stream(proxy: CaptureProxy, run: dict) -> dict:
    """The run's one connection, parsed; a reconnect (a fresh KEY anchor and resent frames)
    is recorded in ``run["connections"]`` and fails the comparison."""
    captures = proxy.take()
    run["connections"] = len(captures)
    return parse_stream(captures[-1] if captures else b"")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SetupError(f"temposplit serve exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise SetupError(f"temposplit serve did not listen on port {port} within {timeout:.0f} s")


# --------------------------------------------------------------------------- the runs


def run(args) -> int:
    t_start = time.time()
    out = make_folder(Path(args.out).resolve(), "--out")
    cache = check_folder(Path(args.cache).expanduser(), CACHE_OPTION)  # before binfmt; ensure_root makes it
    ensure_binfmt()
    root = ensure_root(cache)
    t_root = time.time() - t_start

    # what the board gets, staged inside the root
    stage = root / IN_ROOT.lstrip("/")
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "guest").mkdir(parents=True)
    wheel = build_wheel(stage / "site")
    for f in ("pynq.py", "run.py"):
        shutil.copy(GUEST / f, stage / "guest" / f)
    shutil.copy(REPO / "sim" / "pynqsim.py", stage / "guest" / "pynqsim.py")
    log(f"installed {wheel.name} (--no-deps) into the root")
    m1 = out / "m1.npz"
    if not m1.exists() or not args.reuse_m1:
        log("exporting the int8 M1 on the host (temposplit models export-m1)")
        export_m1(m1, args.cut, args.calibration)
    frames = out / "frames.npy"
    decode_frames(frames, args.frames)
    bit = write_overlay(out / "overlay")
    for src in (m1, frames):
        shutil.copy(src, stage / src.name)
    shutil.copytree(bit.parent, stage / "overlay")

    # the host's side: server, capture proxy, fabric
    shutil.rmtree(out / "server", ignore_errors=True)  # the server resumes streams it has on disk
    port = free_port()
    server_log = open(out / "server.log", "w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "temposplit"), "serve", "--port", str(port), "--out", str(out / "server")]
        + ["--idle-timeout", str(args.timeout)],  # the emulated edge is slow: minutes between packets
        stdout=server_log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    fabric = proxy = None
    m1_equal = False
    report: dict = {"frames": args.frames, "root": str(root), "runs": {}}
    try:
        wait_listening(port, server, 300)
        proxy = CaptureProxy(("127.0.0.1", port))
        sys.path.insert(0, str(REPO / "sim"))  # pynqsim_tb, for the simulator's Python
        fabric = FabricServer()
        edge_args = ["edge", "--m1", "M1", "--server", f"127.0.0.1:{proxy.port}", "--fps", "10"]
        edge_args += ["--timeout", str(args.timeout)]  # minutes per frame under emulation: no reconnects
        streams = {}
        host_env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(GUEST), str(REPO / "sim")]),
            "TEMPOSPLIT_OVERLAY": str(bit),
            "TEMPOSPLIT_FABRIC": fabric.address,
            "TEMPOSPLIT_FABRIC_KEY": fabric.key.hex(),
        }
        runs = [("x86-golden", "golden")] + ([] if args.no_x86_fabric else [("x86-pynq", "pynq")])
        for name, backend in runs:
            cmd = [str(Path(sys.executable).parent / "temposplit")] + [a.replace("M1", str(m1)) for a in edge_args]
            cmd[2:2] = [str(frames)]
            cmd += ["--backend", backend, "--stream", name]
            t0 = time.time()
            res = subprocess.run(cmd, env=host_env, capture_output=True, text=True, timeout=args.timeout)
            report["runs"][name] = {"rc": res.returncode, "seconds": round(time.time() - t0, 1)}
            (out / f"{name}.log").write_text(res.stdout + res.stderr)
            log(f"{name}: exit {res.returncode} in {time.time() - t0:.1f} s")
            streams[name] = take_stream(proxy, report["runs"][name])

        # the board: qemu-arm, the root's python3 and NumPy, the same files
        guest_env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "PYTHONPATH": f"{IN_ROOT}/site:{IN_ROOT}/guest",
            "OPENBLAS_NUM_THREADS": "1",
            "TEMPOSPLIT_OVERLAY": f"{IN_ROOT}/overlay/temposplit.bit",
            "TEMPOSPLIT_FABRIC": fabric.address,
            "TEMPOSPLIT_FABRIC_KEY": fabric.key.hex(),
            "TEMPOSPLIT_BOARD_CODES": f"{IN_ROOT}/codes.npz",  # run.py: frame 0's M1 codes, as the edge made them
        }
        guest_cmd = ["python3", f"{IN_ROOT}/guest/run.py", f"{IN_ROOT}/result.json"]
        guest_cmd += [a.replace("M1", f"{IN_ROOT}/m1.npz") for a in edge_args[:1]]
        guest_cmd += [f"{IN_ROOT}/frames.npy"] + [a.replace("M1", f"{IN_ROOT}/m1.npz") for a in edge_args[1:]]
        guest_cmd += ["--backend", "pynq", "--stream", "armhf"]
        t0 = time.time()
        proc = root / "proc"
        mounted = subprocess.run(["mount", "-t", "proc", "proc", str(proc)], capture_output=True).returncode == 0
        try:
            res = subprocess.run(
                ["chroot", str(root), "/usr/bin/env", "-i"] + [f"{k}={v}" for k, v in guest_env.items()] + guest_cmd,
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
        finally:
            if mounted:
                subprocess.run(["umount", str(proc)], check=False)
        (out / "armhf-pynq.log").write_text(res.stdout + res.stderr)
        guest = {}
        if (stage / "result.json").exists():
            guest = json.loads((stage / "result.json").read_text())
        report["runs"]["armhf-pynq"] = {"rc": res.returncode, "seconds": round(time.time() - t0, 1), **guest}
        g = guest.get
        where = f"{g('machine')}, Python {g('python')}, NumPy {g('numpy')}, {g('intp_bits')}-bit intp"
        log(f"armhf-pynq: exit {res.returncode} in {time.time() - t0:.1f} s ({where})")
        streams["armhf-pynq"] = take_stream(proxy, report["runs"]["armhf-pynq"])

        # the M1's own codes (the packets hold them requantized to fewer bits): frame 0 on both,
        # the board's as its edge run made them (run.py), the host's from the same NumPy M1
        sys.path.insert(0, str(GUEST))
        from m1_codes import codes

        ours = codes(str(m1), str(frames), 1)
        theirs = dict(np.load(stage / "codes.npz")) if (stage / "codes.npz").is_file() else {}
        report["m1_codes"] = {k: int(v.size) for k, v in ours.items()}
        m1_equal = set(ours) == set(theirs) and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    finally:
        if fabric is not None:
            fabric.close()
        if proxy is not None:
            proxy.close()
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        server_log.close()

    # the checks
    checks = {}
    for name, r in report["runs"].items():
        checks[f"{name} exits 0"] = r["rc"] == 0
        checks[f"{name}: one connection"] = r.get("connections") == 1
    ref = streams["x86-golden"]
    for name, s in streams.items():
        r = report["runs"][name]
        r.update(packets=len(s["packets"]), bytes=sum(len(p) for p in s["packets"]))
        r["sha256"] = hashlib.sha256(b"".join(s["packets"])).hexdigest()[:16]
        if name != "x86-golden":
            checks[f"{name}: header and {len(s['packets'])} packets byte-identical to x86-golden"] = (
                bool(s["packets"]) and s["packets"] == ref["packets"] and s["hello"] == ref["hello"]
            )
    # every frame became at least one packet (a group's packets may hold several frames)
    checks["packets sent"] = len(ref["packets"]) > 0
    checks["armhf NumPy M1 codes equal x86's (frame 0, every crossing tensor)"] = m1_equal
    g = report["runs"]["armhf-pynq"]
    # VmHWM: the emulator process's own peak since its exec. ru_maxrss is no measure here: a
    # child forked by this (large) process keeps the parent's resident size as its maximum
    # across exec, so it is only the fallback where /proc could not be mounted.
    peak = (g.get("vm_hwm_kb") or g.get("maxrss_kb") or 0) / 1024
    g["peak_rss_mb"] = round(peak, 1)
    checks[f"armhf edge peak RSS {peak:.0f} MB < {RSS_LIMIT_MB} MB"] = 0 < peak < RSS_LIMIT_MB
    checks["armhf is 32-bit ARM"] = g.get("machine", "").startswith("armv7") and g.get("intp_bits") == 32
    checks["fabric simulations without error"] = not fabric.errors
    report["checks"] = checks
    report["fabric_errors"] = fabric.errors
    report["seconds"] = {"root": round(t_root, 1), "total": round(time.time() - t_start, 1)}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    for name, ok in checks.items():
        log(f"{'ok  ' if ok else 'FAIL'} {name}")
    log(f"{time.time() - t_start:.0f} s (root {t_root:.0f} s); report in {out / 'report.json'}")
    return 0 if all(checks.values()) else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=8, help="frames of vtest.avi (default 8)")
    p.add_argument("--cut", default=None, help="the M1's cut (default: the SSD's default cut)")
    p.add_argument("--out", default=str(REPO / "build" / "board-emu"), help="output folder")
    p.add_argument("--cache", default=os.environ.get("TEMPOSPLIT_ARMHF_CACHE", "~/.cache/temposplit/armhf"))
    p.add_argument("--reuse-m1", action="store_true", help="keep OUT/m1.npz if it is there")
    p.add_argument(
        "--calibration", type=int, help="calibrate the M1 on this many frames of the fixed set (default: all of it)"
    )
    p.add_argument(
        "--no-x86-fabric",
        action="store_true",
        help="skip the x86 edge through the simulated fabric (sim/test_pynq checks that path on x86)",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per edge run")
    args = p.parse_args(argv)
    if args.frames < 1:
        print("board-emu: error: --frames must be at least 1", file=sys.stderr)
        return 2
    if args.calibration is not None and args.calibration < 1:
        print("board-emu: error: --calibration must be at least 1", file=sys.stderr)
        return 2
    from temposplit.signals import TERMINATED, Terminated, terminated_as_interrupt

    try:
        with terminated_as_interrupt():  # SIGTERM unwinds as Ctrl-C: run's finally stops the server it started
            return run(args)
    except SetupError as exc:
        print(f"board-emu: error: {exc}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired as exc:  # an edge run (host or emulated board) past --timeout: killed
        what = "the emulated board's edge" if "chroot" in str(exc.cmd) else "an edge run"
        print(f"board-emu: error: {what} took longer than --timeout ({exc.timeout:g} s): raise it", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        stopped = isinstance(exc, Terminated)
        print(f"board-emu: {'terminated' if stopped else 'interrupted'}", file=sys.stderr)
        return TERMINATED if stopped else 130


if __name__ == "__main__":
    sys.exit(main())
