"""python -m figures.gallery outputs/demo docs/gallery — the README's gallery: one small PNG per figure type.

Copies the first PNG of every figure type from an experiment's figures/ folder, shrunk to at most
900 px wide, to `docs/gallery/<figure type>.png` (atomic writes). `make gallery` runs the demo first.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

from figures import FIGURES
from folders import ExperimentFolder
from utils import atomic_write_bytes

WIDTH = 900  # pixels: legible on a README, small in the repository
# The demo's most telling instance of a figure type drawn once per condition or run; else the first.
PICKS = {"learning_phases": "learning_phases_*depth4*", "collapse_heatmaps": "heatmap_*convnet4*"}


def build_gallery(experiment_dir: Path, out_dir: Path) -> list[Path]:
    written = []
    for name in FIGURES:
        folder = ExperimentFolder(experiment_dir).figures_path
        candidates = sorted(folder.glob(PICKS.get(name, "-") + ".png")) or sorted(folder.glob(f"{name}*.png"))
        if not candidates:
            continue
        image = Image.open(candidates[0]).convert("RGB")
        if image.width > WIDTH:
            image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        path = out_dir / f"{name}.png"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python -m figures.gallery EXPERIMENT_DIR OUT_DIR", file=sys.stderr)
        sys.exit(2)
    paths = build_gallery(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"wrote {len(paths)} gallery image(s) to {sys.argv[2]}")
