#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Fits the polynomial behind lskd's float exp (include/lskd/detail/pack.hpp, exp_of).

exp(r) on |r| <= ln(2)/2 (a little wider, for the rounding of k) by a degree-6 polynomial with
p(0) = 1, near-minimax in relative error: Lawson's iteratively reweighted least squares on
Chebyshev points. Prints the exact-arithmetic error and the float32 coefficients, highest
degree last. Needs numpy only. The C++ test "exp_of" checks the float evaluation against
std::exp in double.
"""
import numpy as np

HALF_WIDTH = 0.3466 + 1e-3
DEGREE = 6

r = np.cos(np.linspace(0.0, np.pi, 4001)) * HALF_WIDTH
f = np.exp(r)
powers = np.vstack([r**k for k in range(1, DEGREE + 1)]).T  # the constant term is fixed at 1
weights = np.full_like(r, 1.0 / len(r))
for _ in range(200):
    scale = np.sqrt(weights) / f
    coefficients, *_ = np.linalg.lstsq(powers * scale[:, None], (f - 1.0) * scale, rcond=None)
    error = (1.0 + powers @ coefficients - f) / f
    weights = weights * np.abs(error)
    weights /= weights.sum()

print("largest relative error, exact arithmetic: %.3g" % np.abs(error).max())
for degree, c in enumerate(np.concatenate([[1.0], coefficients]).astype(np.float32)):
    print("c%d = %r" % (degree, float(c)))
