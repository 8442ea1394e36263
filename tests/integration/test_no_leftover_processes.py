"""No service outlives its owner: not after stop(), not when the owner is killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

OWNER = textwrap.dedent(
    """
    import json, signal, sys, time
    from pathlib import Path
    from energy_harness.localstack import KafkaCluster, MosquittoBroker, PostgresServer

    # Ctrl-C as in a terminal, even when this test runs under a parent that ignores SIGINT
    # (a background job of a non-interactive shell does; Python then installs no handler).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    base = Path(sys.argv[1])
    services = [
        MosquittoBroker(base / "mqtt"),
        PostgresServer(base / "postgres", fast=True),
        KafkaCluster(base / "kafka", size=1),
    ]
    for service in services:
        service.start()
    pids = [services[0].process.pid, services[1].process.pid]
    pids += [node.process.pid for node in services[2].nodes.values()]
    print(json.dumps(pids), flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead but not yet reaped by init; it holds no resources.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_owner(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert owner.stdout is not None
    line = owner.stdout.readline()
    assert line, f"owner exited early with code {owner.wait()}"
    pids = json.loads(line)
    assert all(alive(pid) for pid in pids)
    return owner, pids


def wait_all_gone(pids: list[int], timeout: float = 20) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [pid for pid in pids if alive(pid)]
        if not left:
            return []
        time.sleep(0.2)
    return [pid for pid in pids if alive(pid)]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_services_die_with_their_owner(tmp_path: Path, how: signal.Signals) -> None:
    owner, pids = start_owner(tmp_path)
    owner.send_signal(how)
    owner.wait(30)
    assert wait_all_gone(pids) == [], f"left running after {how.name} of the owner"
