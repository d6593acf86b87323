"""Week 9: every verified result at small size, each with a negative control that the same check rejects.

Tolerances. Exact symmetries are checked against ROUNDOFF = 1e-5 relative: the two sides
of an equivariance identity compute the same float32 sums in different orders, whose
relative rounding error is of order sqrt(terms) * 2^-23 ~ 1e-6 for the few hundred terms
here (measured 1e-7 to 2e-6). Every negative control is required to exceed 0.1, which
is 10^4 times ROUNDOFF; measured values are of order one. A wrong action (a missing
cyclic shift, a wrong rotation sense) or a non-invariant layer fails both kinds of check.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import equivariance as ex

ROUNDOFF = 1e-5
ORDER_ONE = 0.1


def _image(key, size=8, channels=1):
    return jax.random.normal(key, (channels, size, size))


# ---------------------------------------------------------------------------
# Group actions
# ---------------------------------------------------------------------------


def test_rotations_form_c4(key):
    """R^4 = identity and R^a R^b = R^(a+b) for images and for p4 feature maps (an action, eq. action)."""
    kx, kf = jax.random.split(key)
    x = _image(kx)
    f = jax.random.normal(kf, (3, 4, 6, 6))
    np.testing.assert_array_equal(ex.rotate(x, 4), x)
    np.testing.assert_array_equal(ex.rotate_p4(f, 4), f)
    for a, b in itertools.product(range(4), repeat=2):
        np.testing.assert_array_equal(ex.rotate_p4(ex.rotate_p4(f, a), b), ex.rotate_p4(f, a + b))
    # the shift really moves channel s to s + 1: a p4 map constant in space
    g = jnp.arange(4.0)[None, :, None, None] * jnp.ones((1, 4, 2, 2))
    np.testing.assert_array_equal(ex.rotate_p4(g, 1)[0, :, 0, 0], jnp.array([3.0, 0.0, 1.0, 2.0]))


def test_reynolds_is_an_invariant_projection(key):
    """(Q f)(R x) = (Q f)(x) and Q(Q f) = Q f, for a non-invariant f (a random CNN); f itself is not invariant."""
    kp, kx = jax.random.split(key)
    params = ex.init_cnn((4, 4, 8), key=kp)
    x = _image(kx)[0]
    f = lambda z: ex.cnn(params, z)  # noqa: E731
    qf = lambda z: ex.reynolds(f, z)  # noqa: E731
    assert ex.relative_error(f(ex.rotate(x, 1)), f(x)) > ORDER_ONE  # control: f is not invariant
    for k in (1, 2, 3):
        assert ex.relative_error(qf(ex.rotate(x, k)), qf(x)) < ROUNDOFF
    assert ex.relative_error(ex.reynolds(qf, x), qf(x)) < ROUNDOFF


def test_reynolds_logits_equal_the_averaged_model(key):
    """reynolds_logits (the shortcut run_rotated_digits uses) against averaged_cnn evaluated
    on the orbit directly; the un-averaged orbit logits (a wrong shortcut) fail the same check."""
    kp, kx = jax.random.split(key)
    params = ex.init_cnn((4, 4, 8), key=kp)
    x = jax.random.uniform(kx, (5, 8, 8))
    direct = ex.orbit_logits(ex.averaged_cnn, params, x)
    plain = ex.orbit_logits(ex.cnn, params, x)
    assert ex.relative_error(ex.reynolds_logits(plain), direct) < ROUNDOFF
    assert ex.relative_error(plain, direct) > ORDER_ONE


# ---------------------------------------------------------------------------
# Verified result 1: p4 layers are equivariant, an ordinary CNN is not
# ---------------------------------------------------------------------------


def test_lifting_layer_rotates_and_shifts(key):
    """Prediction: Phi(R x) = rot90(roll(Phi(x), 1, axis=rotation)) exactly up to round-off;
    a plain spatial rotation (no shift) is the wrong prediction and must fail."""
    kx, kw = jax.random.split(key)
    x = _image(kx, size=9, channels=2)  # odd size too: rotation about the centre pixel
    w = jax.random.normal(kw, (3, 2, 3, 3))
    out, out_rot = ex.lifting_conv(x, w), ex.lifting_conv(ex.rotate(x, 1), w)
    assert ex.relative_error(out_rot, ex.rotate_p4(out, 1)) < ROUNDOFF
    assert ex.relative_error(out_rot, ex.rotate(out, 1)) > ORDER_ONE  # wrong action: no shift


def test_run_equivariance_small(key):
    """p4 block error at round-off; the no-shift group convolution and the ordinary CNN
    (negative controls) fail the same check by order one."""
    res = ex.run_equivariance(size=8, channels=2, kernel=3, n_seeds=3, key=key)
    assert res.lifting.shape == (3, 3)
    assert float(jnp.max(res.lifting)) < ROUNDOFF
    assert float(jnp.max(res.p4_block)) < ROUNDOFF
    assert float(jnp.min(res.no_shift)) > ORDER_ONE
    assert float(jnp.min(res.cnn)) > ORDER_ONE


def test_group_conv_equivariant_for_every_rotation(key):
    """[R^k f] * psi = R^k [f * psi] for k = 1, 2, 3 (Cohen & Welling 2016); the layer without
    the cyclic shift of the filter's rotation axis fails the same check by order one."""
    kf, kw = jax.random.split(key)
    f = jax.random.normal(kf, (2, 4, 8, 8))
    w = jax.random.normal(kw, (3, 2, 4, 3, 3))
    for k in (1, 2, 3):
        lhs = ex.group_conv(ex.rotate_p4(f, k), w)
        assert ex.relative_error(lhs, ex.rotate_p4(ex.group_conv(f, w), k)) < ROUNDOFF
        wrong = ex.group_conv(ex.rotate_p4(f, k), w, shift=False)
        assert ex.relative_error(wrong, ex.rotate_p4(ex.group_conv(f, w, shift=False), k)) > ORDER_ONE


def test_group_conv_on_rotation_constant_input_is_lifting(key):
    """Independent check of eq. group-conv: if f(s, u) = x(u) for every s, the sum over s
    folds the filter's rotation axis, [f * psi](t, r) = (x * R^r (sum_s psi_s))(t):
    a lifting convolution with the summed filter."""
    kx, kw = jax.random.split(key)
    x = _image(kx, channels=2)
    w = jax.random.normal(kw, (3, 2, 4, 3, 3))
    f = jnp.broadcast_to(x[:, None], (2, 4, 8, 8))
    np.testing.assert_allclose(ex.group_conv(f, w), ex.lifting_conv(x, w.sum(axis=2)), rtol=1e-5, atol=1e-5)


def test_pooling_commutes_with_rotations(key):
    """2x2 pooling on an even grid commutes with the p4 action (blocks go to blocks).

    Compared in relative Frobenius norm against ROUNDOFF: an element-wise rtol would
    flag entries where the four summands nearly cancel (measured: 1e-6 relative on an
    entry of size 7e-3, an absolute error of one ulp of the summands)."""
    f = jax.random.normal(key, (2, 4, 8, 8))
    for k in (1, 2, 3):
        lhs = ex.pool2(ex.rotate_p4(f, k))
        assert ex.relative_error(lhs, ex.rotate_p4(ex.pool2(f), k)) < ROUNDOFF
        # the same check rejects the wrong action (plane rotation without the cyclic shift)
        assert ex.relative_error(lhs, ex.rotate(ex.pool2(f), k)) > ORDER_ONE


def test_conv2d_is_cross_correlation(key):
    """conv2d against the formula (x * w)_o(p) = sum_{c,q} x_c(p + q) w_{o,c}(q), zero padding."""
    kx, kw = jax.random.split(key)
    x = np.asarray(_image(kx, size=5, channels=2))
    w = np.asarray(jax.random.normal(kw, (3, 2, 3, 3)))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    expected = np.zeros((3, 5, 5))
    for o, i, j in itertools.product(range(3), range(5), range(5)):
        expected[o, i, j] = np.sum(xp[:, i:i + 3, j:j + 3] * w[o])
    np.testing.assert_allclose(ex.conv2d(jnp.asarray(x), jnp.asarray(w)), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# Verified results 2 and 3: rotated digits, augmentation
# ---------------------------------------------------------------------------


def test_p4_net_is_invariant_and_cnn_is_not(key):
    kp, kc, kx = jax.random.split(key, 3)
    p4 = ex.init_p4_net((2, 2, 4), key=kp)
    net = ex.init_cnn((8, 8, 16), key=kc)
    x = jax.random.uniform(kx, (8, 8))
    for k in (1, 2, 3):
        assert ex.relative_error(ex.p4_net(p4, ex.rotate(x, k)), ex.p4_net(p4, x)) < ROUNDOFF
        assert ex.relative_error(ex.cnn(net, ex.rotate(x, k)), ex.cnn(net, x)) > ORDER_ONE


def test_digit_images():
    (x_tr, y_tr), (x_te, y_te) = ex.digit_images(key=jax.random.key(3), n_train=100)
    assert x_tr.shape == (100, 8, 8) and x_te.shape == (1697, 8, 8)
    assert float(x_tr.min()) >= 0.0 and float(x_tr.max()) <= 1.0
    assert set(np.unique(np.asarray(y_te))) == set(range(10))


@pytest.fixture(scope="module")
def small_digits():
    """One tiny run shared by the two digit tests (training is the expensive part)."""
    return ex.run_rotated_digits(n_train=200, steps=40, n_seeds=1, p4_channels=(2, 4, 16),
                                 key=jax.random.key(11))


def test_rotated_digits_small(small_digits):
    """The p4 model's test accuracy is the same at every angle (|change| <= 2 test digits: arg-max
    ties within round-off); the CNN's accuracy on rotated digits falls below half its upright
    accuracy (negative control of the same comparison)."""
    acc = small_digits.accuracy
    assert np.max(np.abs(acc["p4"] - acc["p4"][:, :1])) <= 2 / small_digits.n_test
    # it learnt something, so the flat accuracy is not that of a constant classifier: chance is
    # 0.1 with a standard error of 0.008 on 1597 test digits, and 0.3 is 25 standard errors above
    assert acc["p4"][0, 0] > 0.3
    assert acc["cnn"][0, 0] > 0.7
    assert acc["cnn"][:, 1:].mean() < 0.5 * acc["cnn"][:, 0].mean()
    assert np.max(np.abs(acc["averaged"] - acc["averaged"][:, :1])) <= 2 / small_digits.n_test


def test_augmentation_is_approximate_averaging_is_exact(small_digits):
    inv = small_digits.invariance
    assert inv["p4"].max() < ROUNDOFF and inv["averaged"].max() < ROUNDOFF
    assert inv["augmented"].min() > 1e-3  # learnt, not exact
    assert inv["augmented"].mean() < inv["cnn"].mean()  # but more invariant than no augmentation
    assert inv["cnn"].min() > ORDER_ONE


# ---------------------------------------------------------------------------
# Verified result 4: Deep Sets
# ---------------------------------------------------------------------------


def test_variance_is_sum_decomposable(key):
    """The target of run_deep_sets with latent dimension 2: phi(x) = (x, x^2), rho(s) = s_2/M - (s_1/M)^2."""
    x = jax.random.normal(key, (5, 8))
    s1, s2 = x.sum(axis=1), (x**2).sum(axis=1)
    np.testing.assert_allclose(ex.set_variance(x), s2 / 8 - (s1 / 8) ** 2, rtol=1e-5, atol=1e-6)


def test_permute_sets_permutes_each_row(key):
    """Each row is a rearrangement of itself (same sorted values) and the rows are really
    reordered: for M = 8, P(a uniform permutation fixes a row) = 1/8! ~ 2.5e-5 per row."""
    kx, kp = jax.random.split(key)
    x = jax.random.normal(kx, (64, 8))
    perm = ex.permute_sets(x, key=kp)
    np.testing.assert_array_equal(jnp.sort(perm, axis=1), jnp.sort(x, axis=1))
    assert int(jnp.sum(jnp.all(perm == x, axis=1))) <= 1


def test_run_deep_sets_small(key):
    res = ex.run_deep_sets(n_train=128, n_test=256, steps=300, n_seeds=2, key=key)
    assert float(jnp.max(res.deep_set_perm_init)) < ROUNDOFF
    assert float(jnp.max(res.deep_set_perm)) < ROUNDOFF
    assert float(jnp.min(res.mlp_perm_init)) > ORDER_ONE  # negative control
    assert float(jnp.min(res.mlp_perm)) > ORDER_ONE  # still not invariant after training
    # both learn something; the Deep Set better (measured 0.1-0.2 vs 0.5-0.7 at this size)
    assert float(jnp.max(res.deep_set_test)) < 0.5
    assert float(jnp.mean(res.deep_set_test)) < float(jnp.mean(res.mlp_test))


# ---------------------------------------------------------------------------
# Verified result 5: EGNN
# ---------------------------------------------------------------------------


def test_random_orthogonal_includes_reflections(key):
    qs = jax.vmap(lambda k: ex.random_orthogonal(k, 3))(jax.random.split(key, 64))
    np.testing.assert_allclose(jnp.einsum("nij,nik->njk", qs, qs), jnp.broadcast_to(jnp.eye(3), (64, 3, 3)),
                               atol=1e-5)
    dets = np.asarray(jnp.linalg.det(qs))
    # Haar on O(3): det = -1 with probability 1/2; P(fewer than 16 of 64) < 1e-4
    assert 16 <= np.sum(dets < 0) <= 48


def test_run_egnn_small(key):
    res = ex.run_egnn(n_nodes=6, hidden=8, n_seeds=8, key=key)
    assert float(jnp.max(res.coords)) < ROUNDOFF
    assert float(jnp.max(res.features)) < ROUNDOFF
    assert float(jnp.mean(res.naive_coords)) > ORDER_ONE  # negative control
    assert float(jnp.mean(res.naive_features)) > ORDER_ONE


def test_egnn_translation_only_is_exact_for_the_control_too(key):
    """The control feeds x_i - x_j: still translation invariant, so its failure is due to rotations only."""
    kp, kx, kh = jax.random.split(key, 3)
    params = ex.init_egnn(4, 8, 3, key=kp, invariant=False)
    x, h = jax.random.normal(kx, (5, 3)), jax.random.normal(kh, (5, 4))
    t = jnp.array([1.0, -2.0, 0.5])
    x1, h1 = ex.egnn_layer(params, x, h, invariant=False)
    x2, h2 = ex.egnn_layer(params, x + t[None, :], h, invariant=False)
    assert ex.relative_error(x2, x1 + t[None, :]) < ROUNDOFF and ex.relative_error(h2, h1) < ROUNDOFF
