"""Children die with their parent, however the parent dies (SIGKILL included).

A process killed with SIGKILL runs no shutdown code, so it cannot stop its children; on
Linux they are re-parented and keep running. For fleetwire that meant a node agent killed
with ``kill -9`` left its vLLM engine (``VLLM::EngineCore`` and ``VLLM::Worker``, 1.5 GiB
on a CPU, the GPU's memory on a GPU box) running with no parent, so a restarted agent
could not start its own engine; and a ``fleetwire up`` killed that way left the whole local
mesh running.

The kernel can do what the dead parent cannot: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, set
by the child itself, makes the kernel send the child SIGKILL when its parent dies. What
shapes this module:

- The setting belongs to the child and ``fork`` clears it, so each child arms it itself
  once it runs; a parent that died before that is caught by comparing ``os.getppid()``
  with the parent the child expected (a re-parented child has another one). ``execve``
  keeps the setting, so a small launcher can arm it and then run the real program.
- The signal fires when the *thread* that created the child exits, not when the whole
  process does. Every process bound here is created by a thread that lives as long as
  its children should: the supervisor's main thread; in the node agent, the event loop's
  default-executor thread that builds the engine (it lives until ``asyncio.run`` returns,
  after the engines have stopped); the engine core's main thread, which starts workers.
- vLLM starts its processes itself. On a CPU (and on a GPU with
  ``VLLM_WORKER_MULTIPROC_METHOD=spawn``) it uses multiprocessing's ``spawn``: a fresh
  interpreter that runs none of our code for its first 10-30 s (importing vLLM and torch;
  the engine core also waits for a handshake with the agent for up to 5 minutes). vLLM's
  plugin hook (``vllm.general_plugins``) runs only after that, too late for an agent
  killed while its engine starts. So the agent replaces the interpreter multiprocessing
  spawns with ``fleetwire-lifeline-python`` (a console script: ``launch``), which arms the
  lifeline and ``exec``s the real interpreter with the same arguments, so a spawned
  process is bound from its first milliseconds. Processes forked instead (``fork``, the GPU
  default) are armed by an at-fork hook.
- Descendants inherit the binding: ``vllm_plugin`` (an entry point, pyproject.toml), which
  vLLM calls in every process it starts, makes the engine core bind its workers the same
  way before it starts them, and arms the process itself should the launcher be missing.
  ``FLEETWIRE_LIFELINE`` (``<pid> <python>``: the binding process and the interpreter to
  run) hands this down; only processes below one that asked are touched.
- multiprocessing's resource tracker is not bound: it must outlive the engine's processes
  to remove the shared memory they leave (it exits by itself when the last of them is
  gone). The launcher arms only processes started with ``--multiprocessing-fork``.

The supervisor of ``fleetwire up`` starts each service through ``bound_command``
(``python -m fleetwire.process.lifeline <its pid> -- python -m <service>``): the launcher arms the
lifeline and ``exec``s the service, which keeps its pid and its own session.

Linux only; elsewhere every function is a no-op (``supported()`` says which).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import sys
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Final, NoReturn

__all__ = [
    "LAUNCHER",
    "LIFELINE_ENV",
    "bound_command",
    "die_with_parent",
    "engines_die_with_this_process",
    "launch",
    "launcher_path",
    "main",
    "supported",
    "vllm_plugin",
    "vllm_plugin_installed",
]

LIFELINE_ENV: Final = "FLEETWIRE_LIFELINE"
"""``<pid> <python>`` in the environment of a process whose multiprocessing children are
bound to it: ``pid`` is that process, ``python`` the interpreter the launcher runs. Not a
setting: a marker a process hands down to its descendants."""

LAUNCHER: Final = "fleetwire-lifeline-python"
"""The console script that stands in for the interpreter of spawned children (``launch``)."""

_MULTIPROCESSING_CHILD: Final = "--multiprocessing-fork"
_PR_SET_PDEATHSIG: Final = 1

_spawn_python: str | None = None
_forking_pid: int | None = None
_fork_hook_registered = False


def supported() -> bool:
    """Whether this platform has a parent-death signal (Linux)."""
    return sys.platform.startswith("linux")


def _set_parent_death_signal(signum: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    prctl.restype = ctypes.c_int
    if prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


def die_with_parent(parent_pid: int, signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send this process ``signum`` when its parent dies.

    ``parent_pid`` is the process this one was started by. If it is no longer the parent
    (it died before this call), this process gets ``signum`` at once. Idempotent. Returns
    False, doing nothing, where there is no parent-death signal (not Linux).

    Raises:
        OSError: the kernel refused the setting.

    """
    if not supported():
        return False
    _set_parent_death_signal(signum)
    # The parent may have died before the signal was set: then nothing would fire.
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)
    return True


def bound_command(argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` as a child that dies with this process.

    The launcher arms the lifeline against the calling process, then ``exec``s ``argv``,
    so the child keeps its pid and runs exactly ``argv``. Start it from a thread that lives
    as long as the child should (the main thread).
    """
    return [sys.executable, "-m", "fleetwire.process.lifeline", str(os.getpid()), "--", *argv]


def launcher_path() -> str | None:
    """Where ``fleetwire-lifeline-python`` is installed (beside this interpreter, in the
    scripts directory, or on PATH); None when it is not."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        candidate = directory / LAUNCHER
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(LAUNCHER)


def engines_die_with_this_process() -> None:
    """Bind every process multiprocessing starts below this one (vLLM's engine core and
    workers) to the process that starts it: spawned ones through the launcher, forked ones
    through an at-fork hook, their descendants through ``vllm_plugin``.

    Call in the process that starts the engines, before they start. Idempotent. A no-op
    where not supported. Without the launcher installed, spawned processes are bound only
    once vLLM calls its plugins in them (after their start-up).
    """
    global _spawn_python, _fork_hook_registered
    if not supported():
        return
    from multiprocessing import spawn

    launcher = launcher_path()
    if _spawn_python is None:
        current = os.fsdecode(spawn.get_executable())
        _spawn_python = sys.executable if current == launcher else current
    os.environ[LIFELINE_ENV] = f"{os.getpid()} {_spawn_python}"
    if launcher is not None:
        spawn.set_executable(launcher)
    if not _fork_hook_registered:
        os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
        _fork_hook_registered = True


def _before_fork() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _after_fork_in_child() -> None:
    if _forking_pid is None:
        return
    die_with_parent(_forking_pid)
    # This process's own children are bound to it, not to its parent.
    os.environ[LIFELINE_ENV] = f"{os.getpid()} {_spawn_python or sys.executable}"


def launch() -> NoReturn:
    """``fleetwire-lifeline-python ARG...``: multiprocessing's interpreter in a process
    bound by ``engines_die_with_this_process``. Arms the lifeline of a multiprocessing
    child against the process named in ``FLEETWIRE_LIFELINE``, then ``exec``s the real
    interpreter with the same arguments (same pid, same inherited descriptors)."""
    args = sys.argv[1:]
    parent, _, python = os.environ.get(LIFELINE_ENV, "").partition(" ")
    if _MULTIPROCESSING_CHILD in args and parent.isdigit():
        die_with_parent(int(parent))
    python = python or sys.executable
    os.execv(python, [python, *args])


def vllm_plugin() -> None:
    """The ``vllm.general_plugins`` entry point: vLLM calls it in every process it starts
    and in the one that builds the engine. Below a bound process (``FLEETWIRE_LIFELINE``
    set), arms this process if multiprocessing started it (a no-op when the launcher did
    already) and binds the processes it will start. vLLM may call it more than once."""
    if not os.environ.get(LIFELINE_ENV):
        return
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(parent.pid)
    engines_die_with_this_process()


def vllm_plugin_installed() -> bool:
    """Whether ``vllm_plugin`` is registered with vLLM (this project was installed with
    pip, which writes its entry points)."""
    from importlib.metadata import entry_points

    plugins = entry_points(group="vllm.general_plugins")
    return any(ep.value == "fleetwire.process.lifeline:vllm_plugin" for ep in plugins)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python -m fleetwire.process.lifeline PARENT_PID -- PROGRAM [ARG...]``: arm the lifeline
    against PARENT_PID, then ``exec`` PROGRAM (looked up on PATH). Exit code 2 on bad
    usage; a failed ``exec`` raises OSError."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) >= 3 and args[0].isdigit() and args[1] == "--":
        die_with_parent(int(args[0]))
        os.execvp(args[2], args[2:])
    print(
        "usage: python -m fleetwire.process.lifeline PARENT_PID -- PROGRAM [ARG...]",
        file=sys.stderr,
    )
    sys.exit(2)


if __name__ == "__main__":
    main()
