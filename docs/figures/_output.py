"""What every figure script does last: write the PNG whole, then rename it into place.

Imported by the scripts in this folder (``python docs/figures/NAME.py`` puts the folder on the
path), so that a figure the docs show is never half-written.
"""

from __future__ import annotations

from pathlib import Path


def save_png(fig, path: Path, **savefig_kwargs) -> None:
    """Save the matplotlib figure ``fig`` at ``path`` (folders created) via a temporary file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(temporary, **savefig_kwargs)
    temporary.replace(path)
    print(f"wrote {path}")
