"""W&B faults injected for real: a server that refuses the key, a host that never answers, a file where W&B's dir
goes, and W&B's helper process killed mid-run. Each run prints one warning, exits 0 and keeps its local files whole.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import assert_same_rows, checked_rows, launch, start_run, wait_rows

from grokpipe.core.outputs import read_metrics

FAST = [
    "model=mlp",
    "task.p=23",
    "train.eval_every=10",
    "train.plot=false",
    "train.print_every=0",
    "train.checkpoint_every=0",
    "train.patience=null",
]
WARNING = re.compile(r"^warning: W&B (start|log|finish) failed \(.+\); continuing with local files only$")


def _one_warning(stderr: str) -> str:
    """The single `warning: W&B` line of a run's stderr, checked against the documented form."""
    lines = [line for line in stderr.splitlines() if "warning: W&B" in line]
    assert len(lines) == 1, stderr[-3000:]
    assert WARNING.match(lines[0]), lines[0]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _completed_whole(r, run_dir: Path, epochs: int) -> None:
    assert r.returncode == 0, r.stderr[-3000:]
    checked_rows(run_dir / "metrics.csv", list(range(10, epochs + 1, 10)))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"


# --- a server that refuses the key ------------------------------------------------------------------------------


class _Refuses(BaseHTTPRequestHandler):
    """Answers every request as W&B does to a key it does not know: 401 and a GraphQL error body."""

    seen: list[tuple[str, str, str]]

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        body = json.dumps({"data": None, "errors": [{"message": "user is not logged in"}]}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _refuse

    def log_message(self, *args) -> None:  # keep the test's output for failures
        pass


@pytest.fixture
def refusing_server():
    seen: list[tuple[str, str, str]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Refuses,), {"seen": seen}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_invalid_key_reaches_the_server_is_refused_and_never_leaks(tmp_path, refusing_server):
    url, seen = refusing_server
    key = secrets.token_hex(20)
    run_dir = tmp_path / "run"
    env = {"WANDB_MODE": "online", "WANDB_API_KEY": key, "WANDB_BASE_URL": url, "HOME": str(tmp_path)}
    r = launch([*FAST, "train.max_epochs=50", "logger=wandb", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env)

    # the server saw the key (W&B sends it as HTTP Basic `api:<key>`) and refused it
    sent = [base64.b64decode(auth.split()[1]).decode() for _, _, auth in seen if auth.startswith("Basic ")]
    assert f"api:{key}" in sent, seen
    assert "401" in _one_warning(r.stderr)
    _completed_whole(r, run_dir, 50)

    wire = base64.b64encode(f"api:{key}".encode())
    assert key not in r.stdout + r.stderr and wire.decode() not in r.stdout + r.stderr
    for f in (f for f in tmp_path.rglob("*") if f.is_file()):
        data = f.read_bytes()
        assert key.encode() not in data and wire not in data, f"the key is in {f}"


# --- a host that never answers ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_blackholed_host_waits_no_longer_than_init_timeout(tmp_path):
    timeouts = (3, 9)  # two settings: the wait must follow the setting, not merely stay under a bound
    # the kernel completes each handshake into the backlog; nobody accepts, so no byte ever comes back
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(16)
    env = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": secrets.token_hex(20),
        "WANDB_BASE_URL": f"http://127.0.0.1:{hole.getsockname()[1]}",
        "HOME": str(tmp_path),
    }
    args = [*FAST, "train.max_epochs=50", "logger=wandb"]
    waited = {}
    try:
        # the same run with W&B offline: what it costs when no server is needed
        start = time.monotonic()
        offline_env = {"WANDB_MODE": "offline", "HOME": str(tmp_path)}
        base = launch([*args, f"hydra.run.dir={tmp_path / 'offline'}"], cwd=tmp_path, env=offline_env)
        offline_s = time.monotonic() - start
        assert base.returncode == 0 and "warning: W&B" not in base.stderr, base.stderr[-3000:]

        for timeout in timeouts:
            run_dir = tmp_path / f"run{timeout}"
            start = time.monotonic()
            r = launch([*args, f"logger.init_timeout={timeout}", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env)
            waited[timeout] = time.monotonic() - start - offline_s
            _one_warning(r.stderr)
            _completed_whole(r, run_dir, 50)

        hole.setblocking(False)
        try:
            hole.accept()[0].close()  # a connection left in the backlog: the run did reach the host
        except BlockingIOError:
            pytest.fail("the run never connected to the blackholed host")
    finally:
        hole.close()

    # the wait is the timeout, not W&B's own (90 s to start, 10 s more at exit for its error reports): each run
    # waits at most its timeout (6 s of slack for a loaded machine: the offline run it is measured against ran at
    # another moment), and the longer setting waits longer by their difference (3 s of slack): a run that ignored
    # the setting fails the one or the other
    (short, long), (w_short, w_long) = timeouts, (waited[timeouts[0]], waited[timeouts[1]])
    assert w_short < short + 6 and w_long < long + 6, waited
    assert abs((w_long - w_short) - (long - short)) < 3, waited


# --- a file where W&B's dir goes --------------------------------------------------------------------------------


def test_file_where_the_wandb_dir_goes_degrades_once(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "wandb").write_text("a file where W&B wants its dir")
    r = launch(
        [*FAST, "train.max_epochs=50", "logger=wandb", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env={"HOME": str(tmp_path)},
    )
    assert _one_warning(r.stderr).startswith("warning: W&B start failed")
    _completed_whole(r, run_dir, 50)
    assert (run_dir / "wandb").read_text() == "a file where W&B wants its dir"


# --- W&B's helper process killed mid-run ------------------------------------------------------------------------


def _wandb_helpers(parent: int) -> list[int]:
    """Children of `parent` that are W&B's helper: the wandb-core binary, or the older `wandb service`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
        names = [Path(a).name for a in argv if a]
        if ppid == parent and ("wandb-core" in names or ("wandb" in names and "service" in names)):
            found.append(int(entry.name))
    return found


def _dead(pid: int, within: float = 10) -> bool:
    """Whether `pid` has ended (gone, or a zombie its parent has not reaped) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return True
        except (OSError, IndexError):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_killed_wandb_helper_warns_once_and_loses_no_row(tmp_path):
    epochs, kill_at = 1500, 300
    args = [*FAST, f"train.max_epochs={epochs}"]
    reference = launch([*args, "logger=none", f"hydra.run.dir={tmp_path / 'reference'}"], cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr[-3000:]
    reference_rows = checked_rows(tmp_path / "reference" / "metrics.csv", list(range(10, epochs + 1, 10)))

    run_dir = tmp_path / "run"
    proc = start_run([*args, "logger=wandb"], run_dir, env={"HOME": str(tmp_path)})
    wait_rows(run_dir / "metrics.csv", kill_at, proc)
    helpers = _wandb_helpers(proc.pid)
    assert len(helpers) == 1, f"W&B helpers of {proc.pid}: {helpers}"
    os.kill(helpers[0], signal.SIGKILL)
    killed_at = read_metrics(run_dir / "metrics.csv")[-1]["epoch"]
    assert killed_at < epochs and proc.poll() is None, "the kill did not land mid-run"
    assert _dead(helpers[0])

    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    # the next call to W&B after the kill notices it: one warning, and W&B's exit hook adds no traceback
    assert _one_warning(err).startswith(("warning: W&B log failed", "warning: W&B finish failed"))
    assert_same_rows(run_dir / "metrics.csv", reference_rows)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
