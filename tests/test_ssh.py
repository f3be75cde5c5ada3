"""A real SSH session: the app trains in a terminal that sshd gives it, and the
connection drops (the ssh client is killed), as when a laptop loses Wi-Fi. sshd then
sends the session SIGHUP: the app must save a checkpoint of the step it reached and
exit. sshd runs on a loopback port with throwaway keys made here; skipped, with the
reason, where sshd or ssh is not installed (.ci/run installs openssh-server)."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_text
from tests.test_tmux_smoke import _assert_checkpoint_is_the_last_step, _command, _wait_for_steps

ROOT = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                       reason="sshd/ssh are not installed (apt-get install openssh-server openssh-client)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="sshd needs root to start a session here"),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """An sshd on 127.0.0.1 that lets this test's key log in as the current user."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    authorized = keys / "authorized_keys"
    shutil.copy(keys / "client.pub", authorized)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {keys / 'host'}
AuthorizedKeysFile {authorized}
PidFile {tmp_path / 'sshd.pid'}
PermitRootLogin yes
PasswordAuthentication no
StrictModes no
UsePAM no
""")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.skip(f"sshd did not start: {server.stderr.read()[-500:]}")
            time.sleep(0.1)
    try:
        yield ["ssh", "-tt", "-p", str(port), "-i", str(keys / "client"), "-o", "StrictHostKeyChecking=no",
               "-o", f"UserKnownHostsFile={tmp_path / 'known_hosts'}", "-o", "LogLevel=ERROR",
               "-o", "ServerAliveInterval=1", f"{os.environ.get('USER', 'root')}@127.0.0.1"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_dropped_ssh_connection_stops_the_app_with_a_checkpoint(sshd, tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(tiny_text(6000), encoding="utf-8")
    run_dir = tmp_path / "run"
    app = _command() + ["--corpus", str(corpus), "--run", str(run_dir), "--units", "8", "--maxlen", "16",
                        "--step", "8", "--batch-size", "16", "--epochs", "1000", "--checkpoint-every", "3600"]
    remote = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color exec {shlex.join(app)}"
    client = subprocess.Popen([*sshd, remote], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        seen = _wait_for_steps(run_dir, 30)
        client.kill()  # the connection drops: sshd hangs up on the session
        client.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = (run_dir / "metrics.jsonl").read_text().splitlines()
            if rows and '"kind": "end"' in rows[-1]:
                break
            time.sleep(0.2)
        _assert_checkpoint_is_the_last_step(run_dir, seen)
        lock = (run_dir / ".lock").read_text().strip() if (run_dir / ".lock").exists() else ""
        assert lock == "", f"the app (pid {lock}) still holds the run after the connection dropped"
    finally:
        if client.poll() is None:
            client.kill()
