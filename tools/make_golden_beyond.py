#!/usr/bin/env python3
"""Generate golden reference values for lskd's "beyond plain KD" tests.

Run from the repository root with the system interpreter (it has Debian's
python3-torch):

    /usr/bin/python3 tools/make_golden_beyond.py

This writes tests/data/golden_beyond.txt: the line format of golden_kd.txt
(tests/data/README.md) plus keyword lines for what plain KD does not have:

    kind dkd|mtkd|wkd             which loss the case is for: DKD, multi-temperature
                                  KD (plain KD when it has one temperature), or KD on
                                  weighted Z-scores
    class_weights <cols numbers>  wkd: the per-class weights of the Z-score (ddof 0)
    alpha_beta <alpha> <beta>     DKD: the weights of TCKD and NCKD
    target <rows integers>        DKD: each row's true class
    temperatures <numbers>        mtkd: the temperatures (`options` holds the first)
    dtau <numbers>                d(reduced loss)/d(temperature), the tau^2 factor
                                  included; mtkd: one per temperature

Everything is computed in torch.float64 with autograd. The DKD values come from
the loss written with the target column removed exactly (dkd_rows_exact), and
the script checks that they agree with the DKD authors' published formula
(Zhao et al., CVPR 2022; dkd_rows, with its `- 1000 * gt_mask` way of leaving
the target class out) on the loss and the student gradient; the authors' form
gives NaN teacher gradients when the pushed-down target underflows. With logit standardization (Sun et al., CVPR 2024) each row of
teacher and student is first Z-scored, (x - mean) / (std + eps). Every input
is exactly representable in float32. Each case has its own seeded
torch.Generator, so reruns write the same file (on the same torch build).
"""

import os
import sys

import torch
import torch.nn.functional as F

DTYPE = torch.float64
HERE = os.path.dirname(os.path.abspath(__file__))
OUT_PATH = os.path.join(HERE, os.pardir, "tests", "data", "golden_beyond.txt")


# --------------------------------------------------------------------------
# Reference formulas
# --------------------------------------------------------------------------

def standardize(logits, ddof, eps):
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True, correction=ddof)
    return (logits - mean) / (eps + std)


def dkd_rows(student, teacher, target, alpha, beta, temperature):
    """Per-row DKD loss (before reduction), the DKD authors' formula."""
    gt_mask = torch.zeros_like(student).scatter_(1, target.unsqueeze(1), 1.0)
    other_mask = 1.0 - gt_mask
    pred_student = F.softmax(student / temperature, dim=1)
    pred_teacher = F.softmax(teacher / temperature, dim=1)
    b_s = torch.stack([(pred_student * gt_mask).sum(1), (pred_student * other_mask).sum(1)], 1)
    b_t = torch.stack([(pred_teacher * gt_mask).sum(1), (pred_teacher * other_mask).sum(1)], 1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="none").sum(1) * temperature ** 2
    log_pred_student_part2 = F.log_softmax(student / temperature - 1000.0 * gt_mask, dim=1)
    pred_teacher_part2 = F.softmax(teacher / temperature - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_pred_student_part2, pred_teacher_part2,
                    reduction="none").sum(1) * temperature ** 2
    return alpha * tckd + beta * nckd


def dkd_rows_exact(student, teacher, target, alpha, beta, temperature):
    """The same loss with the target column removed exactly instead of pushed down by 1000.

    torch's kl_div backward with respect to a target probability that underflows to 0 is NaN,
    which the authors' form hits for the teacher gradient; this form has no such zeros. The
    two agree on the loss and the student gradient (checked in self_checks).
    """
    rows, cols = student.shape
    keep = torch.ones_like(student, dtype=torch.bool).scatter_(1, target.unsqueeze(1), False)
    rest_s = student[keep].view(rows, cols - 1) / temperature
    rest_t = teacher[keep].view(rows, cols - 1) / temperature
    log_ps = F.log_softmax(student / temperature, dim=1)
    log_pt = F.log_softmax(teacher / temperature, dim=1)
    log_ps_k = log_ps.gather(1, target.unsqueeze(1)).squeeze(1)
    log_pt_k = log_pt.gather(1, target.unsqueeze(1)).squeeze(1)
    log_rest_s = torch.logsumexp(rest_s, 1) - torch.logsumexp(student / temperature, 1)
    log_rest_t = torch.logsumexp(rest_t, 1) - torch.logsumexp(teacher / temperature, 1)
    tckd = (log_pt_k.exp() * (log_pt_k - log_ps_k) +
            log_rest_t.exp() * (log_rest_t - log_rest_s)) * temperature ** 2
    q_t = F.softmax(rest_t, 1)
    nckd = (q_t * (F.log_softmax(rest_t, 1) - F.log_softmax(rest_s, 1))).sum(1) * temperature ** 2
    return alpha * tckd + beta * nckd


def kd_rows(student, teacher, temperature):
    """Per-row KD loss KL(p_t || p_s) * tau^2 (Sun et al.'s formula after standardization)."""
    log_ps = F.log_softmax(student / temperature, dim=1)
    pt = F.softmax(teacher / temperature, dim=1)
    return F.kl_div(log_ps, pt, reduction="none").sum(1) * temperature ** 2


def reduce(per_row, reduction):
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return per_row.sum()
    if reduction == "batchmean":
        return per_row.mean()
    raise ValueError(reduction)


def evaluate_dkd(student, teacher, target, o, rows_formula=None):
    s = student.clone().to(DTYPE).requires_grad_(True)
    t = teacher.clone().to(DTYPE).requires_grad_(True)
    tau = torch.tensor(o["temperature"], dtype=DTYPE, requires_grad=True)
    zs = standardize(s, o["ddof"], o["eps"]) if o["standardize"] else s
    zt = standardize(t, o["ddof"], o["eps"]) if o["standardize"] else t
    per_row = (rows_formula or dkd_rows_exact)(zs, zt, target, o["alpha"], o["beta"], tau)
    if not o["scale_by_t2"]:
        per_row = per_row / tau ** 2
    loss = reduce(per_row, o["reduction"])
    total = loss.sum() if o["reduction"] == "none" else loss
    gs, gt, gtau = torch.autograd.grad(total, (s, t, tau))
    return loss.detach().reshape(-1), gs.detach(), gt.detach(), float(gtau)


def weighted_standardize(logits, weights, eps):
    """The weighted Z-score: mean and variance with per-class weights c, W = sum c (ddof 0)."""
    total = weights.sum()
    mean = (logits * weights).sum(dim=-1, keepdim=True) / total
    var = (weights * (logits - mean) ** 2).sum(dim=-1, keepdim=True) / total
    return (logits - mean) / (eps + var.sqrt())


def evaluate_wkd(student, teacher, weights, o):
    """KD on weighted Z-scores; returns loss, gradients and d/dtau."""
    s = student.clone().to(DTYPE).requires_grad_(True)
    t = teacher.clone().to(DTYPE).requires_grad_(True)
    tau = torch.tensor(o["temperature"], dtype=DTYPE, requires_grad=True)
    per_row = kd_rows(weighted_standardize(s, weights, o["eps"]),
                      weighted_standardize(t, weights, o["eps"]), tau)
    if not o["scale_by_t2"]:
        per_row = per_row / tau ** 2
    loss = reduce(per_row, o["reduction"])
    total = loss.sum() if o["reduction"] == "none" else loss
    gs, gt, gtau = torch.autograd.grad(total, (s, t, tau))
    return loss.detach().reshape(-1), gs.detach(), gt.detach(), float(gtau)


def evaluate_mtkd(student, teacher, o):
    """Multi-temperature KD: the sum over the temperatures of KD at each one."""
    s = student.clone().to(DTYPE).requires_grad_(True)
    t = teacher.clone().to(DTYPE).requires_grad_(True)
    taus = torch.tensor(o["temperatures"], dtype=DTYPE, requires_grad=True)
    zs = standardize(s, o["ddof"], o["eps"]) if o["standardize"] else s
    zt = standardize(t, o["ddof"], o["eps"]) if o["standardize"] else t
    per_row = 0
    for i in range(len(o["temperatures"])):
        term = kd_rows(zs, zt, taus[i])
        per_row = per_row + (term if o["scale_by_t2"] else term / taus[i] ** 2)
    loss = reduce(per_row, o["reduction"])
    total = loss.sum() if o["reduction"] == "none" else loss
    gs, gt, gtaus = torch.autograd.grad(total, (s, t, taus))
    return loss.detach().reshape(-1), gs.detach(), gt.detach(), gtaus.detach()


# --------------------------------------------------------------------------
# Inputs (all float32-representable)
# --------------------------------------------------------------------------

def f32(x):
    return x.to(torch.float32).to(DTYPE)


def pair(seed, rows, cols, mean=0.0, std=1.0):
    g = torch.Generator().manual_seed(seed)
    s = f32(torch.randn(rows, cols, generator=g, dtype=DTYPE) * std + mean)
    t = f32(torch.randn(rows, cols, generator=g, dtype=DTYPE) * std + mean)
    target = torch.randint(0, cols, (rows,), generator=g)
    return s, t, target


MTKD_DEFAULTS = dict(temperatures=[2.0, 3.0, 4.0, 5.0, 6.0], standardize=True, ddof=1,
                     eps=1e-7, reduction="batchmean", scale_by_t2=True)

WKD_DEFAULTS = dict(temperature=2.0, standardize=True, ddof=0, eps=1e-7,
                    reduction="batchmean", scale_by_t2=True)

DKD_DEFAULTS = dict(temperature=4.0, alpha=1.0, beta=8.0, standardize=False, ddof=1,
                    eps=1e-7, reduction="batchmean", scale_by_t2=True)


def build_cases():
    cases = []

    def add(name, note, student, teacher, target, **kw):
        o = dict(DKD_DEFAULTS)
        o.update(kw)
        loss, gs, gt, gtau = evaluate_dkd(student, teacher, target, o)
        cases.append(dict(name=name, note=note, kind="dkd", o=o, student=student,
                          teacher=teacher, target=target, loss=loss, gs=gs, gt=gt, dtau=gtau))

    s, t, y = pair(2001, 4, 2)
    add("dkd_c2_nostd", "2 classes: NCKD is 0; N(0, 1)", s, t, y)
    s, t, y = pair(2002, 3, 2, std=2.0)
    add("dkd_c2_std", "2 classes, standardized (LS setting); N(0, 2)", s, t, y,
        standardize=True, temperature=2.0, alpha=9.0, beta=72.0)
    s, t, y = pair(2003, 7, 13)
    add("dkd_odd_7x13_nostd", "DKD paper defaults; N(0, 1)", s, t, y)
    s, t, y = pair(2004, 5, 37, mean=3.0, std=2.0)
    add("dkd_odd_5x37_std", "DKD+LS: tau 2, alpha 9, beta 72; N(3, 2)", s, t, y,
        standardize=True, temperature=2.0, alpha=9.0, beta=72.0)
    s, t, y = pair(2005, 6, 17)
    add("dkd_6x17_std_ddof0_sum", "standardized, ddof 0, sum; N(0, 1)", s, t, y,
        standardize=True, ddof=0, reduction="sum", alpha=2.0, beta=0.5)
    s, t, y = pair(2006, 5, 9)
    add("dkd_5x9_none_noscale", "reduction none, no tau^2, tau 1.5; N(0, 1)", s, t, y,
        reduction="none", scale_by_t2=False, temperature=1.5)
    s, t, y = pair(2007, 4, 24, std=1.5)
    # The teacher is confident: its target logit is 6 above its largest other logit.
    t = t.clone()
    for r in range(4):
        others = torch.cat([t[r, :y[r]], t[r, y[r] + 1:]])
        t[r, y[r]] = f32(others.max() + 6.0)
    add("dkd_4x24_confident_teacher", "teacher target 6 above the rest; N(0, 1.5)", s, t, y)
    s, t, y = pair(2008, 3, 40)
    add("dkd_3x40_low_tau_std", "standardized, tau 0.25; N(0, 1)", s, t, y,
        standardize=True, temperature=0.25)
    s, t, y = pair(2009, 1, 32000, std=2.0)
    add("dkd_1x32000_std", "V = 32000, DKD+LS; N(0, 2)", s, t, y,
        standardize=True, temperature=2.0, alpha=9.0, beta=72.0)

    def add_mt(name, note, student, teacher, **kw):
        o = dict(MTKD_DEFAULTS)
        o.update(kw)
        loss, gs, gt, gtaus = evaluate_mtkd(student, teacher, o)
        cases.append(dict(name=name, note=note, kind="mtkd", o=o, student=student,
                          teacher=teacher, target=None, loss=loss, gs=gs, gt=gt, dtau=gtaus))

    s, t, _ = pair(3001, 4, 10)
    add_mt("mtkd_4x10_std_T2to6", "standardized, temperatures 2..6; N(0, 1)", s, t)
    s, t, _ = pair(3002, 3, 17, mean=-1.0, std=3.0)
    add_mt("mtkd_3x17_nostd_sum", "plain logits, temperatures 1 and 4, sum; N(-1, 3)", s, t,
           standardize=False, temperatures=[1.0, 4.0], reduction="sum")
    s, t, _ = pair(3003, 5, 9)
    add_mt("mtkd_5x9_none_ddof0_noscale", "ddof 0, reduction none, no tau^2; N(0, 1)", s, t,
           ddof=0, temperatures=[0.5, 2.5], reduction="none", scale_by_t2=False)
    s, t, _ = pair(3004, 2, 1000, mean=5.0, std=2.0)
    add_mt("mtkd_2x1000_std", "standardized, temperatures 1..6; N(5, 2)", s, t,
           temperatures=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    # One temperature: plain (LS-)KD, for kd_loss's temperature gradient too.
    s, t, _ = pair(3005, 6, 23)
    add_mt("kd_6x23_std_T2", "one temperature: kd_loss defaults; N(0, 1)", s, t,
           temperatures=[2.0])
    s, t, _ = pair(3006, 3, 31)
    add_mt("kd_3x31_std_T0.05", "one temperature, tau 0.05 (learnable-temperature floor)", s, t,
           temperatures=[0.05])
    s, t, _ = pair(3007, 4, 12, std=2.0)
    add_mt("kd_4x12_nostd_T4_sum", "one temperature, plain logits, sum; N(0, 2)", s, t,
           standardize=False, temperatures=[4.0], reduction="sum")

    def add_w(name, note, student, teacher, weights, **kw):
        o = dict(WKD_DEFAULTS)
        o.update(kw)
        loss, gs, gt, gtau = evaluate_wkd(student, teacher, weights, o)
        cases.append(dict(name=name, note=note, kind="wkd", o=o, student=student,
                          teacher=teacher, target=None, weights=weights, loss=loss, gs=gs, gt=gt,
                          dtau=gtau))

    def class_weights(seed, cols, zero_every=0):
        g = torch.Generator().manual_seed(seed)
        w = f32(torch.rand(cols, generator=g, dtype=DTYPE) * 2.0)
        if zero_every:
            w[::zero_every] = 0.0
        return w

    s, t, _ = pair(4001, 4, 10)
    add_w("wkd_4x10_T2", "weighted Z-score, weights U(0, 2); N(0, 1)", s, t,
          class_weights(4101, 10))
    s, t, _ = pair(4002, 3, 33, mean=2.0, std=2.0)
    add_w("wkd_3x33_ones", "all-ones weights: the ddof-0 Z-score; N(2, 2)", s, t,
          torch.ones(33, dtype=DTYPE))
    s, t, _ = pair(4003, 5, 17)
    add_w("wkd_5x17_zeros_T4_sum", "every third weight 0, tau 4, sum; N(0, 1)", s, t,
          class_weights(4103, 17, zero_every=3), temperature=4.0, reduction="sum")
    s, t, _ = pair(4004, 2, 300, std=3.0)
    add_w("wkd_2x300_none", "reduction none, weights U(0, 2); N(0, 3)", s, t,
          class_weights(4104, 300), reduction="none")
    return cases


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def fmt(x):
    return "%.17g" % float(x)


def fmt_list(values):
    return " ".join(fmt(v) for v in values.reshape(-1).tolist())


def write_file(path, cases):
    with open(path, "w", encoding="utf-8") as out:
        out.write("# Golden values for lskd beyond plain KD; generated by "
                  "tools/make_golden_beyond.py (do not edit)\n")
        out.write("# torch %s, float64 autograd; numbers printed with '%%.17g'\n"
                  % torch.__version__)
        for c in cases:
            o = c["o"]
            rows, cols = c["student"].shape
            out.write("\n# %s\n" % c["note"])
            out.write("case %s\n" % c["name"])
            out.write("kind %s\n" % c["kind"])
            out.write("shape %d %d\n" % (rows, cols))
            first_tau = o["temperatures"][0] if c["kind"] == "mtkd" else o["temperature"]
            out.write("options %s %d %d %s %s %d\n" % (
                fmt(first_tau), int(o["standardize"]), o["ddof"], fmt(o["eps"]),
                o["reduction"], int(o["scale_by_t2"])))
            if c["kind"] == "dkd":
                out.write("alpha_beta %s %s\n" % (fmt(o["alpha"]), fmt(o["beta"])))
                out.write("target %s\n" % " ".join(str(int(v)) for v in c["target"].tolist()))
            elif c["kind"] == "mtkd":
                out.write("temperatures %s\n" % " ".join(fmt(v) for v in o["temperatures"]))
            else:
                out.write("class_weights %s\n" % fmt_list(c["weights"]))
            out.write("student %s\n" % fmt_list(c["student"]))
            out.write("teacher %s\n" % fmt_list(c["teacher"]))
            out.write("loss %s\n" % fmt_list(c["loss"]))
            out.write("grad_student %s\n" % fmt_list(c["gs"]))
            out.write("grad_teacher %s\n" % fmt_list(c["gt"]))
            dtau = c["dtau"] if c["kind"] == "mtkd" else torch.tensor([c["dtau"]], dtype=DTYPE)
            out.write("dtau %s\n" % fmt_list(dtau))
            out.write("end\n")


def self_checks(cases):
    """The exact form agrees with the authors' form on the loss and the student gradient;
    NCKD is 0 with two classes: the C=2 DKD loss is alpha * TCKD alone."""
    for c in cases:
        if c["kind"] == "dkd":
            loss, gs, _, _ = evaluate_dkd(c["student"], c["teacher"], c["target"], c["o"],
                                          rows_formula=dkd_rows)
            scale = max(1.0, float(c["gs"].abs().max()))
            if not (torch.allclose(loss, c["loss"], rtol=1e-10, atol=1e-12) and
                    torch.allclose(gs, c["gs"], rtol=0, atol=1e-10 * scale)):
                sys.exit("self-check failed: %s differs from the authors' formula" % c["name"])
        if c["kind"] == "mtkd" and len(c["o"]["temperatures"]) > 1:
            # The sum over temperatures is the sum of the one-temperature losses.
            parts = 0
            for tau in c["o"]["temperatures"]:
                o = dict(c["o"])
                o["temperatures"] = [tau]
                parts = parts + evaluate_mtkd(c["student"], c["teacher"], o)[0]
            if not torch.allclose(parts, c["loss"], rtol=1e-12, atol=0):
                sys.exit("self-check failed: %s is not a sum over temperatures" % c["name"])
        if c["kind"] == "dkd" and c["student"].shape[1] == 2:
            o = dict(c["o"])
            o["beta"] = 0.0
            loss, _, _, _ = evaluate_dkd(c["student"], c["teacher"], c["target"], o)
            if not torch.allclose(loss, c["loss"], rtol=1e-12, atol=1e-12):
                sys.exit("self-check failed: %s depends on beta" % c["name"])
        for key in ("loss", "gs", "gt"):
            if not torch.isfinite(c[key]).all():
                sys.exit("self-check failed: %s has a non-finite %s" % (c["name"], key))


def main():
    torch.set_num_threads(1)
    cases = build_cases()
    self_checks(cases)
    write_file(OUT_PATH, cases)
    print("wrote %d cases to %s" % (len(cases), os.path.normpath(OUT_PATH)))


if __name__ == "__main__":
    main()
