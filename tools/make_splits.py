"""Write and check the committed labeled/unlabeled splits from the official list files (no videos needed):

    python tools/make_splits.py --dataset ucf101 --root ../shared/data/ucf101   # 1%, 10%; seeds 0 1 2
    python tools/make_splits.py --dataset hmdb51 --root ../shared/data/hmdb51   # 40, 50, 60%; seeds 0 1 2

splits/<dataset>/<N>pct/seed<k>/{labeled,unlabeled}.txt: '<class>/<video>.avi <label>' lines under a '#' header with
the command, the seed and the sha256 of the official list files they came from. The draw is fullsvformer's own
class_balanced_split, so a fraction or seed without committed files is drawn the same way at run time.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import fullsvformer as fs  # noqa: E402

DEFAULT_FRACTIONS = {"ucf101": (0.01, 0.1), "hmdb51": (0.4, 0.5, 0.6)}


def split_sources(dataset: str, root: str | Path, split: int = 1) -> list[str]:
    """'<sha256> <what>' for the official list files a split is generated from (recorded in the split headers).
    Digests are of the LF-normalised text, so a CRLF copy of the same lists checks out."""
    def digest(data: bytes) -> str:
        return hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()
    root = Path(root)
    if dataset == "ucf101":
        names = ["classInd.txt", f"trainlist0{split}.txt", f"testlist0{split}.txt"]
        return [f"{digest((root / 'ucfTrainTestlist' / n).read_bytes())} ucfTrainTestlist/{n}" for n in names]
    files = sorted((root / "testTrainMulti_7030_splits").glob(f"*_test_split{split}.txt"))
    return [f"{digest(b''.join(f.read_bytes() for f in files))} testTrainMulti_7030_splits/*_test_split{split}.txt "
            f"({len(files)} files concatenated in name order)"]


def check_split(labeled: list[tuple], unlabeled: list[tuple], train: list[tuple] | None = None,
                test: list[tuple] | None = None, dataset: str = "", fraction: float | None = None) -> None:
    """Raise ValueError unless labeled ∩ unlabeled = ∅, labeled ∪ unlabeled = train, nothing from test, and the
    per-class labeled counts follow labeled_per_class; checks without their input (train/test/fraction) are skipped."""
    lab, unl = {r for r, _ in labeled}, {r for r, _ in unlabeled}
    if len(lab) != len(labeled) or len(unl) != len(unlabeled):
        raise fs.UserError("split: a video is listed twice")
    if lab & unl:
        raise fs.UserError(f"split: {len(lab & unl)} videos are both labeled and unlabeled, e.g. "
                           f"{sorted(lab & unl)[0]}")
    if train is not None and set(labeled) | set(unlabeled) != set(train):
        raise fs.UserError(f"split: labeled ∪ unlabeled ({len(lab | unl)}) differs from the train list "
                           f"({len(train)})")
    if test is not None and (lab | unl) & {r for r, _ in test}:
        raise fs.UserError("split: a test video is in the labeled or unlabeled set")
    if fraction is not None:
        got = Counter(y for _, y in labeled)
        for y, n in Counter(y for _, y in list(labeled) + list(unlabeled)).items():
            if got[y] != fs.labeled_per_class(dataset, fraction, n):
                raise fs.UserError(f"split: class {y} has {got[y]} labeled clips, expected "
                                   f"{fs.labeled_per_class(dataset, fraction, n)} of {n}")


def write_split(out: Path, dataset: str, root: str | Path, split: int, fraction: float, seed: int,
                command: str) -> tuple[list, list]:
    """Generate, check and write one setting's labeled.txt/unlabeled.txt under `out`."""
    train, test, _ = (fs.read_ucf101 if dataset == "ucf101" else fs.read_hmdb51)(root, split)
    labeled, unlabeled = fs.class_balanced_split(train, fraction, seed, dataset)
    check_split(labeled, unlabeled, train, test, dataset, fraction)
    out.mkdir(parents=True, exist_ok=True)
    for kind, entries in (("labeled", labeled), ("unlabeled", unlabeled)):
        head = [f"# fullsvformer split: {dataset} official split {split}, {fraction:g} labeled fraction "
                f"({len(labeled)} labeled / {len(unlabeled)} unlabeled of {len(train)} train clips), {kind} part",
                f"# command: {command}", f"# seed: {seed}"] + [f"# source-sha256: {s}" for s in
                                                              split_sources(dataset, root, split)]
        body = [f"{rel.removeprefix('UCF-101/')} {y}" for rel, y in entries]
        (out / f"{kind}.txt").write_text("\n".join(head + body) + "\n")
    return labeled, unlabeled


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=("ucf101", "hmdb51"))
    p.add_argument("--root", required=True, help="folder holding ucfTrainTestlist/ or testTrainMulti_7030_splits/")
    p.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split")
    p.add_argument("--fractions", type=float, nargs="+", help="labeled fractions (default: the paper's settings)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", default=str(fs.SPLITS_DIR), help="splits folder (default: splits/ of the repository)")
    argv = sys.argv[1:] if argv is None else argv
    a = p.parse_args(argv)
    command = "python tools/make_splits.py " + " ".join(argv)
    for fraction in a.fractions or DEFAULT_FRACTIONS[a.dataset]:
        for seed in a.seeds:
            out = fs.split_dir(a.dataset, fraction, seed, Path(a.out))
            lab, unl = write_split(out, a.dataset, a.root, a.split, fraction, seed, command)
            print(f"{out}: {len(lab)} labeled, {len(unl)} unlabeled (checked)")


if __name__ == "__main__":
    main()
