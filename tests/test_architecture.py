"""The rules the codebase keeps: engine/ is UI-free, TensorFlow loads only on demand."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_engine_never_imports_the_ui_libraries():
    linter = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(linter)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "engine stays UI-free KEPT" in out.stdout


def test_importing_the_engine_and_the_cli_does_not_import_tensorflow():
    code = ("import sys, engine.data.corpus, engine.run.training, engine.modeling.sampler, "
            "engine.files.rundir, tui.cli; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
