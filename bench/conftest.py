# Make `import fullsvformer` work when pytest is given bench/ paths (pytest.ini's testpaths is tests/ only).
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
