"""node.engine_priority on real processes: every thread of every process below the given
one gets the nice value (a grandchild too), the process itself keeps its own, and 0 changes
nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from node.engine_priority import descendants, lower_engine_priority
from tests.support.eventually import eventually_sync

# A process that starts a child with a second thread, which starts a grandchild.
GRANDCHILD = "import time; time.sleep(60)"
CHILD = f"""
import subprocess, sys, threading, time
subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}])
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
print("ready", flush=True)
time.sleep(60)
"""
PARENT = f"""
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", {CHILD!r}])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_every_thread_below_the_given_process_gets_the_nice_value() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        eventually_sync(
            lambda: len(descendants(parent.pid)) >= 2,
            within=10,
            what="the child and the grandchild to start",
        )
        below = descendants(parent.pid)
        assert below[0] == child
        assert len(below) == 2  # the grandchild too
        own = os.getpriority(os.PRIO_PROCESS, parent.pid)
        assert lower_engine_priority(0, below=parent.pid) == 0
        assert os.getpriority(os.PRIO_PROCESS, child) == own
        assert lower_engine_priority(7, below=parent.pid) >= 3  # 2 threads + the grandchild
        for pid in below:
            for tid in os.listdir(f"/proc/{pid}/task"):
                assert os.getpriority(os.PRIO_PROCESS, int(tid)) == 7
        assert os.getpriority(os.PRIO_PROCESS, parent.pid) == own
    finally:
        for pid in descendants(parent.pid):
            os.kill(pid, 9)
        parent.kill()
        parent.wait()
