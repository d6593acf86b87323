"""The course's shared JAX library: what two or more weeks use.

Modules:
    plotting: the house style (palette read from ``slides/palette.scss``)
        and figure helpers, which take an ``ax`` and return it.
    data: synthetic data with explicit keys; datasets shipped with packages.
    train: optax training loops (``jit``, ``lax.scan``; ``vmap`` over seeds
        outside), including ``trajectory`` with ``record_every``.
    linalg: Hessian-vector products and power iteration.
    mlp: fully connected networks in standard and NTK parametrization,
        initialized per layer (``init_mlp``) or from one draw (``init_mlp_one_draw``).
    ntk: the analytic (arc-cosine) and empirical neural tangent kernels.
    metrics: errors, accuracies, power-law fits with standard errors.
    ledger: ``verify``, a verified result checked while the lecture renders.
    show: ``sci`` (a number in LaTeX) and ``show`` (real source code on a slide).

A week is one folder, ``lectures/NN-topic/``: ``lecture.qmd``, ``lab.qmd``,
the week's experiments module (a name unique across weeks, e.g. ``statlearn.py``)
and its tests (``test_statlearn.py``). The lecture imports the module by name
(``import statlearn as ex``): the kernel runs in the week's folder, under
Quarto and under the Quarto-free build alike. pytest finds the tests from the
folders; the build keys its cache on the folder's Python files and on this
library.

Naming convention, all weeks:
    key: the random key, keyword-only and never defaulted; subkeys are
        ``data_key, init_key = jax.random.split(key)``; many keys are ``keys``.
    n_seeds: the number of independent repetitions (training sets, chains,
        initializations) of one experiment, ``vmap``-ed over ``keys``.
    lr: the step size (learning rate), written eta in the text.
    sigma_w, sigma_b: weight and bias scales (standard deviations); their
        variances are written ``sigma_w**2`` in code and sigma_w^2 in the text.
    n, d, p: sample size, input dimension, number of features or parameters.
    width, depth, steps, record_every: network width, number of layers,
        optimizer steps, and the cadence at which a trajectory is recorded.
    run_<name>(..., *, key) -> <Name>Result: an experiment, with keyword
        defaults at lecture size; the tests call it at small size. Results are
        ``NamedTuple``s named ``...Result``.
    plot_<name>(result, ax) -> ax: the figure of an experiment.
    Figure captions end with the function that made the figure, linked to the
        week's code page: ``Code: [`module.plot_name`](code.qmd#plot_name).``
        (checked by ``tests/test_captions.py``; the handout and the notebook
        show the name without the link).
"""

__version__ = "2026.1"
