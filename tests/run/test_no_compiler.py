"""A run never imports PyTorch's compiler (``torch._dynamo``): about a second of every
process's start, which ``torch.optim``'s first use and ``torch.compile`` pay."""

import json
import subprocess
import sys

import pytest

CLI_RUN = """
import json, runpy, sys
sys.argv = ["triggerlab", "run", "--set", "train.epochs=1", "--out", sys.argv[1], "--quiet"]
try:
    runpy.run_module("triggerlab", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    if exc.code not in (0, None):
        raise
print(json.dumps(sorted(m for m in sys.modules if m.startswith("torch._dynamo"))))
"""


@pytest.mark.slow
def test_a_default_run_from_the_command_line_leaves_the_compiler_unimported(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", CLI_RUN, str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
    (summary,) = tmp_path.glob("*/summary.json")  # the run did happen
    assert json.loads(summary.read_text())["timings"]["epochs_s"] > 0
