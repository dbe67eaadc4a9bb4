"""A stop signal that reaches a just-forked worker before its server's handlers are in place is
noted, not lost (oidc_logout.stop_signals). Each case runs in a fresh interpreter: fork hooks
cannot be removed once registered."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHILD_STOPPED_BY_SIGNAL_IN_THE_WINDOW = textwrap.dedent(
    """
    import os, signal, sys

    guard = sys.argv[1] == "guard"
    # Registered first, so it runs in the child before the guard's own after-fork hook: the
    # signal comes in the window between fork and the child's handlers.
    os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), signal.SIGTERM))
    from oidc_logout import stop_signals
    if guard:
        stop_signals.guard_forks([signal.SIGTERM])
    pid = os.fork()
    if pid == 0:
        os._exit(0 if stop_signals.requested.wait(10) else 3)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print(f"killed by {signal.Signals(os.WTERMSIG(status)).name}")
    else:
        print(f"exit {os.WEXITSTATUS(status)}")
    # The parent's own handling is untouched: the mask it had before the fork is back.
    print("parent blocks", sorted(s.name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])))
    print("parent noted", stop_signals.requested.is_set())
    """
)


def _run(mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD_STOPPED_BY_SIGNAL_IN_THE_WINDOW, mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_a_stop_signal_between_fork_and_the_workers_handlers_is_noted_by_the_worker() -> None:
    assert _run("guard") == ["exit 0", "parent blocks []", "parent noted False"]


def test_without_the_guard_that_signal_reaches_the_inherited_handler() -> None:
    """The control: the same fork without the guard loses the worker to the signal (here the
    default action; under gunicorn or granian, the master's handler, and the stop is lost)."""
    assert _run("unguarded")[0] == "killed by SIGTERM"
