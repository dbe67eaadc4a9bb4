"""The benches' child-process handle (bench.common.Proc): stopping a server stops its workers."""

from __future__ import annotations

import sys
import textwrap

from bench.common import Proc, _alive

# A "master" that exits on SIGTERM and a "worker" child that ignores it (as a worker stuck at
# exit does): the worker's pid is on the READY line.
MASTER = textwrap.dedent(
    """
    import subprocess, sys, time
    worker = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"])
    print("READY", worker.pid, flush=True)
    time.sleep(120)
    """
)


def test_stop_also_stops_a_worker_that_ignores_sigterm_and_would_outlive_its_master() -> None:
    proc = Proc([sys.executable, "-c", MASTER])
    worker = int(proc.ready_line.split()[1])
    assert _alive(worker)
    proc.stop(timeout=5.0)
    assert not _alive(worker), f"worker {worker} outlived its master"
