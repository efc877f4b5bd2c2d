"""How mlptrain's commands end: as Python's exit does, less its teardown of every module and object.

After the threads and the ``atexit`` handlers, Python's exit frees every module and object one by one;
with torch loaded that takes ~0.1-0.25 s per command here (``python -c "import torch"``: 1.39 s, and 1.15 s
when it ends with ``os._exit``).  A command has nothing left that needs it: its files are written and closed
by then.  :func:`console` wraps a command's ``main`` for its console script: it runs it, then the ``atexit``
handlers (log files flushed and closed, worker pools stopped, temporary folders removed), flushes the
standard streams and ends the process with the exit status Python would give.  While another non-daemon
thread runs, or where this Python has no ``atexit._run_exitfuncs``, the exit is left to Python.  Torch-free.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading
from collections.abc import Callable
from typing import NoReturn


def console(main: Callable[[], object]) -> Callable[[], NoReturn]:
    """``main`` as a console script's function: called with no arguments, then :func:`quick_exit`."""

    @functools.wraps(main)
    def command() -> NoReturn:
        try:
            main()
        except SystemExit as e:
            quick_exit(e.code)
        quick_exit(None)

    return command


def quick_exit(code: object) -> NoReturn:
    """End the process with ``code`` as ``sys.exit(code)`` would (None: 0; a number: itself; anything
    else: printed to stderr, 1), after the ``atexit`` handlers and a flush of stdout and stderr."""
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    main = threading.main_thread()
    if run_exitfuncs is None or any(t is not main and not t.daemon for t in threading.enumerate()):
        sys.exit(code)  # Python joins those threads first
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code & 0xFF  # what the OS keeps of it, as after sys.exit
    else:
        print(code, file=sys.stderr)
        status = 1
    run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(status)
