"""Week 10: deep learning on graphs and sequences.

Graphs and their Laplacians, message passing and graph convolutional networks,
permutation equivariance, 1-WL colour refinement, over-smoothing, and
self-attention as message passing on the complete graph, up to a tiny
transformer trained on sequence reversal.

Every experiment is a ``run_*`` function with keyword defaults at lecture size
(the tests call them small) and returns a ``...Result`` NamedTuple; each
``plot_*`` helper takes the result and an ``ax`` and returns the ``ax``.

Conventions: a graph on ``n`` nodes is a symmetric 0/1 adjacency matrix
``adj`` of shape ``(n, n)`` with zero diagonal; node features are the rows of
``x`` of shape ``(n, d)``. A permutation ``perm`` acts by ``x[perm]`` and
``adj[perm][:, perm]``, i.e. by the matrix ``P`` with ``P[i, perm[i]] = 1``:
``P X`` and ``P A P^T``.

References:
    Gilmer et al. 2017, arXiv:1704.01212 (message passing).
    Kipf & Welling 2017, arXiv:1609.02907 (GCN).
    Xu et al. 2019, arXiv:1810.00826; Morris et al. 2019, arXiv:1810.02244 (1-WL).
    Li, Han & Wu 2018, arXiv:1801.07606; Oono & Suzuki 2020, arXiv:1905.10947.
    Vaswani et al. 2017, arXiv:1706.03762 (transformer).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import networkx as nx
import numpy as np
import optax

from dlcourse import plotting
from dlcourse.train import QUICK_COMPILE

Array = jax.Array

# --------------------------------------------------------------------------
# Graphs: adjacency, degree, Laplacians
# --------------------------------------------------------------------------


def karate_club() -> tuple[np.ndarray, np.ndarray]:
    """Zachary's karate club: adjacency matrix and the two factions.

    Returns:
        ``adj`` of shape ``(34, 34)`` (float32, symmetric, zero diagonal) and
        ``labels`` of shape ``(34,)``: 0 for 'Mr. Hi', 1 for 'Officer'.

    References:
        Zachary 1977, doi:10.1086/jfr.33.4.3629752 (the graph ships with networkx).
    """
    g = nx.karate_club_graph()
    adj = nx.to_numpy_array(g, nodelist=range(g.number_of_nodes()), weight=None)
    labels = np.array([g.nodes[v]["club"] != "Mr. Hi" for v in range(g.number_of_nodes())], dtype=np.int32)
    return adj.astype(np.float32), labels


def laplacian(adj: Array) -> Array:
    r"""Combinatorial Laplacian :math:`L = D - A`, with :math:`D = \operatorname{diag}(A\mathbf 1)`."""
    return jnp.diag(adj.sum(axis=1)) - adj


def normalized_laplacian(adj: Array) -> Array:
    r"""Normalized Laplacian :math:`I - D^{-1/2} A D^{-1/2}` (no isolated nodes)."""
    s = 1.0 / jnp.sqrt(adj.sum(axis=1))
    return jnp.eye(adj.shape[0]) - s[:, None] * adj * s[None, :]


def gcn_propagation(adj: Array) -> Array:
    r"""The GCN propagation matrix with the renormalization trick.

    .. math:: \hat P = \tilde D^{-1/2} (A + I) \tilde D^{-1/2},
              \qquad \tilde D = \operatorname{diag}((A + I)\mathbf 1).

    Its eigenvalues lie in :math:`(-1, 1]`; :math:`1` is simple on a connected
    graph, with eigenvector :math:`\tilde D^{1/2}\mathbf 1`.

    References:
        Kipf & Welling 2017, arXiv:1609.02907, eq. (2).
    """
    a = adj + jnp.eye(adj.shape[0])
    s = 1.0 / jnp.sqrt(a.sum(axis=1))
    return s[:, None] * a * s[None, :]


def dirichlet_energy(adj: Array, x: Array) -> Array:
    r"""Dirichlet energy of node features for the augmented normalized Laplacian.

    .. math:: E(X) = \operatorname{tr}(X^\top \tilde L X)
              = \tfrac12 \sum_{ij} \tilde A_{ij}
                \Big\| \frac{x_i}{\sqrt{\tilde d_i}} - \frac{x_j}{\sqrt{\tilde d_j}} \Big\|^2,
              \qquad \tilde L = I - \hat P,

    with :math:`\tilde A = A + I`. The edge form is used: it is a sum of squares,
    so it keeps its relative precision when :math:`E` is tiny (the trace form
    subtracts two nearly equal numbers).
    """
    a = adj + jnp.eye(adj.shape[0])
    y = x / jnp.sqrt(a.sum(axis=1))[:, None]
    diff = y[:, None, :] - y[None, :, :]
    return 0.5 * jnp.sum(a[:, :, None] * diff**2)


def erdos_renyi(n: int, p: float, *, key: Array) -> Array:
    """A random undirected graph G(n, p) as a 0/1 adjacency matrix (float32)."""
    upper = jnp.triu(jax.random.bernoulli(key, p, (n, n)), k=1)
    return (upper | upper.T).astype(jnp.float32)


def permute_graph(perm: Array, adj: Array, x: Array) -> tuple[Array, Array]:
    r"""Relabel the nodes: :math:`(A, X) \mapsto (P A P^\top, P X)` with :math:`P_{i, \pi(i)} = 1`."""
    return adj[perm][:, perm], x[perm]


# --------------------------------------------------------------------------
# Message passing
# --------------------------------------------------------------------------


class MPLayer(NamedTuple):
    """One message passing layer: self weight, message weight, bias."""

    w_self: Array  # (d_in, d_out)
    w_msg: Array  # (d_in, d_out)
    b: Array  # (d_out,)


def init_mp_layer(d_in: int, d_out: int, *, key: Array) -> MPLayer:
    """He-scaled Gaussian weights, small Gaussian bias."""
    k1, k2, k3 = jax.random.split(key, 3)
    scale = jnp.sqrt(2.0 / d_in)
    return MPLayer(scale * jax.random.normal(k1, (d_in, d_out)),
                   scale * jax.random.normal(k2, (d_in, d_out)),
                   0.1 * jax.random.normal(k3, (d_out,)))


def mp_layer(params: MPLayer, adj: Array, h: Array) -> Array:
    r"""A message passing layer with sum aggregation (Gilmer et al. 2017).

    .. math:: h_v' = \mathrm{ReLU}\Big(W_{\mathrm{self}}^\top h_v
              + W_{\mathrm{msg}}^\top \sum_{u \in N(v)} h_u + b\Big),
              \quad\text{i.e.}\quad
              H' = \mathrm{ReLU}(H W_{\mathrm{self}} + A H W_{\mathrm{msg}} + \mathbf 1 b^\top).

    Equivariant: ``mp_layer(p, P A P^T, P H) == P mp_layer(p, A, H)``.
    """
    return jax.nn.relu(h @ params.w_self + adj @ h @ params.w_msg + params.b[None, :])


def sum_readout(h: Array) -> Array:
    r"""Graph-level readout :math:`\sum_v h_v`, invariant under relabelling."""
    return h.sum(axis=0)


def mp_network(layers: list[MPLayer], adj: Array, x: Array) -> Array:
    """Stack of ``mp_layer``s; returns the node embeddings of the last layer."""
    h = x
    for layer in layers:
        h = mp_layer(layer, adj, h)
    return h


def positional_mp_network(layers: list[MPLayer], adj: Array, x: Array, pos: Array) -> Array:
    """NEGATIVE CONTROL: the same network with a fixed per-index vector added.

    ``pos[i]`` is attached to whichever node carries index ``i``, so relabelling
    the nodes changes the features: the layer is not equivariant.
    """
    return mp_network(layers, adj, x + pos)


def _relative(a: Array, b: Array) -> Array:
    return jnp.linalg.norm(a - b) / jnp.linalg.norm(b)


class EquivarianceResult(NamedTuple):
    """Relative errors of the permutation checks, one per seed.

    Attributes:
        layer_error: :math:`\\|f(PAP^T, PX) - P f(A, X)\\| / \\|f(A, X)\\|`, node embeddings.
        readout_error: the same for the sum readout (``P`` dropped on the right).
        positional_error: ``layer_error`` of the positional negative control.
        attention_error: equivariance error of self-attention without positions.
        attention_pe_error: the same with sinusoidal positional encodings added.
    """

    layer_error: np.ndarray
    readout_error: np.ndarray
    positional_error: np.ndarray
    attention_error: np.ndarray
    attention_pe_error: np.ndarray


def _equivariance_one(key, *, n, d, width, depth, p_edge):
    graph_key, x_key, init_key, perm_key, pos_key, attn_key = jax.random.split(key, 6)
    adj = erdos_renyi(n, p_edge, key=graph_key)
    x = jax.random.normal(x_key, (n, d))
    widths = [d] + [width] * depth
    layers = [init_mp_layer(a, b, key=k)
              for a, b, k in zip(widths[:-1], widths[1:], jax.random.split(init_key, depth))]
    perm = jax.random.permutation(perm_key, n)
    adj_p, x_p = permute_graph(perm, adj, x)
    h, h_p = mp_network(layers, adj, x), mp_network(layers, adj_p, x_p)
    pos = jax.random.normal(pos_key, (n, d))
    g, g_p = positional_mp_network(layers, adj, x, pos), positional_mp_network(layers, adj_p, x_p, pos)
    attn = init_attention(d, width, key=attn_key)
    pe = sinusoidal_positions(n, d)
    a, a_p = self_attention(attn, x), self_attention(attn, x_p)
    b, b_p = self_attention(attn, x + pe), self_attention(attn, x_p + pe)
    return (_relative(h_p, h[perm]), _relative(sum_readout(h_p), sum_readout(h)),
            _relative(g_p, g[perm]), _relative(a_p, a[perm]), _relative(b_p, b[perm]))


def run_equivariance(
    *, n: int = 40, d: int = 8, width: int = 32, depth: int = 3, p_edge: float = 0.15,
    n_seeds: int = 32, key: Array,
) -> EquivarianceResult:
    """Relabel the nodes of random graphs and compare outputs (float32).

    For each seed: a G(n, p_edge) graph, Gaussian features, a random
    ``depth``-layer message passing network, a random permutation; and a
    self-attention layer on the same features read as a sequence of length ``n``.

    Args:
        n, d: nodes (sequence length) and feature dimension.
        width, depth: hidden width and number of message passing layers.
        p_edge: edge probability of the random graphs.
        n_seeds: independent graphs, networks and permutations (``vmap``).
        key: random key.

    Returns:
        An ``EquivarianceResult`` of per-seed relative errors.
    """
    one = jax.jit(jax.vmap(lambda k: _equivariance_one(k, n=n, d=d, width=width, depth=depth, p_edge=p_edge)),
                  compiler_options=QUICK_COMPILE)
    errs = one(jax.random.split(key, n_seeds))
    return EquivarianceResult(*(np.asarray(e) for e in errs))


# --------------------------------------------------------------------------
# GCN on the karate club
# --------------------------------------------------------------------------


class GCNParams(NamedTuple):
    """Two-layer GCN weights (no biases, as in Kipf & Welling)."""

    w1: Array  # (d, hidden)
    w2: Array  # (hidden, classes)


def init_gcn(d: int, hidden: int, classes: int, *, key: Array) -> GCNParams:
    """Glorot-uniform weights, as in Kipf & Welling 2017."""
    k1, k2 = jax.random.split(key)
    glorot = jax.nn.initializers.glorot_uniform()
    return GCNParams(glorot(k1, (d, hidden)), glorot(k2, (hidden, classes)))


def gcn(params: GCNParams, prop: Array, x: Array) -> Array:
    r"""Two-layer GCN logits (Kipf & Welling 2017, eq. (9)).

    .. math:: Z = \hat P\, \mathrm{ReLU}(\hat P X W_1)\, W_2 .

    With ``prop = I`` it is a two-layer perceptron applied to each node alone:
    the same model without the graph.
    """
    return prop @ jax.nn.relu(prop @ x @ params.w1) @ params.w2


def gcn_loss(params: GCNParams, prop: Array, x: Array, labels: Array, mask: Array, *, weight_decay: float) -> Array:
    """Cross-entropy on the labelled nodes (``mask``) plus ``weight_decay * |W_1|^2 / 2``."""
    ce = optax.softmax_cross_entropy_with_integer_labels(gcn(params, prop, x), labels)
    return jnp.sum(ce * mask) / jnp.sum(mask) + 0.5 * weight_decay * jnp.sum(params.w1**2)


def labelled_mask(labels: Array, per_class: int, *, key: Array) -> Array:
    """A 0/1 mask choosing ``per_class`` random nodes of each class (two classes)."""
    mask = jnp.zeros(labels.shape[0])
    for c, k in zip(range(2), jax.random.split(key, 2)):
        pick = jax.random.choice(k, labels.shape[0], (per_class,), replace=False, p=(labels == c) / jnp.sum(labels == c))
        mask = mask.at[pick].set(1.0)
    return mask


def label_propagation(adj: Array, labels: Array, mask: Array) -> Array:
    r"""Harmonic-function label propagation (Zhu, Ghahramani & Lafferty 2003).

    The scores :math:`f` equal the labels on the labelled set :math:`L` and are
    harmonic elsewhere, :math:`(Lf)_U = 0`:
    :math:`f_U = (D_{UU} - A_{UU})^{-1} A_{UL} f_L`. Class 1 where :math:`f > 1/2`.
    Implemented with masks: solve :math:`(L + \operatorname{diag}(m))f = m \odot y`
    restricted appropriately, which pins :math:`f_L = y_L`.
    """
    lap = jnp.diag(adj.sum(axis=1)) - adj
    # Rows of labelled nodes become f_i = y_i; the others (L f)_i = 0.
    system = jnp.where(mask[:, None] > 0, jnp.eye(adj.shape[0]), lap)
    rhs = mask * labels
    f = jnp.linalg.solve(system, rhs)
    return (f > 0.5).astype(jnp.int32)


class KarateResult(NamedTuple):
    """Test accuracies on the unlabelled nodes, one per seed.

    Attributes:
        gcn_acc: two-layer GCN with the graph.
        no_graph_acc: the same network and training with ``prop = I``.
        label_prop_acc: label propagation from the same labelled nodes.
        losses: GCN training loss per step, shape ``(n_seeds, steps)``.
        masks: the labelled nodes of each seed, shape ``(n_seeds, 34)``.
        predictions: GCN class of each node for each seed, ``(n_seeds, 34)``.
        labels: the true factions.
        adj: the karate club adjacency matrix.
    """

    gcn_acc: np.ndarray
    no_graph_acc: np.ndarray
    label_prop_acc: np.ndarray
    losses: np.ndarray
    masks: np.ndarray
    predictions: np.ndarray
    labels: np.ndarray
    adj: np.ndarray


def _train_gcn(params, prop, x, labels, mask, *, steps, lr, weight_decay):
    opt = optax.adam(lr)

    def loss_fn(p):
        return gcn_loss(p, prop, x, labels, mask, weight_decay=weight_decay)

    def step(carry, _):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p)
        updates, s = opt.update(g, s, p)
        return (optax.apply_updates(p, updates), s), loss

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)), None, length=steps)
    pred = jnp.argmax(gcn(params, prop, x), axis=1)
    acc = jnp.sum((pred == labels) * (1 - mask)) / jnp.sum(1 - mask)
    return acc, losses, pred


def run_karate(
    *, per_class: int = 1, hidden: int = 16, steps: int = 200, lr: float = 0.01,
    weight_decay: float = 5e-4, n_seeds: int = 64, key: Array,
) -> KarateResult:
    """Semi-supervised node classification on Zachary's karate club.

    Features are one-hot node identities (``X = I``, as in Kipf & Welling's
    karate example). Each seed draws ``per_class`` labelled nodes per faction
    and an initialization; accuracy is measured on all other nodes.

    Args:
        per_class: labelled nodes per faction.
        hidden: GCN hidden width.
        steps, lr, weight_decay: full-batch Adam training.
        n_seeds: independent draws of labelled nodes and initialization (``vmap``).
        key: random key.

    Returns:
        A ``KarateResult``.
    """
    adj_np, labels_np = karate_club()
    adj, labels = jnp.asarray(adj_np), jnp.asarray(labels_np)
    n = adj.shape[0]
    x = jnp.eye(n)
    props = jnp.stack([gcn_propagation(adj), jnp.eye(n)])
    train = dict(steps=steps, lr=lr, weight_decay=weight_decay)

    def one(k):
        mask_key, init_key = jax.random.split(k)
        mask = labelled_mask(labels, per_class, key=mask_key)
        params = init_gcn(n, hidden, 2, key=init_key)
        # With the graph and without it (prop = I), from the same start: one vmapped scan.
        accs, losses, preds = jax.vmap(lambda p: _train_gcn(params, p, x, labels, mask, **train))(props)
        acc, acc0, losses, pred = accs[0], accs[1], losses[0], preds[0]
        lp = label_propagation(adj, labels, mask)
        lp_acc = jnp.sum((lp == labels) * (1 - mask)) / jnp.sum(1 - mask)
        return acc, acc0, lp_acc, losses, mask, pred

    acc, acc0, lp_acc, losses, masks, preds = jax.jit(jax.vmap(one), compiler_options=QUICK_COMPILE)(jax.random.split(key, n_seeds))
    return KarateResult(np.asarray(acc), np.asarray(acc0), np.asarray(lp_acc), np.asarray(losses),
                        np.asarray(masks), np.asarray(preds), labels_np, adj_np)


# --------------------------------------------------------------------------
# Over-smoothing
# --------------------------------------------------------------------------


def spectral_energy(prop: np.ndarray, x0: np.ndarray, ks: np.ndarray) -> np.ndarray:
    r"""Dirichlet energy of :math:`X_k = \hat P^k X_0` from the spectrum of :math:`\hat P`.

    With :math:`\hat P = \sum_i \mu_i u_i u_i^\top` (orthonormal :math:`u_i`) and
    :math:`\tilde L = I - \hat P`,

    .. math:: E(X_k) = \sum_i (1 - \mu_i)\, \mu_i^{2k}\, \| u_i^\top X_0 \|^2 .

    Computed in float64 with ``numpy.linalg.eigh``: independent of the
    float32 propagation it is compared with.
    """
    mu, u = np.linalg.eigh(np.asarray(prop, dtype=np.float64))
    weights = (1.0 - mu) * np.sum((u.T @ np.asarray(x0, dtype=np.float64)) ** 2, axis=1)
    return np.array([np.sum(weights * mu ** (2 * int(k))) for k in ks])


def second_eigenvalue(prop: np.ndarray) -> float:
    r"""The largest :math:`|\mu_i|` below the top eigenvalue :math:`\mu_1 = 1` of :math:`\hat P`."""
    mu = np.linalg.eigvalsh(np.asarray(prop, dtype=np.float64))
    return float(np.sort(np.abs(mu))[-2])


class OversmoothingResult(NamedTuple):
    """Dirichlet energy of repeated propagation on the karate club.

    Attributes:
        ks: depths.
        energy: measured :math:`E(\\hat P^k X_0) / E(X_0)`, JAX float32.
        spectral: the spectral sum, float64, same normalization.
        lam: second-largest :math:`|\\mu|` of :math:`\\hat P`.
        rate: fitted per-layer factor :math:`e^{\\text{slope}}` of log-energy over ``fit_from <= k``.
        fit_from: first depth of the fit window.
        gcn_energy: energy of a random-weight ReLU GCN of the same depths, normalized, ``(n_seeds, len(ks))``.
        eigenvalues: the spectrum of :math:`\\hat P`.
    """

    ks: np.ndarray
    energy: np.ndarray
    spectral: np.ndarray
    lam: float
    rate: float
    fit_from: int
    gcn_energy: np.ndarray
    eigenvalues: np.ndarray


def run_oversmoothing(
    *, depth: int = 40, d: int = 16, fit_from: int = 20, n_seeds: int = 8, key: Array,
) -> OversmoothingResult:
    """Propagate Gaussian features ``depth`` times with the GCN matrix of the karate club.

    Also propagates through random-weight ReLU GCN layers
    :math:`X \\mapsto \\mathrm{ReLU}(\\hat P X W)` with orthogonal
    :math:`W` scaled by :math:`\\sqrt 2` (norm-preserving on average for ReLU),
    to show that the weights and the nonlinearity do not stop the decay here.

    Args:
        depth: deepest propagation.
        d: feature dimension.
        fit_from: the rate is fitted on ``fit_from <= k <= depth``.
        n_seeds: random-weight GCNs (``vmap``).
        key: random key.
    """
    x_key, w_key = jax.random.split(key)
    adj_np, _ = karate_club()
    prop = gcn_propagation(jnp.asarray(adj_np))
    adj = jnp.asarray(adj_np)
    x0 = jax.random.normal(x_key, (adj.shape[0], d))

    def step(x, _):
        x = prop @ x
        return x, dirichlet_energy(adj, x)

    _, energies = jax.lax.scan(step, x0, None, length=depth)
    e0 = dirichlet_energy(adj, x0)
    energy = np.concatenate([[1.0], np.asarray(energies / e0)])
    ks = np.arange(depth + 1)
    spectral = spectral_energy(np.asarray(prop), np.asarray(x0), ks)
    spectral = spectral / spectral[0]
    sel = ks >= fit_from
    slope = np.polyfit(ks[sel], np.log(energy[sel]), 1)[0]

    def gcn_run(k):
        ws = jax.vmap(lambda kk: jnp.sqrt(2.0) * jax.random.orthogonal(kk, d))(jax.random.split(k, depth))

        def layer(x, w):
            x = jax.nn.relu(prop @ x @ w)
            return x, dirichlet_energy(adj, x) / jnp.sum(x**2)

        _, e = jax.lax.scan(layer, x0, ws)
        return jnp.concatenate([(e0 / jnp.sum(x0**2))[None], e])

    gcn_energy = jax.jit(jax.vmap(gcn_run), compiler_options=QUICK_COMPILE)(jax.random.split(w_key, n_seeds))
    gcn_energy = np.asarray(gcn_energy) / float(e0 / jnp.sum(x0**2))
    return OversmoothingResult(ks, energy, spectral, second_eigenvalue(np.asarray(prop)), float(np.exp(slope)),
                               fit_from, gcn_energy, np.linalg.eigvalsh(np.asarray(prop, dtype=np.float64)))


# --------------------------------------------------------------------------
# 1-WL colour refinement and GIN-style embeddings
# --------------------------------------------------------------------------


def wl_histograms(adjs: list[np.ndarray], iters: int | None = None) -> list[list[dict]]:
    r"""1-WL colour refinement run jointly on several graphs.

    Every node starts with the same colour; one round replaces the colour of
    :math:`v` by an injective code of
    :math:`\big(c_v, \{\!\{ c_u : u \in N(v) \}\!\}\big)`, with one code book
    shared by all graphs so that colours are comparable.

    Args:
        adjs: adjacency matrices (0/1, symmetric).
        iters: rounds (default: the largest number of nodes, enough to stabilize).

    Returns:
        For each graph, the colour histogram (dict colour -> count) after each
        round 0..iters. 1-WL separates two graphs iff some round's histograms differ.

    References:
        Weisfeiler & Leman 1968; Morris et al. 2019, arXiv:1810.02244.
    """
    iters = max(a.shape[0] for a in adjs) if iters is None else iters
    colours = [np.zeros(a.shape[0], dtype=np.int64) for a in adjs]
    out = [[_histogram(c)] for c in colours]
    for _ in range(iters):
        book: dict = {}
        new = []
        for a, c in zip(adjs, colours):
            sigs = [(int(c[v]), tuple(sorted(int(c[u]) for u in np.flatnonzero(a[v])))) for v in range(a.shape[0])]
            new.append(np.array([book.setdefault(s, len(book)) for s in sigs], dtype=np.int64))
        colours = new
        for o, c in zip(out, colours):
            o.append(_histogram(c))
    return out


def _histogram(c: np.ndarray) -> dict:
    values, counts = np.unique(c, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def wl_separates(adj1: np.ndarray, adj2: np.ndarray) -> bool:
    """Whether 1-WL colour refinement tells the two graphs apart."""
    h1, h2 = wl_histograms([adj1, adj2])
    return any(a != b for a, b in zip(h1, h2))


class GINLayer(NamedTuple):
    """A GIN layer: a two-layer MLP after :math:`(1 + \\epsilon) h_v + \\sum_u h_u`."""

    w1: Array
    b1: Array
    w2: Array
    b2: Array
    eps: Array


def init_gin(widths: list[int], *, key: Array) -> list[GINLayer]:
    """Random GIN layers with He-scaled Gaussian weights and a random epsilon."""
    layers = []
    for d_in, d_out, k in zip(widths[:-1], widths[1:], jax.random.split(key, len(widths) - 1)):
        k1, k2, k3, k4, k5 = jax.random.split(k, 5)
        layers.append(GINLayer(jnp.sqrt(2.0 / d_in) * jax.random.normal(k1, (d_in, d_out)),
                               0.1 * jax.random.normal(k2, (d_out,)),
                               jnp.sqrt(2.0 / d_out) * jax.random.normal(k3, (d_out, d_out)),
                               0.1 * jax.random.normal(k4, (d_out,)),
                               0.1 * jax.random.uniform(k5, ())))
    return layers


def gin_embedding(layers: list[GINLayer], adj: Array) -> Array:
    r"""Graph embedding of a GIN (Xu et al. 2019) with constant input features.

    .. math:: h_v^{(t+1)} = \mathrm{MLP}^{(t)}\Big((1 + \epsilon^{(t)}) h_v^{(t)}
              + \sum_{u \in N(v)} h_u^{(t)}\Big), \qquad h_v^{(0)} = 1,

    and the graph embedding concatenates the sum readouts of all layers.
    """
    h = jnp.ones((adj.shape[0], 1))
    readouts = []
    for layer in layers:
        z = (1.0 + layer.eps) * h + adj @ h
        h = jax.nn.relu(jax.nn.relu(z @ layer.w1 + layer.b1[None, :]) @ layer.w2 + layer.b2[None, :])
        readouts.append(sum_readout(h))
    return jnp.concatenate(readouts)


def graph_pairs() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Pairs of non-isomorphic graphs with equal node and edge counts.

    The first two are regular, so 1-WL cannot separate them; the third has equal
    degree sequences and is separated in the second round.
    """
    def a(g):
        return nx.to_numpy_array(g, nodelist=sorted(g.nodes), weight=None).astype(np.float32)

    two_triangles = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    prism = nx.circular_ladder_graph(3)
    path_a = nx.path_graph(6)
    path_a.add_edge(1, 4)
    path_b = nx.path_graph(6)
    path_b.add_edge(1, 3)
    return {
        r"$2C_3$ vs $C_6$": (a(two_triangles), a(nx.cycle_graph(6))),
        r"$K_{3,3}$ vs prism": (a(nx.complete_bipartite_graph(3, 3)), a(prism)),
        r"$P_6{+}(1,4)$ vs $P_6{+}(1,3)$": (a(path_a), a(path_b)),
    }


class WLResult(NamedTuple):
    """GNN embeddings of graph pairs against 1-WL.

    Attributes:
        names: pair names.
        wl_separates: whether 1-WL separates each pair.
        gap: relative embedding gap :math:`\\|e(G_1) - e(G_2)\\| / \\|e(G_1)\\|`, ``(n_pairs, n_seeds)``.
    """

    names: list[str]
    wl_separates: np.ndarray
    gap: np.ndarray


def run_wl(*, width: int = 32, depth: int = 4, n_seeds: int = 64, key: Array) -> WLResult:
    """Random GINs on each pair of ``graph_pairs``, compared with 1-WL.

    Args:
        width, depth: GIN width and number of layers.
        n_seeds: random GINs (``vmap``), shared by all pairs.
        key: random key.
    """
    pairs = graph_pairs()
    widths = [1] + [width] * depth

    def gaps(k):
        layers = init_gin(widths, key=k)
        out = []
        for a1, a2 in pairs.values():
            e1, e2 = gin_embedding(layers, jnp.asarray(a1)), gin_embedding(layers, jnp.asarray(a2))
            out.append(_relative(e2, e1))
        return jnp.stack(out)

    gap = jax.jit(jax.vmap(gaps), compiler_options=QUICK_COMPILE)(jax.random.split(key, n_seeds))
    sep = np.array([wl_separates(a1, a2) for a1, a2 in pairs.values()])
    return WLResult(list(pairs), sep, np.asarray(gap).T)


# --------------------------------------------------------------------------
# Self-attention and a tiny transformer
# --------------------------------------------------------------------------


class Attention(NamedTuple):
    """Single-head self-attention weights."""

    wq: Array  # (d, d_k)
    wk: Array  # (d, d_k)
    wv: Array  # (d, d_k)
    wo: Array  # (d_k, d)


def init_attention(d: int, d_k: int, *, key: Array) -> Attention:
    """Gaussian weights with variance 1/fan-in."""
    kq, kk, kv, ko = jax.random.split(key, 4)
    s_in, s_out = 1.0 / jnp.sqrt(d), 1.0 / jnp.sqrt(d_k)
    return Attention(s_in * jax.random.normal(kq, (d, d_k)), s_in * jax.random.normal(kk, (d, d_k)),
                     s_in * jax.random.normal(kv, (d, d_k)), s_out * jax.random.normal(ko, (d_k, d)))


def self_attention(params: Attention, x: Array) -> Array:
    r"""Single-head self-attention (Vaswani et al. 2017) on a sequence ``x`` of shape ``(n, d)``.

    .. math:: \alpha_{ij} = \frac{\exp(q_i^\top k_j / \sqrt{d_k})}
              {\sum_{l} \exp(q_i^\top k_l / \sqrt{d_k})}, \qquad
              y_i = W_o^\top \sum_j \alpha_{ij} v_j,

    with :math:`q_i = W_q^\top x_i`, :math:`k_j = W_k^\top x_j`, :math:`v_j = W_v^\top x_j`:
    message passing on the complete graph with data-dependent weights, i.e. a
    Nadaraya-Watson smoother with the kernel :math:`\exp(q^\top k / \sqrt{d_k})`.
    """
    q, k, v = x @ params.wq, x @ params.wk, x @ params.wv
    alpha = jax.nn.softmax(q @ k.T / jnp.sqrt(q.shape[1]), axis=1)
    return alpha @ v @ params.wo


def sinusoidal_positions(length: int, d: int) -> Array:
    r"""Sinusoidal positional encodings (Vaswani et al. 2017, section 3.5), ``(length, d)``, ``d`` even.

    .. math:: \mathrm{PE}_{t, 2i} = \sin(t / 10000^{2i/d}), \quad
              \mathrm{PE}_{t, 2i+1} = \cos(t / 10000^{2i/d}).
    """
    t = jnp.arange(length)[:, None]
    freq = 1.0 / 10000.0 ** (jnp.arange(0, d, 2)[None, :] / d)
    return jnp.stack([jnp.sin(t * freq), jnp.cos(t * freq)], axis=2).reshape(length, d)


class Block(NamedTuple):
    """A pre-norm transformer block: attention and a ReLU MLP, both residual."""

    attn: Attention
    w1: Array
    b1: Array
    w2: Array
    b2: Array


class Transformer(NamedTuple):
    """Token embedding, blocks, unembedding."""

    embed: Array  # (vocab, d)
    blocks: list[Block]
    unembed: Array  # (d, vocab)


def init_transformer(vocab: int, d: int, depth: int, *, key: Array) -> Transformer:
    """Random tiny transformer: ``depth`` single-head blocks of width ``d``, MLP width ``4d``."""
    keys = jax.random.split(key, depth + 2)
    blocks = []
    for k in keys[:depth]:
        ka, k1, k2 = jax.random.split(k, 3)
        blocks.append(Block(init_attention(d, d, key=ka),
                            jax.random.normal(k1, (d, 4 * d)) / jnp.sqrt(d), jnp.zeros(4 * d),
                            jax.random.normal(k2, (4 * d, d)) / jnp.sqrt(4 * d), jnp.zeros(d)))
    return Transformer(jax.random.normal(keys[depth], (vocab, d)),
                       blocks, jax.random.normal(keys[depth + 1], (d, vocab)) / jnp.sqrt(d))


def _layer_norm(x: Array) -> Array:
    mu = x.mean(axis=-1, keepdims=True)
    return (x - mu) / jnp.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)


def transformer(params: Transformer, tokens: Array, *, pe_scale: Array | float = 1.0) -> Array:
    r"""Logits of a pre-norm encoder-only transformer for ONE sequence of tokens, ``(L, vocab)``.

    .. math:: x^{(0)}_t = E_{s_t} + c\,\mathrm{PE}_t,\quad
              x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x)),\quad
              x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x)),\quad
              \text{logits}_t = \mathrm{LN}(x_t)^\top U,

    with ``pe_scale`` :math:`c` = 1 (positions) or 0 (no positions: then the
    map is permutation equivariant in the sequence positions).
    """
    x = params.embed[tokens] + pe_scale * sinusoidal_positions(tokens.shape[0], params.embed.shape[1])
    for b in params.blocks:
        x = x + self_attention(b.attn, _layer_norm(x))
        x = x + jax.nn.relu(_layer_norm(x) @ b.w1 + b.b1[None, :]) @ b.w2 + b.b2[None, :]
    return _layer_norm(x) @ params.unembed


def reversal_batch(batch: int, length: int, vocab: int, *, key: Array) -> tuple[Array, Array]:
    """Uniform random sequences and their reversals, ``(batch, length)`` each."""
    x = jax.random.randint(key, (batch, length), 0, vocab)
    return x, x[:, ::-1]


def equivariant_ceiling(length: int, vocab: int, *, n: int = 200_000, key: Array) -> tuple[float, float]:
    r"""Best token accuracy on reversal of any permutation-equivariant model (even ``length``).

    An equivariant map's output at position :math:`i` is a function of the token
    :math:`s_i` and the multiset :math:`M` of the sequence. For i.i.d. uniform
    tokens, given :math:`(s_i, M)` the reversed target :math:`s_{L+1-i}` (a
    different position when :math:`L` is even) is a uniform draw from
    :math:`M \setminus \{s_i\}`, so the Bayes-optimal accuracy is

    .. math:: \mathbb E\Big[\max_c \#_c(M \setminus \{s_i\})\Big] / (L - 1).

    Returns:
        Monte Carlo estimate of the ceiling and its standard error.
    """
    if length % 2:
        raise ValueError("the ceiling is derived for even lengths")

    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def per_sequence(k):
        x = jax.random.randint(k, (n, length), 0, vocab)
        counts = jax.vmap(lambda s: jnp.bincount(s, length=vocab))(x)  # (n, vocab)
        rest = counts[:, None, :] - jax.nn.one_hot(x, vocab, dtype=counts.dtype)  # (n, L, vocab)
        return rest.max(axis=2).mean(axis=1) / (length - 1)

    best = np.asarray(per_sequence(key))
    return float(best.mean()), float(best.std() / np.sqrt(n))


class ReversalResult(NamedTuple):
    """Tiny transformers trained on sequence reversal, with and without positions.

    Attributes:
        losses: training loss, ``(2, n_seeds, steps // record_every)``; row 0 with
            positional encodings, row 1 without.
        token_acc: test token accuracy, ``(2, n_seeds)``.
        seq_acc: test exact-sequence accuracy, ``(2, n_seeds)``.
        ceiling, ceiling_sem: the equivariant ceiling and its Monte Carlo error.
        chance: ``1 / vocab``.
        record_every: cadence of ``losses``.
        attention: first-layer attention of the first seed with positions on one test sequence.
    """

    losses: np.ndarray
    token_acc: np.ndarray
    seq_acc: np.ndarray
    ceiling: float
    ceiling_sem: float
    chance: float
    record_every: int
    attention: np.ndarray


def run_reversal(
    *, length: int = 8, vocab: int = 10, d: int = 32, depth: int = 1, steps: int = 400,
    batch: int = 64, lr: float = 3e-3, record_every: int = 20, n_seeds: int = 2,
    n_test: int = 2048, key: Array,
) -> ReversalResult:
    """Train tiny transformers on reversal, with (``pe_scale=1``) and without (0) positions.

    Fresh sequences every step (online data); Adam; a ``lax.scan`` over steps,
    compiled once and called for each setting and seed.

    Args:
        length, vocab: sequence length (even) and vocabulary size.
        d, depth: model width and number of blocks.
        steps, batch, lr, record_every: training.
        n_seeds: independent initializations and data streams per setting.
        n_test: fresh test sequences.
        key: random key.
    """
    init_key, data_key, test_key, show_key, ceil_key = jax.random.split(key, 5)
    opt = optax.adam(lr)

    def loss_fn(params, x, y, pe):
        logits = jax.vmap(lambda s: transformer(params, s, pe_scale=pe))(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    # One compiled program for one model; ``pe`` is an argument, so both settings and
    # all seeds reuse it (a vmap over them would compile a larger program, slower on CPU).
    @partial(jax.jit, compiler_options=QUICK_COMPILE)
    def train(k_init, pe, k_data, x_test, y_test):
        params = init_transformer(vocab, d, depth, key=k_init)

        def step(carry, _):
            p, s, k = carry
            k, batch_key = jax.random.split(k)
            x, y = reversal_batch(batch, length, vocab, key=batch_key)
            loss, g = jax.value_and_grad(loss_fn)(p, x, y, pe)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s, k), loss

        (params, _, _), losses = jax.lax.scan(step, (params, opt.init(params), k_data), None, length=steps)
        pred = jnp.argmax(jax.vmap(lambda s: transformer(params, s, pe_scale=pe))(x_test), axis=-1)
        return (losses.reshape(-1, record_every).mean(axis=1), jnp.mean(pred == y_test),
                jnp.mean(jnp.all(pred == y_test, axis=1)), params)

    # Independent initializations and data streams for each (setting, seed); one test set.
    init_keys = jax.random.split(init_key, (2, n_seeds))
    data_keys = jax.random.split(data_key, (2, n_seeds))
    x_test, y_test = reversal_batch(n_test, length, vocab, key=test_key)
    runs = [[train(init_keys[row, s], pe, data_keys[row, s], x_test, y_test) for s in range(n_seeds)]
            for row, pe in enumerate((1.0, 0.0))]
    losses, tok, seq = (np.array([[np.asarray(r[i]) for r in row] for row in runs]) for i in range(3))
    first = runs[0][0][3]
    x, _ = reversal_batch(1, length, vocab, key=show_key)
    h = _layer_norm(first.embed[x[0]] + sinusoidal_positions(length, d))
    attn = first.blocks[0].attn
    q, k = h @ attn.wq, h @ attn.wk
    alpha = jax.nn.softmax(q @ k.T / jnp.sqrt(q.shape[1]), axis=1)
    ceiling, sem = equivariant_ceiling(length, vocab, key=ceil_key)
    return ReversalResult(losses, tok, seq, ceiling, sem,
                          1.0 / vocab, record_every, np.asarray(alpha))


# --------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------


def plot_karate_graph(result: KarateResult, ax, *, seed: int = 0):
    """The karate club: node colour = GCN prediction of one seed, ring = labelled node, edge = true faction."""
    g = nx.from_numpy_array(result.adj)
    pos = nx.spring_layout(g, seed=3)
    colours = [plotting.PALETTE[int(c)] for c in result.predictions[seed]]
    edge = [plotting.PALETTE[int(c)] for c in result.labels]
    nx.draw_networkx_edges(g, pos, ax=ax, alpha=0.3)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, edgecolors=edge, linewidths=2.5, node_size=160)
    lab = np.flatnonzero(result.masks[seed])
    nx.draw_networkx_nodes(g, pos, nodelist=lab.tolist(), ax=ax, node_color="none", edgecolors="k",
                           linewidths=2.5, node_size=480)
    ax.set_axis_off()
    return ax


def plot_karate_accuracy(result: KarateResult, ax):
    """Accuracy over seeds: GCN, label propagation and the graph-blind network; dashed: chance 1/2."""
    data = [result.gcn_acc, result.label_prop_acc, result.no_graph_acc]
    names = ["GCN", "label\npropagation", "no graph\n($\\hat P = I$)"]
    rng = np.random.default_rng(0)  # jitter for display only
    for i, (vals, c) in enumerate(zip(data, plotting.PALETTE)):
        ax.plot(i + 0.12 * rng.standard_normal(vals.size), vals, "o", color=c, alpha=0.45, ms=5)
        mean = vals.mean()
        sem = vals.std(ddof=1) / np.sqrt(vals.size)
        ax.errorbar(i + 0.35, mean, yerr=2 * sem, fmt="D", color="k", capsize=4)
    ax.axhline(0.5, color=plotting.THEORY_COLOR, ls="--", lw=1.5)
    ax.set_xticks(range(3), names)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("test accuracy")
    return ax


def plot_oversmoothing(result: OversmoothingResult, ax):
    """Measured energy (markers) vs the spectral sum (black) and the asymptote lambda^{2k} (dashed)."""
    ks = result.ks
    every = max(1, len(ks) // 30)
    plotting.theory_vs_experiment(ax, ks[::every], result.energy[::every], result.spectral, x_theory=ks,
                                  label=r"$E(\hat P^k X_0)/E(X_0)$", theory_label="spectral sum")
    c = result.spectral[-1] / result.lam ** (2 * ks[-1])
    ax.plot(ks, c * result.lam ** (2 * ks), ls="--", color="0.4", lw=1.6, label=r"$c\,\lambda^{2k}$")
    med = np.median(result.gcn_energy, axis=0)
    ax.plot(ks[::every], med[::every], "s", color=plotting.PALETTE[1], ms=5,
            label=r"ReLU GCN, random $W$ (median)")
    ax.set_yscale("log")
    plotting.label_axes(ax, "depth $k$", "Dirichlet energy (normalized)")
    ax.legend(loc="upper right")
    return ax


def plot_spectrum(result: OversmoothingResult, ax):
    """Eigenvalues of the GCN propagation matrix; the two that set the rate highlighted."""
    mu = np.sort(result.eigenvalues)
    ax.plot(np.arange(1, mu.size + 1), mu[::-1], "o", color=plotting.PALETTE[0])
    ax.axhline(result.lam, color=plotting.THEORY_COLOR, ls="--", lw=1.5)
    ax.axhline(-result.lam, color=plotting.THEORY_COLOR, ls="--", lw=1.5)
    plotting.label_axes(ax, "index $i$", r"eigenvalue $\mu_i$ of $\hat P$")
    ax.text(mu.size, result.lam + 0.04, r"$\pm\lambda$", ha="right", va="bottom")
    return ax


def plot_wl(result: WLResult, ax):
    """Relative GNN embedding gap per pair over random GINs, coloured by the 1-WL verdict."""
    eps = np.finfo(np.float32).eps
    for i, (name, sep, g) in enumerate(zip(result.names, result.wl_separates, result.gap)):
        c = plotting.PALETTE[1] if sep else plotting.PALETTE[0]
        rng = np.random.default_rng(i)  # jitter for display only
        ax.plot(i + 0.1 * rng.standard_normal(g.size), np.maximum(g, eps / 10), "o", color=c, alpha=0.6, ms=5,
                label=("1-WL separates" if sep else "1-WL cannot separate"))
    ax.axhline(eps, color=plotting.THEORY_COLOR, ls="--", lw=1.5)
    ax.text(-0.4, eps * 1.6, r"float32 $\epsilon$", va="bottom")
    ax.set_yscale("log")
    ax.set_xticks(range(len(result.names)), result.names)
    ax.set_ylabel(r"$\|e(G_1)-e(G_2)\|/\|e(G_1)\|$")
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    ax.legend(uniq.values(), uniq.keys(), loc="center right")
    return ax


def plot_equivariance(result: EquivarianceResult, ax):
    """Equivariance errors per seed for the four layers; dashed: float32 epsilon."""
    eps = np.finfo(np.float32).eps
    data = [result.layer_error, result.readout_error, result.positional_error,
            result.attention_error, result.attention_pe_error]
    names = ["MP layer", "sum\nreadout", "MP +\nindex vector", "attention", "attention\n+ PE"]
    colours = [plotting.PALETTE[0], plotting.PALETTE[0], plotting.PALETTE[1], plotting.PALETTE[0], plotting.PALETTE[1]]
    for i, (vals, c) in enumerate(zip(data, colours)):
        rng = np.random.default_rng(i)  # jitter for display only
        ax.plot(i + 0.1 * rng.standard_normal(vals.size), np.maximum(vals, eps / 10), "o", color=c, alpha=0.6, ms=5)
    ax.axhline(eps, color=plotting.THEORY_COLOR, ls="--", lw=1.5)
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("relative equivariance error")
    return ax


def plot_reversal(result: ReversalResult, ax):
    """Training loss of the transformers with and without positions; dashed: entropy floors."""
    steps = (np.arange(result.losses.shape[2]) + 0.5) * result.record_every
    for row, (name, c) in enumerate(zip(["with positions", "without positions"], plotting.PALETTE)):
        for s in range(result.losses.shape[1]):
            ax.plot(steps, result.losses[row, s], color=c, alpha=0.9, label=name if s == 0 else None)
    ax.axhline(np.log(1.0 / result.chance), color=plotting.THEORY_COLOR, ls="--", lw=1.5)
    ax.text(steps[-1], np.log(1.0 / result.chance) * 1.03, r"$\log V$ (chance)", ha="right", va="bottom")
    plotting.label_axes(ax, "step", "cross-entropy")
    ax.legend(loc="center right")
    return ax


def plot_attention(result: ReversalResult, ax):
    """First-layer attention of the trained model with positions: the anti-diagonal."""
    ax.imshow(result.attention, cmap="viridis", vmin=0, vmax=1)
    n = result.attention.shape[0]
    ax.set_xticks(range(n), [str(j + 1) for j in range(n)])
    ax.set_yticks(range(n), [str(j + 1) for j in range(n)])
    ax.set_xlabel("key position $j$")
    ax.set_ylabel("query position $i$")
    ax.grid(False)
    return ax


def plot_graph_pairs(axes, *, pairs: dict | None = None):
    """Draw each pair of ``graph_pairs`` side by side: ``axes`` has two axes per pair."""
    pairs = graph_pairs() if pairs is None else pairs
    for i, (name, (a1, a2)) in enumerate(pairs.items()):
        for j, a in enumerate((a1, a2)):
            ax = axes[2 * i + j]
            g = nx.from_numpy_array(a)
            pos = nx.kamada_kawai_layout(g) if nx.is_connected(g) else nx.circular_layout(g)
            if not nx.is_connected(g):  # two triangles: place the components apart
                comps = list(nx.connected_components(g))
                pos = {}
                for c, shift in zip(comps, (-1.2, 1.2)):
                    sub = nx.circular_layout(g.subgraph(c))
                    pos.update({v: p + np.array([shift, 0.0]) for v, p in sub.items()})
            nx.draw_networkx_edges(g, pos, ax=ax, width=2.0)
            nx.draw_networkx_nodes(g, pos, ax=ax, node_size=110, node_color=plotting.PALETTE[2 * i % 3 + 0])
            ax.set_axis_off()
            ax.set_aspect("equal")
            ax.margins(0.15)
        axes[2 * i].set_title(name, loc="left", x=0.0)
    return axes
