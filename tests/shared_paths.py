"""Where the shared reference material lives: ../shared beside the checkout (CI), else /work/shared."""

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
SHARED = next(
    (p for p in (_ROOT.parent / "shared", Path("/work/shared")) if p.is_dir()), _ROOT.parent / "shared"
)
