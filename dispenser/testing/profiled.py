"""``dispenserd`` under cProfile, switched on and off by signals, for benchmarks.

    python -m dispenser.testing.profiled --config FILE      # DISPENSERD_PROFILE=out.prof

``SIGUSR1`` starts profiling the CPU time of the event loop's thread (what was collected before is
dropped); ``SIGUSR2`` stops it and writes the statistics to ``$DISPENSERD_PROFILE`` (then
the next ``SIGUSR1`` starts anew). The signal handlers run on the main thread, between two
bytecodes of whatever it was doing, which is where cProfile has to be switched. Worker
threads (the printer's serial exchanges) are not profiled: their CPU shows in
``/proc/<pid>/task``.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from types import FrameType

from dispenser.daemon.main import main

ENV = "DISPENSERD_PROFILE"


def run() -> int:
    path = os.environ[ENV]
    # CPU time of the loop's thread: waits (fsync, the loop's idle poll) and other
    # processes on a loaded machine do not count, unlike wall time.
    profile = cProfile.Profile(time.thread_time)

    def start(signum: int, frame: FrameType | None) -> None:
        profile.disable()
        profile.clear()
        profile.enable()

    def dump(signum: int, frame: FrameType | None) -> None:
        profile.disable()
        profile.dump_stats(path)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    return main()


if __name__ == "__main__":
    sys.exit(run())
