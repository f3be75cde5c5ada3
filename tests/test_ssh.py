"""A real SSH session: the app, or `train`, runs in a terminal that sshd gives it, and
the connection drops (the ssh client is killed), as when a laptop loses Wi-Fi. sshd then
hangs up the session's terminal: the process must save a checkpoint of the step it
reached, write the run's end row, release the run and be gone within GONE_WITHIN
seconds. sshd runs on a loopback port with throwaway keys made here; skipped, with the
reason, where sshd or ssh is not installed (.ci/run installs openssh-server)."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import tiny_text
from tests.terminal import (
    GONE_WITHIN,
    TINY,
    assert_saved_and_released,
    charlm,
    charlm_processes,
    last_step,
    wait_for,
)

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


@pytest.mark.parametrize("command", [[], ["train"]], ids=["app", "train"])
def test_a_dropped_ssh_connection_stops_the_run_with_a_checkpoint(command, sshd, tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text(tiny_text(6000), encoding="utf-8")
    run_dir = tmp_path / "run"
    args = charlm(*command, "--corpus", corpus, "--run", run_dir, *TINY, "--epochs", "1000",
                  "--checkpoint-every", "3600")
    remote = f"cd {shlex.quote(str(ROOT))} && TERM=xterm-256color exec {shlex.join(args)}"
    client = subprocess.Popen([*sshd, remote], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        seen = wait_for(lambda: (last_step(run_dir) or 0) >= 30 and last_step(run_dir), 120, "training")
        pids = charlm_processes(str(run_dir))
        assert pids, "no charlm-tui process on the remote side"
        client.kill()  # the connection drops: sshd hangs up on the session
        client.wait(timeout=10)
        wait_for(lambda: not any(charlm_processes(str(run_dir))), GONE_WITHIN + 5,
                 "the remote process to leave after the connection dropped")
        assert_saved_and_released(run_dir, seen)
    finally:
        if client.poll() is None:
            client.kill()
