"""Week 11: generative models.

The lecture's experiments, each a ``run_*`` function with lecture-size keyword
defaults (the tests call them at small sizes) returning a ``...Result``
NamedTuple; each ``plot_*`` helper takes a result and an ``ax``:

* ``run_discriminator``: a discriminator trained by logistic regression on
  samples of ``p_data`` against ``p_g`` approaches ``D* = p_data / (p_data + p_g)``,
  and the GAN value at it approaches ``2 JS(p_data, p_g) - log 4``.
* ``run_ring``: a GAN and a WGAN-GP on a ring of eight Gaussians, several seeds
  each; the number of modes each covers.
* ``run_critic``: a critic trained with a gradient penalty estimates the
  Wasserstein-1 distance of two 1-D samples, whose exact value is the mean gap
  between their sorted values.
* ``run_vae``: a VAE on scikit-learn's binarized digits; the importance-weighted
  bound ``L_K`` against the number ``K`` of samples.
* ``run_diffusion``: a score network trained by denoising score matching on a
  2-D Gaussian mixture against the closed-form score of the noised mixture, and
  reverse-time sampling with it.

Conventions: a sample is a row, ``x`` of shape ``(n, d)``; a ``Mixture`` is
isotropic Gaussian components with means ``(K, d)``, one standard deviation
``std`` and weights ``(K,)``. Networks are the course's MLPs (``dlcourse.mlp``).

References:
    Goodfellow et al. 2014, arXiv:1406.2661 (GAN, D*, Jensen-Shannon).
    Arjovsky, Chintala & Bottou 2017, arXiv:1701.07875 (WGAN).
    Gulrajani et al. 2017, arXiv:1704.00028 (gradient penalty).
    Kingma & Welling 2014, arXiv:1312.6114; Rezende, Mohamed & Wierstra 2014,
    arXiv:1401.4082 (VAE, reparametrization).
    Burda, Grosse & Salakhutdinov 2016, arXiv:1509.00519 (importance weighting).
    Vincent 2011, doi:10.1162/NECO_a_00142 (denoising score matching).
    Song & Ermon 2019, arXiv:1907.05600; Song et al. 2021, arXiv:2011.13456.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.special import logsumexp

from dlcourse import plotting
from dlcourse.mlp import apply_batch, init_mlp
from dlcourse.train import QUICK_COMPILE

Array = jax.Array

# Compilation dominates this week's CPU time: each experiment compiles its programs once and runs
# them once. Programs that run once and briefly (sampling, evaluation) skip XLA's backend
# optimization (dlcourse.train.QUICK_COMPILE); the training loops and samplers use level 1, which
# compiled the ring's GAN in 3.5 s instead of 7.9 s at the default level and ran it as fast
# (1.3 s against 1.3 s on a 2-core CPU). Neither changes the operations, only how well LLVM optimizes them.
jit_once = partial(jax.jit, compiler_options=QUICK_COMPILE)
jit_loop = partial(jax.jit, compiler_options={"xla_backend_optimization_level": 1})

# ---------------------------------------------------------------------------
# Gaussian mixtures: sampling, density, score
# ---------------------------------------------------------------------------


class Mixture(NamedTuple):
    """Isotropic Gaussian mixture ``sum_k w_k N(means_k, std^2 I)``."""

    means: Array  # (K, d)
    std: float
    weights: Array  # (K,)


def ring(n_modes: int = 8, *, radius: float = 2.0, std: float = 0.05) -> Mixture:
    """``n_modes`` equal-weight Gaussians evenly spaced on a circle."""
    angles = 2 * jnp.pi * jnp.arange(n_modes) / n_modes
    means = radius * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return Mixture(means, std, jnp.full((n_modes,), 1.0 / n_modes))


def bimodal_1d() -> Mixture:
    """The 1-D data distribution of the discriminator and critic experiments."""
    return Mixture(jnp.array([[-1.5], [1.5]]), 0.5, jnp.array([0.6, 0.4]))


def unimodal_1d() -> Mixture:
    """The 1-D 'generator' distribution compared with ``bimodal_1d``: one broad Gaussian."""
    return Mixture(jnp.array([[0.0]]), 1.0, jnp.array([1.0]))


def sample_mixture(mix: Mixture, n: int, *, key: Array) -> tuple[Array, Array]:
    """``n`` samples and their component labels."""
    comp_key, noise_key = jax.random.split(key)
    labels = jax.random.choice(comp_key, mix.weights.shape[0], (n,), p=mix.weights)
    x = mix.means[labels] + mix.std * jax.random.normal(noise_key, (n, mix.means.shape[1]))
    return x, labels


def mixture_log_density(mix: Mixture, x: Array, sigma: float | Array = 0.0) -> Array:
    """``log p_sigma(x)`` for one point ``x`` of shape ``(d,)``.

    ``p_sigma`` is the mixture convolved with ``N(0, sigma^2 I)``: the same means
    and weights with standard deviation ``sqrt(std^2 + sigma^2)``.
    """
    var = mix.std**2 + sigma**2
    d = mix.means.shape[1]
    sq = jnp.sum((x[None, :] - mix.means) ** 2, axis=1)
    log_comp = -sq / (2 * var) - 0.5 * d * jnp.log(2 * jnp.pi * var)
    return jax.nn.logsumexp(log_comp + jnp.log(mix.weights))


def mixture_score(mix: Mixture, x: Array, sigma: float | Array = 0.0) -> Array:
    """The exact score ``grad_x log p_sigma(x)`` of the noised mixture.

    ``sum_k r_k(x) (mu_k - x) / (std^2 + sigma^2)`` with ``r_k`` the posterior
    responsibilities of the components at ``x``.
    """
    var = mix.std**2 + sigma**2
    sq = jnp.sum((x[None, :] - mix.means) ** 2, axis=1)
    resp = jax.nn.softmax(-sq / (2 * var) + jnp.log(mix.weights))
    return resp @ (mix.means - x[None, :]) / var


def density_1d(mix: Mixture, grid) -> np.ndarray:
    """Density of a 1-D mixture on a grid (float64)."""
    grid = np.asarray(grid, dtype=np.float64)[:, None]
    means = np.asarray(mix.means, dtype=np.float64)[:, 0]
    w = np.asarray(mix.weights, dtype=np.float64)
    z = (grid - means) / mix.std
    return (w * np.exp(-0.5 * z**2) / (mix.std * math.sqrt(2 * math.pi))).sum(axis=1)


def cdf_1d(mix: Mixture, grid) -> np.ndarray:
    """Cumulative distribution function of a 1-D mixture on a grid (float64)."""
    from scipy.special import ndtr

    grid = np.asarray(grid, dtype=np.float64)[:, None]
    means = np.asarray(mix.means, dtype=np.float64)[:, 0]
    return (np.asarray(mix.weights, dtype=np.float64) * ndtr((grid - means) / mix.std)).sum(axis=1)


def jensen_shannon_1d(p: Mixture, q: Mixture, *, lo: float = -12.0, hi: float = 12.0, n: int = 200_001) -> float:
    """``JS(p, q) = KL(p || m)/2 + KL(q || m)/2`` with ``m = (p + q)/2``, in nats, by quadrature."""
    grid = np.linspace(lo, hi, n)
    pd, qd = density_1d(p, grid), density_1d(q, grid)
    m = 0.5 * (pd + qd)
    with np.errstate(divide="ignore", invalid="ignore"):
        integrand = 0.5 * np.where(pd > 0, pd * np.log(pd / m), 0.0) + 0.5 * np.where(qd > 0, qd * np.log(qd / m), 0.0)
    return float(np.trapezoid(integrand, grid))


def wasserstein1_1d(p: Mixture, q: Mixture, *, lo: float = -12.0, hi: float = 12.0, n: int = 200_001) -> float:
    """``W1(p, q) = int |F_p - F_q| dx`` for 1-D laws, by quadrature."""
    grid = np.linspace(lo, hi, n)
    return float(np.trapezoid(np.abs(cdf_1d(p, grid) - cdf_1d(q, grid)), grid))


def wasserstein1_sorted(x, y) -> float:
    """Exact ``W1`` between two empirical laws of ``n`` points each on the line.

    The optimal coupling of two sorted samples is monotone: ``W1 = mean_i |x_(i) - y_(i)|``.
    """
    x, y = np.sort(np.asarray(x, np.float64).ravel()), np.sort(np.asarray(y, np.float64).ravel())
    if x.shape != y.shape:
        raise ValueError(f"samples of equal size expected, got {x.shape} and {y.shape}")
    return float(np.mean(np.abs(x - y)))


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------


def net(params, x: Array) -> Array:
    """The course's MLP (``tanh`` hidden units) on a batch ``x`` of shape ``(n, d_in)``."""
    return apply_batch(params, x, activation=jnp.tanh)


def init_net(widths, *, key: Array):
    """An MLP with layer widths ``widths``, Xavier-like scale for ``tanh`` units."""
    return init_mlp(widths, key=key, sigma_w=1.0)


# ---------------------------------------------------------------------------
# 1. The optimal discriminator and the Jensen-Shannon divergence
# ---------------------------------------------------------------------------


def gan_value(d_logits_data: Array, d_logits_gen: Array) -> Array:
    """``V(D, G) = E_data log D(x) + E_g log(1 - D(x))`` with ``D = sigmoid(logit)``."""
    return jnp.mean(jax.nn.log_sigmoid(d_logits_data)) + jnp.mean(jax.nn.log_sigmoid(-d_logits_gen))


class DiscriminatorResult(NamedTuple):
    grid: np.ndarray  # (m,)
    d_trained: np.ndarray  # D(x) of the trained discriminator on the grid
    d_shuffled: np.ndarray  # negative control: trained on shuffled labels
    d_optimal: np.ndarray  # D*(x) = p_data / (p_data + p_g)
    weight: np.ndarray  # (p_data + p_g) / 2 on the grid (where the error is measured)
    value: float  # V(D, G) of the trained D on fresh samples
    value_se: float  # its Monte Carlo standard error
    value_shuffled: float
    js: float  # JS(p_data, p_g) by quadrature


def train_discriminator(p_data: Mixture, p_gen: Mixture, *, steps: int, batch: int, width: int,
                        lr: float, shuffle_labels: bool | Array = False, key: Array):
    """Logistic regression of 'data' against 'generated' with fresh samples at every step.

    Maximizes ``V(D, G)`` over ``D`` (the discriminator's half of the GAN game, ``G`` fixed).
    With ``shuffle_labels`` the two samples are pooled and relabelled at random: a
    discriminator that cannot learn anything (the negative control).
    """
    init_key, loop_key = jax.random.split(key)
    params = init_net([1, width, width, 1], key=init_key)
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def loss(params, xs):
        x_data, x_gen = xs
        return -gan_value(net(params, x_data)[:, 0], net(params, x_gen)[:, 0])

    def step(state, k):
        params, opt_state = state
        data_key, gen_key, perm_key = jax.random.split(k, 3)
        x_data, _ = sample_mixture(p_data, batch, key=data_key)
        x_gen, _ = sample_mixture(p_gen, batch, key=gen_key)
        pooled = jax.random.permutation(perm_key, jnp.concatenate([x_data, x_gen]))
        x_data = jnp.where(shuffle_labels, pooled[:batch], x_data)
        x_gen = jnp.where(shuffle_labels, pooled[batch:], x_gen)
        value, grads = jax.value_and_grad(loss)(params, (x_data, x_gen))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), value

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(loop_key, steps))
    return params


def run_discriminator(*, steps: int = 1500, batch: int = 512, width: int = 32, lr: float = 1e-2,
                      n_eval: int = 100_000, key: Array) -> DiscriminatorResult:
    """Train a discriminator between ``bimodal_1d`` (data) and ``unimodal_1d`` (generator).

    Returns the trained ``D`` and the optimal ``D* = p_data / (p_data + p_g)``
    (Goodfellow et al. 2014, Prop. 1) on a grid, and the value ``V(D, G)`` on
    fresh samples, whose maximum over ``D`` is ``2 JS(p_data, p_g) - log 4``
    (ibid., Thm. 1).
    """
    p_data, p_gen = bimodal_1d(), unimodal_1d()
    train_key, control_key, data_key, gen_key = jax.random.split(key, 4)

    @jit_loop
    def train(shuffle, k):  # the discriminator and its control: one compiled program, a traced flag
        return train_discriminator(p_data, p_gen, steps=steps, batch=batch, width=width, lr=lr,
                                   shuffle_labels=shuffle, key=k)

    params = train(jnp.array(False), train_key)
    control = train(jnp.array(True), control_key)
    grid = np.linspace(-4.0, 4.0, 401)
    pd, pg = density_1d(p_data, grid), density_1d(p_gen, grid)

    @jit_once
    def evaluate(params, control, x_grid, data_key, gen_key):  # one program: eager ops compile one by one
        x_data, _ = sample_mixture(p_data, n_eval, key=data_key)
        x_gen, _ = sample_mixture(p_gen, n_eval, key=gen_key)
        return (jax.nn.log_sigmoid(net(params, x_data)[:, 0]), jax.nn.log_sigmoid(-net(params, x_gen)[:, 0]),
                jax.nn.sigmoid(net(params, x_grid)[:, 0]), jax.nn.sigmoid(net(control, x_grid)[:, 0]),
                gan_value(net(control, x_data)[:, 0], net(control, x_gen)[:, 0]))

    log_d, log_1md, d_trained, d_shuffled, value_shuffled = (
        np.asarray(a, np.float64)
        for a in evaluate(params, control, jnp.asarray(grid, jnp.float32)[:, None], data_key, gen_key))
    return DiscriminatorResult(
        grid=grid, d_trained=d_trained, d_shuffled=d_shuffled,
        d_optimal=pd / (pd + pg),
        weight=0.5 * (pd + pg),
        value=float(log_d.mean() + log_1md.mean()),
        value_se=float(math.hypot(log_d.std() / math.sqrt(n_eval), log_1md.std() / math.sqrt(n_eval))),
        value_shuffled=float(value_shuffled),
        js=jensen_shannon_1d(p_data, p_gen),
    )


def weighted_error(result: DiscriminatorResult, d: np.ndarray | None = None) -> float:
    """``int |D(x) - D*(x)| (p_data + p_g)(x)/2 dx``: the mean error where the samples lie."""
    d = result.d_trained if d is None else d
    return float(np.trapezoid(np.abs(d - result.d_optimal) * result.weight, result.grid))


# ---------------------------------------------------------------------------
# 2. Mode collapse: a GAN and a WGAN-GP on a ring of Gaussians
# ---------------------------------------------------------------------------


class GANState(NamedTuple):
    """Generator and discriminator (or critic) parameters with their optimizer states."""

    gen: list
    disc: list
    gen_opt: optax.OptState
    disc_opt: optax.OptState


def gradient_penalty(critic_params, x_real: Array, x_fake: Array, *, one_sided: bool = False,
                     key: Array) -> Array:
    """``E (||grad_x f(x_hat)|| - 1)^2`` at random interpolates ``x_hat`` (Gulrajani et al. 2017).

    With ``one_sided`` only gradients longer than 1 are penalized,
    ``E max(0, ||grad f|| - 1)^2`` (Petzka et al. 2018): the constraint
    ``Lip(f) <= 1`` itself, which lets the slope pass through zero.
    """
    t = jax.random.uniform(key, (x_real.shape[0], 1))
    x_hat = t * x_real + (1 - t) * x_fake
    grads = jax.vmap(jax.grad(lambda x: net(critic_params, x[None])[0, 0]))(x_hat)
    excess = jnp.sqrt(jnp.sum(grads**2, axis=1) + 1e-12) - 1.0
    return jnp.mean(jnp.maximum(excess, 0.0) ** 2 if one_sided else excess**2)


def gan_init(*, z_dim: int, width: int, data_dim: int, gen_opt, disc_opt, key: Array) -> GANState:
    """Fresh generator ``z -> x`` and discriminator ``x -> logit`` (or critic ``x -> f(x)``)."""
    gen_key, disc_key = jax.random.split(key)
    gen = init_net([z_dim, width, width, data_dim], key=gen_key)
    disc = init_net([data_dim, width, width, 1], key=disc_key)
    return GANState(gen, disc, gen_opt.init(gen), disc_opt.init(disc))


def gan_update(state: GANState, key: Array, *, data: Mixture, kind: str, batch: int, z_dim: int,
               n_critic: int, penalty: float, gen_opt, disc_opt) -> tuple[Array, GANState]:
    """One round of the game: ``n_critic`` discriminator (critic) steps, then one generator step.

    ``kind="gan"``: the discriminator maximizes ``V(D, G)``; the generator
    maximizes ``E_z log D(G(z))`` (the non-saturating loss of Goodfellow et al.).
    ``kind="wgan-gp"``: the critic maximizes ``E_data f - E_g f - penalty * GP``
    with the one-sided penalty (``gradient_penalty(one_sided=True)``); the
    generator maximizes ``E_z f(G(z))``. With the two-sided penalty of
    Gulrajani et al. our small ``tanh`` critics stalled near a linear function
    (unit slope everywhere, blind to the modes); the one-sided form lets the
    slope pass through zero (Petzka et al. 2018).

    Returns:
        The discriminator's (critic's) objective at its last step, and the new state.
    """
    disc_keys = jax.random.split(key, n_critic + 1)

    def disc_loss(disc, k):
        data_key, z_key, gp_key = jax.random.split(k, 3)
        x_real, _ = sample_mixture(data, batch, key=data_key)
        x_fake = net(state.gen, jax.random.normal(z_key, (batch, z_dim)))
        out_real, out_fake = net(disc, x_real)[:, 0], net(disc, x_fake)[:, 0]
        if kind == "gan":
            return -gan_value(out_real, out_fake)
        gp = gradient_penalty(disc, x_real, x_fake, one_sided=True, key=gp_key)
        return -(out_real.mean() - out_fake.mean()) + penalty * gp

    def disc_step(carry, k):
        disc, opt = carry
        value, grads = jax.value_and_grad(disc_loss)(disc, k)
        updates, opt = disc_opt.update(grads, opt, disc)
        return (optax.apply_updates(disc, updates), opt), -value

    (disc, disc_state), values = jax.lax.scan(disc_step, (state.disc, state.disc_opt), disc_keys[:-1])

    def gen_loss(gen):
        out = net(disc, net(gen, jax.random.normal(disc_keys[-1], (batch, z_dim))))[:, 0]
        return -jnp.mean(jax.nn.log_sigmoid(out)) if kind == "gan" else -jnp.mean(out)

    grads = jax.grad(gen_loss)(state.gen)
    updates, gen_state = gen_opt.update(grads, state.gen_opt, state.gen)
    return values[-1], GANState(optax.apply_updates(state.gen, updates), disc, gen_state, disc_state)


def train_gan(*, data: Mixture, kind: str, rounds: int, batch: int, z_dim: int, width: int,
              n_critic: int, penalty: float, lr: float, n_samples: int, key: Array):
    """Train one GAN (``kind="gan"``) or WGAN-GP (``kind="wgan-gp"``) with Adam; ``lax.scan`` over rounds.

    Returns:
        ``n_samples`` generated points and the discriminator objective at every round.
    """
    # Adam with beta1 = 0.5 and beta2 = 0.9, the settings of Gulrajani et al. (2017).
    gen_opt = optax.adam(lr, b1=0.5, b2=0.9)
    disc_opt = optax.adam(lr, b1=0.5, b2=0.9)
    init_key, loop_key, sample_key = jax.random.split(key, 3)
    state = gan_init(z_dim=z_dim, width=width, data_dim=data.means.shape[1],
                     gen_opt=gen_opt, disc_opt=disc_opt, key=init_key)

    def body(state, k):
        value, state = gan_update(state, k, data=data, kind=kind, batch=batch, z_dim=z_dim,
                                  n_critic=n_critic, penalty=penalty, gen_opt=gen_opt, disc_opt=disc_opt)
        return state, value

    state, values = jax.lax.scan(body, state, jax.random.split(loop_key, rounds))
    return net(state.gen, jax.random.normal(sample_key, (n_samples, z_dim))), values


def modes_covered(data: Mixture, x: Array, *, radius_in_std: float = 3.0, min_share: float = 0.25) -> tuple[int, float]:
    """How many modes a sample covers, and the fraction of 'high-quality' points.

    A point is high quality if it lies within ``radius_in_std`` standard
    deviations of a mode's centre; a mode is covered if it holds at least
    ``min_share`` of its fair share ``n / K`` of the points (a recipe of
    Srivastava et al. 2017 and Metz et al. 2017).
    """
    x = np.asarray(x, np.float64)
    dist = np.linalg.norm(x[:, None, :] - np.asarray(data.means, np.float64)[None], axis=2)
    near = dist.min(axis=1) <= radius_in_std * data.std
    counts = np.bincount(dist.argmin(axis=1)[near], minlength=dist.shape[1])
    k = dist.shape[1]
    return int(np.sum(counts >= min_share * x.shape[0] / k)), float(near.mean())


class RingResult(NamedTuple):
    data: Mixture
    samples_data: np.ndarray  # (n, 2) a sample of the data, for comparison
    samples_gan: np.ndarray  # (seeds, n, 2)
    samples_wgan: np.ndarray
    modes_gan: np.ndarray  # (seeds,)
    modes_wgan: np.ndarray
    quality_gan: np.ndarray  # fraction of points within 3 std of a mode
    quality_wgan: np.ndarray


def run_ring(*, n_seeds: int = 4, ring_std: float = 0.1, rounds_gan: int = 1500, rounds_wgan: int = 500,
             batch: int = 64, z_dim: int = 2, width: int = 64, lr_gan: float = 1e-3, lr_wgan: float = 1e-3,
             n_critic: int = 5, penalty: float = 10.0, n_samples: int = 2000, key: Array) -> RingResult:
    """A GAN and a WGAN-GP on ``ring(std=ring_std)``, ``n_seeds`` seeds each (``vmap``), and the modes they cover."""
    data = ring(std=ring_std)
    gan_key, wgan_key, data_key = jax.random.split(key, 3)
    common = dict(data=data, batch=batch, z_dim=z_dim, width=width, n_samples=n_samples)

    def gan(k):
        return train_gan(kind="gan", rounds=rounds_gan, n_critic=1, penalty=0.0, lr=lr_gan, key=k, **common)[0]

    def wgan(k):
        return train_gan(kind="wgan-gp", rounds=rounds_wgan, n_critic=n_critic, penalty=penalty, lr=lr_wgan,
                         key=k, **common)[0]

    x_gan = np.asarray(jit_loop(jax.vmap(gan))(jax.random.split(gan_key, n_seeds)))
    x_wgan = np.asarray(jit_loop(jax.vmap(wgan))(jax.random.split(wgan_key, n_seeds)))
    cov_gan = [modes_covered(data, x) for x in x_gan]
    cov_wgan = [modes_covered(data, x) for x in x_wgan]
    x_data = jit_once(lambda k: sample_mixture(data, n_samples, key=k)[0])(data_key)
    return RingResult(data, np.asarray(x_data), x_gan, x_wgan,
                      np.array([c[0] for c in cov_gan]), np.array([c[0] for c in cov_wgan]),
                      np.array([c[1] for c in cov_gan]), np.array([c[1] for c in cov_wgan]))


# ---------------------------------------------------------------------------
# 3. Kantorovich-Rubinstein duality: a critic's estimate of W1
# ---------------------------------------------------------------------------


class CriticResult(NamedTuple):
    x_data: np.ndarray  # (n,) the fixed sample of p_data
    x_gen: np.ndarray  # (n,) the fixed sample of p_g
    w1_sorted: float  # exact W1 of the two samples, from sorting
    w1_population: float  # W1(p_data, p_g) by quadrature
    estimate: float  # E_data f - E_g f of the trained critic (gradient penalty)
    estimate_free: float  # the same without the penalty (negative control)
    grid: np.ndarray
    slope: np.ndarray  # f'(x) of the trained critic on the grid
    slope_optimal: np.ndarray  # sign(F_g - F_data): the slope of an optimal potential
    potential: np.ndarray  # f(x) on the grid, shifted to mean zero there
    potential_optimal: np.ndarray  # the integral of slope_optimal, shifted to mean zero
    lipschitz: float  # max |f'| over the grid: f / lipschitz is 1-Lipschitz


def train_critic(x_data: Array, x_gen: Array, *, steps: int, width: int, lr: float, penalty: float, key: Array):
    """Maximize ``mean f(x_data) - mean f(x_gen) - penalty * GP`` over an MLP critic ``f`` (full batch).

    Kantorovich-Rubinstein: ``W1(p, q) = sup_{Lip(f) <= 1} E_p f - E_q f``; the
    one-sided gradient penalty asks ``|f'| <= 1`` between the samples (a soft
    constraint: the optimum overshoots slightly). ``penalty = 0`` leaves ``f``
    unconstrained: then the objective is unbounded.
    """
    init_key, loop_key = jax.random.split(key)
    params = init_net([1, width, width, 1], key=init_key)
    optimizer = optax.adam(lr, b1=0.5, b2=0.9)

    def loss(params, k):
        gap = net(params, x_data).mean() - net(params, x_gen).mean()
        return -gap + penalty * gradient_penalty(params, x_data, x_gen, one_sided=True, key=k)

    def step(state, k):
        params, opt_state = state
        grads = jax.grad(loss)(params, k)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(loop_key, steps))
    return params


def run_critic(*, n: int = 1000, steps: int = 2000, width: int = 32, lr: float = 3e-3,
               penalty: float = 30.0, key: Array) -> CriticResult:
    """A critic's estimate of ``W1`` between samples of ``bimodal_1d`` and ``unimodal_1d``.

    In one dimension the exact value for two samples of equal size is
    ``mean_i |x_(i) - y_(i)|`` (``wasserstein1_sorted``) and an optimal
    potential has slope ``f' = sign(F_g - F_data)``.
    """
    p_data, p_gen = bimodal_1d(), unimodal_1d()
    data_key, gen_key, critic_key, free_key = jax.random.split(key, 4)
    x_data, x_gen = jit_once(lambda k1, k2: (sample_mixture(p_data, n, key=k1)[0],
                                            sample_mixture(p_gen, n, key=k2)[0]))(data_key, gen_key)
    train = jit_loop(train_critic, static_argnames=("steps", "width"))
    params = train(x_data, x_gen, steps=steps, width=width, lr=lr, penalty=penalty, key=critic_key)
    free = train(x_data, x_gen, steps=steps, width=width, lr=lr, penalty=0.0, key=free_key)
    pooled = np.concatenate([np.asarray(x_data[:, 0]), np.asarray(x_gen[:, 0])])
    grid = np.linspace(pooled.min(), pooled.max(), 2001)

    @jit_once
    def probe(params, free, grid):  # f and f' on the grid, and both critics' gaps, in one program
        f = net(params, grid[:, None])[:, 0]
        slope = jax.vmap(jax.grad(lambda x: net(params, x[None, None])[0, 0]))(grid)
        gap = net(params, x_data).mean() - net(params, x_gen).mean()
        return f, slope, gap, net(free, x_data).mean() - net(free, x_gen).mean()

    f_grid, slope, gap, gap_free = probe(params, free, jnp.asarray(grid, jnp.float32))
    f_grid = np.asarray(f_grid, np.float64)
    # The empirical CDFs of the two samples on the grid.
    cdf_data = np.searchsorted(np.sort(np.asarray(x_data[:, 0])), grid, side="right") / n
    cdf_gen = np.searchsorted(np.sort(np.asarray(x_gen[:, 0])), grid, side="right") / n
    slope_optimal = np.sign(cdf_gen - cdf_data)
    potential_optimal = np.concatenate([[0.0], np.cumsum(0.5 * (slope_optimal[1:] + slope_optimal[:-1]) * np.diff(grid))])
    return CriticResult(
        x_data=np.asarray(x_data[:, 0]), x_gen=np.asarray(x_gen[:, 0]),
        w1_sorted=wasserstein1_sorted(x_data, x_gen), w1_population=wasserstein1_1d(p_data, p_gen),
        estimate=float(gap),
        estimate_free=float(gap_free),
        grid=grid, slope=np.asarray(slope, np.float64), slope_optimal=slope_optimal,
        potential=f_grid - f_grid.mean(), potential_optimal=potential_optimal - potential_optimal.mean(),
        lipschitz=float(np.max(np.abs(slope))),
    )


# ---------------------------------------------------------------------------
# 4. Variational autoencoders and the importance-weighted bound
# ---------------------------------------------------------------------------


class VAEParams(NamedTuple):
    encoder: list  # x -> (mu, log sigma) of q(z | x)
    decoder: list  # z -> Bernoulli logits of p(x | z)


def binarized_digits() -> np.ndarray:
    """scikit-learn's 1797 digits (8x8, values 0-16) as 0/1 pixels: ``x >= 8``."""
    from dlcourse.data import digits

    x, _ = digits(standardize=False)
    return (np.asarray(x) >= 8).astype(np.float32)


def vae_init(*, x_dim: int, z_dim: int, width: int, key: Array) -> VAEParams:
    enc_key, dec_key = jax.random.split(key)
    return VAEParams(init_net([x_dim, width, 2 * z_dim], key=enc_key),
                     init_net([z_dim, width, x_dim], key=dec_key))


def log_weights(params: VAEParams, x: Array, n_samples: int, *, key: Array) -> Array:
    """``log w_k = log p(x, z_k) - log q(z_k | x)`` for ``z_k ~ q(. | x)``, ``k = 1..n_samples``.

    One image ``x`` of shape ``(D,)``; prior ``p(z) = N(0, I)``, decoder
    ``p(x | z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z)))``, encoder
    ``q(z | x) = N(mu(x), diag sigma(x)^2)``. The reparametrization
    ``z = mu + sigma * eps``, ``eps ~ N(0, I)``, makes ``z`` a differentiable
    function of the parameters (Kingma & Welling 2014).
    """
    out = net(params.encoder, x[None])[0]
    mu, log_sigma = jnp.split(out, 2)
    eps = jax.random.normal(key, (n_samples, mu.shape[0]))
    z = mu[None, :] + jnp.exp(log_sigma)[None, :] * eps
    logits = net(params.decoder, z)
    log_lik = jnp.sum(x[None, :] * jax.nn.log_sigmoid(logits) + (1 - x[None, :]) * jax.nn.log_sigmoid(-logits), axis=1)
    log_prior = -0.5 * jnp.sum(z**2, axis=1) - 0.5 * z.shape[1] * jnp.log(2 * jnp.pi)
    log_q = jnp.sum(-0.5 * eps**2 - log_sigma[None, :], axis=1) - 0.5 * z.shape[1] * jnp.log(2 * jnp.pi)
    return log_lik + log_prior - log_q


def elbo_loss(params: VAEParams, x: Array, *, key: Array) -> Array:
    """Minus the ELBO ``E_q log p(x, z) - log q(z | x)``, one sample per image, averaged over a batch."""
    keys = jax.random.split(key, x.shape[0])
    return -jnp.mean(jax.vmap(lambda xi, k: log_weights(params, xi, 1, key=k)[0])(x, keys))


def iw_bound(log_w: Array, k: int) -> Array:
    """Estimates of ``L_K = E log (1/K sum_k w_k)`` per image from ``log_w`` of shape ``(n_images, M)``.

    The ``M`` samples are split into ``M // K`` disjoint groups of ``K``; the
    group estimates are averaged (an unbiased estimate of ``L_K`` per image).
    ``L_1`` is the ELBO; Burda et al. (2016, Thm. 1): ``L_K <= L_{K+1} <= log p(x)``.
    """
    log_w = np.asarray(log_w, np.float64)  # float64 NumPy: small arrays, no compilation per K
    groups = log_w[:, : (log_w.shape[1] // k) * k].reshape(log_w.shape[0], -1, k)
    return np.mean(logsumexp(groups, axis=2) - np.log(k), axis=1)


def mean_log_weight(log_w: Array, k: int) -> Array:
    """Negative control: ``(1/K) sum_k log w_k``, whose expectation is the ELBO for every ``K``."""
    log_w = np.asarray(log_w, np.float64)
    groups = log_w[:, : (log_w.shape[1] // k) * k].reshape(log_w.shape[0], -1, k)
    return np.mean(np.mean(groups, axis=2), axis=1)


class VAEResult(NamedTuple):
    ks: np.ndarray  # (m,) numbers of importance samples
    bound: np.ndarray  # (m,) L_K averaged over the test images
    bound_se: np.ndarray  # (m,) its standard error over images
    gain: np.ndarray  # (m - 1,) L_{K_{j+1}} - L_{K_j}, paired over images
    gain_se: np.ndarray  # (m - 1,) its standard error
    control_gain: np.ndarray  # the same for mean_log_weight, fresh samples for each K (negative control)
    control_gain_se: np.ndarray
    losses: np.ndarray  # training loss (minus ELBO) per step
    samples: np.ndarray  # (16, 64) decoder means for z ~ N(0, I)
    test_images: np.ndarray  # (8, 64)
    reconstructions: np.ndarray  # (8, 64) decoder means at z = mu(x)


def _paired_gain(per_image: Array) -> tuple[np.ndarray, np.ndarray]:
    diff = np.diff(np.asarray(per_image, np.float64), axis=1)
    return diff.mean(axis=0), diff.std(axis=0, ddof=1) / math.sqrt(diff.shape[0])


def run_vae(*, z_dim: int = 8, width: int = 128, steps: int = 1500, batch: int = 128, lr: float = 2e-3,
            ks=(1, 4, 16, 64, 256), n_test: int = 400, key: Array) -> VAEResult:
    """Train a VAE on binarized digits; measure ``L_K`` on held-out images for each ``K`` in ``ks``.

    Every ``L_K`` is computed from the same ``max(ks)`` samples per image, so
    that the differences ``L_{K'} - L_K`` are paired (common random numbers).
    The negative control, the mean log-weight, draws fresh samples for each
    ``K`` (on shared samples it would be the same number for every ``K``, and
    its differences pure rounding): its expected gain is zero.
    """
    split_key, init_key, train_key, eval_key, control_key, sample_key = jax.random.split(key, 6)
    x = jnp.asarray(binarized_digits())

    @jit_once
    def split(k):  # a random test set of n_test images, the rest for training
        perm = jax.random.permutation(k, x.shape[0])
        return x[perm[:n_test]], x[perm[n_test:]]

    x_test, x_train = split(split_key)
    params = jit_once(lambda k: vae_init(x_dim=x.shape[1], z_dim=z_dim, width=width, key=k))(init_key)
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))

    @jit_loop
    def train(params, key):
        def step(state, k):
            params, opt_state = state
            idx_key, noise_key = jax.random.split(k)
            xb = x_train[jax.random.randint(idx_key, (batch,), 0, x_train.shape[0])]
            loss, grads = jax.value_and_grad(elbo_loss)(params, xb, key=noise_key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, steps))
        return params, losses

    params, losses = train(params, train_key)
    m = max(ks)
    draw = jit_loop(jax.vmap(lambda xi, k: log_weights(params, xi, m, key=k)))
    log_w = draw(x_test, jax.random.split(eval_key, n_test))
    per_image = np.stack([iw_bound(log_w, k) for k in ks], axis=1)
    control = np.stack([mean_log_weight(draw(x_test, jax.random.split(ck, n_test)), k)
                        for k, ck in zip(ks, jax.random.split(control_key, len(ks)))], axis=1)
    gain, gain_se = _paired_gain(per_image)
    control_gain, control_gain_se = _paired_gain(control)
    @jit_once
    def pictures(params, k):  # decoder means at z ~ N(0, I), and reconstructions at z = mu(x)
        mu = jnp.split(net(params.encoder, x_test[:8]), 2, axis=1)[0]
        return (jax.nn.sigmoid(net(params.decoder, jax.random.normal(k, (16, z_dim)))),
                jax.nn.sigmoid(net(params.decoder, mu)))

    samples, reconstructions = pictures(params, sample_key)
    return VAEResult(
        ks=np.asarray(ks), bound=np.asarray(per_image.mean(axis=0), np.float64),
        bound_se=np.asarray(per_image.std(axis=0, ddof=1), np.float64) / math.sqrt(n_test),
        gain=gain, gain_se=gain_se, control_gain=control_gain, control_gain_se=control_gain_se,
        losses=np.asarray(losses),
        samples=np.asarray(samples), test_images=np.asarray(x_test[:8]),
        reconstructions=np.asarray(reconstructions),
    )


# ---------------------------------------------------------------------------
# 5. Score-based diffusion
# ---------------------------------------------------------------------------


def three_gaussians() -> Mixture:
    """The 2-D mixture of the diffusion experiment: unequal weights 0.5, 0.3, 0.2."""
    angles = jnp.array([90.0, 210.0, 330.0]) * jnp.pi / 180
    means = 1.5 * jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=1)
    return Mixture(means, 0.25, jnp.array([0.5, 0.3, 0.2]))


def score_net(params, x: Array, sigma: Array) -> Array:
    """``s_theta(x, sigma) = MLP([x, log sigma]) / sigma`` for a batch ``x`` of shape ``(n, d)``, ``sigma`` ``(n,)``.

    Dividing by ``sigma`` gives the output the scale of the true score at small
    noise (``~ -eps / sigma``), as in Song & Ermon (2019).
    """
    inputs = jnp.concatenate([x, jnp.log(sigma)[:, None]], axis=1)
    return net(params, inputs) / sigma[:, None]


def dsm_loss(params, x: Array, *, sigma_min: float, sigma_max: float, key: Array) -> Array:
    """Denoising score matching (Vincent 2011) with weight ``sigma^2``, ``log sigma`` uniform.

    ``E ||sigma s_theta(x + sigma eps, sigma) + eps||^2``: its minimizer over all
    functions is ``s(x_tilde, sigma) = grad log p_sigma(x_tilde)``, the score of
    the data convolved with ``N(0, sigma^2 I)``.
    """
    sigma_key, eps_key = jax.random.split(key)
    u = jax.random.uniform(sigma_key, (x.shape[0],))
    sigma = sigma_min * (sigma_max / sigma_min) ** u
    eps = jax.random.normal(eps_key, x.shape)
    residual = sigma[:, None] * score_net(params, x + sigma[:, None] * eps, sigma) + eps
    return jnp.mean(jnp.sum(residual**2, axis=1))


def noise_levels(sigma_min: float, sigma_max: float, n_steps: int) -> Array:
    """Geometric noise levels ``sigma_max = sigma_0 > ... > sigma_{n_steps} = sigma_min``."""
    return jnp.asarray(sigma_max * (sigma_min / sigma_max) ** (np.arange(n_steps + 1) / n_steps), jnp.float32)


def reverse_sample(score_fn, n: int, *, sigmas: Array, dim: int = 2, key: Array) -> Array:
    """Reverse-time sampler of the variance-exploding diffusion ``dx = sqrt(d sigma^2/dt) dB``.

    Starts from ``N(0, sigma_0^2 I)`` and steps, for ``i = 0, 1, ...``,
    ``x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z``:
    the Euler-Maruyama step of the reverse SDE (Anderson 1982; Song et al. 2021).
    ``score_fn(x, sigma)`` takes a batch ``(n, dim)`` and a scalar ``sigma``.
    """
    init_key, loop_key = jax.random.split(key)
    x = sigmas[0] * jax.random.normal(init_key, (n, dim))

    def step(x, inputs):
        s_now, s_next, k = inputs
        dvar = s_now**2 - s_next**2
        return x + dvar * score_fn(x, s_now) + jnp.sqrt(dvar) * jax.random.normal(k, x.shape), None

    x, _ = jax.lax.scan(step, x, (sigmas[:-1], sigmas[1:], jax.random.split(loop_key, sigmas.shape[0] - 1)))
    return x


def langevin_sample(score_fn, n: int, *, sigma: float, step_size: float, steps: int, box: float,
                    dim: int = 2, key: Array) -> Array:
    """Langevin dynamics at one small noise level, from uniform points in ``[-box, box]^dim``.

    The negative control of reverse-time sampling: ``x <- x + eta s(x) + sqrt(2 eta) z``
    samples ``p_sigma`` only after the chains have crossed between modes, which
    takes a time exponential in the barrier; in a short run the modes are filled
    in proportion to their basins, not their weights (Song & Ermon 2019, Sec. 3).
    """
    init_key, loop_key = jax.random.split(key)
    x = jax.random.uniform(init_key, (n, dim), minval=-box, maxval=box)

    def step(x, k):
        return x + step_size * score_fn(x, sigma) + jnp.sqrt(2 * step_size) * jax.random.normal(k, x.shape), None

    x, _ = jax.lax.scan(step, x, jax.random.split(loop_key, steps))
    return x


def component_fractions(mix: Mixture, x) -> np.ndarray:
    """Fraction of the points ``x`` nearest to each component's mean."""
    x = np.asarray(x, np.float64)
    dist = np.linalg.norm(x[:, None, :] - np.asarray(mix.means, np.float64)[None], axis=2)
    return np.bincount(dist.argmin(axis=1), minlength=dist.shape[1]) / x.shape[0]


def fraction_z_scores(fractions, weights, n: int) -> np.ndarray:
    """Binomial z-scores ``(f_k - w_k) / sqrt(w_k (1 - w_k) / n)``."""
    w = np.asarray(weights, np.float64)
    return (np.asarray(fractions) - w) / np.sqrt(w * (1 - w) / n)


class DiffusionResult(NamedTuple):
    mixture: Mixture
    sigmas_eval: np.ndarray  # (m,) noise levels where the score error is measured
    score_error: np.ndarray  # (m,) E ||s_theta - s*||^2 / E ||s*||^2 under p_sigma
    losses: np.ndarray
    samples: np.ndarray  # (n, 2) reverse-time samples with the trained network
    samples_exact: np.ndarray  # (n, 2) with the exact score
    samples_langevin: np.ndarray  # (n, 2) negative control
    fractions: np.ndarray  # (K,) component fractions of `samples`
    fractions_exact: np.ndarray
    fractions_langevin: np.ndarray
    grid_sigma: float  # noise level of the drawn score field
    params: list
    starts: np.ndarray  # (2,) sigma_0 of the start check: sigma_narrow and sigma_max
    fractions_starts: np.ndarray  # (2, K) exact-score fractions from each start, n_samples * n_repeats samples
    n_start_check: int  # samples behind each row of fractions_starts


def run_diffusion(*, width: int = 96, steps: int = 4000, batch: int = 512, lr: float = 3e-3,
                  sigma_min: float = 0.02, sigma_max: float = 8.0, n_samples: int = 4000,
                  n_steps: int = 300, sigmas_eval=(0.05, 0.1, 0.2, 0.5, 1.0, 2.0), n_eval: int = 4000,
                  sigma_narrow: float = 4.0, n_repeats: int = 10, key: Array) -> DiffusionResult:
    """Denoising score matching on ``three_gaussians()`` and reverse-time sampling.

    The score error is measured at each ``sigma`` in ``sigmas_eval`` on fresh
    samples of ``p_sigma`` against the closed form ``mixture_score``. The start
    check runs the exact-score sampler ``n_repeats`` times (the same compiled
    program) from ``sigma_0 = sigma_narrow`` and from ``sigma_0 = sigma_max``:
    the start ``N(0, sigma_0^2 I)`` in place of ``p_{sigma_0}`` shifts the weights.
    """
    mix = three_gaussians()
    (init_key, train_key, eval_key, sample_key, exact_key, langevin_key, start_key) = jax.random.split(key, 7)
    params = jit_once(lambda k: init_net([3, width, width, width, 2], key=k))(init_key)
    optimizer = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.02))

    @jit_loop
    def train(params, key):
        def step(state, k):
            params, opt_state = state
            data_key, noise_key = jax.random.split(k)
            x, _ = sample_mixture(mix, batch, key=data_key)
            loss, grads = jax.value_and_grad(dsm_loss)(params, x, sigma_min=sigma_min, sigma_max=sigma_max,
                                                       key=noise_key)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, steps))
        return params, losses

    params, losses = train(params, train_key)
    exact = jax.vmap(mixture_score, in_axes=(None, 0, None))

    def learned(x, sigma):
        return score_net(params, x, jnp.full((x.shape[0],), sigma))

    def exact_fn(x, sigma):
        return exact(mix, x, sigma)

    @jit_once
    def score_error(k, sigma):  # on fresh samples of p_sigma; one program for every sigma
        clean_key, noise_key = jax.random.split(k)
        x, _ = sample_mixture(mix, n_eval, key=clean_key)
        x = x + sigma * jax.random.normal(noise_key, x.shape)
        true = exact_fn(x, sigma)
        return jnp.sum((learned(x, sigma) - true) ** 2) / jnp.sum(true**2)

    errors = [float(score_error(k, jnp.float32(sigma)))
              for sigma, k in zip(sigmas_eval, jax.random.split(eval_key, len(sigmas_eval)))]
    sigmas = noise_levels(sigma_min, sigma_max, n_steps)
    sample = jit_loop(reverse_sample, static_argnums=(0, 1))
    x_net = sample(learned, n_samples, sigmas=sigmas, key=sample_key)
    x_exact = sample(exact_fn, n_samples, sigmas=sigmas, key=exact_key)
    x_lang = jit_loop(langevin_sample, static_argnums=(0, 1), static_argnames=("steps",))(
        exact_fn, n_samples, sigma=sigma_min, step_size=2e-3, steps=n_steps, box=3.0, key=langevin_key)
    # The start check: the exact-score sampler (the same compiled program) from each sigma_0, n_repeats runs.
    starts = (sigma_narrow, sigma_max)
    fractions_starts = np.zeros((len(starts), mix.means.shape[0]))
    for i, s0 in enumerate(starts):
        levels = noise_levels(sigma_min, s0, n_steps)
        for k in jax.random.split(jax.random.fold_in(start_key, i), n_repeats):
            fractions_starts[i] += component_fractions(mix, sample(exact_fn, n_samples, sigmas=levels, key=k)) / n_repeats
    return DiffusionResult(
        mixture=mix, sigmas_eval=np.asarray(sigmas_eval), score_error=np.asarray(errors), losses=np.asarray(losses),
        samples=np.asarray(x_net), samples_exact=np.asarray(x_exact), samples_langevin=np.asarray(x_lang),
        fractions=component_fractions(mix, x_net), fractions_exact=component_fractions(mix, x_exact),
        fractions_langevin=component_fractions(mix, x_lang), grid_sigma=0.3, params=params,
        starts=np.array(starts), fractions_starts=fractions_starts, n_start_check=n_samples * n_repeats,
    )


# ---------------------------------------------------------------------------
# Figures (each helper takes a result and the axes to draw on)
# ---------------------------------------------------------------------------


def plot_discriminator(result: DiscriminatorResult, ax):
    """Trained ``D`` (colour), ``D*`` (black), the shuffled-label control, and the two densities."""
    pd = density_1d(bimodal_1d(), result.grid)
    pg = density_1d(unimodal_1d(), result.grid)
    scale = 0.9 / max(pd.max(), pg.max())
    ax.fill_between(result.grid, 0, scale * pd, color=plotting.PALETTE[0], alpha=0.15, lw=0,
                    label=r"$p_{\mathrm{data}}$ (scaled)")
    ax.fill_between(result.grid, 0, scale * pg, color=plotting.PALETTE[1], alpha=0.15, lw=0,
                    label=r"$p_g$ (scaled)")
    ax.plot(result.grid, result.d_optimal, color=plotting.THEORY_COLOR, lw=2.4, label=r"$D^*$")
    ax.plot(result.grid, result.d_trained, color=plotting.PALETTE[0], lw=2.0, ls="--", label="trained $D$")
    ax.plot(result.grid, result.d_shuffled, color=plotting.PALETTE[3], lw=1.6, ls=":",
            label="shuffled labels")
    ax.set_ylim(0, 1.45)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.legend(loc="upper center", ncol=3, fontsize="small")
    return plotting.label_axes(ax, r"$x$", r"$D(x)$")


def plot_ring_samples(result: RingResult, axes, *, seed: int = 0):
    """(a) Samples of the data; (b) of the GAN and (c) of the WGAN-GP trained with seed ``seed``."""
    means = np.asarray(result.data.means)
    panels = [(result.samples_data, "data", 6),
              (result.samples_gan[seed], f"GAN: {result.modes_gan[seed]} of {len(means)} modes", 0),
              (result.samples_wgan[seed], f"WGAN-GP: {result.modes_wgan[seed]} of {len(means)} modes", 2)]
    for ax, (x, title, colour) in zip(axes, panels):
        ax.scatter(x[:, 0], x[:, 1], s=3, alpha=0.35, color=plotting.PALETTE[colour], rasterized=True)
        ax.scatter(means[:, 0], means[:, 1], s=40, marker="+", color=plotting.THEORY_COLOR)
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
        ax.set_aspect("equal")
        plotting.label_axes(ax, r"$x_1$", r"$x_2$", title=title)
    return axes


def plot_ring_modes(result: RingResult, ax):
    """Modes covered by the GAN and the WGAN-GP, one pair of bars per seed."""
    seeds = np.arange(result.modes_gan.shape[0])
    ax.bar(seeds - 0.2, result.modes_gan, width=0.4, color=plotting.PALETTE[0], label="GAN")
    ax.bar(seeds + 0.2, result.modes_wgan, width=0.4, color=plotting.PALETTE[2], label="WGAN-GP")
    ax.axhline(result.data.means.shape[0], color=plotting.THEORY_COLOR, lw=1.2, ls=":")
    ax.set_xticks(seeds)
    ax.set_ylim(0, result.data.means.shape[0] + 1.5)
    ax.legend(loc="upper center", ncol=2)
    return plotting.label_axes(ax, "seed", "modes covered")


def plot_critic(result: CriticResult, ax):
    """The trained critic's potential ``f`` against an optimal Kantorovich potential (both mean zero)."""
    ax.plot(result.grid, result.potential_optimal, color=plotting.THEORY_COLOR, lw=2.4,
            label=r"optimal $f$: $f' = \mathrm{sign}(F_g - F_{\mathrm{data}})$")
    ax.plot(result.grid, result.potential, color=plotting.PALETTE[2], lw=2.0, ls="--", label="trained critic")
    ax.legend(loc="upper center", fontsize="small")
    return plotting.label_axes(ax, r"$x$", r"$f(x)$")


def plot_vae_bound(result: VAEResult, ax):
    """``L_K`` against ``K`` (log axis) with two standard errors, and the ELBO ``L_1`` as a line."""
    ax.errorbar(result.ks, result.bound, yerr=2 * result.bound_se, marker="o", ms=7, capsize=3,
                color=plotting.PALETTE[0], label=r"$\mathcal{L}_K$ (test images)")
    ax.axhline(result.bound[0], color=plotting.THEORY_COLOR, lw=1.4, ls=":", label=r"ELBO $= \mathcal{L}_1$")
    ax.set_xscale("log", base=2)
    ax.legend(loc="lower right")
    return plotting.label_axes(ax, r"$K$", r"nats per image")


def plot_vae_images(result: VAEResult, ax):
    """One montage: test images, their reconstructions, and decoder means at ``z ~ N(0, I)``."""
    def row(images):
        padded = np.pad(images.reshape(-1, 8, 8), ((0, 0), (1, 1), (1, 1)), constant_values=1.0)
        return np.concatenate(list(padded), axis=1)

    montage = np.concatenate([row(result.test_images), row(result.reconstructions),
                              row(result.samples[:8]), row(result.samples[8:16])], axis=0)
    ax.imshow(1.0 - montage, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([5, 15, 25, 35], ["test", "recon.", "samples", "samples"])
    return ax


def plot_score_error(result: DiffusionResult, ax):
    """Relative squared error of the learned score against the closed form, per noise level."""
    ax.plot(result.sigmas_eval, result.score_error, marker="o", ms=8, color=plotting.PALETTE[0])
    ax.set_xscale("log")
    ax.set_yscale("log")
    return plotting.label_axes(ax, r"$\sigma$", "relative squared error")


def plot_score_field(result: DiffusionResult, axes):
    """Arrows of the learned score (a) and of the exact score (b) at ``sigma = result.grid_sigma``."""
    ticks = np.linspace(-2.5, 2.5, 17)
    xx, yy = np.meshgrid(ticks, ticks)
    points = np.stack([xx.ravel(), yy.ravel()], axis=1)
    sigma = result.grid_sigma

    @jit_once
    def fields(params, x):  # both fields in one compiled program
        return (score_net(params, x, jnp.full((x.shape[0],), sigma)),
                jax.vmap(mixture_score, in_axes=(None, 0, None))(result.mixture, x, sigma))

    learned, exact = (np.asarray(f) for f in fields(result.params, jnp.asarray(points, jnp.float32)))
    means = np.asarray(result.mixture.means)
    for ax, field, title, colour in ((axes[0], learned, r"learned $s_\theta$", 0),
                                     (axes[1], exact, r"exact $\nabla \log p_\sigma$", 6)):
        norm = np.linalg.norm(field, axis=1, keepdims=True)
        unit = field / np.maximum(norm, 1e-9)
        ax.quiver(points[:, 0], points[:, 1], unit[:, 0], unit[:, 1], np.log1p(norm[:, 0]),
                  cmap="viridis", angles="xy", scale=22, width=0.006)
        ax.scatter(means[:, 0], means[:, 1], s=60, marker="+", color=plotting.PALETTE[1])
        ax.set_aspect("equal")
        plotting.label_axes(ax, r"$x_1$", r"$x_2$", title=title + rf", $\sigma = {sigma:g}$")
    return axes


def plot_diffusion_samples(result: DiffusionResult, axes):
    """Reverse-time samples with the learned score (a), the exact score (b), and single-level Langevin (c)."""
    means = np.asarray(result.mixture.means)
    weights = np.asarray(result.mixture.weights)
    panels = ((result.samples, result.fractions, "reverse SDE, learned score", 0),
              (result.samples_exact, result.fractions_exact, "reverse SDE, exact score", 2),
              (result.samples_langevin, result.fractions_langevin, r"Langevin at $\sigma_{\min}$ (control)", 3))
    for ax, (x, frac, title, colour) in zip(axes, panels):
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3, color=plotting.PALETTE[colour], rasterized=True)
        for m, f, w in zip(means, frac, weights):
            ax.annotate(f"{f:.2f} ({w:.1f})", m, xytext=(0, 22), textcoords="offset points",
                        ha="center", fontsize="small")
        ax.set_xlim(-2.8, 2.8)
        ax.set_ylim(-2.3, 2.8)
        ax.set_aspect("equal")
        plotting.label_axes(ax, r"$x_1$", r"$x_2$", title=title)
    return axes
