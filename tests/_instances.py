"""Small instances and helpers shared by several test modules."""
import numpy as np
import skfem

from femot.fem import PoissonOperator


def random_1d_problem(seed, n1=14, n2=12):
    """Squared-distance cost on sorted random points, random weights and normalized densities.

    Returns ``(c, m1, m2, w1, w2, rng)``; ``rng`` continues the same stream for further draws.
    """
    rng = np.random.default_rng(seed)
    x, y = np.sort(rng.random(n1)), np.sort(rng.random(n2))
    w1 = rng.uniform(0.5, 1.5, n1) / n1
    w2 = rng.uniform(0.5, 1.5, n2) / n2
    m1, m2 = rng.uniform(0.5, 1.5, n1), rng.uniform(0.5, 1.5, n2)
    m1 /= w1 @ m1
    m2 /= w2 @ m2
    return (x[:, None] - y[None, :]) ** 2, m1, m2, w1, w2, rng


def square_control_data(rho=0.25):
    """A 2D control instance on the unit square (refined 3 times): ``(mesh, op, y_d, mu2)``.

    The prior ``mu2`` is a normalized Gaussian bump on the vertices at distance >= rho
    from the boundary (vertex masses), ``y_d`` a small sine bump.
    """
    mesh = skfem.MeshTri.init_sqsymmetric().refined(3)
    op = PoissonOperator(mesh)
    X = op.vertices
    y_d = np.sin(np.pi * X[:, 0]) * np.sin(np.pi * X[:, 1]) * 0.05
    dist = np.minimum.reduce([X[:, 0], 1 - X[:, 0], X[:, 1], 1 - X[:, 1]])
    mu2 = np.where(dist >= rho - 1e-12, np.exp(-((X - 0.45) ** 2).sum(1) / 0.02), 0.0)
    return mesh, op, y_d, mu2 / mu2.sum()


def without_timings(obj):
    """A JSON tree without its wall-clock entries (keys containing 'time'), for comparing runs."""
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if "time" not in k}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj
