"""Dataset preparation around fullsvformer.py (a run never needs these): split generation, synthetic video files."""
