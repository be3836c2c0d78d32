"""Transportation identification (Part III §4): reduced gradient, instances, files, input checks."""
import numpy as np
import pytest
import scipy.sparse as sp

from femot.problems.identification import TransportIdentification, band_mask, solve_identification
from femot.problems.instances import (identification_instance, load_instance, problem_from_instance,
                                      save_instance)


def interior_point(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.5, 1.5, n)
    return x / x.sum()


@pytest.mark.parametrize("experiment", [1, 2])
def test_reduced_gradient_matches_finite_differences(experiment):
    d = identification_instance(12, seed=3, experiment=experiment)
    P = problem_from_instance(d, gamma=1e-2, eps=1e-2, lam=0.7)
    x = interior_point(12, 1)
    f, g = P.value_and_subgradient(x)
    rng = np.random.default_rng(2)
    for _ in range(3):
        h = rng.standard_normal(12)
        h -= h.mean()  # stay on the simplex's affine hull
        t = 1e-6
        fd = (P.value(x + t * h) - P.value(x - t * h)) / (2 * t)
        assert abs(fd - g @ h) <= 1e-6 * max(1.0, abs(fd))


def test_experiment1_recovers_the_truth():
    d = identification_instance(25, seed=0, experiment=1)
    P = problem_from_instance(d, gamma=1e-6, eps=1e-6, lam=1.0)
    r = solve_identification(P)
    assert r.success, r.message
    assert np.abs(r.mu1 - d["mu1_true"]).max() <= 1e-3
    # the computed point is at least as good as the truth for the regularized problem
    assert r.J <= P.value(d["mu1_true"]) + 1e-12
    assert abs(r.mu1.sum() - 1.0) <= 1e-10 and r.mu1.min() >= 0


@pytest.mark.parametrize("ext", [".npz", ".mat"])
def test_instance_files_round_trip(tmp_path, ext):
    d = identification_instance(8, seed=1, experiment=2)
    path = tmp_path / f"inst{ext}"
    save_instance(path, d)
    back = load_instance(path)
    assert np.allclose(back["mu2_d"], d["mu2_d"])
    assert np.allclose(sp.csr_matrix(back["pi_d"]).toarray(), sp.csr_matrix(d["pi_d"]).toarray())
    assert np.array_equal(np.asarray(back["D1"], bool), d["D1"])
    P1 = problem_from_instance(d, gamma=1e-2)
    P2 = problem_from_instance(back, gamma=1e-2)
    x = interior_point(8, 0)
    assert abs(P1.value(x) - P2.value(x)) <= 1e-12


def test_column_vectors_and_missing_variables(tmp_path):
    d = identification_instance(6, seed=2)
    path = tmp_path / "cols.npz"
    np.savez(path, c_d=d["c_d"], mu2_d=d["mu2_d"][:, None], mu1_d=d["mu1_d"][None, :],
             pi_d=sp.csr_matrix(d["pi_d"]).toarray())
    back = load_instance(path)
    assert back["mu2_d"].shape == (6,) and back["mu1_d"].shape == (6,)
    bad = tmp_path / "bad.npz"
    np.savez(bad, c_d=d["c_d"], mu2_d=d["mu2_d"], mu1_d=d["mu1_d"])
    with pytest.raises(ValueError, match="pi_d"):
        load_instance(bad)


def test_bad_input_names_the_argument():
    d = identification_instance(6, seed=0)
    c, m2, pi, m1 = d["c_d"], d["mu2_d"], d["pi_d"], d["mu1_d"]
    with pytest.raises(ValueError, match="mu2_d"):
        TransportIdentification(c, m2[:-1], pi, m1)
    with pytest.raises(ValueError, match="D"):
        TransportIdentification(c, m2, pi, m1, D=np.ones((5, 6), bool))
    with pytest.raises(ValueError, match="D1"):
        TransportIdentification(c, m2, pi, m1, D1=np.zeros(6, bool))  # empty mask
    with pytest.raises(ValueError, match="pi_d"):
        TransportIdentification(c, m2, np.ones((6, 5)), m1)
    P = TransportIdentification(c, m2, pi, m1, gamma=1e-2)
    with pytest.raises(ValueError, match="x0"):
        solve_identification(P, x0=np.full(6, 0.5))  # not on the simplex
    assert band_mask(5, 5, 1).sum() == 13
