"""Week 9: geometric deep learning: invariance and equivariance, measured.

A map ``f`` between spaces on which a group ``G`` acts (through representations
``rho_in`` and ``rho_out``) is *equivariant* if ``f(rho_in(g) x) = rho_out(g) f(x)``
for every ``g`` in ``G``, and *invariant* if ``rho_out`` is trivial. This module
builds three equivariant architectures from scratch and measures their symmetry
errors against float32 round-off, each beside a negative control that the same
check rejects:

1. p4 group convolutions (Cohen & Welling 2016) on square images: a lifting
   layer ``Z^2 -> p4`` and a group convolution ``p4 -> p4`` are equivariant to
   rotations by multiples of 90 degrees; an ordinary convolution is not
   (``run_equivariance``).
2. A rotation-invariant p4 network trained on upright digits keeps its accuracy
   on rotated digits while an ordinary CNN's collapses; a CNN trained with
   rotation augmentation is only approximately invariant (``run_rotated_digits``).
3. Deep Sets (Zaheer et al. 2017), ``rho(sum_i phi(x_i))``, are permutation
   invariant; an MLP on the concatenated set is not (``run_deep_sets``).
4. An E(n)-equivariant graph layer (Satorras, Hoogeboom & Welling 2021)
   commutes with orthogonal maps (reflections included) and translations;
   a layer fed raw relative positions does not (``run_egnn``).

Conventions. Images are ``(C, H, W)`` arrays (NCHW for ``lax.conv_general_dilated``
after adding the batch axis); a feature map on p4 is ``(C, 4, H, W)``, the axis
of length 4 indexing the rotation ``r`` in ``{0, 1, 2, 3}`` (angle ``r * 90``
degrees, the sense of ``jnp.rot90``). The rotation ``R`` acts on an image by
``jnp.rot90`` of its two spatial axes and on a p4 feature map by that spatial
rotation *and* a cyclic shift of the rotation axis (``rotate_p4``). Every model
is written for ONE example and batched with ``jax.vmap``.

References:
    Bronstein, Bruna, Cohen & Velickovic (2021), Geometric deep learning: grids,
        groups, graphs, geodesics, and gauges, arXiv:2104.13478.
    Cohen & Welling (2016), Group equivariant convolutional networks,
        arXiv:1602.07576.
    Zaheer, Kottur, Ravanbakhsh, Poczos, Salakhutdinov & Smola (2017), Deep sets,
        arXiv:1703.06114.
    Wagstaff, Fuchs, Engelcke, Posner & Osborne (2019), On the limitations of
        representing functions on sets, arXiv:1901.09006.
    Satorras, Hoogeboom & Welling (2021), E(n) equivariant graph neural networks,
        arXiv:2102.09844.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from dlcourse import data as course_data
from dlcourse import metrics, mlp, plotting, train

Array = jax.Array
FLOAT32_EPS = float(np.finfo(np.float32).eps)
"""Machine epsilon of float32, ``2^-23``: the scale of round-off in every check."""

# ---------------------------------------------------------------------------
# Group actions
# ---------------------------------------------------------------------------


def rotate(x: Array, k: int | Array) -> Array:
    """Rotate an image (or a stack of images) by ``k * 90`` degrees: ``(R^k x)(p) = x(R^{-k} p)``.

    Acts on the last two (spatial) axes, about the centre of the square grid,
    which maps the pixel grid onto itself.
    """
    return jnp.rot90(x, k, axes=(-2, -1))


def rotate_p4(f: Array, k: int | Array) -> Array:
    """The action of the rotation ``R^k`` on a p4 feature map ``f[..., s, i, j]``.

    ``(R^k f)(s, p) = f(s - k, R^{-k} p)``: rotate the plane and shift the
    rotation axis (axis ``-3``) cyclically by ``k``. This is the regular
    representation of p4 restricted to rotations about the grid centre.
    """
    return rotate(jnp.roll(f, k, axis=-3), k)


def reynolds(fn, x: Array) -> Array:
    """Average of ``fn`` over the rotation group C4 acting on the input: ``(1/4) sum_k fn(R^k x)``.

    For any ``fn`` this is invariant, ``reynolds(fn, R x) = reynolds(fn, x)``,
    and the operator ``fn -> reynolds(fn, .)`` is a projection (idempotent).
    """
    return sum(fn(rotate(x, k)) for k in range(4)) / 4


# ---------------------------------------------------------------------------
# Convolutions: ordinary, lifting, group
# ---------------------------------------------------------------------------


def conv2d(x: Array, w: Array) -> Array:
    """Cross-correlation with zero padding, stride 1: ``(x * w)_o(p) = sum_{c,q} x_c(p + q) w_{o,c}(q)``.

    Args:
        x: image, shape ``(C_in, H, W)``.
        w: filters, shape ``(C_out, C_in, k, k)`` with ``k`` odd ("SAME" padding).

    Returns:
        Feature map of shape ``(C_out, H, W)``.
    """
    return lax.conv_general_dilated(x[None], w, (1, 1), "SAME")[0]


def lifting_conv(x: Array, w: Array) -> Array:
    """Lifting convolution ``Z^2 -> p4``: one correlation per rotated copy of the filter.

    ``[x * psi](t, r) = sum_{y} x(y) psi(R^{-r}(y - t)) = (x * R^r psi)(t)``,
    so the output at rotation ``r`` is the ordinary correlation with the filter
    rotated by ``r * 90`` degrees.

    Args:
        x: image, shape ``(C_in, H, W)``.
        w: filters, shape ``(C_out, C_in, k, k)``.

    Returns:
        p4 feature map, shape ``(C_out, 4, H, W)``.
    """
    c_out, c_in, k, _ = w.shape
    filters = jnp.stack([rotate(w, r) for r in range(4)], axis=1)  # (C_out, 4, C_in, k, k)
    out = conv2d(x, filters.reshape(c_out * 4, c_in, k, k))
    return out.reshape(c_out, 4, *x.shape[-2:])


def group_conv(f: Array, w: Array, *, shift: bool = True) -> Array:
    """Group convolution ``p4 -> p4`` (Cohen & Welling 2016, eq. 10).

    ``[f * psi](t, r) = sum_{s, y} f(s, y) psi(s - r, R^{-r}(y - t))``: for output
    rotation ``r`` the filter is rotated in the plane by ``r * 90`` degrees AND its
    rotation axis is shifted cyclically by ``r``. All four are stacked into one
    ordinary convolution with ``4 C_in`` input and ``4 C_out`` output channels.

    Args:
        f: p4 feature map, shape ``(C_in, 4, H, W)``.
        w: filters on p4, shape ``(C_out, C_in, 4, k, k)``.
        shift: apply the cyclic shift (``False`` gives a deliberately wrong
            layer that only rotates the filters in the plane: a negative control).

    Returns:
        p4 feature map, shape ``(C_out, 4, H, W)``.
    """
    c_out, c_in, _, k, _ = w.shape
    filters = jnp.stack(
        [rotate(jnp.roll(w, r, axis=2) if shift else w, r) for r in range(4)], axis=1
    )  # (C_out, 4, C_in, 4, k, k)
    out = conv2d(f.reshape(c_in * 4, *f.shape[-2:]), filters.reshape(c_out * 4, c_in * 4, k, k))
    return out.reshape(c_out, 4, *f.shape[-2:])


def pool2(f: Array) -> Array:
    """Average pooling over disjoint 2x2 blocks of the last two axes (coarsening).

    On an even square grid the blocks are permuted by 90-degree rotations, so
    pooling commutes with ``rotate`` and ``rotate_p4`` exactly.
    """
    *lead, h, w = f.shape
    return f.reshape(*lead, h // 2, 2, w // 2, 2).mean(axis=(-3, -1))


def he_normal(key: Array, shape: tuple[int, ...], fan_in: int) -> Array:
    """Weights ``N(0, 2 / fan_in)`` (He initialization), drawn flat and reshaped."""
    return jnp.sqrt(2.0 / fan_in) * course_data.normal(key, shape)


def he_normals(key: Array, shapes, fan_ins) -> list[Array]:
    """Several He-initialized arrays ``N(0, 2 / fan_in)`` cut from ONE flat normal draw.

    Same law as one ``he_normal`` per array; one random-number program to
    compile instead of one per shape (with jax 0.10 on CPU each costs about a
    second, more than these small experiments' arithmetic).
    """
    sizes = [int(np.prod(shape)) for shape in shapes]
    z = course_data.normal(key, (sum(sizes),))
    out, start = [], 0
    for shape, size, fan_in in zip(shapes, sizes, fan_ins):
        out.append(jnp.sqrt(2.0 / fan_in) * z[start : start + size].reshape(shape))
        start += size
    return out


# ---------------------------------------------------------------------------
# Verified result 1: equivariance of the p4 layers, not of an ordinary CNN
# ---------------------------------------------------------------------------


def relative_error(a: Array, b: Array) -> Array:
    """``||a - b|| / ||b||`` over all entries (Frobenius)."""
    return metrics.relative_error(a, b)


class Equivariance(NamedTuple):
    """Relative equivariance errors ``||layer(R x) - R layer(x)|| / ||R layer(x)||``.

    Each entry has shape ``(n_seeds, 3)``: random images and filters per seed,
    rotations ``k = 1, 2, 3``. ``image`` and ``lifted`` (one image, one filter)
    draw the lifting figure.
    """

    lifting: Array
    p4_block: Array  # lifting -> ReLU -> group conv
    no_shift: Array  # lifting -> ReLU -> group conv without the cyclic shift
    cnn: Array  # ordinary convolution -> ReLU -> ordinary convolution
    image: Array  # (H, W)
    lifted: Array  # (4, H, W): one channel of the lifting layer
    lifted_rotated: Array  # (4, H, W): the same channel for the rotated image


def equivariance_errors(x: Array, w_lift: Array, w_group: Array, w_cnn1: Array, w_cnn2: Array):
    """Equivariance errors of the four layers of ``Equivariance`` for one image ``x`` of shape ``(1, H, W)``.

    Returns:
        Four arrays of shape ``(3,)``, one entry per rotation ``k = 1, 2, 3``.
    """

    def block(x, shift):
        return group_conv(jax.nn.relu(lifting_conv(x, w_lift)), w_group, shift=shift)

    def cnn(x):
        return conv2d(jax.nn.relu(conv2d(x, w_cnn1)), w_cnn2)

    def error(layer, act_out, k):
        return relative_error(layer(rotate(x, k)), act_out(layer(x), k))

    ks = (1, 2, 3)
    return (
        jnp.stack([error(lambda x: lifting_conv(x, w_lift), rotate_p4, k) for k in ks]),
        jnp.stack([error(lambda x: block(x, True), rotate_p4, k) for k in ks]),
        jnp.stack([error(lambda x: block(x, False), rotate_p4, k) for k in ks]),
        jnp.stack([error(cnn, rotate, k) for k in ks]),
    )


def run_equivariance(
    size: int = 16, channels: int = 4, kernel: int = 3, n_seeds: int = 8, *, key: Array
) -> Equivariance:
    """Equivariance errors of p4 layers and of an ordinary CNN on random images and filters.

    Images are a smoothed Gaussian field (Gaussian noise correlated by a
    random convolution); filters are He-initialized. The ordinary CNN has
    ``4 * channels`` channels, the same number of feature maps as the p4 block.

    Args:
        size: image side ``H = W``.
        channels: p4 channels ``C`` (each carries 4 rotations).
        kernel: filter side ``k`` (odd).
        n_seeds: independent draws of image and filters.
        key: randomness.

    Returns:
        ``Equivariance``.
    """
    keys = jax.random.split(key, n_seeds)

    def one(key):
        kx, kw = jax.random.split(key)
        z = course_data.normal(kx, (size * size + 25,))  # image noise and smoothing filter, one draw
        noise, smooth = z[: size * size].reshape(1, size, size), jnp.abs(z[size * size :]).reshape(1, 1, 5, 5)
        x = conv2d(noise, smooth / smooth.sum())
        c, k = channels, kernel
        w_lift, w_group, w_cnn1, w_cnn2 = he_normals(
            kw, [(c, 1, k, k), (c, c, 4, k, k), (4 * c, 1, k, k), (4 * c, 4 * c, k, k)],
            [k**2, 4 * c * k**2, k**2, 4 * c * k**2])
        return x, w_lift, equivariance_errors(x, w_lift, w_group, w_cnn1, w_cnn2)

    x, w_lift, errors = jax.jit(jax.vmap(one))(keys)
    image = x[0]
    lifted = lifting_conv(image, w_lift[0])[0]
    lifted_rotated = lifting_conv(rotate(image, 1), w_lift[0])[0]
    return Equivariance(*errors, image=image[0], lifted=lifted, lifted_rotated=lifted_rotated)


# ---------------------------------------------------------------------------
# Models on digits: the invariant p4 network and an ordinary CNN
# ---------------------------------------------------------------------------


def init_p4_net(channels: tuple[int, int, int] = (4, 8, 32), n_classes: int = 10, kernel: int = 3, *, key: Array):
    """Parameters of the invariant p4 network ``p4_net`` (He initialization).

    Returns:
        A dict of arrays: ``lift (C1, 1, k, k)``, ``group1 (C2, C1, 4, k, k)``,
        ``group2 (C3, C2, 4, k, k)``, one bias per channel (shared by the four
        rotations, as equivariance requires), and the linear head ``(10, C3)``.
    """
    c1, c2, c3 = channels
    lift, group1, group2, head = he_normals(
        key,
        [(c1, 1, kernel, kernel), (c2, c1, 4, kernel, kernel), (c3, c2, 4, kernel, kernel), (n_classes, c3)],
        [kernel**2, 4 * c1 * kernel**2, 4 * c2 * kernel**2, 2 * c3],  # head: variance 1 / fan_in
    )
    return {
        "lift": lift,
        "b1": jnp.zeros((c1, 1, 1, 1)),
        "group1": group1,
        "b2": jnp.zeros((c2, 1, 1, 1)),
        "group2": group2,
        "b3": jnp.zeros((c3, 1, 1, 1)),
        "head": head,
        "b_head": jnp.zeros((n_classes,)),
    }


def p4_net(params: dict, x: Array) -> Array:
    """The geometric-deep-learning blueprint on p4, for one image ``x`` of shape ``(H, W)``.

    ``lift -> ReLU -> group conv -> ReLU -> 2x2 pooling -> group conv -> ReLU
    -> mean over rotations and positions -> linear``: equivariant layers, a
    pointwise nonlinearity, coarsening, then invariant pooling, so the logits
    are exactly invariant to 90-degree rotations of ``x``.

    Returns:
        Logits, shape ``(n_classes,)``.
    """
    h = jax.nn.relu(lifting_conv(x[None], params["lift"]) + params["b1"])
    h = jax.nn.relu(group_conv(h, params["group1"]) + params["b2"])
    h = pool2(h)
    h = jax.nn.relu(group_conv(h, params["group2"]) + params["b3"])
    return params["head"] @ h.mean(axis=(1, 2, 3)) + params["b_head"]


def init_cnn(channels: tuple[int, int, int] = (16, 32, 128), n_classes: int = 10, kernel: int = 3,
             size: int = 8, *, key: Array):
    """Parameters of the ordinary CNN ``cnn`` with as many feature maps as ``p4_net`` (4 per p4 channel)."""
    c1, c2, c3 = channels
    n_flat = c3 * (size // 2) ** 2
    conv1, conv2, conv3, head = he_normals(
        key,
        [(c1, 1, kernel, kernel), (c2, c1, kernel, kernel), (c3, c2, kernel, kernel), (n_classes, n_flat)],
        [kernel**2, c1 * kernel**2, c2 * kernel**2, 2 * n_flat],  # head: variance 1 / fan_in
    )
    return {
        "conv1": conv1,
        "b1": jnp.zeros((c1, 1, 1)),
        "conv2": conv2,
        "b2": jnp.zeros((c2, 1, 1)),
        "conv3": conv3,
        "b3": jnp.zeros((c3, 1, 1)),
        "head": head,
        "b_head": jnp.zeros((n_classes,)),
    }


def cnn(params: dict, x: Array) -> Array:
    """An ordinary CNN for one image ``x`` of shape ``(H, W)``.

    ``conv -> ReLU -> conv -> ReLU -> 2x2 pooling -> conv -> ReLU -> flatten
    -> linear``: translation-equivariant layers, but nothing ties the filters
    to rotations, and the flattened read-out keeps the positions.
    """
    h = jax.nn.relu(conv2d(x[None], params["conv1"]) + params["b1"])
    h = jax.nn.relu(conv2d(h, params["conv2"]) + params["b2"])
    h = pool2(h)
    h = jax.nn.relu(conv2d(h, params["conv3"]) + params["b3"])
    return params["head"] @ h.ravel() + params["b_head"]


def n_parameters(params) -> int:
    """Number of scalar parameters in a pytree."""
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------------------
# Verified results 2 and 3: rotated digits, invariance vs augmentation
# ---------------------------------------------------------------------------


def digit_images(*, key: Array, n_train: int = 600):
    """scikit-learn's 8x8 digits as images in ``[0, 1]``, split at random.

    The pixels are divided by 16 (their maximum), one number for all pixels:
    a per-pixel standardization would not commute with rotations.

    Returns:
        ``(x_train, y_train), (x_test, y_test)`` with images of shape ``(n, 8, 8)``.
    """
    x, y = course_data.digits(standardize=False)
    x = x.reshape(-1, 8, 8) / 16.0
    perm = jax.random.permutation(key, x.shape[0])
    train_idx, test_idx = perm[:n_train], perm[n_train:]
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def cross_entropy(model):
    """``loss(params, (x, y)) = mean_i -log softmax(model(params, x_i))[y_i]``."""

    def loss(params, batch):
        x, y = batch
        logits = jax.vmap(lambda xi: model(params, xi))(x)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))

    return loss


@partial(jax.jit, static_argnums=(0, 1))
def _plain_step(model, optimizer, state, x, y):
    return train.make_step(cross_entropy(model), optimizer)(state, (x, y))


@jax.jit
def _turned(orbit, turns):
    return orbit[turns, jnp.arange(orbit.shape[1])]  # image i rotated by turns[i] * 90 degrees


def fit_loop(model, params, optimizer: optax.GradientTransformation, data, *, steps: int,
             key: Array | None = None):
    """Full-batch training of a classifier: one jit-compiled step, called ``steps`` times from Python.

    With ``key`` given, every image is rotated by a fresh random ``k * 90``
    degrees at every step (data augmentation); without, the data are used as
    they are. The loss is ``cross_entropy(model)``.

    Why not ``lax.scan``: XLA's CPU backend runs a convolution inside a compiled
    loop much more slowly than the same convolution in a straight-line program
    (measured 10-40x with jax 0.10 at this week's sizes), so for the
    convolutional models a Python loop over a compiled step is the fast way.
    The MLPs of ``run_deep_sets`` use ``dlcourse.train.fit`` (a ``lax.scan``).

    Args:
        model: ``model(params, x) -> logits`` for one image (a module-level
            function: it is a static argument of the compiled step).
        params: initial parameters.
        optimizer: an optax gradient transformation (create it once and reuse
            it, so that the step compiles once).
        data: ``(x, y)``, images of shape ``(n, H, W)`` and integer labels.
        steps: optimizer steps.
        key: randomness of the rotations, or ``None`` for no augmentation.

    Returns:
        Final parameters and the loss at every step (before the update).
    """
    x, y = data
    state, losses = train.init_state(params, optimizer), []
    if key is None:
        for _ in range(steps):
            state, loss = _plain_step(model, optimizer, state, x, y)
            losses.append(loss)
    else:
        orbit = jnp.stack([rotate(x, k) for k in range(4)])  # (4, n, H, W)
        turns = jax.random.randint(key, (steps, y.shape[0]), 0, 4)  # a fresh rotation per image and step
        for turns_now in turns:
            # the same compiled step as without augmentation, on the rotated images
            state, loss = _plain_step(model, optimizer, state, _turned(orbit, turns_now), y)
            losses.append(loss)
    return state.params, jnp.stack(losses)


def averaged_cnn(params: dict, x: Array) -> Array:
    """The CNN symmetrized by the Reynolds operator: ``(1/4) sum_k cnn(params, R^k x)``."""
    return reynolds(lambda z: cnn(params, z), x)


class RotatedDigits(NamedTuple):
    """Test accuracy on digits rotated by ``k * 90`` degrees, and invariance errors.

    ``accuracy[model]`` has shape ``(n_seeds, 4)`` (rotations ``k = 0..3``);
    ``invariance[model]`` has shape ``(n_seeds,)``: the relative change of the
    test logits under rotation, ``||f(R^k x) - f(x)|| / ||f(x)||`` averaged over
    ``k = 1, 2, 3``. Models: ``"p4"``, ``"cnn"``, ``"augmented"`` (CNN trained
    with random rotations) and ``"averaged"`` (the augmented CNN averaged over the
    four rotations at test time, the Reynolds operator).
    """

    accuracy: dict
    invariance: dict
    n_params: dict
    n_train: int
    n_test: int
    steps: int
    confusion_69: dict  # "p4", "cnn": (n_seeds,) fraction of upright test 6s and 9s put in the other class


@partial(jax.jit, static_argnums=0)
def orbit_logits(model, params, x: Array) -> Array:
    """Logits of ``model`` on ``R^k x`` for ``k = 0..3``, shape ``(4, n, n_classes)``.

    The four rotated copies are one batch of ``4 n`` images: one traced model,
    one compiled program.
    """
    orbit = jnp.concatenate([rotate(x, k) for k in range(4)])  # (4 n, H, W)
    return jax.vmap(lambda xi: model(params, xi))(orbit).reshape(4, x.shape[0], -1)


def evaluate(logits: Array, y: Array):
    """From orbit logits ``(4, n, classes)``: accuracy on ``R^k x`` for ``k = 0..3`` and the mean
    relative invariance error ``||f(R^k x) - f(x)|| / ||f(x)||`` over ``k = 1, 2, 3``."""
    accuracy = jnp.stack([metrics.accuracy(lg, y) for lg in logits])
    invariance = jnp.mean(jnp.stack([relative_error(lg, logits[0]) for lg in logits[1:]]))
    return accuracy, invariance


def reynolds_logits(logits: Array) -> Array:
    """Orbit logits of the Reynolds-averaged model from those of the model itself.

    ``(Q f)(R^k x) = (1/4) sum_j f(R^j R^k x) = (1/4) sum_j L_{(j + k) mod 4}``
    with ``L_j = f(R^j x)``, because ``R^j R^k = R^{j+k}`` and ``rot90`` is exact:
    the same four logits, summed in a different order for each ``k``. It is
    ``averaged_cnn`` evaluated on the orbit without evaluating the CNN 16 times.
    """
    return jnp.stack([sum(logits[(j + k) % 4] for j in range(4)) / 4 for k in range(4)])


def run_rotated_digits(
    n_train: int = 240,
    steps: int = 70,
    lr: float = 2e-2,
    n_seeds: int = 1,
    p4_channels: tuple[int, int, int] = (4, 8, 16),
    *,
    key: Array,
) -> RotatedDigits:
    """Train on UPRIGHT digits, test on digits rotated by 0, 90, 180, 270 degrees.

    Three models per seed, same optimizer (Adam), same steps, full batch: the
    invariant ``p4_net``, an ordinary ``cnn`` with 4 times the p4 channels (the
    same number of feature maps), and the same CNN trained with random
    90-degree rotations of every image at every step (augmentation).

    Args:
        n_train: training images (the rest of the 1797 are the test set).
        steps: full-batch Adam steps.
        lr: Adam step size.
        n_seeds: independent splits and initializations.
        p4_channels: channels of the three p4 layers.
        key: randomness.

    Returns:
        ``RotatedDigits``.
    """
    cnn_channels = tuple(4 * c for c in p4_channels)
    optimizer = optax.adam(lr)
    names = ("p4", "cnn", "augmented", "averaged")
    accuracy, invariance = {n: [] for n in names}, {n: [] for n in names}
    swapped, sizes = {"p4": [], "cnn": []}, {}
    for seed_key in jax.random.split(key, n_seeds):
        data_key, p4_key, cnn_key, aug_key, rot_key = jax.random.split(seed_key, 5)
        (x_tr, y_tr), (x_te, y_te) = digit_images(key=data_key, n_train=n_train)
        p4_init = init_p4_net(p4_channels, key=p4_key)
        cnn_init = init_cnn(cnn_channels, key=cnn_key)
        sizes = {"p4": n_parameters(p4_init), "cnn": n_parameters(cnn_init)}
        p4_params, _ = fit_loop(p4_net, p4_init, optimizer, (x_tr, y_tr), steps=steps)
        cnn_params, _ = fit_loop(cnn, cnn_init, optimizer, (x_tr, y_tr), steps=steps)
        aug_params, _ = fit_loop(cnn, init_cnn(cnn_channels, key=aug_key), optimizer, (x_tr, y_tr),
                                 steps=steps, key=rot_key)
        logits = {"p4": orbit_logits(p4_net, p4_params, x_te), "cnn": orbit_logits(cnn, cnn_params, x_te),
                  "augmented": orbit_logits(cnn, aug_params, x_te)}
        logits["averaged"] = reynolds_logits(logits["augmented"])  # averaged_cnn on the orbit
        for name in names:
            acc, inv = evaluate(logits[name], y_te)
            accuracy[name].append(np.asarray(acc))
            invariance[name].append(float(inv))
            if name in ("p4", "cnn"):  # upright test 6s called 9 and 9s called 6
                pred = np.asarray(jnp.argmax(logits[name][0], axis=-1))
                labels = np.asarray(y_te)
                is69 = (labels == 6) | (labels == 9)
                swapped[name].append(float(np.sum(is69 & (pred == 15 - labels)) / np.sum(is69)))
    return RotatedDigits(
        {n: np.stack(v) for n, v in accuracy.items()}, {n: np.asarray(v) for n, v in invariance.items()},
        sizes, n_train, 1797 - n_train, steps, {n: np.asarray(v) for n, v in swapped.items()},
    )


# ---------------------------------------------------------------------------
# Verified result 4: Deep Sets
# ---------------------------------------------------------------------------


def init_deep_set(latent: int = 16, width: int = 64, *, key: Array):
    """Parameters ``(phi, rho)`` of a Deep Set: ``phi: R -> R^latent``, ``rho: R^latent -> R``, one hidden layer each."""
    phi_key, rho_key = jax.random.split(key)
    return (mlp.init_mlp_one_draw([1, width, latent], key=phi_key), mlp.init_mlp_one_draw([latent, width, 1], key=rho_key))


def deep_set(params, x: Array) -> Array:
    """Deep Set (Zaheer et al. 2017) on one set of scalars ``x`` of shape ``(M,)``: ``rho(sum_i phi(x_i))``.

    Invariant to every permutation of ``x``: the sum is, up to the order of
    float32 additions.
    """
    phi, rho = params
    z = jnp.sum(jax.vmap(lambda xi: mlp.apply_mlp(phi, xi[None]))(x), axis=0)
    return mlp.apply_mlp(rho, z)[0]


def init_set_mlp(set_size: int = 8, width: int = 64, *, key: Array):
    """Parameters of an MLP on the concatenated set, ``R^M -> R`` (two hidden layers)."""
    return mlp.init_mlp_one_draw([set_size, width, width, 1], key=key)


def set_mlp(params, x: Array) -> Array:
    """A plain MLP on the concatenation ``(x_1, ..., x_M)``: no symmetry built in (a negative control)."""
    return mlp.apply_mlp(params, x)[0]


def set_variance(x: Array) -> Array:
    """The target, a symmetric function of the set: ``(1/M) sum_i (x_i - mean)^2`` along the last axis.

    It is sum-decomposable with latent dimension 2: ``phi(x) = (x, x^2)``,
    ``rho(s_1, s_2) = s_2 / M - (s_1 / M)^2``.
    """
    return jnp.var(x, axis=-1)


def permute_sets(x: Array, *, key: Array) -> Array:
    """Each row of ``x`` (one set) reordered by an independent uniformly random permutation.

    The permutation is the ``argsort`` of i.i.d. uniform numbers, which is
    uniform on ``S_M`` (ties have probability zero up to float resolution).
    """
    order = jnp.argsort(jax.random.uniform(key, x.shape), axis=-1)
    return jnp.take_along_axis(x, order, axis=-1)


def permutation_error(model, params, x: Array, permuted: Array) -> Array:
    """``||f(pi X) - f(X)|| / ||f(X) - mean f(X)||`` over a batch of sets ``x`` and their permutations ``permuted``.

    The denominator is the spread of the outputs over the batch, so a constant
    model does not pass trivially.
    """
    f = jax.vmap(lambda xi: model(params, xi))
    out = f(x)
    return jnp.linalg.norm(f(permuted) - out) / jnp.linalg.norm(out - jnp.mean(out))


class DeepSets(NamedTuple):
    """Deep Set vs MLP on the concatenated set, learning the variance of a set of ``M`` Gaussians.

    Errors have shape ``(n_seeds,)``. ``*_perm`` are permutation errors
    (``permutation_error``) at initialization (``_init``) and after training;
    ``*_test`` the test mean squared error divided by the variance of the
    target. ``pred_*`` and ``y_test`` are the test predictions of seed 0.
    """

    deep_set_perm_init: Array
    deep_set_perm: Array
    mlp_perm_init: Array
    mlp_perm: Array
    deep_set_test: Array
    mlp_test: Array
    y_test: Array
    pred_deep_set: Array
    pred_mlp: Array


def run_deep_sets(
    set_size: int = 8,
    n_train: int = 256,
    n_test: int = 512,
    latent: int = 16,
    width: int = 64,
    steps: int = 400,
    lr: float = 3e-3,
    n_seeds: int = 2,
    *,
    key: Array,
) -> DeepSets:
    """Deep Sets vs an MLP on the concatenation, on sets of ``set_size`` i.i.d. ``N(0, 1)`` scalars.

    Both are trained by full-batch Adam (``dlcourse.train.fit``, a ``lax.scan``)
    on the squared loss for the target ``set_variance``; seeds are ``vmap``-ed.

    Returns:
        ``DeepSets``.
    """
    optimizer = optax.adam(lr)

    def one(key):
        kx, kd, km, kp = jax.random.split(key, 4)
        x_all = course_data.normal(kx, (n_train + n_test, set_size))
        x_train, x_test = x_all[:n_train], x_all[n_train:]
        x_perm = permute_sets(x_test, key=kp)  # one permutation per test set, for all four checks
        y_train, y_test = set_variance(x_train), set_variance(x_test)
        ds0 = init_deep_set(latent, width, key=kd)
        mlp0 = init_set_mlp(set_size, width, key=km)

        def fit(model, params):
            loss = train.squared_loss(jax.vmap(model, in_axes=(None, 0)))
            return train.fit(loss, params, optimizer, (x_train, y_train), steps=steps)[0]

        ds, net = fit(deep_set, ds0), fit(set_mlp, mlp0)
        pred_ds = jax.vmap(deep_set, in_axes=(None, 0))(ds, x_test)
        pred_mlp = jax.vmap(set_mlp, in_axes=(None, 0))(net, x_test)
        scale = jnp.var(y_test)
        return DeepSets(
            permutation_error(deep_set, ds0, x_test, x_perm), permutation_error(deep_set, ds, x_test, x_perm),
            permutation_error(set_mlp, mlp0, x_test, x_perm), permutation_error(set_mlp, net, x_test, x_perm),
            jnp.mean((pred_ds - y_test) ** 2) / scale, jnp.mean((pred_mlp - y_test) ** 2) / scale,
            y_test, pred_ds, pred_mlp,
        )

    res = jax.jit(jax.vmap(one))(jax.random.split(key, n_seeds))
    return res._replace(y_test=res.y_test[0], pred_deep_set=res.pred_deep_set[0], pred_mlp=res.pred_mlp[0])


# ---------------------------------------------------------------------------
# Verified result 5: an E(n)-equivariant graph layer
# ---------------------------------------------------------------------------


def init_egnn(features: int = 4, hidden: int = 32, dim: int = 3, *, key: Array, invariant: bool = True):
    """Parameters of one EGNN layer: the MLPs ``phi_e``, ``phi_x``, ``phi_h`` (one hidden layer each).

    With ``invariant=False`` the edge MLP takes the relative position
    ``x_i - x_j`` (``dim`` numbers) instead of the squared distance: the
    negative control.
    """
    edge_in = 2 * features + (1 if invariant else dim)
    widths = {"phi_e": [edge_in, hidden, hidden], "phi_x": [hidden, hidden, 1],
              "phi_h": [features + hidden, hidden, features]}
    # one flat N(0, 1) draw for all three MLPs (one random-number program to
    # compile, see dlcourse.mlp.init_mlp_one_draw), then He scaling, zero biases
    z = course_data.normal(key, (sum(mlp.n_params(w) for w in widths.values()),))
    params, start = {}, 0
    for name, w in widths.items():
        layers = mlp.params_from_flat(w, z[start:])
        start += mlp.n_params(w)
        params[name] = [(jnp.sqrt(2.0 / a.shape[1]) * a, jnp.zeros_like(b)) for a, b in layers]
    return params


def egnn_layer(params: dict, x: Array, h: Array, *, invariant: bool = True) -> tuple[Array, Array]:
    """One E(n)-equivariant graph layer on a complete graph (Satorras et al. 2021, eqs. 3-6).

    ``m_ij = phi_e(h_i, h_j, ||x_i - x_j||^2)``,
    ``x_i' = x_i + (1 / (M - 1)) sum_{j != i} (x_i - x_j) phi_x(m_ij)``,
    ``h_i' = phi_h(h_i, sum_{j != i} m_ij)``. Squared distances are invariant
    under ``x -> Q x + t`` (``Q`` orthogonal), so messages and features are
    invariant and the coordinate update is equivariant.

    Args:
        params: from ``init_egnn`` (with the same ``invariant``).
        x: coordinates, shape ``(M, n)``.
        h: node features, shape ``(M, F)``.
        invariant: ``False`` feeds ``x_i - x_j`` to ``phi_e`` (not rotation invariant).

    Returns:
        New coordinates ``(M, n)`` and features ``(M, F)``.
    """
    m_nodes = x.shape[0]
    diff = x[:, None, :] - x[None, :, :]  # (M, M, n): x_i - x_j
    geometry = jnp.sum(diff**2, axis=-1, keepdims=True) if invariant else diff
    pairs = jnp.concatenate(
        [jnp.broadcast_to(h[:, None, :], (m_nodes, m_nodes, h.shape[1])),
         jnp.broadcast_to(h[None, :, :], (m_nodes, m_nodes, h.shape[1])), geometry], axis=-1)
    edge = lambda z: jax.nn.silu(mlp.apply_mlp(params["phi_e"], z, activation=jax.nn.silu))  # noqa: E731
    m = jax.vmap(jax.vmap(edge))(pairs)  # (M, M, hidden)
    mask = 1.0 - jnp.eye(m_nodes)[:, :, None]  # no self-messages
    weight = jax.vmap(jax.vmap(lambda z: mlp.apply_mlp(params["phi_x"], z, activation=jax.nn.silu)))(m)
    x_new = x + jnp.sum(mask * diff * weight, axis=1) / (m_nodes - 1)
    m_i = jnp.sum(mask * m, axis=1)
    h_new = jax.vmap(lambda hi, mi: mlp.apply_mlp(params["phi_h"], jnp.concatenate([hi, mi]),
                                                  activation=jax.nn.silu))(h, m_i)
    return x_new, h_new


def random_orthogonal(key: Array, dim: int) -> Array:
    """A Haar-random orthogonal matrix: QR of a Gaussian matrix, columns' signs fixed by ``diag(R)``.

    The determinant is ``+1`` or ``-1`` with probability 1/2 each: reflections are included.
    """
    q, r = jnp.linalg.qr(course_data.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diag(r))[None, :]


class EGNNCheck(NamedTuple):
    """Relative errors ``||layer(Q x + t) - (Q x' + t)|| / ||Q x' + t||`` (coordinates) and
    ``||h'(Q x + t) - h'(x)|| / ||h'(x)||`` (features), shape ``(n_seeds,)`` each, for the
    EGNN layer and for the negative control; ``det`` the determinants of the ``Q``s."""

    coords: Array
    features: Array
    naive_coords: Array
    naive_features: Array
    det: Array


def run_egnn(n_nodes: int = 10, dim: int = 3, features: int = 4, hidden: int = 16, n_seeds: int = 12,
             *, key: Array) -> EGNNCheck:
    """Apply a random EGNN layer to a random point cloud before and after a random E(n) transformation.

    Per seed: coordinates ``N(0, I)``, features ``N(0, I)``, layer weights,
    ``Q = random_orthogonal``, ``t ~ N(0, 4 I)``.

    Returns:
        ``EGNNCheck``.
    """

    def one(key):
        kz, kp, kn, kq = jax.random.split(key, 4)
        z = course_data.normal(kz, (n_nodes * (dim + features) + dim,))  # x, h and t in one draw
        x = z[: n_nodes * dim].reshape(n_nodes, dim)
        h = z[n_nodes * dim : n_nodes * (dim + features)].reshape(n_nodes, features)
        t = 2.0 * z[n_nodes * (dim + features) :]
        q = random_orthogonal(kq, dim)

        def errors(params, invariant):
            x1, h1 = egnn_layer(params, x, h, invariant=invariant)
            x2, h2 = egnn_layer(params, x @ q.T + t[None, :], h, invariant=invariant)
            expected = x1 @ q.T + t[None, :]
            return relative_error(x2, expected), relative_error(h2, h1)

        good = errors(init_egnn(features, hidden, dim, key=kp), True)
        naive = errors(init_egnn(features, hidden, dim, key=kn, invariant=False), False)
        return EGNNCheck(*good, *naive, jnp.linalg.det(q))

    return jax.jit(jax.vmap(one))(jax.random.split(key, n_seeds))


# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------


def plot_error_bars(ax, labels, errors, *, colors=None):
    """Symmetry errors on a log scale: one column of points (one per seed) and its mean per label,
    over the float32 machine epsilon (black line, the round-off scale)."""
    colors = colors or plotting.PALETTE
    for i, (label, err) in enumerate(zip(labels, errors)):
        err = np.maximum(np.ravel(np.asarray(err)), 1e-10)
        jitter = np.linspace(-0.15, 0.15, err.size)
        ax.plot(i + jitter, err, ls="none", marker="o", ms=5, alpha=0.6, color=colors[i % len(colors)])
        ax.plot([i - 0.3, i + 0.3], [err.mean()] * 2, color=colors[i % len(colors)], lw=3)
    ax.axhline(FLOAT32_EPS, color=plotting.THEORY_COLOR, lw=2,
               label=r"float32 $\epsilon = 2^{-23}$")
    ax.set_yscale("log")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylim(1e-9, 10)
    ax.legend(loc="center left")
    return ax


def plot_equivariance(res: Equivariance, ax):
    """Relative equivariance errors of the p4 layers and of the controls."""
    plot_error_bars(ax, ["lifting", "lifting + group conv", "no cyclic shift", "ordinary CNN"],
                    [res.lifting, res.p4_block, res.no_shift, res.cnn],
                    colors=[plotting.PALETTE[0], plotting.PALETTE[0], plotting.PALETTE[1], plotting.PALETTE[1]])
    ax.set_ylabel(r"$\|\Phi(R x) - R\,\Phi(x)\| \,/\, \|R\,\Phi(x)\|$")
    return ax


def plot_lifting(res: Equivariance, axes):
    """Input and the four rotation channels of one lifting feature map, for ``x`` (top) and ``R x`` (bottom).

    ``axes``: a 2 x 5 array of axes.
    """
    vmax = float(np.abs(np.asarray(res.lifted)).max())
    rows = ((rotate(res.image, 0), res.lifted, "x"), (rotate(res.image, 1), res.lifted_rotated, "Rx"))
    for row, (img, maps, name) in zip(axes, rows):
        row[0].imshow(np.asarray(img), cmap="gray")
        row[0].set_title(f"${name}$")
        for r in range(4):
            row[r + 1].imshow(np.asarray(maps[r]), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
            row[r + 1].set_title(f"$[\\Phi({name})]_{{r={r}}}$")
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    return axes


def plot_orbits(images, axes):
    """Each image (a row of ``axes``) rotated by 0, 90, 180 and 270 degrees."""
    for row, img in zip(axes, images):
        for k, ax in enumerate(row):
            ax.imshow(np.asarray(rotate(img, k)), cmap="gray_r")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    for k, ax in enumerate(axes[0]):
        ax.set_title(f"$R^{k}$, {90 * k}°")
    return axes


_MODEL_STYLE = {
    "p4": (plotting.PALETTE[0], "o", "p4 (invariant)"),
    "cnn": (plotting.PALETTE[1], "s", "CNN"),
    "augmented": (plotting.PALETTE[2], "^", "CNN + augmentation"),
    "averaged": (plotting.PALETTE[3], "D", "augmented, averaged over $C_4$"),
}


def plot_rotated_digits(res: RotatedDigits, ax, *, models=("p4", "cnn")):
    """Test accuracy against the rotation angle (mean and standard error over seeds if more than one); black: the
    invariant model's upright accuracy, which exact invariance predicts at every angle."""
    angles = 90 * np.arange(4)
    p4_upright = res.accuracy["p4"][:, 0].mean()
    ax.plot(angles, [p4_upright] * 4, color=plotting.THEORY_COLOR, lw=6, label="invariance: upright accuracy")
    for i, name in enumerate(models):
        color, marker, label = _MODEL_STYLE[name]
        acc = res.accuracy[name]
        mean, sem = metrics.mean_and_sem(acc) if acc.shape[0] > 1 else (acc[0], None)
        offset = 4 * (i - (len(models) - 1) / 2)
        ax.errorbar(angles + offset, mean, yerr=sem, color=color, marker=marker, ls="-", lw=1.5, capsize=3,
                    label=label)
    ax.set_xticks(angles, [f"{a}°" for a in angles])
    ax.set_xlabel(r"rotation of the test digits, $90k$")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.5)  # room for the legend above the curves
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.legend(loc="upper center", ncol=2, fontsize=11)
    return ax


def plot_augmentation(res: RotatedDigits, axes):
    """(a) accuracy against rotation for all four models; (b) invariance error of their logits."""
    plot_rotated_digits(res, axes[0], models=("p4", "cnn", "augmented", "averaged"))
    short = {"invariance: upright accuracy": "invariance", "p4 (invariant)": "p4",
             "CNN + augmentation": "CNN + aug.", "augmented, averaged over $C_4$": "aug. + average"}
    handles, labels = axes[0].get_legend_handles_labels()
    axes[0].legend(handles, [short.get(label, label) for label in labels], loc="upper center", ncol=3,
                   fontsize=10, columnspacing=0.8, handlelength=1.5)
    names = ("p4", "averaged", "augmented", "cnn")
    plot_error_bars(axes[1], ["p4", "avg.", "aug.", "CNN"], [res.invariance[n] for n in names],
                    colors=[_MODEL_STYLE[n][0] for n in names])
    axes[1].set_ylabel(r"$\|f(R^k x) - f(x)\| \,/\, \|f(x)\|$")
    return axes


def plot_deep_sets(res: DeepSets, axes):
    """(a) permutation errors of Deep Sets and of the MLP, at initialization and trained;
    (b) test predictions against the true set variance (black: ``y = x``)."""
    plot_error_bars(axes[0], ["DS init", "DS", "MLP init", "MLP"],
                    [res.deep_set_perm_init, res.deep_set_perm, res.mlp_perm_init, res.mlp_perm],
                    colors=[plotting.PALETTE[0]] * 2 + [plotting.PALETTE[1]] * 2)
    axes[0].set_ylabel(r"$\|f(\pi X) - f(X)\| \,/\, \|f(X) - \bar f\|$")
    y = np.asarray(res.y_test)
    grid = np.linspace(y.min(), y.max(), 2)
    axes[1].plot(grid, grid, color=plotting.THEORY_COLOR, lw=2, label="target")
    axes[1].plot(y, np.asarray(res.pred_mlp), ls="none", marker="s", ms=3, alpha=0.4,
                 color=plotting.PALETTE[1], label="MLP")
    axes[1].plot(y, np.asarray(res.pred_deep_set), ls="none", marker="o", ms=3, alpha=0.4,
                 color=plotting.PALETTE[0], label="Deep Set")
    axes[1].set_xlabel(r"set variance $y$")
    axes[1].set_ylabel(r"prediction $f(X)$")
    axes[1].legend(loc="upper left")
    return axes


def plot_egnn(res: EGNNCheck, ax):
    """Equivariance errors of the EGNN layer and of the control under random ``x -> Q x + t``."""
    plot_error_bars(ax, ["EGNN $x'$", "EGNN $h'$", "control $x'$", "control $h'$"],
                    [res.coords, res.features, res.naive_coords, res.naive_features],
                    colors=[plotting.PALETTE[0]] * 2 + [plotting.PALETTE[1]] * 2)
    ax.set_ylabel("relative error")
    return ax
