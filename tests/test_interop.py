"""Reading the authors' MATLAB instance files as they are, and writing results MATLAB can load.

The reference MATLAB implementation (public repository sebastianhillbrecht/cntr_method)
ships two instance files.  Their layout, as reported by ``scipy.io.whosmat`` (MATLAB
class) and ``scipy.io.loadmat`` (storage type; MATLAB stores integer-valued doubles as
small integers, which loadmat returns as such), with n = 25 resp. 50:

test_25x25.mat: D (n,n) dense double [uint8, all ones], D1 (n,1) dense double [uint8, ones],
    c_d (n,n) dense double [uint16, |i-j|^2], mu1_star (n,1) sparse, mu2_d (n,1) sparse,
    pi_star (n,n) sparse, mu1_0 (n,1) dense double [1/n], delta_0 (1,1) double [uint8, 1],
    H_0 (n,n) dense double [uint8, identity].
test_50x50.mat: H_0 (n,n) dense double [uint8, identity], c_d (n,n) dense double [uint16],
    delta_0 (1,1) double [uint8, 1], mu1 (n,1) dense double (a computed marginal),
    mu1_0 (n,1) dense double, mu1_d (n,1) sparse, mu2_d (n,1) sparse,
    pi (n,n) dense double (a computed regularized plan), pi_d (n,n) sparse.

The files below are built with that layout (same names, shapes, sparse/dense kinds) from
femot's own random instance generator, at a small n, once with every dense variable
stored as double and once with the integer storage types that loadmat returns for the
authors' files.
"""
import numpy as np
import pytest
import scipy.io as sio
import scipy.sparse as sp

from femot.cli import main
from femot.problems.instances import identification_instance, instance_options, load_instance, problem_from_instance

N, SEED, GAMMA = 8, 1, 1e-3

# name -> (shape in units of n, sparse?, storage type of the MATLAB-compressed variant)
LAYOUT_25 = {"D": (("n", "n"), False, np.uint8), "D1": (("n", 1), False, np.uint8),
             "c_d": (("n", "n"), False, np.uint16), "mu1_star": (("n", 1), True, None),
             "mu2_d": (("n", 1), True, None), "pi_star": (("n", "n"), True, None),
             "mu1_0": (("n", 1), False, None), "delta_0": ((1, 1), False, np.uint8),
             "H_0": (("n", "n"), False, np.uint8)}
LAYOUT_50 = {"H_0": (("n", "n"), False, np.uint8), "c_d": (("n", "n"), False, np.uint16),
             "delta_0": ((1, 1), False, np.uint8), "mu1": (("n", 1), False, None),
             "mu1_0": (("n", 1), False, None), "mu1_d": (("n", 1), True, None),
             "mu2_d": (("n", 1), True, None), "pi": (("n", "n"), False, None),
             "pi_d": (("n", "n"), True, None)}
LAYOUTS = {"25x25": LAYOUT_25, "50x50": LAYOUT_50}


def reference_values(n=N, seed=SEED):
    """The variables of both reference files, from femot's generator (experiment 1)."""
    d = identification_instance(n, seed)
    mu1, pi = d["mu1_true"], d["pi_true"]
    computed = problem_from_instance(d, gamma=GAMMA).lower_level(mu1).plan.toarray()
    return d, {"D": np.ones((n, n)), "D1": np.ones((n, 1)), "c_d": d["c_d"], "mu1_star": mu1[:, None],
               "mu2_d": d["mu2_d"][:, None], "pi_star": pi, "mu1_0": np.full((n, 1), 1.0 / n),
               "delta_0": np.ones((1, 1)), "H_0": np.eye(n), "mu1": mu1[:, None], "mu1_d": mu1[:, None],
               "pi": computed, "pi_d": pi}


def write_reference_file(path, layout, storage="double", n=N, seed=SEED, **override):
    """A .mat file laid out like the authors' file ``layout``; ``override`` replaces values."""
    d, v = reference_values(n, seed)
    v.update(override)
    out = {}
    for name, (_, sparse, small) in LAYOUTS[layout].items():
        x = v[name]
        if sparse:
            out[name] = sp.csc_matrix(x, dtype=float)
        elif storage == "matlab" and small is not None:
            a = np.asarray(x)
            assert np.array_equal(a, np.round(a)) and a.min() >= 0
            out[name] = a.astype(small)
        else:
            out[name] = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=float)
    sio.savemat(path, out)
    return d


@pytest.mark.parametrize("storage", ["double", "matlab"])
@pytest.mark.parametrize("layout", ["25x25", "50x50"])
def test_reference_layouts_are_reproduced(tmp_path, layout, storage):
    """The built files have the authors' variable names, shapes and sparse/dense kinds."""
    p = tmp_path / f"{layout}.mat"
    write_reference_file(p, layout, storage)
    who = {name: (shape, cls) for name, shape, cls in sio.whosmat(p)}
    assert set(who) == set(LAYOUTS[layout])
    m = sio.loadmat(p)
    for name, (shape, sparse, small) in LAYOUTS[layout].items():
        assert who[name][0] == tuple(N if s == "n" else s for s in shape), name
        assert (who[name][1] == "sparse") == sparse, name
        if storage == "matlab" and small is not None:
            assert m[name].dtype == small, name  # what loadmat returns for the authors' files


@pytest.mark.parametrize("storage", ["double", "matlab"])
@pytest.mark.parametrize("layout", ["25x25", "50x50"])
def test_reference_layouts_load(tmp_path, layout, storage):
    p = tmp_path / f"{layout}.mat"
    d = write_reference_file(p, layout, storage)
    e = load_instance(p)
    obs = "mu1_star" if layout == "25x25" else "mu1_d"
    assert e["names_used"]["mu1_d"] == obs and e["names_used"]["pi_d"] == obs.replace("mu1", "pi")
    assert np.allclose(e["mu1_d"], d["mu1_true"], rtol=0, atol=1e-15)
    assert np.allclose(e["mu2_d"], d["mu2_d"], rtol=0, atol=1e-15)
    assert np.allclose(e["c_d"], d["c_d"], rtol=0, atol=0) and e["c_d"].dtype == float
    assert sp.issparse(e["pi_d"]) and abs(e["pi_d"] - d["pi_true"]).max() <= 1e-15
    assert e["mu1_0"].shape == (N,) and np.allclose(e["mu1_0"], 1.0 / N)
    assert e["tr_options"] == {"Delta0": 1.0, "H0": 1.0}
    assert e["names_used"]["Delta0"] == "delta_0" and e["names_used"]["H0"] == "H_0"
    if layout == "25x25":
        # mu1_star, pi_star are the truth as well; the masks D, D1 (all ones) are read
        assert e["names_used"]["mu1_true"] == "mu1_star" and np.allclose(e["mu1_true"], d["mu1_true"])
        assert np.asarray(e["D"], dtype=bool).all() and np.asarray(e["D1"], dtype=bool).all()
        assert e["unused"] == []
    else:
        assert e["mu1_true"] is None and e["D"] is None
        assert e["unused"] == ["mu1", "pi"] and any("mu1, pi" in s for s in e["notes"])


@pytest.mark.parametrize("layout", ["25x25", "50x50"])
def test_reference_layouts_solve(tmp_path, capsys, layout):
    """Both files solve through ``femot identify``; the result is the lower-level plan at mu1
    (Part III (3.1)) and J is the objective (4.1) evaluated on the file's data."""
    p, out = tmp_path / f"{layout}.mat", tmp_path / "res.mat"
    d = write_reference_file(p, layout, "matlab")
    rc = main(["identify", str(p), "--gamma", str(GAMMA), "--save", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert ("mu1_d <- mu1_star" in text) == (layout == "25x25") and "Delta0 <- delta_0" in text
    r = sio.loadmat(out)
    mu1, pi, alpha, beta = r["mu1"].ravel(), r["pi"].toarray(), r["alpha"].ravel(), r["beta"].ravel()
    assert mu1.min() >= 0 and mu1.sum() == pytest.approx(d["mu2_d"].sum())
    assert np.allclose(pi, np.maximum(alpha[:, None] + beta[None, :] - d["c_d"], 0) / GAMMA, atol=1e-12)
    assert np.allclose(pi.sum(1) + GAMMA * alpha, mu1, atol=1e-8)
    assert np.allclose(pi.sum(0) + GAMMA * beta, d["mu2_d"], atol=1e-8)
    J = 0.5 * np.sum((pi - d["pi_true"].toarray()) ** 2) + 0.5 * np.sum((mu1 - d["mu1_true"]) ** 2)
    assert r["J"].item() == pytest.approx(J, rel=1e-10)
    # the trust-region method decreased J from the file's start mu1_0
    prob = problem_from_instance(load_instance(p), gamma=GAMMA)
    assert J < prob.value(np.full(N, 1.0 / N))


def test_ambiguous_names_are_an_error(tmp_path, capsys):
    d, v = reference_values()
    base = {k: v[k] for k in LAYOUT_50}
    other = d["mu1_true"].copy()
    other[0] += 1e-3
    p = tmp_path / "amb.mat"
    sio.savemat(p, dict(base, mu1_star=other[:, None]))
    with pytest.raises(ValueError, match=r"'mu1_d' and 'mu1_star'"):
        load_instance(p)
    assert main(["identify", str(p)]) == 2
    err = capsys.readouterr().err
    assert "mu1_d" in err and "mu1_star" in err
    q = tmp_path / "amb_pi.npz"
    P = v["pi_d"].toarray()
    P2 = P.copy()
    P2[0, 0] += 1e-3
    np.savez(q, c_d=v["c_d"], mu2_d=v["mu2_d"], mu1_d=v["mu1_d"], pi_d=P, pi_star=P2)
    with pytest.raises(ValueError, match=r"'pi_d' and 'pi_star'"):
        load_instance(q)
    t = tmp_path / "amb_true.npz"
    np.savez(t, c_d=v["c_d"], mu2_d=v["mu2_d"], mu1_star=v["mu1_star"], pi_star=P, mu1_true=other)
    with pytest.raises(ValueError, match=r"'mu1_true' and 'mu1_star'"):
        load_instance(t)


def test_both_names_agreeing_where_observed(tmp_path):
    """mu1_d = mu1_star on D1 (the observation is the truth restricted to D1): no error;
    the *_d variables are the observation and the *_star ones the truth."""
    d, v = reference_values()
    D1 = np.zeros(N)
    D1[:N // 2] = 1
    obs = np.where(D1 > 0, d["mu1_true"], 0.0)
    p = tmp_path / "both.mat"
    sio.savemat(p, {"c_d": v["c_d"], "mu2_d": v["mu2_d"], "mu1_d": obs[:, None], "mu1_star": v["mu1_star"],
                    "pi_d": v["pi_d"], "pi_star": v["pi_star"], "D1": D1[:, None]})
    e = load_instance(p)
    assert e["names_used"]["mu1_d"] == "mu1_d" and e["names_used"]["mu1_true"] == "mu1_star"
    assert np.array_equal(e["mu1_d"], obs) and np.array_equal(e["mu1_true"], d["mu1_true"])
    # the same for the plan, with a sparse band mask D
    D = sp.csc_matrix(np.abs(np.subtract.outer(np.arange(N), np.arange(N))) <= 1, dtype=float)
    P = v["pi_star"].toarray()
    sio.savemat(p, {"c_d": v["c_d"], "mu2_d": v["mu2_d"], "mu1_star": v["mu1_star"], "pi_star": v["pi_star"],
                    "pi_d": sp.csc_matrix(P * D.toarray()), "D": D})
    e = load_instance(p)
    assert e["names_used"]["pi_d"] == "pi_d" and e["names_used"]["pi_true"] == "pi_star"
    assert np.allclose(e["pi_true"].toarray(), P) and np.allclose(e["pi_d"].toarray(), P * D.toarray())
    # the same files without the masks: they differ where observed
    assert np.any(P * (1 - D.toarray()))  # the truth has mass outside the band
    sio.savemat(p, {"c_d": v["c_d"], "mu2_d": v["mu2_d"], "mu1_star": v["mu1_star"], "pi_star": v["pi_star"],
                    "pi_d": sp.csc_matrix(P * D.toarray())})
    with pytest.raises(ValueError, match="'pi_d' and 'pi_star'"):
        load_instance(p)
    sio.savemat(p, {"c_d": v["c_d"], "mu2_d": v["mu2_d"], "mu1_d": obs[:, None], "mu1_star": v["mu1_star"],
                    "pi_d": v["pi_d"]})
    with pytest.raises(ValueError, match="mu1_star"):
        load_instance(p)


def test_missing_observation_names_both_spellings(tmp_path):
    _, v = reference_values()
    p = tmp_path / "m.mat"
    sio.savemat(p, {k: v[k] for k in ("c_d", "mu2_d", "pi_star")})
    with pytest.raises(ValueError, match=r"mu1_d \(or mu1_star\)"):
        load_instance(p)


def test_settings_from_the_file(tmp_path):
    """H_0 = c I becomes H0 = c; a general H_0 is ignored with a note; bad delta_0/H_0 are errors."""
    p = tmp_path / "s.mat"
    write_reference_file(p, "25x25", H_0=2.5 * np.eye(N), delta_0=np.array([[0.25]]))
    e = load_instance(p)
    assert e["tr_options"] == {"Delta0": 0.25, "H0": 2.5}
    assert instance_options(e, {"Delta0": 0.5, "tol": 1e-6}) == {"Delta0": 0.5, "H0": 2.5, "tol": 1e-6}
    res = problem_from_instance(e, gamma=GAMMA).solve(x0=e["mu1_0"],
                               options=instance_options(e, {"max_iter": 1}))
    assert res.tr.options.H0 == 2.5 and res.history[0]["Delta"] == 0.25
    H = np.eye(N)
    H[0, 1] = H[1, 0] = 0.5
    write_reference_file(p, "25x25", H_0=H)
    e = load_instance(p)
    assert "H0" not in e["tr_options"] and any("H_0" in s for s in e["notes"])
    for bad, match in ((dict(H_0=np.eye(N + 1)), "H_0"), (dict(delta_0=np.array([[-1.0]])), "delta_0"),
                       (dict(delta_0=np.ones((1, 2))), "delta_0")):
        write_reference_file(p, "25x25", **bad)
        with pytest.raises(ValueError, match=match):
            load_instance(p)


def _first_row(path):
    h = sio.loadmat(path, simplify_cells=True)["history"]
    return h["f"][0], h["Delta"][0]


def test_mu1_0_and_delta_0_are_used_unless_overridden(tmp_path, capsys):
    """Iteration 0 of the saved history is at the start: f = J(mu1_0) and Delta = delta_0."""
    d, v = reference_values()
    rng = np.random.default_rng(3)
    x0 = rng.random(N) + 0.1
    x0 /= x0.sum()
    p = tmp_path / "start.mat"
    write_reference_file(p, "25x25", mu1_0=x0[:, None], delta_0=np.array([[0.125]]))
    prob = problem_from_instance(load_instance(p), gamma=GAMMA)
    out = tmp_path / "h.mat"
    # one phase (Algorithm 4.1): its history starts at the file's start; the default would save the
    # history of the phase it returns, which may begin at the observed start
    base = ["identify", str(p), "--gamma", str(GAMMA), "--max-iter", "1", "--quiet", "--model", "bfgs", "--save",
            str(out)]
    main(base)
    f0, D0 = _first_row(out)
    assert f0 == pytest.approx(prob.value(x0), rel=1e-12) and D0 == 0.125
    main(base + ["--delta0", "0.75"])
    f0, D0 = _first_row(out)
    assert f0 == pytest.approx(prob.value(x0), rel=1e-12) and D0 == 0.75
    main(base + ["--start", "uniform"])
    f0, D0 = _first_row(out)
    assert f0 == pytest.approx(prob.value(np.full(N, 1.0 / N)), rel=1e-12) and D0 == 0.125
    assert prob.value(x0) != pytest.approx(prob.value(np.full(N, 1.0 / N)), rel=1e-6)
    assert main(base + ["--delta0", "0"]) == 2 and "--delta0" in capsys.readouterr().err


def test_save_mat_round_trip(tmp_path, capsys):
    """Every listed variable comes back through scipy.io.loadmat; .npz for other suffixes."""
    out = tmp_path / "sub" / "x.mat"
    # one phase, so that nit counts the rows of the saved history (the default's nit sums its phases)
    rc = main(["identify", "--random", str(N), "--seed", str(SEED), "--gamma", str(GAMMA), "--model", "bfgs",
               "--save", str(out)])
    assert rc == 0
    capsys.readouterr()
    kinds = {name: (shape, cls) for name, shape, cls in sio.whosmat(out)}
    assert kinds["pi"] == ((N, N), "sparse")
    for name, shape in (("mu1", (N, 1)), ("alpha", (N, 1)), ("beta", (N, 1)), ("J", (1, 1)), ("gamma", (1, 1)),
                        ("epsilon", (1, 1)), ("lambda", (1, 1)), ("nit", (1, 1)), ("history", (1, 1))):
        assert kinds[name][0] == shape, name
    assert kinds["history"][1] == "struct" and kinds["success"][1] == "logical"
    r = sio.loadmat(out, simplify_cells=True)
    d = identification_instance(N, SEED)
    prob = problem_from_instance(d, gamma=GAMMA)
    mu1, pi = r["mu1"], r["pi"]
    assert sp.issparse(pi)
    low = prob.lower_level(mu1)
    assert abs(pi - low.plan).max() <= 1e-12
    assert np.allclose(r["alpha"], low.alpha) and np.allclose(r["beta"], low.beta)
    assert r["J"] == pytest.approx(prob.objective(low.plan, mu1), rel=1e-12)
    assert r["gamma"] == GAMMA and r["epsilon"] == GAMMA and r["lambda"] == 1.0
    assert r["success"] and r["status"] == 0 and isinstance(r["message"], str) and r["message"]
    h = r["history"]
    rows = len(h["k"])
    assert rows >= r["nit"] + 1 and np.array_equal(h["k"], np.arange(rows))
    for col in ("f", "theta", "psi", "Delta", "rho", "step_norm", "pred", "cauchy", "nfev", "accepted",
                "model", "step"):
        assert len(h[col]) == rows, col
    # the last row records the returned point
    assert h["f"][-1] == pytest.approx(r["J"], rel=1e-10) and h["theta"][-1] == pytest.approx(r["stationarity"])
    assert list(h["model"][:-1]) and all(m in ("bfgs", "bouligand") for m in h["model"][:-1])
    # other suffixes: .npz (appended), the same solution with pi dense
    other = tmp_path / "x.out"
    assert main(["identify", "--random", str(N), "--seed", str(SEED), "--gamma", str(GAMMA), "--quiet",
                 "--model", "bfgs", "--save", str(other)]) == 0
    z = np.load(str(other) + ".npz")
    assert np.allclose(z["pi"], pi.toarray()) and np.allclose(z["mu1"], mu1) and z["J"] == r["J"]
    assert np.array_equal(z["history_f"], h["f"])


def test_save_path_checked_before_the_solve(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target in (blocker / "x.mat", tmp_path):
        rc = main(["identify", "--random", str(N), "--save", str(target)])
        cap = capsys.readouterr()
        assert rc == 2 and "--save" in cap.err and "iterations" not in cap.out
