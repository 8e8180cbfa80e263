"""`python -m bench.chaos` (what `make chaos` runs), or `python bench/chaos` from anywhere."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python bench/chaos` puts bench/chaos first, not the root

from bench.chaos import main  # noqa: E402

sys.exit(main())
