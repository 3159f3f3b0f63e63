"""Train the built-in synthetic task's stage-0 image model (the proxy's "ImageNet") and commit it under pretrained/:

    python tools/make_stage0.py [TRAINING FLAGS]     # default: the demo's (`python fullsvformer.py`) stage 0

Stage 0 trains for the architecture and frame geometry that the flags give (see fullsvformer.stage0_config) into a
fresh cache directory, then pretrained/stage0-<key>.safetensors is written, the key being a hash of every setting that
stage 0's training reads (fullsvformer.stage0_config). `--pretrained synthetic` finds the file there and never trains it again. Training is
deterministic on one machine: a rerun on the same machine (CPU model, thread count, torch version) writes the same
bytes, which this script checks when the file already exists. Another CPU model gives slightly different floats.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fullsvformer as fs  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    cfg, _ = fs.parse_config(list(sys.argv[1:] if argv is None else argv))
    key = fs.stage0_config(cfg)[1]
    dest = fs.PRETRAINED_DIR / f"stage0-{key}.safetensors"
    committed = dest.read_bytes() if dest.is_file() else None
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = tmp
        fs.PRETRAINED_DIR = Path(tmp) / "none"  # stage0_checkpoint trains instead of returning the committed file
        made = Path(fs.stage0_checkpoint(cfg)).read_bytes()
    digest = hashlib.sha256(made).hexdigest()
    if committed is None:
        dest.parent.mkdir(exist_ok=True)
        dest.write_bytes(made)
        print(f"wrote {dest} ({len(made)} bytes, sha256 {digest})")
    elif committed == made:
        print(f"{dest}: regenerated bit for bit (sha256 {digest})")
    else:
        print(f"{dest}: the rerun differs (sha256 {digest} vs {hashlib.sha256(committed).hexdigest()}); expected on "
              "another CPU model or torch version. The committed file is kept.")
    return dest


if __name__ == "__main__":
    main()
