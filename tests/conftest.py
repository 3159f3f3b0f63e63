import os
import sys
from pathlib import Path

# Tests import the single file from the repository root, wherever pytest is started.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# Two cores: keep torch from oversubscribing them when pytest-xdist is not used.
os.environ.setdefault("OMP_NUM_THREADS", "2")
