"""Does the accuracy gate catch a broken unlabeled path? Each mutation below is a one-line bug in fullsvformer.py; the
gate (`python -m pytest bench/test_accuracy.py`) runs on a copy of the repository with it applied.

    python bench/mutation_check.py [--only NAME,...] [--regimes 1pc,10pc] [--out bench/results/mutations.json]
    # ~5 min per mutation at 1pc, ~7 at 10pc

Writes, per mutation, whether the gate failed, which checks failed, and per regime its paired gaps against supervised
(students and teachers of each variant). The unmutated gate's numbers are in bench/results/accuracy_gate.json. Not
every bug is caught: the margins are set so that another machine (another draw of the same runs) passes, so a bug
that costs a few points passes too (bench/README.md lists which).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# name: (what it breaks, the line as it is, the line as the bug makes it)
MUTATIONS = {
    "permuted_pseudo_labels": (
        "each unlabeled clip gets its batch neighbour's pseudo-label (teacher logits rolled by one along the batch)",
        "t_logits = t_logits.clone()", "t_logits = t_logits.clone().roll(1, 0)"),
    "teacher_sees_strong_view": (
        "the teacher labels the strong view (RandAugmented, warped when --temporal-warp-on all) instead of the weak one",
        "xw = normalize_clips(unl[\"weak\"]", "xw = normalize_clips(unl[\"strong\"]"),
    "anl_inverted": (
        "ANL's negatives are the teacher's top-k classes instead of the classes outside them",
        "negative = (rank_t >= k)", "negative = (rank_t < k)"),
    "teacher_frozen": (
        "the EMA update leaves the teacher where it started (the stage-0 backbone with a random head)",
        "torch._foreach_lerp_(t_params, s_params, 1.0 - momentum)", "torch._foreach_lerp_(t_params, s_params, 0.0)"),
    "unlabeled_loss_dropped": (
        "the unlabeled losses are computed and logged but never reach the gradient (weight 0)",
        "return ce + ssl_weight * unlabeled", "return ce + 0.0 * unlabeled"),
    "kl_not_standardized": (
        "standardize_logits only centres the logits (the division by their std is lost)",
        "return (z - mean) / (std + eps)", "return (z - mean) + 0 * (std + eps)"),
}


def gate_on_copy(old: str, new: str, tmp: Path, regimes: str = "") -> dict:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, tmp / f)
    src = (tmp / "fullsvformer.py").read_text()
    if src.count(old) != 1:
        raise SystemExit(f"mutation target found {src.count(old)} times in fullsvformer.py (expected once): {old!r}")
    (tmp / "fullsvformer.py").write_text(src.replace(old, new))
    env = {**os.environ, **({"GATE_REGIMES": regimes} if regimes else {})}
    p = subprocess.run([sys.executable, "-m", "pytest", "bench/test_accuracy.py", "-q", "-p", "no:cacheprovider"],
                       cwd=tmp, capture_output=True, text=True, env=env)
    tables = json.loads((tmp / "bench" / "results" / "accuracy_gate.json").read_text())["regimes"]
    gaps = {r: {f"{v}_minus_supervised_{side}": t[v]["vs_supervised"][side]["mean"]
                for v in t if v != "supervised" for side in ("student", "teacher")}
            | {"supervised_student_mean": t["supervised"]["mean"]} for r, t in tables.items()}
    return {"gate_failed": p.returncode != 0,
            "failed_checks": [line.split("::")[1].split()[0] for line in p.stdout.splitlines()
                              if line.startswith("FAILED")], "regimes": gaps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default=",".join(MUTATIONS), help="comma-separated, from: %(default)s")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "mutations.json"))
    ap.add_argument("--regimes", default="", help="comma-separated gate regimes to run (GATE_REGIMES; default: all of "
                                                 "bench/test_accuracy.py's GATE)")
    ap.add_argument("--dry", action="store_true", help="only check that each mutation's target is found once")
    a = ap.parse_args()
    src = (ROOT / "fullsvformer.py").read_text()
    for name in a.only.split(","):
        n = src.count(MUTATIONS[name][1])
        if n != 1:
            raise SystemExit(f"{name}: its target {MUTATIONS[name][1]!r} occurs {n} times in fullsvformer.py")
    if a.dry:
        return
    out = {}
    for name in a.only.split(","):
        what, old, new = MUTATIONS[name]
        with tempfile.TemporaryDirectory() as tmp:
            out[name] = {"what": what, **gate_on_copy(old, new, Path(tmp), a.regimes)}
        print(name, json.dumps(out[name]), flush=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
