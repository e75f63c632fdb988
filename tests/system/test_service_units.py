"""The systemd units of deploy/systemd (docs/services.md): systemd itself accepts them (with
the board's drop-in), every command line they start, expanded as systemd expands it with
the example settings, is one that ``temposplit`` takes, and their stop and restart rules
match what the commands do on SIGTERM."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from temposplit.cli import PARTIAL, build_parser
from temposplit.signals import TERMINATED

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
DROP_IN = UNITS / "pynq-z2" / "temposplit-edge@.service.d" / "pynq-z2.conf"
PREFIXES = ("/opt/temposplit/venv/bin", "/usr/local/share/pynq-venv/bin")
INSTANCE = "cam1"


def _settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order; a key may repeat (systemd's lists)."""
    section, out = "", []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _values(settings, key: str) -> list[str]:
    return [v for _, k, v in settings if k == key]


def _env_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    return env


def _environment(settings) -> dict[str, str]:
    """The unit's Environment= assignments (space-separated KEY=VALUE, none quoted here)."""
    env = {}
    for value in _values(settings, "Environment"):
        for item in value.split():
            key, _, val = item.partition("=")
            env[key] = val
    return env


def _exec_start(settings_list) -> str:
    """The ExecStart that runs: the last one after the last reset (an empty ExecStart=)."""
    lines = [v for settings in settings_list for v in _values(settings, "ExecStart")]
    assert lines and lines[-1], "no ExecStart"
    return lines[-1]


def _expand(command: str, env: dict[str, str]) -> list[str]:
    """systemd's expansion of an ExecStart without quotes (systemd.service(5), "Command
    lines"): the specifier %i is the instance; "${VAR}" is replaced as it is, inside its word;
    "$VAR" standing alone as a word becomes the value's words, split on white space."""
    assert '"' not in command and "'" not in command, "the units' command lines use no quotes"
    command = command.replace("%i", INSTANCE)
    words = []
    for word in command.split():
        alone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if alone:
            words.extend(env.get(alone.group(1), "").split())
            continue
        words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def _parse(argv: list[str]):
    """``temposplit``'s own parser on ``argv`` (without the program); SystemExit if it refuses."""
    assert Path(argv[0]).name == "temposplit" and argv[0].startswith(PREFIXES), argv[0]
    return build_parser().parse_args(argv[1:])


def _examples(env_file: Path, key: str) -> list[str]:
    """The commented-out alternative values of ``key`` in an example settings file."""
    return [m.group(1) for m in re.finditer(rf"^# {key}=(.*)$", env_file.read_text(), re.M)]


def test_the_server_unit_starts_serve_with_its_settings():
    settings = _settings(UNITS / "temposplit-serve.service")
    env = _environment(settings) | _env_file(UNITS / "serve.env")
    args = _parse(_expand(_exec_start([settings]), env))
    assert args.command == "serve"
    assert (args.host, args.port) == ("0.0.0.0", 7300)
    assert args.out == "/var/lib/temposplit/out" and args.resume_window == 600
    examples = [
        _parse(_expand(_exec_start([settings]), env | {"TEMPOSPLIT_SERVE_ARGS": example}))
        for example in _examples(UNITS / "serve.env", "TEMPOSPLIT_SERVE_ARGS")
    ]
    assert [a.tls_client_ca for a in examples] == ["/etc/temposplit/edges-ca.pem", None]
    assert [a.metrics_port for a in examples] == [None, 9730]  # the metrics, on this machine only
    assert examples[1].metrics_host == "127.0.0.1"
    # Without a settings file the unit's defaults alone make a valid command.
    assert _parse(_expand(_exec_start([settings]), _environment(settings))).port == 7300


@pytest.mark.parametrize("board", [False, True], ids=["linux", "pynq-z2"])
def test_the_edge_unit_starts_edge_with_its_settings(board):
    settings = [_settings(UNITS / "temposplit-edge@.service")] + ([_settings(DROP_IN)] if board else [])
    env = {}
    for s in settings:
        env |= _environment(s)
    env |= _env_file(UNITS / "edge.env")
    args = _parse(_expand(_exec_start(settings), env))
    # The source comes from the environment (the edge reads $TEMPOSPLIT_SOURCE), never from
    # the command line, which every user can read: a camera URL may hold a password.
    assert args.command == "edge" and args.source is None and env["TEMPOSPLIT_SOURCE"] == "/dev/video0"
    assert "TEMPOSPLIT_SOURCE" not in _exec_start(settings)
    assert args.server == "192.168.2.1:7300"
    assert args.stream == INSTANCE, "the instance names the stream"
    # The resume token is kept where the unit's StateDirectory= makes a persistent folder.
    state_dirs = _values(settings[0], "StateDirectory")[0].split()
    assert args.state == "/var/lib/" + state_dirs[-1]
    assert _values(settings[0], "StateDirectoryMode") == ["0700"]  # the token: the service user's alone
    assert args.backend == ("pynq" if board else "golden")
    for example in _examples(UNITS / "edge.env", "TEMPOSPLIT_EDGE_ARGS"):
        args = _parse(_expand(_exec_start(settings), env | {"TEMPOSPLIT_EDGE_ARGS": example}))
        assert args.m1 and args.tls_ca


def test_stopping_a_unit_is_a_success_and_a_failure_restarts_it():
    """systemd stops a unit with SIGTERM: the edge then ends its stream and exits with
    TERMINATED (143), which its unit must count as success, or every stop would leave the
    unit failed (and restart it); the server exits 0. A failure restarts either."""
    edge = _settings(UNITS / "temposplit-edge@.service")
    serve = _settings(UNITS / "temposplit-serve.service")
    assert _values(edge, "KillSignal") == ["SIGTERM"] == _values(serve, "KillSignal")
    assert str(TERMINATED) in " ".join(_values(edge, "SuccessExitStatus")).split()
    assert _values(edge, "Restart") == ["on-failure"] == _values(serve, "Restart")
    # A file's stream that completed with frames recorded as errors: streamed again, it would repeat them.
    assert _values(edge, "RestartPreventExitStatus") == [str(PARTIAL)]
    # The edge finishes its frame after SIGTERM: what it started (--backend rtl's simulator)
    # must not get the SIGTERM too (KillMode=control-group, the default, sends it to all).
    assert _values(edge, "KillMode") == ["mixed"]
    # systemd's SIGKILL comes after the server's own bounds on closing its sessions: the
    # connections, the HELLOs in their threads, the queued work (server/server.py).
    from temposplit.server.server import CONNECTIONS_DRAIN, HELLO_DRAIN, WORK_DRAIN

    assert int(_values(serve, "TimeoutStopSec")[0]) > CONNECTIONS_DRAIN + HELLO_DRAIN + WORK_DRAIN
    # The edge's own retries of a lost server take 13-26 s (docs/protocol.md); systemd's
    # restarts come after them and never give up.
    assert int(_values(edge, "RestartSec")[0]) >= 26 and _values(edge, "StartLimitIntervalSec") == ["0"]


def _installed(tmp_path: Path) -> Path:
    """The units as an install of this checkout would have them: this environment's
    ``temposplit`` in place of the documented prefixes (systemd checks that it exists), the
    template as an instance beside the board's drop-in."""
    here = str(Path(sys.executable).parent)
    out = tmp_path / "units"
    (out / f"temposplit-edge@{INSTANCE}.service.d").mkdir(parents=True)

    def put(src: Path, dest: Path):
        text = src.read_text()
        for prefix in PREFIXES:
            text = text.replace(prefix, here)
        dest.write_text(text)

    put(UNITS / "temposplit-serve.service", out / "temposplit-serve.service")
    put(UNITS / "temposplit-edge@.service", out / f"temposplit-edge@{INSTANCE}.service")
    put(DROP_IN, out / f"temposplit-edge@{INSTANCE}.service.d" / "pynq-z2.conf")
    return out


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd; .ci/run installs it)",
)
@pytest.mark.parametrize("drop_in", [False, True], ids=["linux", "pynq-z2"])
def test_systemd_accepts_the_units(tmp_path, drop_in):
    out = _installed(tmp_path)
    if not drop_in:
        shutil.rmtree(out / f"temposplit-edge@{INSTANCE}.service.d")
    run = subprocess.run(
        ["systemd-analyze", "verify", "temposplit-serve.service", f"temposplit-edge@{INSTANCE}.service"],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # An unknown key or a bad value is only a warning to systemd: any line on stderr fails.
    assert run.returncode == 0 and not run.stderr.strip(), run.stderr


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has its own SIGTERM handler in place (/proc's SigCgt)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
def test_a_server_stopped_while_it_starts_is_a_success_to_its_unit(tmp_path):
    """``systemctl stop`` (or a shutdown) may come while the server still loads PyTorch and
    its models: the command the unit starts, with the unit's environment, then exits with
    a status the unit counts as success, not a failed unit."""
    settings = _settings(UNITS / "temposplit-serve.service")
    env = _environment(settings) | {"TEMPOSPLIT_LISTEN_HOST": "127.0.0.1", "TEMPOSPLIT_LISTEN_PORT": "0"}
    argv = _expand(_exec_start([settings]), env)
    argv = [str(Path(sys.executable).parent / "temposplit")] + [
        a.replace("/var/lib/temposplit", str(tmp_path)) for a in argv[1:]
    ]
    unit_env = {k: v.replace("/var/lib/temposplit", str(tmp_path)) for k, v in _environment(settings).items()}
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], **unit_env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _handles_sigterm(proc.pid):  # the CLI's handler: Python runs, the server not yet
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert "temposplit server on" not in out, "stopped after it started: this test needs the starting server"
    # systemd's clean exits: 0, SIGTERM itself (killed by it), and SuccessExitStatus=.
    clean = {0, -signal.SIGTERM} | {int(v) for v in " ".join(_values(settings, "SuccessExitStatus")).split()}
    assert proc.returncode in clean, (proc.returncode, out)


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian: apt-get install systemd; .ci/run installs it)",
)
def test_on_the_board_the_edge_may_load_its_overlay(tmp_path):
    """PYNQ loads a bitstream by writing /sys/class/fpga_manager/fpga0/{flags,firmware} (and
    /lib/firmware): with the board's drop-in, systemd itself (its offline security report of
    the merged unit) says that /sys and the system's folders are left writable."""
    out = _installed(tmp_path)
    run = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", f"temposplit-edge@{INSTANCE}.service"],
        cwd=out,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = {m.group(2): m.group(1) for m in re.finditer(r"^([✓✗])\s+(\S+)", run.stdout, re.M)}
    assert report.get("ProtectKernelTunables=") == "✗", run.stdout + run.stderr
    assert report.get("ProtectSystem=") == "✗", run.stdout + run.stderr
