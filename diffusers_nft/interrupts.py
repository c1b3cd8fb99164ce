"""Stopping cleanly on SIGTERM / SIGINT, and when the launcher that started us dies.

`accelerate launch` runs the training script as a child process and does not pass a SIGTERM on to it: killing
the launcher used to leave training running. `StopSignals` asks Linux to send this process SIGTERM when its parent
dies (`PR_SET_PDEATHSIG`), and turns SIGTERM and SIGINT into a flag that the training loop reads between
iterations, so that it can save a checkpoint, shut its reward workers down, and exit non-zero.
"""

import ctypes
import os
import signal
import sys
import threading
from typing import Optional

_PR_SET_PDEATHSIG = 1


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal; the exit status is 128 + the signal number, as a shell reports it."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


class StopSignals:
    """Within the block, SIGTERM and SIGINT set `received` instead of killing the process at once.

    A second signal of the same kind while the first is handled stops the process the default way.
    Outside the main thread (where Python cannot install handlers) the block does nothing.
    """

    def __init__(self):
        self.received: Optional[int] = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._previous[signum] = signal.signal(signum, self._handle)
        _die_with_parent(int(signal.SIGTERM))
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._previous:
            _die_with_parent(0)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.received == signum:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        self.received = signum
        # print, not logging: a handler that runs while the main thread holds the logging lock would deadlock on it
        print(f"Received {signal.Signals(signum).name}: stopping after this iteration.", file=sys.stderr, flush=True)


def _die_with_parent(signum: int) -> None:
    """Get `signum` when the parent process (the launcher) dies (0: no longer); Linux only, a no-op elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return
