"""Data pipeline tests: layouts, committed splits, decoding, views, loaders, bad input. Small generated videos only."""
import re
from pathlib import Path

import pytest
import torch

import fullsvformer as fs
from tools import make_synthetic, make_splits

REPO = Path(fs.__file__).resolve().parent
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def one_thread():
    # Per-sample ops are tiny: with 2 OpenMP threads on a loaded 2-core box they run ~40x slower than with one.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cfg(**kw):
    base = dict(img_size=32, num_frames=4, clip_stride=2, workers=0, test_clips=2, test_crops=3, eval_batch=2,
                labeled_batch=1, mu=2, synth_clips_per_class=10, synth_test_per_class=2, synth_classes=3)
    base.update(kw)
    return fs.DataConfig(**base)


@pytest.fixture(scope="module")
def ucf_videos(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_ucf")
    make_synthetic.main(["--out", str(out), "--layout", "ucf101", "--classes", "3", "--clips-per-class", "14",
                            "--size", "48", "--length", "24"])
    return out


def write(path: Path, text: str, crlf: bool = False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())


# --- layouts ----------------------------------------------------------------------------------------------------------


def fake_ucf(root: Path):
    write(root / "ucfTrainTestlist/classInd.txt", "1 Archery\n2 HandstandPushups\n3 Knitting\n", crlf=True)
    write(root / "ucfTrainTestlist/trainlist01.txt",
          "Archery/v_Archery_g08_c01.avi 1\nHandstandPushups/v_HandStandPushups_g08_c01.avi 2  \n\n"
          "Knitting/v_Knitting_g09_c01.avi 3\n", crlf=True)
    write(root / "ucfTrainTestlist/testlist01.txt",
          "Archery/v_Archery_g01_c01.avi\n HandstandPushups/v_HandStandPushups_g01_c01.avi\n", crlf=True)


def test_read_ucf101_layout_crlf_and_handstand_spelling(tmp_path):
    fake_ucf(tmp_path)
    (tmp_path / "UCF-101").mkdir()
    train, test, names = fs.read_ucf101(tmp_path, 1)
    assert names == ["Archery", "HandstandPushups", "Knitting"]  # class count from classInd, not 101
    assert ("UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi", 1) in train  # path kept as written
    assert train[2] == ("UCF-101/Knitting/v_Knitting_g09_c01.avi", 2)
    assert test == [("UCF-101/Archery/v_Archery_g01_c01.avi", 0),
                    ("UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi", 1)]


def test_read_hmdb51_layout_tags_and_sorted_labels(tmp_path):
    s = tmp_path / "testTrainMulti_7030_splits"
    write(s / "wave_test_split1.txt", "w1.avi 1 \nw2.avi 2 \nw3.avi 0 \n")
    write(s / "climb_test_split1.txt", "c1.avi 2\nc2.avi 1\n", crlf=True)
    write(s / "climb_test_split2.txt", "c1.avi 1\n")
    train, test, names = fs.read_hmdb51(tmp_path, 1)
    assert names == ["climb", "wave"]
    assert train == [("climb/c2.avi", 0), ("wave/w1.avi", 1)]
    assert test == [("climb/c1.avi", 0), ("wave/w2.avi", 1)]  # tag 0 (w3) is unused


def test_hmdb51_labels_follow_class_names_not_file_names(tmp_path):
    # 'climb_stairs_test_split1.txt' sorts before 'climb_test_split1.txt' ('_' < 't'), but 'climb' < 'climb_stairs':
    # labels must follow the class names, or climb/climb_stairs (and kick/kick_ball, sword/sword_exercise) swap.
    s = tmp_path / "testTrainMulti_7030_splits"
    for cls in ("climb_stairs", "climb", "kick_ball", "kick"):
        write(s / f"{cls}_test_split1.txt", f"{cls}1.avi 1\n")
    train, _, names = fs.read_hmdb51(tmp_path, 1)
    assert names == ["climb", "climb_stairs", "kick", "kick_ball"]
    assert train == [("climb/climb1.avi", 0), ("climb_stairs/climb_stairs1.avi", 1), ("kick/kick1.avi", 2),
                     ("kick_ball/kick_ball1.avi", 3)]


def test_read_list_prefix_rewrite_and_basename_matching(tmp_path):
    write(tmp_path / "l.csv", "/mnt/blob/datasets/hmdb51/videos/kick/a b.avi 3\nrel/x.avi 0\n", crlf=True)
    assert fs.read_list(tmp_path / "l.csv", tmp_path)[0] == ("kick/a b.avi", 3)
    assert fs.read_list(tmp_path / "l.csv", tmp_path, "/mnt/blob/datasets/hmdb51/videos=/data/h")[0] == \
        ("/data/h/kick/a b.avi", 3)
    assert fs.read_list(tmp_path / "l.csv", tmp_path)[1] == ("rel/x.avi", 0)


# --- committed splits -------------------------------------------------------------------------------------------------
SETTINGS = [("ucf101", 0.01, 9537, 101), ("ucf101", 0.1, 9537, 101),
            ("hmdb51", 0.4, 3570, 51), ("hmdb51", 0.5, 3570, 51), ("hmdb51", 0.6, 3570, 51)]


@pytest.mark.parametrize("dataset,fraction,total,classes", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_committed_split_invariants(dataset, fraction, total, classes, seed):
    d = fs.split_dir(dataset, fraction, seed)
    lab, head = fs.read_split_file(d / "labeled.txt")
    unl, head_u = fs.read_split_file(d / "unlabeled.txt")
    make_splits.check_split(lab, unl, dataset=dataset, fraction=fraction)  # disjoint, per-class counts
    assert len(lab) + len(unl) == total
    assert {y for _, y in lab} == set(range(classes))
    per_class = {"ucf101": {0.01: 1, 0.1: 10}, "hmdb51": {0.4: 28, 0.5: 35, 0.6: 42}}[dataset][fraction]
    assert len(lab) == per_class * classes
    assert f"# seed: {seed}" in head and any(h.startswith("# command: python tools/make_splits.py") for h in head)
    sums = [h for h in head if h.startswith("# source-sha256:")]
    assert sums and all(re.fullmatch(r"# source-sha256: [0-9a-f]{64} \S.*", h) for h in sums)
    assert sums == [h for h in head_u if h.startswith("# source-sha256:")]
    assert all(re.fullmatch(r"[^/\s]+/[^/]+\.avi", r) for r, _ in lab + unl)


def test_other_seeds_draw_other_clips():
    a, _ = fs.read_split_file(fs.split_dir("ucf101", 0.01, 0) / "labeled.txt")
    b, _ = fs.read_split_file(fs.split_dir("ucf101", 0.01, 1) / "labeled.txt")
    assert len(set(a) & set(b)) < 20


def test_select_split_uses_the_committed_files_only_for_the_lists_they_came_from():
    d = fs.split_dir("ucf101", 0.01, 0)
    lab, _ = fs.read_split_file(d / "labeled.txt")
    unl, _ = fs.read_split_file(d / "unlabeled.txt")
    train = sorted(lab + unl)  # what the official trainlist01 gives
    assert fs.select_split("ucf101", train, 0.01, 0, 1) == (lab, unl, str(d))
    with pytest.raises(fs.UserError, match=r"ucf101/1pct/seed0: the committed split does not match .* 9536 train"):
        fs.select_split("ucf101", train[1:], 0.01, 0, 1)  # a clip missing from the lists under data_root
    with pytest.raises(fs.UserError, match=r"the committed split does not match"):
        fs.select_split("ucf101", train[1:] + [("Other/v_x.avi", 0)], 0.01, 0, 1)  # as many clips, another one
    assert fs.select_split("ucf101", train, 0.01, 0, 2)[2] == "generated"  # split 2 has no committed files


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data (official lists) is not in this checkout")
@pytest.mark.parametrize("dataset,fraction,total,classes", SETTINGS)
def test_committed_splits_match_official_lists(dataset, fraction, total, classes):
    root = SHARED / dataset
    train, test, _ = (fs.read_ucf101 if dataset == "ucf101" else fs.read_hmdb51)(root, 1)
    sums = [f"# source-sha256: {s}" for s in make_splits.split_sources(dataset, root, 1)]
    for seed in (0, 1, 2):
        lab, head = fs.read_split_file(fs.split_dir(dataset, fraction, seed) / "labeled.txt")
        unl, _ = fs.read_split_file(fs.split_dir(dataset, fraction, seed) / "unlabeled.txt")
        assert [h for h in head if h.startswith("# source-sha256")] == sums
        make_splits.check_split(lab, unl, train, test, dataset, fraction)
        assert (lab, unl) == fs.class_balanced_split(train, fraction, seed, dataset)  # regenerates identically


def test_make_splits_tool_writes_checked_files(tmp_path):
    fake_ucf(tmp_path / "root")
    make_splits.main(["--dataset", "ucf101", "--root", str(tmp_path / "root"), "--fractions", "0.5",
                         "--seeds", "3", "--out", str(tmp_path / "splits")])
    lab, head = fs.read_split_file(tmp_path / "splits/ucf101/50pct/seed3/labeled.txt")
    unl, _ = fs.read_split_file(tmp_path / "splits/ucf101/50pct/seed3/unlabeled.txt")
    assert len(lab) == 3 and unl == [] and "# seed: 3" in head  # 50 per class, capped at the 1 clip each class has


def test_generated_fraction_is_class_balanced():
    train = [(f"c{y}/v{i}.avi", y) for y in range(4) for i in range(10 + 5 * y)]
    lab, unl = fs.class_balanced_split(train, 0.2, 5, "hmdb51")
    counts = [sum(1 for _, y in lab if y == c) for c in range(4)]
    assert counts == [2, 3, 4, 5]  # round(0.2 × 10, 15, 20, 25)
    make_splits.check_split(lab, unl, train, [], "hmdb51", 0.2)
    assert (lab, unl) == fs.class_balanced_split(list(reversed(train)), 0.2, 5, "hmdb51")  # order-independent


# --- decoding ---------------------------------------------------------------------------------------------------------


def numbered_frames(n=30, h=48, w=64):
    """Frame t is a flat grey of level 8·t: which frame was decoded can be read back from its mean."""
    return (torch.arange(n) * 8).view(n, 1, 1, 1).expand(n, 3, h, w).to(torch.uint8).contiguous()


@pytest.mark.parametrize("name,codec", [("v.avi", "mpeg4"), ("v.mp4", "h264")])
def test_decode_only_requested_frames(tmp_path, name, codec):
    from torchcodec.encoders import VideoEncoder
    try:
        VideoEncoder(numbered_frames(), frame_rate=25).to_file(str(tmp_path / name), codec=codec)
    except Exception as e:  # an FFmpeg build without this encoder
        pytest.skip(f"cannot encode {codec} here: {e}")
    frames, idx = fs.decode_frames(tmp_path / name, lambda n: fs.clip_indices(n, 6, 8, 3))
    assert idx.tolist() == [3, 11, 19, 27, 29, 29]  # clamped at the end of a 30-frame video
    assert frames.shape == (6, 3, 48, 64) and frames.dtype == torch.uint8
    assert (frames.float().mean((1, 2, 3)) - idx * 8.0).abs().max() < 4


def test_clip_starts():
    g = torch.Generator().manual_seed(0)
    starts = {fs.random_clip_start(100, 8, 8, g) for _ in range(200)}
    assert min(starts) == 0 and max(starts) == 100 - 57
    assert fs.random_clip_start(10, 8, 8, g) == 0
    assert fs.uniform_clip_starts(100, 8, 8, 5) == [0, 11, 22, 32, 43]
    assert fs.uniform_clip_starts(100, 8, 8, 1) == [21]


# --- views ------------------------------------------------------------------------------------------------------------


def slow_warp(clip, keys):
    out = []
    T, m = clip.shape[0], len(keys)
    for t in range(T):
        out.append(clip[keys[t * m // T]])
    return torch.stack(out)


def test_temporal_warp_matches_slow_loop():
    clip = torch.arange(8).view(8, 1) * torch.ones(8, 5)
    g = torch.Generator().manual_seed(0)
    seen = {}
    for _ in range(600):
        out, src = fs.temporal_warp(clip, g)
        keys = sorted(set(src.tolist()))
        seen[len(keys)] = seen.get(len(keys), 0) + 1
        assert torch.equal(out, slow_warp(clip, keys)) and torch.equal(out, clip[src])
        assert src.tolist() == sorted(src.tolist())  # order preserved
    assert set(seen) == {2, 4, 8} and all(150 < v < 250 for v in seen.values())  # 1/3 each


def test_weak_and_strong_views_share_their_frames():
    aug = fs.ClipAugment(cfg(img_size=32, randaug_n=0, hflip=0.5))
    frames = numbered_frames(8, 40, 60)
    for seed in range(20):
        v = aug(frames, seed, strong=True)
        assert v["weak"].shape == v["strong"].shape == (8, 3, 32, 32) and v["strong"].dtype == torch.uint8
        assert torch.equal(v["strong"], v["weak"])  # without RandAugment: the weak frames, same window, same crop
        assert v["warp"].tolist() == sorted(v["warp"].tolist()) and v["warp"].shape == (8,)  # applied by the step
    v1, v2 = fs.ClipAugment(cfg())(frames, 7, True), fs.ClipAugment(cfg())(frames, 7, True)
    assert torch.equal(v1["strong"], v2["strong"]) and torch.equal(v1["weak"], v2["weak"])


def test_strong_crop_own_draws_its_own_crop_from_the_same_frames():
    """--strong-crop own: the strong view is the weak transform drawn again from the strong_crop stream (reference:
    ClipAugment.weak called with that seed by hand), so it differs from the weak view; the weak view is unchanged."""
    from torchvision import tv_tensors
    own = fs.ClipAugment(cfg(img_size=32, randaug_n=0, hflip=0.5, strong_crop="own"))
    shared = fs.ClipAugment(cfg(img_size=32, randaug_n=0, hflip=0.5))
    frames = torch.randint(0, 255, (8, 3, 40, 60), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    differ = 0
    for seed in range(10):
        v, w = own(frames, seed, strong=True), shared(frames, seed, strong=True)
        assert torch.equal(v["weak"], w["weak"]) and torch.equal(v["warp"], w["warp"])
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(fs.stream_seed("strong_crop", seed))
            ref = own.weak(tv_tensors.Video(frames)).as_subclass(torch.Tensor)
        assert torch.equal(v["strong"], ref)
        differ += not torch.equal(v["strong"], v["weak"])
    assert differ >= 8


def test_randaugment_commutes_with_the_warp():
    """The loader sends the strong clip unwarped with the warp's frame index; the step gathers the frames. RandAugment is
    the same on every frame, so this equals warping first (reference: RandAugment on the warped frames, same seed)."""
    aug = fs.ClipAugment(cfg(img_size=32, randaug_n=2, randaug_m=12, hflip=0.0))
    frames = numbered_frames(8, 40, 60)
    for seed in range(10):
        v = aug(frames, seed, strong=True)
        from torchvision import tv_tensors
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            weak = aug.weak(tv_tensors.Video(frames))
            ref = aug.randaug(tv_tensors.Video(weak[v["warp"]])).as_subclass(torch.Tensor)
        assert torch.equal(v["strong"][v["warp"]], ref)


def test_randaugment_is_identical_across_frames():
    aug = fs.ClipAugment(cfg(img_size=32, randaug_n=3, randaug_m=15, temporal_warp_p=0.0, hflip=0.0))
    frames = torch.randint(0, 255, (1, 3, 40, 40), dtype=torch.uint8).expand(6, 3, 40, 40).contiguous()
    v = aug(frames, 3, True)
    assert not torch.equal(v["strong"], v["weak"])
    assert all(torch.equal(v["strong"][0], v["strong"][t]) for t in range(6))


def test_test_views_crop_positions():
    x = torch.arange(64).view(1, 1, 1, 64).expand(4, 3, 32, 64).to(torch.uint8)  # column index as value
    v = fs.test_views(x, clips=2, crops=3, size=16)  # short side 32 -> 16, width 64 -> 32
    assert v.shape == (6, 2, 3, 16, 16)
    left, centre, right = v[0, 0, 0, 0, 0], v[1, 0, 0, 0, 0], v[2, 0, 0, 0, -1]
    assert left < 4 and 14 < centre < 20 and right > 60  # centre crop starts at resized column 8 = source 17


def test_normalize_and_channel_dropout():
    x = torch.full((2, 4, 3, 5, 5), 255, dtype=torch.uint8)
    y = fs.normalize_clips(x, (0.5, 0.5, 0.0), (0.5, 0.5, 1.0))
    assert y.shape == (2, 3, 4, 5, 5) and torch.allclose(y[:, :2], torch.ones(())) and torch.allclose(y[:, 2], torch.ones(()))
    z = torch.ones(2000, 3, 2, 2, 2)
    d = fs.channel_dropout(z, 0.2, torch.Generator().manual_seed(0))
    per_channel = d.flatten(2)
    assert ((per_channel == 0).all(-1) | (per_channel == 1.25).all(-1)).all()  # whole channels, survivors scaled
    assert 0.17 < (per_channel[..., 0] == 0).float().mean() < 0.23
    assert fs.channel_dropout(z, 0.0) is z


# --- loaders ----------------------------------------------------------------------------------------------------------


def test_synthetic_loader_shapes_determinism_and_resume():
    c = cfg(dataset="synthetic", labeled=0.2)
    data = fs.build_data(c, seed=1)
    assert (len(data.labeled), len(data.unlabeled), len(data.test), data.num_classes) == (6, 24, 6, 3)
    n = fs.steps_per_epoch(data)
    assert n == 12  # 24 unlabeled / (mu 2 × 1)
    full = list(fs.train_batches(data, epoch=2))
    lab, unl = full[0]
    assert lab["weak"].shape == (1, 4, 3, 32, 32) and lab["weak"].dtype == torch.uint8
    assert unl["strong"].shape == unl["weak"].shape == (2, 4, 3, 32, 32) and unl["label"].dtype == torch.long
    assert sorted(i for _, u in full for i in u["index"].tolist()) == list(range(24))  # one pass over the pool
    resumed = list(fs.train_batches(fs.build_data(c, seed=1), epoch=2, start_step=9))
    assert len(resumed) == 3
    for (a, b), (x, y) in zip(full[9:], resumed):
        assert torch.equal(a["weak"], x["weak"]) and torch.equal(b["strong"], y["strong"])
    other = list(fs.train_batches(data, epoch=3))
    assert not all(torch.equal(a[1]["index"], b[1]["index"]) for a, b in zip(full, other))
    ev = next(fs.eval_batches(data))
    assert ev["views"].shape == (2, 6, 4, 3, 32, 32) and ev["label"].shape == (2,)
    assert next(fs.eval_batches(data, full=False))["views"].shape == (2, 1, 4, 3, 32, 32)


def test_ranks_partition_the_unlabeled_pool():
    data = fs.build_data(cfg(dataset="synthetic", labeled=0.2), seed=0)
    per_rank = [[k[1] for s in range(fs.steps_per_epoch(data, 2)) for k in fs.train_keys(data, 0, s, r, 2) if k[0]]
                for r in (0, 1)]
    assert not set(per_rank[0]) & set(per_rank[1]) and len(set(per_rank[0]) | set(per_rank[1])) == 24


PROXY = fs.SYNTH_TASKS["ucf-proxy"]


def test_synthetic_frames_subset_equals_full_video():
    full = fs.synthetic_frames(5, 2, torch.arange(32), PROXY, 40)
    idx = torch.tensor([3, 9, 9, 30])
    assert torch.equal(fs.synthetic_frames(5, 2, idx, PROXY, 40), full[idx])
    assert not torch.equal(fs.synthetic_frames(5, 2, idx, PROXY, 40, seed=1), full[idx])  # the content seed matters


def test_motion_classes_share_appearance_and_differ_in_motion():
    """Classes 0-2 are one glyph (disc) with 3 motions (still, slide_h, slide_v). The same clip index of each has
    the same first frame (every per-clip draw is the same, and a slide starts at offset 0), then they part: a still
    flock's frames differ only by camera shake and noise, a sliding one's do not."""
    assert [g for g, _ in PROXY.classes[:3]] == ["disc"] * 3 and len({m for _, m in PROXY.classes[:3]}) == 3
    t = torch.tensor([0, 12])
    still, slide_h, slide_v = (fs.synthetic_frames(9, y, t, PROXY, 40).float() for y in range(3))
    assert torch.equal(still[0], slide_h[0]) and torch.equal(still[0], slide_v[0])
    assert (slide_h[1] - still[1]).abs().mean() > 5 and (slide_v[1] - slide_h[1]).abs().mean() > 5


def test_synthetic_tasks_and_stage0_are_disjoint():
    """Stage 0 (the proxy's "ImageNet") shares no glyph and no motion with the proxy, and the proxy has the
    structure of UCF-101: >= 32 classes, some told apart only by motion, most by a single frame."""
    pre = fs.SYNTH_TASKS["ucf-proxy-pretrain"]
    assert not {g for g, _ in PROXY.classes} & {g for g, _ in pre.classes}
    assert not {m for _, ms in PROXY.classes for m in ms} & {m for _, ms in pre.classes for m in ms}
    glyphs = [g for g, _ in PROXY.classes]
    shared = {g for g in glyphs if glyphs.count(g) > 1}
    assert len(PROXY.classes) >= 32 and len(shared) >= 3 and len(set(PROXY.names())) == len(PROXY.classes)


def test_real_files_end_to_end_with_workers(ucf_videos):
    c = cfg(dataset="ucf101", data_root=str(ucf_videos), labeled=0.02, workers=1)
    data = fs.build_data(c, seed=0)
    assert data.num_classes == 3 and len(data.labeled) == 6 and len(data.test) == 21 and data.split_source == "generated"
    lab, unl = next(fs.train_batches(data, 0))
    assert unl["weak"].shape == (2, 4, 3, 32, 32)
    lab0, unl0 = next(fs.train_batches(fs.build_data(dict_replace(c, workers=0), 0), 0))
    assert torch.equal(unl["strong"], unl0["strong"])  # independent of the worker count
    assert next(fs.eval_batches(data))["views"].shape == (2, 6, 4, 3, 32, 32)


def test_hmdb_layout_end_to_end(tmp_path):
    make_synthetic.main(["--out", str(tmp_path), "--layout", "hmdb51", "--classes", "2", "--clips-per-class", "10",
                            "--size", "32", "--length", "16"])
    data = fs.build_data(cfg(dataset="hmdb51", data_root=str(tmp_path), labeled=0.45), 0)  # no committed 45% split
    assert data.class_names == ["disc_slide_h", "disc_still"] and len(data.test) == 6 and len(data.labeled) == 6  # sorted folders; 45% of 6 = 3 per class
    assert next(fs.train_batches(data, 0))[1]["strong"].shape == (2, 4, 3, 32, 32)


def test_lists_class_names_are_the_folder_only_when_every_clip_agrees(tmp_path):
    """--dataset lists: a class is named after its videos' folder when they all share it (SVFormer's lists), and by
    its number when they do not, so a name shown by `predict` is never a guess."""
    make_synthetic.main(["--out", str(tmp_path), "--layout", "hmdb51", "--classes", "3", "--clips-per-class", "2",
                            "--size", "32", "--length", "16"])
    rows = {"train.csv": ["disc_still/disc_still_clip_0.avi 0", "disc_slide_h/disc_slide_h_clip_0.avi 1",
                          "disc_slide_v/disc_slide_v_clip_0.avi 2"],
            "val.csv": ["disc_still/disc_still_clip_1.avi 0", "disc_slide_h/disc_slide_h_clip_1.avi 1",
                        "disc_still/disc_slide_v_clip_1.avi 2"]}  # label 2 in two folders
    (tmp_path / "disc_still" / "disc_slide_v_clip_1.avi").write_bytes((tmp_path / "disc_slide_v" /
                                                                      "disc_slide_v_clip_1.avi").read_bytes())
    for name, lines in rows.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    data = fs.build_data(cfg(dataset="lists", data_root=str(tmp_path), train_list=str(tmp_path / "train.csv"),
                             val_list=str(tmp_path / "val.csv"), mu=0), 0)
    assert data.class_names == ["disc_still", "disc_slide_h", "2"]


def dict_replace(c, **kw):
    import dataclasses
    return dataclasses.replace(c, **kw)


# --- bad input --------------------------------------------------------------------------------------------------------


def test_missing_root_and_list_print_the_expected_tree(tmp_path):
    with pytest.raises(FileNotFoundError, match="ucfTrainTestlist/classInd.txt"):
        fs.build_data(cfg(dataset="ucf101", data_root=str(tmp_path / "nope")))
    (tmp_path / "ucfTrainTestlist").mkdir()
    with pytest.raises(FileNotFoundError, match=r"classInd.txt does not exist(.|\n)*expected layout"):
        fs.read_ucf101(tmp_path)
    with pytest.raises(FileNotFoundError, match="testTrainMulti_7030_splits"):
        fs.build_data(cfg(dataset="hmdb51", data_root=str(tmp_path)))
    with pytest.raises(ValueError, match="needs --data-root"):
        fs.build_data(cfg(dataset="ucf101"))


def test_missing_videos_listed_at_startup(tmp_path):
    s = tmp_path / "testTrainMulti_7030_splits"
    write(s / "run_test_split1.txt", "".join(f"r{i}.avi {1 + (i % 3 == 0)}\n" for i in range(30)))
    for i in range(10):
        write(tmp_path / f"run/r{i}.avi", "")  # present; r10..r29 are missing
    with pytest.raises(FileNotFoundError, match=r"20 of 30 listed videos do not exist(.|\n)*first 10:\n  .*run/r\d+.avi \(labeled set\)") as e:
        fs.build_data(cfg(dataset="hmdb51", data_root=str(tmp_path), labeled=0.3))
    assert str(e.value).count(".avi") == 10 and not re.search(r"r\d\.avi", str(e.value))


def test_unknown_class_and_out_of_range_label(tmp_path):
    fake_ucf(tmp_path)
    write(tmp_path / "ucfTrainTestlist/testlist01.txt", "Archery/a.avi\nSurfing/b.avi\n")
    with pytest.raises(ValueError, match=r"testlist01.txt:2: class 'Surfing' is not in"):
        fs.read_ucf101(tmp_path)
    write(tmp_path / "ucfTrainTestlist/trainlist01.txt", "Archery/a.avi 2\n")
    with pytest.raises(ValueError, match=r"trainlist01.txt:1: label 2 disagrees"):
        fs.read_ucf101(tmp_path)
    write(tmp_path / "l.csv", "a/x.avi 1\nb/y.avi 2\n")
    with pytest.raises(ValueError, match=r"labels \[0\] have no clip"):
        fs.build_data(cfg(dataset="lists", data_root=str(tmp_path), train_list=str(tmp_path / "l.csv"),
                          val_list=str(tmp_path / "l.csv")))


def test_malformed_split_line_names_file_and_line(tmp_path):
    write(tmp_path / "labeled.txt", "# header\na/b.avi 0\na/c.avi zero\n")
    with pytest.raises(ValueError, match=r"labeled.txt:3: expected"):
        fs.read_split_file(tmp_path / "labeled.txt")
    write(tmp_path / "x.csv", "just_a_path.avi\n")
    with pytest.raises(ValueError, match=r"x.csv:1: expected '<path> <label>'"):
        fs.read_list(tmp_path / "x.csv", tmp_path)
    write(tmp_path / "testTrainMulti_7030_splits/a_test_split1.txt", "v.avi 3\n")
    with pytest.raises(ValueError, match=r"a_test_split1.txt:1: expected"):
        fs.read_hmdb51(tmp_path)


def test_bad_videos_are_skipped_counted_replaced_then_abort(ucf_videos, tmp_path, caplog):
    import shutil
    root = tmp_path / "ucf"
    shutil.copytree(ucf_videos, root)
    c = cfg(dataset="ucf101", data_root=str(root), labeled=0.02, mu=4, max_bad_fraction=0.5)
    data = fs.build_data(c, 0)
    vids = [Path(data.unlabeled.path(i)) for i in (0, 3, 5)]
    vids[0].write_bytes(b"")  # zero bytes
    vids[1].write_bytes(b"this is not a video" * 100)  # not a video
    vids[2].write_bytes(vids[2].read_bytes()[:300])  # truncated
    bad = {0, 3, 5}
    got = [u for _, u in fs.train_batches(data, 0)]
    served = [i for u in got for i in u["index"].tolist()]
    assert not bad & set(served)  # replaced by readable ones
    assert len(served) == fs.steps_per_epoch(data) * 4
    assert data.bad.summary()["bad_videos"] == len(bad) and "skipping unreadable video" in caplog.text
    again = [u for _, u in fs.train_batches(fs.build_data(c, 0), 0)]
    assert all(torch.equal(a["index"], b["index"]) for a, b in zip(got, again))  # deterministic replacements
    # The counts survive a checkpoint (resume keeps counting); the abort itself is train()'s (tests/test_train.py).
    restored = fs.BadSamples(data.bad.pool_size, data.bad.max_fraction)
    restored.load_state_dict(torch.load(write_state(tmp_path, data.bad.state_dict()), weights_only=True))
    assert restored == data.bad and restored.summary()["bad_skips"] >= 3


def write_state(tmp_path, state) -> Path:
    torch.save(state, tmp_path / "bad.pt")  # as in a checkpoint: must load with weights_only=True
    return tmp_path / "bad.pt"


def test_config_errors_name_the_key():
    for kw, key in [(dict(labeled=0.0), "labeled"), (dict(hflip=1.5), "hflip"), (dict(temporal_warp_keys="2,x"),
                    "temporal_warp_keys"), (dict(list_prefix="abc"), "list_prefix"), (dict(clip_stride=0), "clip_stride")]:
        with pytest.raises(ValueError, match=key):
            fs.DataConfig(**kw)
