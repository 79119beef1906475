"""The dataset tests need the ``data`` extra (pyarrow, av, rosbags); their helpers live next to them."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

for _module in ("pyarrow", "av"):
    pytest.importorskip(_module, reason="install the data extra: pip install -e .[data]")
