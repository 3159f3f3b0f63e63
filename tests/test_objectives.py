"""Semi-supervised objectives against slow, obvious reference loops (python loops, math module)."""
import math
import os
import tempfile

import pytest
import torch
import torch.nn as nn

import fullsvformer as fs


# ----------------------------------------------------------------------------------------------------------------------
# Slow references
# ----------------------------------------------------------------------------------------------------------------------
def ref_standardize(row):
    n = len(row)
    mean = sum(row) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in row) / (n - 1))
    return [(x - mean) / (std + 1e-7) for x in row]


def ref_softmax(row):
    m = max(row)
    e = [math.exp(x - m) for x in row]
    z = sum(e)
    return [v / z for v in e]


def ref_standardized_kl(s, t, tau=2.0, mask=None):
    B = len(s)
    total = 0.0
    for b in range(B):
        ps = ref_softmax([x / tau for x in ref_standardize(s[b])])
        pt = ref_softmax([x / tau for x in ref_standardize(t[b])])
        kl = sum(pt[c] * (math.log(pt[c]) - math.log(ps[c])) for c in range(len(pt)) if pt[c] > 0)
        w = 1.0 if mask is None else float(mask[b])
        total += w * kl
    return tau ** 2 * total / B


def ref_anl(s, t, drop=0.95 ** 2):
    B, K = len(s), len(s[0])
    y = [max(range(K), key=lambda c: (t[b][c], -c)) for b in range(B)]
    k = None
    for kk in range(2, K + 1):  # smallest k with y in the student's top-k for every sample
        ok = True
        for b in range(B):
            above = sum(1 for c in range(K) if s[b][c] > s[b][y[b]])
            if above >= kk:
                ok = False
        if ok:
            k = kk
            break
    total, nneg = 0.0, 0
    for b in range(B):
        order = sorted(range(K), key=lambda c: (-t[b][c], c))
        topk = set(order[:k])
        ps = ref_softmax(s[b])
        for c in range(K):
            if c not in topk and ps[c] <= drop:
                total += -math.log(1 - ps[c] + 1e-10)
                nneg += 1
    return total / B, k, nneg


def rows(x):
    return x.double().tolist()


def logits_with_rank(y, rank, K, gen):
    """A student row where class y sits at 0-based position `rank` of the descending order."""
    vals = sorted(torch.randn(K, generator=gen).tolist(), reverse=True)
    others = [c for c in range(K) if c != y]
    row = [0.0] * K
    order = others[:rank] + [y] + others[rank:]
    for pos, c in enumerate(order):
        row[c] = vals[pos]
    return row


# ----------------------------------------------------------------------------------------------------------------------
# Logit standardization and the standardized KL
# ----------------------------------------------------------------------------------------------------------------------
def test_standardize_logits_matches_loop():
    z = torch.randn(6, 11, dtype=torch.float64) * 3 + 1
    got = fs.standardize_logits(z)
    for b in range(6):
        assert got[b].tolist() == pytest.approx(ref_standardize(z[b].tolist()), abs=1e-9)


@pytest.mark.parametrize("K", [2, 7, 101])
def test_standardized_kl_matches_loop(K):
    g = torch.Generator().manual_seed(K)
    s, t = torch.randn(5, K, generator=g) * 4, torch.randn(5, K, generator=g) * 2
    got = fs.standardized_kl(s, t, tau=2.0)
    assert got.dtype == torch.float32 and got.dim() == 0
    assert got.item() == pytest.approx(ref_standardized_kl(rows(s), rows(t)), rel=1e-4, abs=1e-6)
    got3 = fs.standardized_kl(s, t, tau=3.0)
    assert got3.item() == pytest.approx(ref_standardized_kl(rows(s), rows(t), tau=3.0), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("as_bool", [True, False])
def test_standardized_kl_mask_averages_over_whole_batch(as_bool):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 9, generator=g), torch.randn(6, 9, generator=g)
    mask = torch.tensor([1, 0, 1, 1, 0, 0], dtype=torch.bool if as_bool else torch.float32)
    got = fs.standardized_kl(s, t, mask=mask)
    assert got.item() == pytest.approx(ref_standardized_kl(rows(s), rows(t), mask=mask.tolist()), rel=1e-4)
    # divided by B = 6, not by the 3 kept samples
    kept = fs.standardized_kl(s[mask.bool()], t[mask.bool()])
    assert got.item() == pytest.approx(kept.item() * 3 / 6, rel=1e-5)
    assert fs.standardized_kl(s, t, mask=torch.zeros(6)).item() == 0.0


def test_standardized_kl_gradient_only_into_student():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10, requires_grad=True)
    fs.standardized_kl(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_standardized_kl_zero_when_equal_up_to_affine():
    t = torch.randn(3, 8)
    assert fs.standardized_kl(t * 5 + 2, t).item() == pytest.approx(0.0, abs=1e-6)


def test_standardized_kl_invariant_to_student_shift_and_scale_but_plain_kl_is_not():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    shift = torch.randn(5, 1, generator=g) * 10
    scale = torch.rand(5, 1, generator=g) * 4 + 0.5
    base = fs.standardized_kl(s, t)
    assert fs.standardized_kl(s * scale + shift, t).item() == pytest.approx(base.item(), rel=1e-4)

    def plain_kl(s, t, tau=2.0):
        return (torch.nn.functional.kl_div(torch.log_softmax(s / tau, -1), torch.log_softmax(t / tau, -1),
                                           reduction="batchmean", log_target=True) * tau ** 2)
    # softmax is shift-invariant but not scale-invariant: the standardization is what buys the scale invariance
    assert plain_kl(s * scale + shift, t).item() != pytest.approx(plain_kl(s, t).item(), rel=1e-2)


def test_standardized_kl_bf16_input_gives_float32_close_to_fp32():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(8, 101, generator=g) * 3, torch.randn(8, 101, generator=g) * 3
    s16, t16 = s.bfloat16(), t.bfloat16()
    got = fs.standardized_kl(s16, t16)
    assert got.dtype == torch.float32
    # same bf16-rounded inputs in fp32: identical up to float32 noise
    assert got.item() == pytest.approx(fs.standardized_kl(s16.float(), t16.float()).item(), rel=1e-5)
    assert got.item() == pytest.approx(fs.standardized_kl(s, t).item(), rel=2e-2)


# ----------------------------------------------------------------------------------------------------------------------
# Adaptive negative learning
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed,K,scale", [(0, 10, 1.0), (1, 5, 3.0), (2, 101, 2.0), (3, 2, 1.0), (4, 20, 0.1)])
def test_anl_matches_loop(seed, K, scale):
    g = torch.Generator().manual_seed(seed)
    s, t = torch.randn(7, K, generator=g) * scale, torch.randn(7, K, generator=g) * scale
    r = fs.adaptive_negative_loss(s, t)
    loss, k = r.loss, r.k
    ref_loss, ref_k, ref_n = ref_anl(rows(s), rows(t))
    assert int(k) == ref_k
    assert int(r.num_negatives) == ref_n
    assert loss.item() == pytest.approx(ref_loss, rel=1e-4, abs=1e-6)
    assert loss.dtype == torch.float32 and r.loss is loss and r.k is k


def test_anl_all_confident_batch_gives_k2():
    g = torch.Generator().manual_seed(5)
    t = torch.randn(6, 10, generator=g)
    y = t.argmax(-1)
    s = torch.tensor([logits_with_rank(int(y[b]), 0, 10, g) for b in range(6)])  # student agrees: rank 0
    s = s * 0.3  # keep p_s below the drop threshold so every negative counts
    loss, k, *_ = fs.adaptive_negative_loss(s, t)
    assert int(k) == 2
    ref_loss, ref_k, ref_n = ref_anl(rows(s), rows(t))
    assert ref_k == 2 and loss.item() == pytest.approx(ref_loss, rel=1e-5)
    assert ref_n == 6 * 8


def test_anl_k_is_driven_by_the_worst_sample():
    g = torch.Generator().manual_seed(6)
    t = torch.randn(4, 10, generator=g)
    y = t.argmax(-1).tolist()
    ranks = [0, 1, 4, 2]  # sample 2 has y at position 4 -> k = 5
    s = torch.tensor([logits_with_rank(y[b], ranks[b], 10, g) for b in range(4)])
    assert int(fs.adaptive_negative_loss(s, t)[1]) == 5


def test_anl_k_equals_K_gives_zero_loss_with_graph():
    K = 6
    g = torch.Generator().manual_seed(7)
    t = torch.randn(3, K, generator=g)
    y = t.argmax(-1).tolist()
    s = torch.tensor([logits_with_rank(y[b], K - 1 if b == 1 else 0, K, g) for b in range(3)], requires_grad=True)
    r = fs.adaptive_negative_loss(s, t)
    loss, k = r.loss, r.k
    assert int(k) == K and int(r.num_negatives) == 0 and loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(s.grad, torch.zeros_like(s))


def test_anl_all_uncertain_batch():
    # flat teacher and student: k is driven by where the arbitrary argmax lands in the student's order
    g = torch.Generator().manual_seed(8)
    s, t = torch.randn(16, 30, generator=g) * 1e-3, torch.randn(16, 30, generator=g) * 1e-3
    loss, k, *_ = fs.adaptive_negative_loss(s, t)
    ref_loss, ref_k, _ = ref_anl(rows(s), rows(t))
    assert int(k) == ref_k and ref_k > 10
    # each negative has p ~ 1/30: loss per negative ~ -log(1 - 1/30)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-4)
    assert loss.item() == pytest.approx((30 - ref_k) * -math.log(1 - 1 / 30), rel=1e-2)


def test_anl_two_classes():
    s = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 3.0], [0.0, 1.0]])
    r = fs.adaptive_negative_loss(s, t)
    assert int(r.k) == 2 and int(r.num_negatives) == 0 and r.loss.item() == 0.0


def test_anl_drop_threshold_drops_a_confident_negative():
    # teacher says class 0; student is very confident in class 2, which is outside the teacher's top-2
    t = torch.tensor([[5.0, 4.0, 0.0, -1.0], [5.0, 4.0, 3.0, -1.0]])
    s = torch.tensor([[3.0, 0.0, 12.0, 0.0], [3.0, 0.0, 0.0, 0.0]])
    r = fs.adaptive_negative_loss(s, t)
    ref_loss, ref_k, ref_n = ref_anl(rows(s), rows(t))
    assert int(r.k) == ref_k == 2  # y = 0 is the student's 2nd choice on sample 0, 1st on sample 1
    p = torch.softmax(s, -1)
    assert p[0, 2] > 0.95 ** 2  # the negative that must be dropped
    assert int(r.num_negatives) == ref_n == 3  # sample 0: only class 3; sample 1: classes 2 and 3
    assert r.loss.item() == pytest.approx(ref_loss, rel=1e-5)
    kept_all = fs.adaptive_negative_loss(s, t, drop_threshold=1.1)
    assert int(kept_all.num_negatives) == 4 and kept_all.loss.item() > r.loss.item()


def test_anl_gradient_only_into_student():
    g = torch.Generator().manual_seed(10)
    t = torch.randn(5, 8, generator=g, requires_grad=True)
    s = torch.randn(5, 8, generator=g).requires_grad_()
    loss, k, *_ = fs.adaptive_negative_loss(s, t)
    assert int(k) < 8  # some negatives, so the gradient is not trivially zero
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_anl_bf16_input():
    g = torch.Generator().manual_seed(9)
    s, t = torch.randn(6, 12, generator=g), torch.randn(6, 12, generator=g)
    r16 = fs.adaptive_negative_loss(s.bfloat16(), t.bfloat16())
    r32 = fs.adaptive_negative_loss(s.bfloat16().float(), t.bfloat16().float())
    assert r16.loss.dtype == torch.float32
    assert int(r16.k) == int(r32.k) and r16.loss.item() == pytest.approx(r32.loss.item(), rel=1e-6)


def test_anl_given_k_sets_the_negatives_and_batch_k_is_still_measured():
    """Training passes the k of the whole optimizer step (all micro-batches, all ranks): the negatives must follow
    it, while batch_k reports this batch's own k for the next step's reduction."""
    g = torch.Generator().manual_seed(100)
    t = torch.randn(3, 8, generator=g)
    y = t.argmax(-1).tolist()
    s = torch.tensor([logits_with_rank(y[b], 1 if b == 0 else 0, 8, g) for b in range(3)]) * 0.3  # own k: 2
    own = fs.adaptive_negative_loss(s, t)
    assert int(own.k) == int(own.batch_k) == 2
    r = fs.adaptive_negative_loss(s, t, k=torch.tensor(4))
    assert int(r.k) == 4 and int(r.batch_k) == 2
    p = torch.softmax(s, -1)
    top4 = t.argsort(-1, descending=True)[:, :4]
    neg = torch.ones_like(p, dtype=torch.bool).scatter_(1, top4, False)  # reference: every class outside the top 4
    assert int(r.num_negatives) == int(neg.sum()) == 3 * 4
    assert r.loss.item() == pytest.approx(((-torch.log(1 - p + 1e-10) * neg).sum() / 3).item(), rel=1e-5)
    assert r.loss.item() < own.loss.item()  # fewer negatives than its own k = 2 gives


# ----------------------------------------------------------------------------------------------------------------------
# Tube TokenMix
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lam,N", [(0.37, 196), (0.5, 16), (0.0, 10), (1.0, 10), (0.93, 49)])
def test_tube_mask_exact_share(lam, N):
    g = torch.Generator().manual_seed(0)
    mask, lam_a = fs.tube_mask(6, N, lam, generator=g)
    assert mask.shape == (6, N) and mask.dtype == torch.bool and lam_a.shape == (6,)
    n_b = round((1 - lam) * N)
    assert mask.sum(1).tolist() == [n_b] * 6
    for b in range(6):
        assert lam_a[b].item() == pytest.approx(1 - mask[b].sum().item() / N, abs=1e-7)
        assert lam_a[b].item() == pytest.approx(lam, abs=0.5 / N + 1e-7)


def test_tube_mask_per_sample_lambda_random_positions_and_seeded():
    lam = torch.tensor([0.1, 0.5, 0.9])
    m1, l1 = fs.tube_mask(3, 100, lam, generator=torch.Generator().manual_seed(1))
    m2, _ = fs.tube_mask(3, 100, lam, generator=torch.Generator().manual_seed(1))
    m3, _ = fs.tube_mask(3, 100, lam, generator=torch.Generator().manual_seed(2))
    assert m1.sum(1).tolist() == [90, 50, 10] and l1.tolist() == pytest.approx([0.1, 0.5, 0.9])
    assert torch.equal(m1, m2) and not torch.equal(m1, m3)
    # positions differ between samples (not one fixed pattern)
    big, _ = fs.tube_mask(4, 100, 0.5, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(big[0], big[1])


def test_tube_token_mix_same_mask_every_frame():
    g = torch.Generator().manual_seed(4)
    B, T, N, D = 3, 4, 9, 5
    a, b = torch.randn(B, T, N, D, generator=g), torch.randn(B, T, N, D, generator=g)
    mask, _ = fs.tube_mask(B, N, 0.6, generator=g)
    out = fs.tube_token_mix(a, b, mask)
    for i in range(B):
        for t in range(T):
            for n in range(N):
                src = b if mask[i, n] else a
                assert torch.equal(out[i, t, n], src[i, t, n])
    with pytest.raises(ValueError):
        fs.tube_token_mix(a, b, mask[:, :-1])


def test_tokenmix_targets_match_loop():
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(5, 6, generator=g) * torch.tensor([[4.0], [0.2], [4.0], [0.2], [4.0]]), -1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    lam_a = torch.tensor([0.2, 0.5, 0.9, 0.0, 1.0])
    delta = 0.5
    got = fs.tokenmix_targets(probs, perm, lam_a, delta)
    P = probs.tolist()

    def yhat(i):
        conf = max(P[i])
        if conf >= delta:
            return [1.0 if c == P[i].index(conf) else 0.0 for c in range(6)]
        return P[i]
    assert any(max(r) >= delta for r in P) and any(max(r) < delta for r in P)  # both branches exercised
    for i in range(5):
        ya, yb = yhat(i), yhat(int(perm[i]))
        exp = [lam_a[i].item() * ya[c] + (1 - lam_a[i].item()) * yb[c] for c in range(6)]
        assert got[i].tolist() == pytest.approx(exp, abs=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(5))
    w = fs.tokenmix_weight(probs, perm, lam_a, delta)
    for i in range(5):
        ma, mb = float(max(P[i]) >= delta), float(max(P[int(perm[i])]) >= delta)
        assert w[i].item() == pytest.approx(lam_a[i].item() * ma + (1 - lam_a[i].item()) * mb, abs=1e-6)


def test_tokenmix_loss_is_mse_on_raw_logits():
    g = torch.Generator().manual_seed(6)
    z = torch.randn(4, 7, generator=g, requires_grad=True)
    y = torch.softmax(torch.randn(4, 7, generator=g), -1)
    got = fs.tokenmix_loss(z, y)
    exp = sum((z[i, c].item() - y[i, c].item()) ** 2 for i in range(4) for c in range(7)) / 28
    assert got.item() == pytest.approx(exp, rel=1e-5)
    w = torch.tensor([1.0, 0.0, 0.5, 1.0])
    exp_w = sum(w[i].item() * sum((z[i, c].item() - y[i, c].item()) ** 2 for c in range(7)) / 7 for i in range(4)) / 4
    assert fs.tokenmix_loss(z, y, weight=w).item() == pytest.approx(exp_w, rel=1e-5)
    got.backward()
    assert z.grad is not None


def test_sample_lambda_seeded_and_in_range():
    a = [fs.sample_lambda(10.0, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert a[0].shape == () and a[0].dtype == torch.float64  # a tensor on the generator's device: no host sync
    assert a[0] == a[1] and 0.0 < float(a[0]) < 1.0
    g = torch.Generator().manual_seed(8)
    xs = [float(fs.sample_lambda(10.0, g)) for _ in range(2000)]
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / len(xs)
    assert mean == pytest.approx(0.5, abs=0.01)
    assert var == pytest.approx(1 / (4 * 21), rel=0.15)  # Beta(a, a) variance = 1 / (4 (2a + 1))


# ----------------------------------------------------------------------------------------------------------------------
# EMA update
# ----------------------------------------------------------------------------------------------------------------------
def _pair(seed=0, student_dtype=torch.float32):
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3))
    torch.manual_seed(seed + 1)
    student = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)).to(student_dtype)
    student[1].running_mean.normal_()
    student[1].num_batches_tracked += 5
    return teacher, student


@pytest.mark.parametrize("m", [0.0, 1.0, 0.9, 0.37])
def test_ema_update_matches_loop(m):
    teacher, student = _pair()
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    fs.ema_update(teacher, student, m)
    s = dict(student.named_parameters())
    for n, p in teacher.named_parameters():
        old, new, sv = before[n].flatten().tolist(), p.flatten().tolist(), s[n].flatten().tolist()
        for o, x, v in zip(old, new, sv):
            assert x == pytest.approx(m * o + (1 - m) * v, abs=1e-6)
        if m == 1.0:
            assert torch.equal(p, before[n])
        if m == 0.0:
            assert torch.equal(p, s[n])
    for (n, tb), (_, sb) in zip(teacher.named_buffers(), student.named_buffers()):
        assert torch.equal(tb, sb), n  # buffers copied


def test_ema_update_bf16_student_keeps_fp32_teacher_through_a_wrapper():
    teacher, student = _pair(student_dtype=torch.bfloat16)
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}

    class Wrapper(nn.Module):  # stands in for DDP's `.module` / torch.compile's `._orig_mod`
        def __init__(self, inner):
            super().__init__()
            self._orig_mod = inner
    fs.ema_update(teacher, Wrapper(student), 0.99)
    s = dict(student.named_parameters())
    for n, p in teacher.named_parameters():
        assert p.dtype == torch.float32
        assert torch.allclose(p, 0.99 * before[n] + 0.01 * s[n].float(), atol=1e-6)
