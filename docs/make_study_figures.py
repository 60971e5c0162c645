"""Run reference 002's poisoning-rate and position grids on the digits and copy their figures.

    .venv/bin/python docs/make_study_figures.py        # ~2 minutes on 2 cores; writes docs/img/

The grids land in grids/ (finished runs are reused), the figures in docs/img/.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from triggerlab.analysis.plots.grid_figures import plot_grid
from triggerlab.grid.runner import run_grid
from triggerlab.grid.spec import load_grid_spec

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {
    "ref002_poisoning_rate": ["asr_vs_poison.rate", "asr_per_epoch"],
    "ref002_position": ["asr_by_position"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, stems in FIGURES.items():
        grid_dir = ROOT / "grids" / name
        spec = load_grid_spec(ROOT / "configs" / f"{name}.yaml")
        outcome = run_grid(spec, grid_dir, workers=args.workers, threads=args.threads_per_worker)
        if not outcome.ok:
            raise SystemExit(f"{name}: {len(outcome.failed)} runs failed")
        plot_grid(grid_dir, ("asr",))
        for stem in stems:
            target = args.out / f"{name}_{stem}.png"
            shutil.copyfile(grid_dir / "figures" / f"{stem}.png", target)
            print(f"wrote {target}")


if __name__ == "__main__":
    main()
