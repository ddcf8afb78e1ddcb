"""benchmarks/gpu.py's dry run: every section runs on CPU with tiny shapes and the script says that
no GPU figure was measured (the GPU run itself is not a test)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_dry_run_smokes_every_section() -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "no GPU: figures not measured" in out
    for row in ("TRL defaults", "inoculate default", "inoculate fast ", "inoculate fast+packing"):
        assert f"  {row}" in out, row
    assert "HF generate, one adapter at a time" in out and "vLLM:" in out
    assert "likelihood" in out and "generation" in out
    assert "skipped" not in out
