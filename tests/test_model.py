"""TimeSformer backbone and checkpoint loading.

References: timm's VisionTransformer (T=1 must equal it) and HF transformers' TimesformerForVideoClassification
(same weights must give the same logits).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fullsvformer as fs

TINY = dict(embed_dim=64, depth=2, num_heads=2)  # smaller than the 'tiny' preset: these tests check maths only


def small_model(num_classes=5, T=4, img=32, patch=16, **kw):
    torch.manual_seed(0)
    return fs.TimeSformer(num_classes=num_classes, num_frames=T, img_size=img, patch_size=patch,
                          drop_path=0.0, **{**TINY, **kw}).eval()


def perturb_(module, scale=0.05, seed=1):
    """Add noise to every parameter so that no zero init (time_embed, temporal_fc) can hide a wrong mapping."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return module


# ---- shapes -----------------------------------------------------------------------------------------------------------

def test_tiny_preset_forward_backward_on_cpu():
    m = fs.TimeSformer.from_preset("tiny", num_classes=7, num_frames=8, img_size=64)
    x = torch.randn(2, 3, 8, 64, 64, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 7)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("arch,dim,depth", [("tiny", 192, 4), ("small", 384, 12), ("base", 768, 12)])
def test_every_preset_shapes(arch, dim, depth):
    # small and base run on the meta device: the shapes are checked without the CPU cost of ViT-B.
    with torch.device("meta"):
        m = fs.TimeSformer.from_preset(arch, num_classes=101, num_frames=8, img_size=224)
        y = m(torch.empty(2, 3, 8, 224, 224))
    assert y.shape == (2, 101)
    assert m.embed_dim == dim and len(m.blocks) == depth
    assert m.pos_embed.shape == (1, 1 + 196, dim) and m.time_embed.shape == (1, 8, dim)


def test_token_hook_sees_patch_tokens_and_can_grow_the_batch():
    m = small_model()
    x = torch.randn(3, 3, 4, 32, 32)
    seen = {}

    def hook(tok):
        seen["shape"] = tuple(tok.shape)
        return torch.cat([tok, tok[:1]])  # append one clip, as Tube TokenMix does

    y = m(x, token_hook=hook)
    assert seen["shape"] == (3, 4, 4, 64)  # (B, T, N, D)
    assert y.shape == (4, 5)
    torch.testing.assert_close(y[3], y[0])


def test_grad_checkpointing_matches_plain_backward():
    m = small_model()
    perturb_(m)
    m.train()
    x = torch.randn(2, 3, 4, 32, 32)
    m(x).square().sum().backward()
    g1 = [p.grad.clone() for p in m.parameters()]
    m.zero_grad()
    m.set_grad_checkpointing(True)
    m(x).square().sum().backward()
    for a, p in zip(g1, m.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_wrong_clip_length_is_a_clear_error():
    with pytest.raises(ValueError, match="built for 4 frames"):
        small_model()(torch.randn(1, 3, 8, 32, 32))


# ---- references ---------------------------------------------------------------------------------------------------------

def timm_vit(num_classes=5, img=32, seed=0):
    from timm.models.vision_transformer import VisionTransformer
    torch.manual_seed(seed)
    vit = VisionTransformer(img_size=img, patch_size=16, num_classes=num_classes, **TINY).eval()
    return perturb_(vit, seed=seed + 1)


def test_T1_equals_timm_vit():
    vit = timm_vit()
    m = small_model(T=1)
    rep = fs.load_pretrained(m, save(vit.state_dict(), "vit.pth"))
    assert rep["format"] == "vit"
    assert any(k.endswith("temporal_attn.qkv.weight") for k in rep["adapted"])
    img = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        ref = vit(img)
        ours = m(img.unsqueeze(2))  # (B, C, 1, H, W)
    assert (ours - ref).abs().max().item() <= 1e-5


def hf_model(T=4, img=32, num_labels=5, seed=0):
    transformers = pytest.importorskip("transformers", reason="HF transformers is the numerical reference")
    cfg = transformers.TimesformerConfig(image_size=img, patch_size=16, num_channels=3, num_frames=T,
                                         hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=256, layer_norm_eps=1e-6, qkv_bias=True,
                                         attention_type="divided_space_time", num_labels=num_labels,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                         )  # drop_path_rate defaults to 0 (and this version rejects a float)
    torch.manual_seed(seed)
    return perturb_(transformers.TimesformerForVideoClassification(cfg).eval(), seed=seed + 1)


def test_logits_equal_hf_transformers(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path / "hf")
    m = small_model()
    rep = fs.load_pretrained(m, tmp_path / "hf")
    assert rep["format"] == "hf" and not rep["initialized"] and not rep["ignored"]
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=x.transpose(1, 2)).logits  # HF takes (B, T, C, H, W)
        ours = m(x)
    assert (ours - ref).abs().max().item() <= 1e-4


# ---- checkpoint formats: round trips ------------------------------------------------------------------------------------

_TMP = {}


def save(obj, name):
    d = _TMP.setdefault("dir", Path(__import__("tempfile").mkdtemp()))
    path = d / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)
    return path


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("wrap,ext", [(None, ".pth"), ("model", ".pt"), ("state_dict", ".bin"),
                                      ("model_state", ".pth"), (None, ".safetensors")])
def test_vit_formats(wrap, ext):
    vit = timm_vit()
    sd = vit.state_dict()
    path = save(sd if wrap is None else {wrap: sd}, f"vit_{wrap}{ext}")
    m = small_model(T=4)
    rep = fs.load_pretrained(m, path)
    assert rep["format"] == "vit"
    assert set(rep["initialized"]) == {"time_embed"} | {f"blocks.{i}.temporal_fc.{p}" for i in range(2)
                                                     for p in ("weight", "bias")}
    torch.testing.assert_close(m.blocks[1].temporal_attn.qkv.weight, vit.blocks[1].attn.qkv.weight)
    torch.testing.assert_close(m.blocks[0].temporal_norm1.bias, vit.blocks[0].norm1.bias)
    assert m.time_embed.abs().sum() == 0 and m.blocks[0].temporal_fc.weight.abs().sum() == 0


def test_official_pyth_round_trip():
    src = perturb_(small_model())
    path = save({"epoch": 15, "model_state": {"model." + k: v for k, v in src.state_dict().items()},
                 "optimizer_state": {}, "cfg": "TRAIN: ..."}, "official.pyth")
    m = small_model()
    assert fs.load_pretrained(m, path)["format"] == "official"
    assert_same_weights(src, m)


def test_hf_file_round_trip(tmp_path):
    hf = hf_model()
    hf.save_pretrained(tmp_path / "hf")
    m1, m2 = small_model(), small_model()
    fs.load_pretrained(m1, tmp_path / "hf" / "model.safetensors")
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    fs.load_pretrained(m2, tmp_path / "pytorch_model.bin")
    assert_same_weights(m1, m2)


def test_own_checkpoint_student_and_teacher():
    student, teacher = perturb_(small_model(), seed=3), perturb_(small_model(), seed=4)
    # Keys as a compiled, DDP-wrapped student would save them must still load.
    path = save({"format": "fullsvformer", "model": {"_orig_mod." + k: v for k, v in student.state_dict().items()},
                 "ema": teacher.state_dict(), "step": 7}, "last.pt")
    m = small_model()
    assert fs.load_pretrained(m, path)["format"] == "ours"
    assert_same_weights(student, m)
    fs.load_pretrained(m, f"{path}:teacher")
    assert_same_weights(teacher, m)


TIMM_TINY = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # a real timm tag small enough for a test (D 192, 12 blocks)


def fake_hf_cache(root: Path, name: str) -> dict:
    """A Hugging Face hub cache in the layout huggingface_hub writes (refs/main names the snapshot), holding random
    weights of timm's `name` architecture as model.safetensors. Returns those weights."""
    import timm
    from safetensors.torch import save_file
    repo = root / f"models--timm--{name}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    sd = {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False).state_dict().items()}
    save_file(sd, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    return sd


def test_timm_name_loads_offline_from_the_cache(tmp_path):
    """timm:<name> goes through timm's own machinery (reference: the weights written into the fake cache); offline
    (HF_HUB_OFFLINE=1) a tag that is not cached is a clear error naming the file to download."""
    sd = fake_hf_cache(tmp_path / "hub", TIMM_TINY)
    torch.save(sd, tmp_path / "expected.pt")
    code = f"""
import torch, fullsvformer as fs
m = fs.TimeSformer(num_classes=7, num_frames=2, img_size=224, embed_dim=192, depth=12, num_heads=3)
assert fs.load_pretrained(m, "timm:{TIMM_TINY}")["format"] == "vit"
ref = torch.load({str(tmp_path / "expected.pt")!r})
assert torch.equal(m.blocks[11].attn.qkv.weight, ref["blocks.11.attn.qkv.weight"])
assert torch.equal(m.blocks[3].temporal_attn.proj.bias, ref["blocks.3.attn.proj.bias"])
assert torch.equal(m.pos_embed, ref["pos_embed"])
try:
    fs.load_pretrained(m, "timm:vit_small_patch16_224.augreg_in21k_ft_in1k")
except fs.CheckpointError as e:
    print("ERROR", e)
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(fs.__file__).parent, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "timm:vit_small_patch16_224.augreg_in21k_ft_in1k is neither in the local caches" in out.stdout
    assert "huggingface.co/timm/vit_small_patch16_224.augreg_in21k_ft_in1k/resolve/main/model.safetensors" in out.stdout
    with pytest.raises(fs.CheckpointError, match="knows no pretrained model"):
        fs.load_pretrained(small_model(), "timm:no_such_model_anywhere")


# ---- adaptations --------------------------------------------------------------------------------------------------------

def test_pos_embed_is_resized_bicubically_and_head_dropped():
    vit = timm_vit(num_classes=10, img=32)  # 2x2 grid, 10 classes
    m = small_model(num_classes=5, img=64)  # 4x4 grid, 5 classes
    head_before = m.head.weight.clone()
    rep = fs.load_pretrained(m, save(vit.state_dict(), "vit32.pth"))
    assert "pos_embed" in rep["adapted"] and "bicubic" in rep["adapted"]["pos_embed"]
    assert any("head.weight" in s for s in rep["ignored"])
    torch.testing.assert_close(m.head.weight, head_before)
    ref = fs.resize_pos_embed(vit.pos_embed.detach(), 16)
    torch.testing.assert_close(m.pos_embed.detach(), ref)
    torch.testing.assert_close(m.pos_embed[:, 0], vit.pos_embed[:, 0])  # cls position untouched
    # Bicubic resize of a constant grid is the same constant: a check independent of our own function.
    const = torch.ones(1, 5, 8) * 3.0
    torch.testing.assert_close(fs.resize_pos_embed(const, 16), torch.ones(1, 17, 8) * 3.0)


def test_time_embed_is_interpolated():
    src = perturb_(small_model(T=4))
    m = small_model(T=8)
    rep = fs.load_pretrained(m, save({"model_state": {"model." + k: v for k, v in src.state_dict().items()}},
                                     "t4.pyth"))
    assert "time_embed" in rep["adapted"]
    assert m.time_embed.shape == (1, 8, 64)
    # Linear interpolation keeps the end points' neighbourhood: first and last frames match the source's.
    torch.testing.assert_close(m.time_embed[:, 0], src.time_embed[:, 0])
    torch.testing.assert_close(m.time_embed[:, -1], src.time_embed[:, -1])


# ---- bad input ----------------------------------------------------------------------------------------------------------

def test_missing_file(tmp_path):
    with pytest.raises(fs.CheckpointError, match="does not exist"):
        fs.load_pretrained(small_model(), tmp_path / "nope.pth")


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("hello, I am not a checkpoint")
    with pytest.raises(fs.CheckpointError, match="notes.pth is not a PyTorch checkpoint"):
        fs.load_pretrained(small_model(), p)
    p2 = tmp_path / "bad.safetensors"
    p2.write_bytes(b"\x00" * 20)
    with pytest.raises(fs.CheckpointError, match="bad.safetensors is not a readable safetensors"):
        fs.load_pretrained(small_model(), p2)


def test_directory_without_weights(tmp_path):
    with pytest.raises(fs.CheckpointError, match="without model.safetensors or pytorch_model.bin"):
        fs.load_pretrained(small_model(), tmp_path)


def test_wrong_format_and_non_tensor_entries():
    with pytest.raises(fs.CheckpointError, match="look like no supported format.*weight"):
        fs.load_pretrained(small_model(), save({"fc.weight": torch.zeros(2, 2)}, "resnet.pth"))
    with pytest.raises(fs.CheckpointError, match="'lr' is a float, not a tensor"):
        fs.load_pretrained(small_model(), save({"blocks.0.norm1.weight": torch.zeros(2), "lr": 0.1}, "mixed.pth"))


def test_unknown_key_and_shape_mismatch_are_listed():
    sd = timm_vit().state_dict()
    sd["blocks.0.extra.weight"] = torch.zeros(3)
    with pytest.raises(fs.CheckpointError, match=r"unknown keys: blocks\.0\.extra\.weight"):
        fs.load_pretrained(small_model(), save(sd, "extra.pth"))
    with pytest.raises(fs.CheckpointError, match=r"shape mismatches: .*blocks\.0\.mlp\.fc1\.weight"):
        fs.load_pretrained(small_model(mlp_ratio=2.0), save(timm_vit().state_dict(), "mlp.pth"))
    deeper = small_model(depth=3)
    with pytest.raises(fs.CheckpointError, match=r"missing keys: blocks\.2\."):
        fs.load_pretrained(deeper, save(timm_vit().state_dict(), "shallow.pth"))


def test_teacher_suffix_only_for_our_checkpoints():
    path = save(timm_vit().state_dict(), "plain.pth")
    with pytest.raises(fs.CheckpointError, match="only meaningful for fullsvformer"):
        fs.load_pretrained(small_model(), f"{path}:teacher")


# ---- import hygiene ---------------------------------------------------------------------------------------------------

def test_import_does_no_work():
    code = ("import sys; sys.argv = ['x', '--definitely-not-a-flag']; import torch, fullsvformer; "
            "assert not torch.cuda.is_initialized(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(fs.__file__).parent, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
