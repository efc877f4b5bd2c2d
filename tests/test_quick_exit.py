"""The console scripts end as ``sys.exit`` would (status, message, the ``atexit`` handlers, flushed
streams), without Python's teardown of every module and object (~0.1-0.25 s with torch loaded)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TINY, mlptrain

SCRIPT = """
import atexit, sys, tempfile, threading, time, weakref
from pathlib import Path
from mlptrain.quick_exit import console

out = Path(sys.argv[1])
how = sys.argv[2]

class Torn:
    def __del__(self):
        sys.stderr.write("TEARDOWN")

torn = Torn()  # freed by Python's teardown of this module only
tmp = tempfile.TemporaryDirectory()  # removed by a weakref.finalize at exit
(out / "tmp").write_text(tmp.name)
atexit.register(lambda: (out / "atexit").write_text("ran"))

def main():
    sys.stdout.write("buffered, no newline")
    if how == "thread":  # a non-daemon thread still running: Python's exit joins it
        threading.Thread(target=lambda: (time.sleep(0.3), (out / "thread").write_text("done"))).start()
        sys.exit(4)
    if how in ("plain", "python"):
        return
    sys.exit(None if how == "none" else int(how) if how.isdigit() else how)

if how == "python":  # Python's own exit, for comparison
    main()
else:
    console(main)()
"""


@pytest.mark.parametrize(
    "how, status, err", [("none", 0, ""), ("plain", 0, ""), ("3", 3, ""), ("a message", 1, "a message\n")]
)
def test_a_console_script_exits_as_sys_exit_would_without_the_teardown(tmp_path, how, status, err):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), how], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (status, "buffered, no newline", err)
    assert (tmp_path / "atexit").read_text() == "ran"
    from pathlib import Path

    assert not Path((tmp_path / "tmp").read_text()).exists()  # the temporary folder's finalizer ran


def test_without_the_wrapper_python_tears_down_and_with_a_thread_left_it_exits_as_usual(tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "python"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "TEARDOWN"  # (what the wrapper leaves out)
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), "thread"], capture_output=True, text=True)
    assert r.returncode == 4 and (tmp_path / "thread").read_text() == "done"


def test_the_command_writes_everything_and_keeps_its_statuses(tmp_path):
    import json

    run = tmp_path / "run"
    r = mlptrain(*TINY, f"hydra.run.dir={run}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
    assert "test:" in (run / "mlptrain.log").read_text()  # Hydra's job log, flushed and closed by atexit
    bad = mlptrain(*TINY, "trainer.epochs=-3", cwd=tmp_path)
    assert (
        bad.returncode == 2 and bad.stderr.startswith("mlptrain: error: trainer.epochs") and bad.stderr.count("\n") == 1
    )
