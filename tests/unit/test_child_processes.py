"""The supervision of ``caseledger run --processes`` (ledger/runtime/child_processes.py), with tiny children.

Issue 29, the soak: ``caseledger run`` ran every service as a thread of one process (one GIL, about one
core). Each service now runs in a child process; these tests hold the parent's promises: one child dying
(even by SIGKILL) stops the others and is named, a stop reaches every child, and no child outlives its
parent, even a parent killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from caseledger.ledger.runtime.child_processes import ChildCommand, how_it_ended, run_children

# A service's stand-in: it stays with its parent, writes its pid, and runs until SIGTERM (exit 0), or
# ignores SIGTERM when told to.
CHILD = textwrap.dedent("""
    import json, signal, sys, threading, os
    from pathlib import Path
    from caseledger.ledger.runtime.child_processes import read_orders, stay_with_parent
    orders = json.loads(read_orders())
    stop = threading.Event()
    signal.signal(signal.SIGTERM, signal.SIG_IGN if orders["stubborn"] else (lambda *_: stop.set()))
    stay_with_parent(orders["parent"], stop, grace_s=orders.get("grace", 60))
    Path(orders["pidfile"]).write_text(str(os.getpid()))
    stop.wait()
    Path(orders["pidfile"]).with_suffix(".stopped").write_text("clean")
""")


def child(tmp: Path, name: str, *, stubborn: bool = False, parent: int | None = None,
          grace_s: float = 60) -> ChildCommand:
    import json

    orders = {"parent": parent or os.getpid(), "pidfile": str(tmp / f"{name}.pid"), "stubborn": stubborn,
              "grace": grace_s}
    return ChildCommand([sys.executable, "-c", CHILD], json.dumps(orders).encode())


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead: its parent has not reaped it yet
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ", 1)[1].startswith("Z"))


def pids(tmp: Path, *names: str) -> dict[str, int]:
    wait_for(lambda: all((tmp / f"{n}.pid").exists() and (tmp / f"{n}.pid").read_text() for n in names))
    return {n: int((tmp / f"{n}.pid").read_text()) for n in names}


def test_a_child_killed_stops_the_others_and_is_named(tmp_path: Path) -> None:
    stop = threading.Event()
    result: list[object] = []
    children = {name: child(tmp_path, name) for name in ("intake", "publisher", "projections")}
    thread = threading.Thread(target=lambda: result.append(run_children(children, stop, grace_s=20)))
    thread.start()
    running = pids(tmp_path, *children)
    os.kill(running["publisher"], signal.SIGKILL)
    thread.join(30)
    assert not thread.is_alive()
    outcome = result[0]
    assert outcome.failures == {"publisher": "killed by SIGKILL"}  # type: ignore[attr-defined]
    assert outcome.line() == "publisher killed by SIGKILL"  # type: ignore[attr-defined]
    assert (tmp_path / "intake.stopped").exists() and (tmp_path / "projections.stopped").exists()  # SIGTERM: clean
    assert not any(alive(pid) for pid in running.values())


def test_stop_reaches_every_child_and_a_stubborn_one_is_killed(tmp_path: Path) -> None:
    stop = threading.Event()
    result: list[object] = []
    children = {"intake": child(tmp_path, "intake"), "publisher": child(tmp_path, "publisher", stubborn=True)}
    thread = threading.Thread(target=lambda: result.append(run_children(children, stop, grace_s=1)))
    thread.start()
    running = pids(tmp_path, *children)
    stop.set()
    thread.join(30)
    outcome = result[0]
    assert outcome.failures == {"publisher": "did not stop within 1 s of SIGTERM: killed"}  # type: ignore[attr-defined]
    assert (tmp_path / "intake.stopped").exists()
    assert not any(alive(pid) for pid in running.values())


def test_a_clean_stop_is_ok(tmp_path: Path) -> None:
    stop = threading.Event()
    started = threading.Event()
    children = {"intake": child(tmp_path, "intake")}
    timer = threading.Timer(0.0, lambda: (pids(tmp_path, "intake"), stop.set()))
    outcome = run_children(children, stop, on_started=lambda: (started.set(), timer.start()))
    assert started.is_set() and outcome.ok and outcome.line() == ""
    assert (tmp_path / "intake.stopped").exists()


# The parent killed with SIGKILL: Linux sends each child SIGTERM (PR_SET_PDEATHSIG) and its stdin reaches its end.
def test_no_child_outlives_a_parent_killed_with_sigkill(tmp_path: Path) -> None:
    parent_script = textwrap.dedent(f"""
        import threading, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_child_processes import child
        from pathlib import Path
        from caseledger.ledger.runtime.child_processes import run_children
        import os
        tmp = Path({str(tmp_path)!r})
        run_children({{"intake": child(tmp, "intake", parent=os.getpid()),
                      # deaf to SIGTERM (a batch that does not end): it exits anyway once its grace is over
                      "publisher": child(tmp, "publisher", parent=os.getpid(), stubborn=True, grace_s=1)}},
                     threading.Event())
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_script])
    try:
        running = pids(tmp_path, "intake", "publisher")
        parent.kill()
        parent.wait()
        wait_for(lambda: not any(alive(pid) for pid in running.values()), timeout=20)
        assert (tmp_path / "intake.stopped").exists()  # SIGTERM from Linux: each finished cleanly
    finally:
        if parent.poll() is None:
            parent.kill()


def test_how_a_child_ended_is_said_in_words() -> None:
    assert how_it_ended(-9) == "killed by SIGKILL"
    assert how_it_ended(1) == "exited with status 1"
    assert how_it_ended(-200) == "killed by signal 200"
