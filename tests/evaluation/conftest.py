"""The evaluation tests import their shared helpers beside them (``test_statistics_reference``'s
rows whose per-frame outcomes are saved); --import-mode=importlib adds no test folder to
sys.path."""

import sys
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))
