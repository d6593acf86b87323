"""Week 8 at small size: every verified result against an independent prediction.

Negative controls: a flipped kernel (convolution instead of cross-correlation)
fails the comparison with lax; a locally connected layer and an off-by-one
padding fail the equivariance check; the guess (p - 1) / p fails the pooling
check; the stride-blind formula fails the receptive-field measurement; the
unpooled (position-matched) kernel fails the conv-NTK check and the MLP's kernel
is not shift invariant; an MLP fails the shifted-digits check; a transposed draw
fails the check that ``normal`` reproduces ``jax.random.normal``.
"""

import jax
import jax.numpy as jnp
import numpy as np

import convnets as cv


def test_direct_conv_equals_lax_within_rounding(key):
    res = cv.run_conv_check(kernel_sizes=(3, 5), size=12, channels=4, out_channels=3, key=key)
    # Two float32 sums of n = k*k*C products differ by at most 2 n u sum|w x| (Higham, sec. 3.1).
    assert np.all(res.max_error <= res.bound)
    # Negative control: the flipped kernel differs by O(1) of sum|w x|, far above the bound.
    assert np.all(res.flipped_error > 100 * res.bound)


def test_flat_normal_draws_the_same_numbers(key):
    # normal() draws flat and reshapes to compile faster; it must not change the experiments.
    shape = (3, 4, 5)
    k1, k2, k3, k4 = (jax.random.clone(key) for _ in range(4))  # the same key, on purpose
    expected = jax.random.normal(k1, shape)
    assert bool(jnp.array_equal(cv.normal(k2, shape), expected))
    assert bool(jnp.array_equal(cv.normal_now(k3, shape), expected))
    # Negative control: the same count of numbers in another layout is not the same array.
    assert not bool(jnp.array_equal(cv.normal(k4, (5, 4, 3)).transpose(2, 1, 0), expected))


def test_strided_direct_conv_and_patches(key):
    x_key, w_key = jax.random.split(key)
    x = jax.random.normal(x_key, (11, 11, 2))
    w = jax.random.normal(w_key, (3, 3, 2, 5))
    scale = cv.conv2d_lax(jnp.abs(x), jnp.abs(w), stride=2)
    err = jnp.abs(cv.conv2d_direct(x, w, stride=2) - cv.conv2d_lax(x, w, stride=2)) / scale
    assert float(jnp.max(err)) <= 2 * 18 * cv.EPS32  # n = 3*3*2 terms
    same = cv.conv2d_lax(cv.pad(x, 1, mode="zero"), w)
    patches = cv.conv2d_patches(x, w)
    scale = cv.conv2d_lax(cv.pad(jnp.abs(x), 1, mode="zero"), jnp.abs(w))
    assert float(jnp.max(jnp.abs(patches - same) / scale)) <= 2 * 18 * cv.EPS32


def test_equivariance_band_and_controls(key):
    res = cv.run_equivariance(kernel_sizes=(3, 5), shifts=(1, 2, 3, 5), size=16, channels=2,
                              out_channels=2, map_shift=(5, 1), key=key)
    # Circular padding: the same products summed in the same order, so equal to rounding.
    assert res.circular_error <= 1e-6
    # Zero padding: the rows with error are exactly those within h of either seam.
    assert res.mask_mismatch == 0
    assert np.array_equal(res.band_measured, res.band_predicted)
    # Negative controls: untied weights and an off-by-one padding break equivariance by O(1).
    assert res.local_error > 0.1
    assert res.off_by_one_error > 0.05


def test_band_formula_counts_rows():
    for k in (3, 5, 7):
        for s in range(1, 9):
            h = (k - 1) // 2
            assert cv.predicted_band(32, k, s).sum() == min(s, 2 * h) + 2 * h


def test_circulant_fourier_and_commutant(key):
    res = cv.run_circulant(n=8, k=3, key=key)
    # Eigenvalues from the DFT formula, in float64 arithmetic on a float32 kernel.
    assert res.eig_error < 1e-10
    # Shift-commuting matrices form an n-dimensional space (the circulants).
    assert res.commutant_dim == 8
    # Negative control: a random dense matrix does not commute with the shift.
    a = np.asarray(jax.random.normal(jax.random.key(1), (8, 8)))
    p = np.roll(np.eye(8), 1, axis=0)
    assert np.max(np.abs(a @ p - p @ a)) > 0.1


def test_max_pool_fraction_matches_exchangeability(key):
    res = cv.run_pooling(pool_sizes=(2, 4), size=16, n_images=64, channels=2, key=key)
    # Monte Carlo over 64 independent images: 5 standard errors.
    assert np.all(np.abs(res.fraction - res.predicted) <= 5 * res.sem)
    # Negative control: the naive guess (p - 1) / p (the shared columns over the window)
    # is rejected by the same 5-standard-error check.
    naive = (res.pool_sizes - 1) / res.pool_sizes
    assert np.all(np.abs(res.fraction - naive) > 5 * res.sem)
    # Shifts by the stride p only move the pooled map: all outputs unchanged.
    assert np.all(res.aligned == 1.0)
    # Global average pooling: exact with circular padding, not with zero padding.
    assert res.gap_circular < 1e-5
    assert res.gap_zero > 1e-3


def test_receptive_field_formula(key):
    res = cv.run_receptive_field(depths=(1, 2, 3), channels=2, key=key)
    # The support of jax.grad is an independent measurement: it must equal r_L exactly.
    assert np.array_equal(res.measured, res.predicted)
    # Negative control: the same measurement rejects the stride-blind formula 1 + L (k - 1)
    # for the strided and dilated stacks once L >= 2.
    naive = 1 + res.depths * 2
    assert np.all(res.measured[1:, 1:] != naive[None, 1:])


def test_cnn_keeps_accuracy_under_shifts_mlp_does_not(key):
    res = cv.run_shifted_digits(shifts=(0, 2), n_seeds=2, steps=150, width=64, key=key)
    assert res.mlp_params > res.cnn_params
    cnn_drop = res.cnn_acc[:, 0] - res.cnn_acc[:, 1]
    mlp_drop = res.mlp_acc[:, 0] - res.mlp_acc[:, 1]
    # Both learn the centred digits (chance is 0.1).
    assert np.all(res.cnn_acc[:, 0] > 0.8) and np.all(res.mlp_acc[:, 0] > 0.9)
    # Every seed: the MLP loses at least 0.3 more accuracy than the CNN at s = 2
    # (lecture size: drops of about 0.1 vs 0.8; 0.3 leaves room for seed spread).
    assert np.all(mlp_drop - cnn_drop > 0.3)


def test_conv_kernel_is_patch_average_of_relu_ntk(key):
    res = cv.run_conv_kernel(width=2048, n=8, k=3, key=key)
    # The empirical NTK is the mean of C i.i.d. channel terms: each entry is within a few
    # standard errors of the infinite-width formula. 81 entries (correlated): a Gaussian
    # |z| > 5 has probability 6e-7, so max |z| <= 5 fails by chance with probability < 1e-4.
    assert res.max_z <= 5.0
    # Negative control: the kernel of the unpooled layer (only p = q) is rejected.
    assert res.max_z_diagonal > 5.0
    # Weight sharing + pooling: shifting one argument permutes the patches, exactly.
    assert res.invariance_error <= 1e-5  # float32 sums of n terms in another order
    # Negative control: the MLP's kernel changes by O(1) when one input is shifted.
    assert res.mlp_variation > 0.05
