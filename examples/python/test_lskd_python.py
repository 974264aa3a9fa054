#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""lskd_ctypes against the authors' PyTorch formula (Sun et al., CVPR 2024), under autograd.

Run by ctest with /usr/bin/python3 and LSKD_LIBRARY pointing at the built liblskd_c. Exits with
77 (which ctest reports as skipped) and a line starting with "SKIPPED:" when numpy or torch
cannot be imported.
"""

import os
import sys
import unittest

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as error:
    print(f"SKIPPED: {error} (numpy and torch are needed; on Debian: apt-get install "
          "python3-numpy python3-torch, and run this with /usr/bin/python3)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lskd_ctypes  # noqa: E402

# Largest differences seen, by dtype, printed at the end: (loss abs, loss rel, grad abs, grad rel)
WORST = {}


def note(dtype, what, absolute, relative):
    key = (str(dtype), what)
    old = WORST.get(key, (0.0, 0.0))
    WORST[key] = (max(old[0], absolute), max(old[1], relative))


def reference(student, teacher, temperature, standardize, reduction, weights=None):
    """The authors' loss, in float64 with autograd: returns (loss, grad_student, grad_teacher).

    With reduction "none" the gradients are those of sum(weights * row losses)."""
    s = torch.tensor(student, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(teacher, dtype=torch.float64, requires_grad=True)

    def normalize(logit):
        mean = logit.mean(dim=-1, keepdims=True)
        stdv = logit.std(dim=-1, keepdims=True)
        return (logit - mean) / (1e-7 + stdv)

    logits_student = normalize(s) if standardize else s
    logits_teacher = normalize(t) if standardize else t
    log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    per_row = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1)
    per_row = per_row * temperature ** 2
    if reduction == "batchmean":
        loss = per_row.mean()
    elif reduction == "sum":
        loss = per_row.sum()
    else:
        loss = per_row
    objective = loss if reduction != "none" else (per_row * torch.as_tensor(weights)).sum()
    objective.backward()
    return loss.detach().numpy(), s.grad.numpy(), t.grad.numpy()


def logits(rng, rows, cols, dtype, scale):
    return (rng.standard_normal((rows, cols)) * scale + rng.uniform(-3, 3)).astype(dtype)


SHAPES = [(1, 2), (3, 5), (8, 10), (4, 31), (16, 100), (5, 257)]
TOLERANCE = {np.float64: 1e-10, np.float32: 5e-5}  # relative to the largest reference value


class NumpyParity(unittest.TestCase):
    def check(self, dtype, rows, cols, standardize, reduction, temperature, strided):
        rng = np.random.default_rng(rows * 1000 + cols)
        student = logits(rng, rows, cols, dtype, 2.0)
        teacher = logits(rng, rows, cols, dtype, 3.0)
        if strided:  # views of the first columns of wider arrays: passed without a copy
            wide_s = np.full((rows, cols + 7), np.nan, dtype=dtype)
            wide_t = np.full((rows, cols + 3), np.nan, dtype=dtype)
            wide_s[:, :cols], wide_t[:, :cols] = student, teacher
            student, teacher = wide_s[:, :cols], wide_t[:, :cols]
        weights = np.ones(rows)
        expected, expected_gs, expected_gt = reference(student, teacher, temperature, standardize,
                                                       reduction, weights)
        loss, gs, gt = lskd_ctypes.kd_loss_and_grad(
            student, teacher, teacher_grad=True, temperature=temperature,
            standardize=standardize, reduction=reduction)
        tolerance = TOLERANCE[dtype]
        label = f"{np.dtype(dtype).name} {rows}x{cols} standardize={standardize} " \
                f"reduction={reduction} T={temperature} strided={strided}"
        for what, got, want in (("loss", np.atleast_1d(loss), np.atleast_1d(expected)),
                                ("grad_student", gs, expected_gs),
                                ("grad_teacher", gt, expected_gt)):
            # A floor for values that are 0 analytically (two classes, standardized: both rows
            # become (-0.71, 0.71)), where what is left is the roundoff of terms of order T^2
            # (loss) or T / std (gradients).
            floor = 1e-2 * temperature ** 2 if what == "loss" else 0.1
            scale = max(np.max(np.abs(want)), floor)
            difference = np.max(np.abs(got.astype(np.float64) - want))
            note(np.dtype(dtype).name, what, difference, difference / scale)
            self.assertLessEqual(difference, tolerance * scale,
                                 f"{label}: {what} differs by {difference:.3g} "
                                 f"(scale {scale:.3g}, tolerance {tolerance:.1g} relative)")

    def test_grid(self):
        for dtype in (np.float64, np.float32):
            for rows, cols in SHAPES:
                for standardize in (True, False):
                    for reduction in ("batchmean", "sum", "none"):
                        for temperature in (2.0, 4.0):
                            strided = (rows + cols) % 2 == 0
                            with self.subTest(dtype=dtype, shape=(rows, cols),
                                              standardize=standardize, reduction=reduction,
                                              temperature=temperature):
                                self.check(dtype, rows, cols, standardize, reduction,
                                           temperature, strided)

    def test_strided_equals_contiguous(self):
        rng = np.random.default_rng(7)
        wide = rng.standard_normal((6, 40))
        teacher = rng.standard_normal((6, 30))
        a = lskd_ctypes.kd_loss_and_grad(wide[:, :30], teacher)
        b = lskd_ctypes.kd_loss_and_grad(np.ascontiguousarray(wide[:, :30]), teacher)
        self.assertEqual(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])

    def test_forward_only_and_in_place_output(self):
        rng = np.random.default_rng(8)
        student, teacher = rng.standard_normal((4, 9)), rng.standard_normal((4, 9))
        loss = lskd_ctypes.kd_loss(student, teacher)
        grad = np.zeros((4, 12))[:, :9]  # an output view with its own leading dimension
        self.assertAlmostEqual(lskd_ctypes.kd_loss(student, teacher, grad_student=grad), loss,
                               places=13)
        self.assertTrue(np.any(grad != 0))


class BadInputs(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(3)
        self.student = rng.standard_normal((4, 6)).astype(np.float32)
        self.teacher = rng.standard_normal((4, 6)).astype(np.float32)

    def test_wrong_dtype(self):
        with self.assertRaisesRegex(TypeError, "'student'.*float32 or float64"):
            lskd_ctypes.kd_loss(self.student.astype(np.int64), self.teacher)
        with self.assertRaisesRegex(TypeError, "'teacher' has dtype float64"):
            lskd_ctypes.kd_loss(self.student, self.teacher.astype(np.float64))
        with self.assertRaisesRegex(TypeError, "'student'.*native byte order"):
            lskd_ctypes.kd_loss(self.student.astype(">f4"), self.teacher)
        with self.assertRaisesRegex(TypeError, "'student' must be a numpy.ndarray"):
            lskd_ctypes.kd_loss(self.student.tolist(), self.teacher)

    def test_fortran_order(self):
        with self.assertRaisesRegex(ValueError, "'teacher' does not have contiguous rows"):
            lskd_ctypes.kd_loss(self.student, np.asfortranarray(self.teacher))

    def test_non_contiguous_columns(self):
        wide = np.zeros((4, 12), dtype=np.float32)
        with self.assertRaisesRegex(ValueError, "'student' does not have contiguous rows"):
            lskd_ctypes.kd_loss(wide[:, ::2], self.teacher)

    def test_shapes_and_outputs(self):
        with self.assertRaisesRegex(ValueError, "'student' must be 2-D"):
            lskd_ctypes.kd_loss(self.student.ravel(), self.teacher.ravel())
        with self.assertRaisesRegex(ValueError, r"'teacher' has shape \(4, 5\)"):
            lskd_ctypes.kd_loss(self.student, self.teacher[:, :5])
        readonly = np.zeros_like(self.student)
        readonly.flags.writeable = False
        with self.assertRaisesRegex(ValueError, "'grad_student' is an output and must be writeable"):
            lskd_ctypes.kd_loss(self.student, self.teacher, grad_student=readonly)
        with self.assertRaisesRegex(ValueError, "'reduction'"):
            lskd_ctypes.kd_loss(self.student, self.teacher, reduction="mean")

    def test_library_errors(self):
        bad = self.teacher.copy()
        bad[2, 3] = np.nan
        grad = np.full_like(self.student, 5.0)
        with self.assertRaisesRegex(lskd_ctypes.LskdDomainError,
                                    "lskd_kd_f32: teacher logits row 2 .*NaN.* class 3"):
            lskd_ctypes.kd_loss(self.student, bad, grad_student=grad)
        self.assertTrue(np.all(grad == 5.0), "an output was written on failure")
        with self.assertRaisesRegex(lskd_ctypes.LskdInvalidArgument, "'temperature'"):
            lskd_ctypes.kd_loss(self.student, self.teacher, temperature=-1.0)
        with self.assertRaises(ValueError):  # LskdError subclasses ValueError for these
            lskd_ctypes.kd_loss(self.student, self.teacher, ddof=3)
        # Options of the wrong type are refused, not coerced (ddof 1.9 is not ddof 1).
        with self.assertRaisesRegex(TypeError, "'ddof' must be an integer"):
            lskd_ctypes.kd_loss(self.student, self.teacher, ddof=1.9)
        with self.assertRaisesRegex(TypeError, "'temperature' must be a real number"):
            lskd_ctypes.kd_loss(self.student, self.teacher, temperature="2")
        with self.assertRaisesRegex(TypeError, "'eps' must be a real number"):
            lskd_ctypes.kd_loss(self.student, self.teacher, eps=True)
        self.assertEqual(lskd_ctypes.kd_loss(self.student, self.teacher, ddof=np.int64(1),
                                             temperature=np.float32(2.0)),
                         lskd_ctypes.kd_loss(self.student, self.teacher))

    def calls(self, grad):
        """Each wrapper function, as f(**options), writing into `grad` when it runs."""
        targets = [0, 1, 2, 3]
        return {
            "kd_loss": lambda **o: lskd_ctypes.kd_loss(self.student, self.teacher,
                                                       grad_student=grad, **o),
            "kd_loss_weighted": lambda **o: lskd_ctypes.kd_loss_weighted(
                self.student, self.teacher, grad_student=grad, **o),
            "dkd_loss": lambda **o: lskd_ctypes.dkd_loss(self.student, self.teacher, targets,
                                                         grad_student=grad, **o),
        }

    def test_integer_options_beyond_c_int(self):
        # A C int keeps only the low 32 bits: ddof 2**40 ran as 0 and 2**32 + 1 as 1.
        grad = np.full_like(self.student, 5.0)
        for function, call in self.calls(grad).items():
            for bad in (2**40, 2**32 + 1, -2**31 - 1, 2**31, np.int64(2**40), np.uint64(2**63),
                        10**30):
                with self.subTest(function=function, ddof=bad):
                    with self.assertRaisesRegex(ValueError, "'ddof' is .*outside the range of "
                                                "a C int"):
                        call(ddof=bad)
            self.assertTrue(np.all(grad == 5.0), "an output was written on failure")
            # Values in range, as Python or numpy integers, still run (0 and 1 succeed).
            for good in (0, 1, np.int32(1), np.uint8(0), np.int64(1)):
                call(ddof=good)
            grad[...] = 5.0

    def test_bool_options_must_be_bools(self):
        # bool("no") is True: a string, a number or None is refused, not taken for its truth.
        grad = np.full_like(self.student, 5.0)
        for function, call in self.calls(grad).items():
            names = ["standardize", "scale_by_t2"]
            if function != "kd_loss":
                names.append("return_grad_temperature")
            for name in names:
                for bad in ("no", "False", 0, 1, 1.0, None, [True], np.array([True])):
                    with self.subTest(function=function, option=name, value=bad):
                        with self.assertRaisesRegex(TypeError, f"'{name}' must be a bool"):
                            call(**{name: bad})
            self.assertTrue(np.all(grad == 5.0), "an output was written on failure")
        with self.assertRaisesRegex(TypeError, "'teacher_grad' must be a bool"):
            lskd_ctypes.kd_loss_and_grad(self.student, self.teacher, teacher_grad="no")
        # Python and numpy bools are taken as they are.
        for standardize in (True, False, np.bool_(True), np.bool_(False)):
            expected = lskd_ctypes.kd_loss(self.student, self.teacher,
                                           standardize=bool(standardize))
            self.assertEqual(lskd_ctypes.kd_loss(self.student, self.teacher,
                                                 standardize=standardize), expected)
        loss, dtau = lskd_ctypes.kd_loss_weighted(self.student, self.teacher,
                                                  return_grad_temperature=np.bool_(True),
                                                  scale_by_t2=np.bool_(False))
        self.assertIsInstance(dtau, float)
        self.assertIsNotNone(lskd_ctypes.kd_loss_and_grad(self.student, self.teacher,
                                                          teacher_grad=np.bool_(True))[2])


def dkd_reference(student, teacher, targets, temperature, alpha, beta, standardize):
    """DKD (Zhao et al., CVPR 2022) in float64 with autograd, batchmean: (loss, grad_student,
    grad_teacher); the target class is left out of the non-target softmax exactly."""
    s = torch.tensor(student, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(teacher, dtype=torch.float64, requires_grad=True)

    def normalize(logit):
        if not standardize:
            return logit
        return (logit - logit.mean(dim=-1, keepdims=True)) / (1e-7 + logit.std(dim=-1,
                                                                                keepdims=True))

    zs, zt = normalize(s) / temperature, normalize(t) / temperature
    target = torch.as_tensor(targets, dtype=torch.int64)
    mask = F.one_hot(target, zs.shape[1]).bool()
    ps, pt = F.softmax(zs, dim=1), F.softmax(zt, dim=1)
    ps_k, pt_k = ps[mask], pt[mask]
    tckd = pt_k * torch.log(pt_k / ps_k) + (1 - pt_k) * torch.log((1 - pt_k) / (1 - ps_k))
    # The target filled with a large finite value rather than -inf, whose 0 * inf would make
    # autograd's gradients NaN: exp(-1e4) is exactly 0 in float64.
    log_qs = F.log_softmax(zs.masked_fill(mask, -1e4), dim=1)
    log_qt = F.log_softmax(zt.masked_fill(mask, -1e4), dim=1)
    nckd = (log_qt.exp() * (log_qt - log_qs)).sum(1)
    loss = (temperature ** 2 * (alpha * tckd + beta * nckd)).mean()
    loss.backward()
    return loss.item(), s.grad.numpy(), t.grad.numpy()


class BeyondPlainKD(unittest.TestCase):
    """lskd_ctypes.kd_loss_weighted and dkd_loss."""

    def setUp(self):
        rng = np.random.default_rng(7)
        self.student = logits(rng, 6, 11, np.float64, 2.0)
        self.teacher = logits(rng, 6, 11, np.float64, 3.0)

    def test_weighted_ones_is_plain(self):
        for dtype in (np.float64, np.float32):
            s, t = self.student.astype(dtype), self.teacher.astype(dtype)
            for reduction in ("batchmean", "sum", "none"):
                plain, gs, _ = lskd_ctypes.kd_loss_and_grad(s, t, reduction=reduction)
                grad = np.empty_like(s)
                weighted = lskd_ctypes.kd_loss_weighted(s, t, np.ones(6), reduction=reduction,
                                                        grad_student=grad)
                np.testing.assert_allclose(weighted, plain, rtol=1e-6 if dtype == np.float32
                                           else 1e-13)
                np.testing.assert_allclose(grad, gs, rtol=1e-5, atol=1e-7)

    def test_weighted_rows_and_normalizer(self):
        weights = np.array([1.0, 0.0, 2.0, 0.5, 1.0, 0.0])
        student = self.student.copy()
        student[1, 4] = np.nan  # weight 0: not read
        rows = lskd_ctypes.kd_loss(self.student, self.teacher, reduction="none")
        grad = np.full_like(student, 3.0)
        loss = lskd_ctypes.kd_loss_weighted(student, self.teacher, weights, grad_student=grad)
        self.assertAlmostEqual(loss, float(weights @ rows / weights.sum()), places=12)
        self.assertTrue(np.all(grad[1] == 0) and np.all(grad[5] == 0))
        loss = lskd_ctypes.kd_loss_weighted(student, self.teacher, weights, normalizer=10.0)
        self.assertAlmostEqual(loss, float(weights @ rows / 10.0), places=12)
        per_row = lskd_ctypes.kd_loss_weighted(student, self.teacher, weights, reduction="none")
        np.testing.assert_allclose(per_row, weights * rows, rtol=1e-13, atol=0)

    def test_weighted_grad_temperature(self):
        loss, dtau = lskd_ctypes.kd_loss_weighted(self.student, self.teacher, temperature=3.0,
                                                  return_grad_temperature=True)
        h = 1e-5
        up = lskd_ctypes.kd_loss(self.student, self.teacher, temperature=3.0 + h)
        down = lskd_ctypes.kd_loss(self.student, self.teacher, temperature=3.0 - h)
        self.assertAlmostEqual(dtau, (up - down) / (2 * h), delta=1e-7 * (1 + abs(dtau)))

    def test_weighted_errors(self):
        grad = np.full_like(self.student, 5.0)
        with self.assertRaisesRegex(lskd_ctypes.LskdInvalidArgument,
                                    "lskd_kd_weighted_f64: 'row_weights' \\[2\\]"):
            lskd_ctypes.kd_loss_weighted(self.student, self.teacher, [1, 1, -1, 1, 1, 1],
                                         grad_student=grad)
        self.assertTrue(np.all(grad == 5.0), "an output was written on failure")
        with self.assertRaisesRegex(ValueError, "'row_weights' must have shape"):
            lskd_ctypes.kd_loss_weighted(self.student, self.teacher, [1, 1])

    def test_dkd_against_torch(self):
        targets = np.array([0, 10, 3, 3, 7, 1])
        for standardize in (False, True):
            for dtype, tolerance in ((np.float64, 1e-10), (np.float32, 5e-5)):
                s, t = self.student.astype(dtype), self.teacher.astype(dtype)
                expected, expected_gs, expected_gt = dkd_reference(
                    s.astype(np.float64), t.astype(np.float64), targets, 4.0, 1.0, 8.0,
                    standardize)
                gs, gt = np.empty_like(s), np.empty_like(t)
                loss, dtau = lskd_ctypes.dkd_loss(s, t, targets, standardize=standardize,
                                                  grad_student=gs, grad_teacher=gt,
                                                  return_grad_temperature=True)
                self.assertLessEqual(abs(loss - expected), tolerance * max(abs(expected), 1))
                for got, want in ((gs, expected_gs), (gt, expected_gt)):
                    scale = max(np.max(np.abs(want)), 1e-3)
                    self.assertLessEqual(np.max(np.abs(got - want)), tolerance * scale)
                if dtype == np.float64:
                    h = 1e-5
                    up = dkd_reference(s, t, targets, 4.0 + h, 1.0, 8.0, standardize)[0]
                    down = dkd_reference(s, t, targets, 4.0 - h, 1.0, 8.0, standardize)[0]
                    self.assertAlmostEqual(dtau, (up - down) / (2 * h),
                                           delta=1e-6 * (1 + abs(dtau)))

    def test_dkd_errors(self):
        grad = np.full_like(self.student, 5.0)
        with self.assertRaisesRegex(lskd_ctypes.LskdInvalidArgument,
                                    "lskd_dkd_f64: 'targets' \\[4\\] \\(row 4\\)"):
            lskd_ctypes.dkd_loss(self.student, self.teacher, [0, 1, 2, 3, 11, 0],
                                 grad_student=grad)
        self.assertTrue(np.all(grad == 5.0), "an output was written on failure")
        with self.assertRaisesRegex(lskd_ctypes.LskdInvalidArgument, "'beta'"):
            lskd_ctypes.dkd_loss(self.student, self.teacher, [0] * 6, beta=-1.0)
        with self.assertRaisesRegex(TypeError, "'alpha' must be a real number"):
            lskd_ctypes.dkd_loss(self.student, self.teacher, [0] * 6, alpha=None)

    def test_row_weights_are_real_numbers(self):
        # Strings were parsed, booleans read as 1/0 and complex numbers truncated to their real
        # part; now a TypeError naming 'row_weights', nothing written.
        rows = self.student.shape[0]
        grad = np.full_like(self.student, 5.0)
        for bad in (["1"] * rows, [True] * rows, np.ones(rows, dtype=np.complex128)):
            with self.assertRaisesRegex(TypeError, "'row_weights' must hold real numbers"):
                lskd_ctypes.kd_loss_weighted(self.student, self.teacher, bad,
                                             grad_student=grad)
        self.assertTrue(np.all(grad == 5.0), "an output was written on failure")
        expected = lskd_ctypes.kd_loss_weighted(self.student, self.teacher, np.ones(rows))
        for good in ([1] * rows, np.ones(rows, dtype=np.float32), [1.0] * rows):
            self.assertEqual(lskd_ctypes.kd_loss_weighted(self.student, self.teacher, good),
                             expected)

    def test_dkd_targets_are_integers(self):
        # A float target such as 2.7 was truncated to 2; now refused, naming 'targets'.
        grad = np.full_like(self.student, 5.0)
        for bad in ([0, 1, 2.7, 3, 4, 0], np.array([0, 1, 2, 3, 4, 0.5]),
                    [0, 1, 2, 3, float("nan"), 0]):
            with self.assertRaisesRegex(ValueError, "'targets' must hold integer class indices"):
                lskd_ctypes.dkd_loss(self.student, self.teacher, bad, grad_student=grad)
        for bad in (["0", "1", "2", "3", "4", "0"], [True, False, True, True, False, True]):
            with self.assertRaisesRegex(TypeError, "'targets' must hold integer class indices"):
                lskd_ctypes.dkd_loss(self.student, self.teacher, bad, grad_student=grad)
        # An unsigned index beyond int64 would wrap to a negative one: refused as it was given.
        huge = np.array([0, 1, 2, 3, 2**63 + 5, 0], dtype=np.uint64)
        with self.assertRaisesRegex(ValueError, r"targets\[4\] is 9223372036854775813"):
            lskd_ctypes.dkd_loss(self.student, self.teacher, huge, grad_student=grad)
        self.assertTrue(np.all(grad == 5.0), "an output was written on failure")
        # Integer arrays of any width and integral-valued lists give the same loss as before.
        expected = lskd_ctypes.dkd_loss(self.student, self.teacher, np.array([0, 1, 2, 3, 4, 0]))
        for good in ([0, 1, 2, 3, 4, 0], np.array([0, 1, 2, 3, 4, 0], dtype=np.int32),
                     np.array([0, 1, 2, 3, 4, 0], dtype=np.uint8), [0.0, 1.0, 2.0, 3.0, 4.0, 0.0],
                     [np.int64(0), 1, 2, 3, 4, 0]):
            self.assertEqual(lskd_ctypes.dkd_loss(self.student, self.teacher, good), expected)


class AutogradFunction(unittest.TestCase):
    def test_parity_and_backward(self):
        for dtype, tolerance in ((torch.float64, 1e-10), (torch.float32, 5e-5)):
            for reduction in ("batchmean", "sum", "none"):
                for standardize in (True, False):
                    torch.manual_seed(11)
                    s_data = torch.randn(6, 20, dtype=dtype) * 2
                    t_data = torch.randn(6, 20, dtype=dtype) * 3
                    weights = torch.rand(6, dtype=torch.float64) + 0.5
                    expected, expected_gs, expected_gt = reference(
                        s_data.numpy(), t_data.numpy(), 3.0, standardize, reduction,
                        weights.numpy())
                    student = s_data.clone().requires_grad_(True)
                    teacher = t_data.clone().requires_grad_(True)
                    loss = lskd_ctypes.kd_loss_torch(student, teacher, temperature=3.0,
                                                     standardize=standardize,
                                                     reduction=reduction)
                    self.assertEqual(loss.dtype, dtype)
                    if reduction == "none":
                        loss.backward(weights.to(dtype))
                    else:
                        loss.backward()
                    label = f"{dtype} {reduction} standardize={standardize}"
                    for what, got, want in (("loss", loss.detach(), expected),
                                            ("grad_student", student.grad, expected_gs),
                                            ("grad_teacher", teacher.grad, expected_gt)):
                        want = torch.as_tensor(want, dtype=torch.float64)
                        scale = max(want.abs().max().item(), 0.1)
                        difference = (got.to(torch.float64) - want).abs().max().item()
                        note(str(dtype).replace("torch.", "") + " autograd", what, difference,
                             difference / scale)
                        self.assertLessEqual(difference, tolerance * scale,
                                             f"{label}: {what} differs by {difference:.3g}")

    def test_teacher_without_grad(self):
        student = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
        teacher = torch.randn(3, 7, dtype=torch.float64)
        loss = lskd_ctypes.LskdKDLoss.apply(student, teacher)
        loss.backward()
        self.assertIsNone(teacher.grad)
        self.assertTrue(torch.autograd.gradcheck(
            lambda s, t: lskd_ctypes.kd_loss_torch(s, t, standardize=True),
            (student.detach().requires_grad_(True), teacher.requires_grad_(True)),
            eps=1e-6, atol=1e-7))

    def test_double_backward_is_refused(self):
        # The backward scales saved first-order gradients: it has no second-order term, so
        # differentiating it again must fail instead of silently leaving that term out.
        student = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
        teacher = torch.randn(3, 7, dtype=torch.float64)
        loss = lskd_ctypes.kd_loss_torch(student, teacher) + (student ** 3).sum()
        (grad,) = torch.autograd.grad(loss, student, create_graph=True)
        with self.assertRaisesRegex(RuntimeError, "LskdKDLoss has no second derivative"):
            torch.autograd.grad(grad.sum(), student)
        # Also when the loss is scaled by a tensor that requires grad (grad_output does then).
        weight = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
        (scaled,) = torch.autograd.grad(lskd_ctypes.kd_loss_torch(student, teacher) * weight,
                                        student, create_graph=True)
        with self.assertRaisesRegex(RuntimeError, "LskdKDLoss has no second derivative"):
            scaled.sum().backward()
        # First-order gradients with create_graph=True are still those of the plain backward.
        expected = torch.autograd.grad(lskd_ctypes.kd_loss_torch(student, teacher), student)[0]
        np.testing.assert_allclose(grad.detach().numpy(),
                                   expected.numpy() + 3 * student.detach().numpy() ** 2,
                                   rtol=1e-12, atol=1e-12)

    def test_options_are_checked(self):
        student = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
        teacher = torch.randn(3, 7, dtype=torch.float64)
        with self.assertRaisesRegex(TypeError, "'standardize' must be a bool"):
            lskd_ctypes.kd_loss_torch(student, teacher, standardize="no")
        with self.assertRaisesRegex(ValueError, "'ddof' is .*outside the range of a C int"):
            lskd_ctypes.kd_loss_torch(student, teacher, ddof=2**32 + 1)

    def test_non_contiguous_tensor_is_accepted(self):
        student = torch.randn(7, 3, dtype=torch.float64).t().requires_grad_(True)  # 3 x 7
        teacher = torch.randn(3, 7, dtype=torch.float64)
        loss = lskd_ctypes.kd_loss_torch(student, teacher)
        loss.backward()
        expected, expected_gs, _ = reference(student.detach().numpy(), teacher.numpy(), 2.0,
                                             True, "batchmean")
        self.assertAlmostEqual(loss.item(), float(expected), places=12)
        np.testing.assert_allclose(student.grad.numpy(), expected_gs, atol=1e-12)


if __name__ == "__main__":
    print(f"liblskd_c {lskd_ctypes.version()} ({lskd_ctypes.simd_arch()}), numpy {np.__version__}, "
          f"torch {torch.__version__}")
    program = unittest.main(exit=False, verbosity=1)
    print("Largest differences from the PyTorch reference (max abs, max rel to the largest "
          "reference value):")
    for (dtype, what), (absolute, relative) in sorted(WORST.items()):
        print(f"  {dtype:18s} {what:13s} abs {absolute:.3e}  rel {relative:.3e}")
    sys.exit(0 if program.result.wasSuccessful() else 1)
