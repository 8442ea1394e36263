"""The README's "Run it by hand" recipe, run as a reader runs it: every block marked
`<!-- recipe: by-hand -->`, in order, pasted into one bash (with `set -e`, so a failing
command fails the test rather than scrolling by). It must end with forecasts served by the
read API that equal what is stored, and its last block must stop everything it started.

The recipe uses the workers' default ports, as a reader would; the test fails at once,
naming the port, when one of them is taken on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from energy_harness import generate
from energy_harness.images import REPO
from energy_harness.localstack.node import _pids_mentioning
from energy_harness.readme_blocks import recipe_blocks
from energy_harness.testing import wait_for

pytestmark = pytest.mark.e2e

# The defaults the recipe relies on (README, "Run it by hand").
PORTS = {
    9101: "bridge HTTP_PORT",
    9102: "ingest HTTP_PORT",
    9103: "inference HTTP_PORT",
    9104: "api HTTP_PORT",
    8000: "api API_PORT",
    50051: "inference GRPC_PORT",
}
API = "http://127.0.0.1:8000/api/v1"
SITE = "site-0"
HORIZONS = 24  # FORECAST_HORIZONS in the recipe


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _session_pids(sid: int) -> dict[int, str]:
    """Processes of session `sid` (the shell and what it started), with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # Field 6 of stat is the session; the command name may hold spaces and ')'.
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[3]) == sid:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found[int(entry.name)] = cmdline.strip()
    return found


class Terminal:
    """One bash reading what is pasted into it, like the terminal a reader uses.

    Each block is written to a file and sourced (stdin from /dev/null, so no command in it
    can read the next one), then a marker line reports that it finished.
    """

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, env=env, text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.transcript: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._count = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def run(self, text: str, timeout: float) -> str:
        """Run `text` in the shell; its output. A failure ends the shell and the test."""
        self._count += 1
        block = self.scratch / f"block-{self._count}.sh"
        block.write_text(text)
        marker = f"--done-{uuid.uuid4().hex}--"
        assert self.process.stdin is not None
        self.process.stdin.write(f"source {block} < /dev/null\necho {marker}\n")
        self.process.stdin.flush()
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"block still running after {timeout:.0f}s:\n{text}\n--- its output:\n"
                    + "".join(output)[-4000:]
                ) from None
            if line is None:
                self.process.wait(timeout=10)
                raise AssertionError(
                    f"the shell exited ({self.process.returncode}) in this block:\n{text}\n"
                    "--- its output:\n" + "".join(output)[-6000:]
                )
            if line.strip() == marker:
                self.transcript.append(text + "\n" + "".join(output))
                return "".join(output)
            output.append(line)

    def value(self, expression: str) -> str:
        return self.run(f'printf "%s\\n" "{expression}"', timeout=10).strip()

    def left_running(self) -> dict[int, str]:
        """Processes the shell started that are still there (not the shell itself)."""
        pids = _session_pids(self.process.pid)
        pids.pop(self.process.pid, None)
        return pids

    def close(self) -> None:
        """Stop whatever is left (SIGTERM lets the stack stop its services), then the shell."""
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 90
        while self.left_running() and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in self.left_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()


def fresh_terminal_env() -> dict[str, str]:
    """This process's environment without what a new terminal would not have: the
    pipeline's settings, the virtualenv and make's variables."""
    drop = {f.metadata["env"] for cls in generate.settings_classes()
            for f in cls.__dataclass_fields__.values() if "env" in f.metadata}
    drop |= {"VIRTUAL_ENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHONPATH"}
    return {k: v for k, v in os.environ.items() if k not in drop}


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Terminal]:
    taken = [f"{port} ({what})" for port, what in PORTS.items() if _port_taken(port)]
    if taken:
        pytest.fail(f"the README's recipe uses default ports that are taken here: "
                    f"{', '.join(taken)}; stop what listens there")
    shell = Terminal(REPO, fresh_terminal_env(), tmp_path)
    try:
        yield shell
    finally:
        shell.close()


def _get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _settled(dsn: str) -> bool:
    """Every site's hours closed up to its newest reading, and nothing owed any more."""
    with psycopg2.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM forecast_backlog")
        owed = cur.fetchone()[0]
        cur.execute("""SELECT count(*) FROM (SELECT site_id, max(ts) AS newest FROM readings
                                             GROUP BY site_id) r
                       LEFT JOIN forecast_sites s USING (site_id)
                       WHERE s.watermark IS DISTINCT FROM r.newest""")
        behind = cur.fetchone()[0]
    return owed == 0 and behind == 0


def _stored_forecast(dsn: str, site: str) -> tuple[datetime, list[tuple]]:
    with psycopg2.connect(dsn, connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT max(issued_at) FROM forecasts WHERE site_id = %s", (site,))
        issued = cur.fetchone()[0]
        cur.execute(
            """SELECT f.target_time, f.horizon, f.model_version, f.p10, f.p50, f.p90,
                      h.avg_energyconsumption
               FROM forecasts f LEFT JOIN hourly_features h
                 ON h.site_id = f.site_id AND h.hour = f.target_time
               WHERE f.site_id = %s AND f.issued_at = %s ORDER BY f.target_time""",
            (site, issued),
        )
        return issued, cur.fetchall()


def _logs(run: str) -> str:
    """The tail of every log the recipe wrote, for a failure message."""
    parts = []
    for log in sorted(Path(run).glob("*.log")) if run else []:
        parts.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-1500:])
    return "\n".join(parts)


# A stack start, a 21-day backfill, training and a backtest on a shared 2-core machine.
@pytest.mark.timeout(1800)
def test_the_by_hand_recipe_ends_with_the_stored_forecast_served_by_the_api(
    terminal: Terminal, tmp_path: Path
) -> None:
    blocks = recipe_blocks("by-hand")
    *start, stop = blocks
    assert "kill $STACK" in stop, "the recipe's last block stops the stack"
    terminal.run("set -e", timeout=10)
    run = ""
    try:
        outputs = []
        for block in start:
            # The first block may install Debian packages and jars (cached afterwards).
            outputs.append(terminal.run(block, timeout=1500 if not outputs else 900))
            if not run and "RUN=" in block:
                run = terminal.value("$RUN")  # where the recipe's logs go
        dsn = terminal.value("$DATABASE_URL")
        assert dsn.startswith("postgresql://"), dsn

        # What the recipe's own curl printed: the latest run of site-0, as CSV.
        shown = next(out for block, out in zip(start, outputs, strict=True)
                     if "forecasts?issued=latest&format=csv" in block)
        assert "site,issued_at,target_time,horizon" in shown, shown[-2000:]
        assert f"\n{SITE}," in shown, shown[-2000:]

        # Once every closed hour is forecast, the API serves exactly the stored latest run.
        wait_for(lambda: _settled(dsn), timeout=180, what="every owed forecast stored")
        issued, rows = _stored_forecast(dsn, SITE)
        # The client token the recipe made for its API (energy-pipeline api-token).
        token = terminal.value("$API_TOKEN")
        assert len(token) >= 43, "the recipe makes a token for the read API"
        served = _get(f"{API}/sites/{SITE}/forecasts?issued=latest", token)
        assert served["site"] == SITE
        assert datetime.fromisoformat(served["issued_at"]) == issued
        assert served["next"] is None
        assert [
            (datetime.fromisoformat(r["target_time"]), r["horizon"], r["model_version"],
             r["p10"], r["p50"], r["p90"], r["actual"])
            for r in served["data"]
        ] == rows
        # The next 24 hours, hourly, from the run's origin (horizon h targets origin + h - 1).
        assert [r[1] for r in rows] == list(range(1, HORIZONS + 1))
        assert [r[0] for r in rows] == [issued + timedelta(hours=h) for h in range(HORIZONS)]
        assert all(r[3] <= r[4] <= r[5] for r in rows)

        # The backtest block wrote its plot.
        assert Path(run, "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        backtest_out = next(out for block, out in zip(start, outputs, strict=True)
                            if "energy-pipeline backtest" in block)
        assert "naive168" in backtest_out, backtest_out[-2000:]

        # The stack's data directory, from its "local stack ready" log line.
        data_dir = next(
            json.loads(line)["data_dir"]
            for line in Path(run, "stack.log").read_text().splitlines()
            if '"local stack ready"' in line
        )
        terminal.run(stop, timeout=300)
        assert terminal.left_running() == {}, "the recipe's last block left these running"
        assert _pids_mentioning(data_dir) == set()  # the stack's services
        assert not Path(data_dir).exists()
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n\n{_logs(run)}") from None
    finally:
        # What the reader would have seen, kept with pytest's temporary files.
        (tmp_path / "transcript.txt").write_text("\n".join(terminal.transcript))
        if run:
            for log in Path(run).glob("*.*"):
                with contextlib.suppress(OSError):
                    shutil.copy(log, tmp_path / f"run-{log.name}")
            shutil.rmtree(run, ignore_errors=True)
