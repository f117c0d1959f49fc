"""What the benches share. They run as scripts (`python bench/NAME.py`), so Python puts bench/ on
sys.path, not the repository: importing this puts the repository root there too, for `calib_core`
and `tests` (the shared server helper)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def write_results(out: Path, data, lines: list[str]) -> None:
    """A bench's results: `out`.json (everything measured) and `out`.md (its table), printed too."""
    import json

    out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
