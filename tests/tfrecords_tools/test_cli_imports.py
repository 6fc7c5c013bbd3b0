"""`tfrecords-tools --help` and argument errors answer without importing TensorFlow."""

from __future__ import annotations

import subprocess
import sys

_PROBE = """
import sys
from tfrecords_tools.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = sorted(m for m in ("tensorflow", "sklearn", "pandas") if m in sys.modules)
print("HEAVY=" + ",".join(heavy))
"""


def _heavy_modules_after(argv: list[str]) -> str:
    code = _PROBE.format(argv=argv)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip().splitlines()[-1]


def test_help_and_usage_errors_do_not_import_tensorflow():
    assert _heavy_modules_after(["--help"]) == "HEAVY="
    assert _heavy_modules_after(["write", "--help"]) == "HEAVY="
    assert _heavy_modules_after(["write", "--csv", "x.csv"]) == "HEAVY="  # --out missing
