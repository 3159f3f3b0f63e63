import sys
from pathlib import Path

# bench/ tests import the single file (and bench.*) from the repository root, wherever pytest is started
# (pytest.ini's testpaths is tests/ only, so bench/ is always named explicitly).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
