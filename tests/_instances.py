"""Small random instances shared by several test modules."""
import numpy as np


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
