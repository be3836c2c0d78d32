"""
Regularized transport plans in 1D and their limit
=================================================

The lower level of every femot problem: the quadratically regularized transport problem

.. math::

    \\min_{\\pi \\ge 0} \\sum_{i,j} w_i v_j \\Big(c_{ij} \\pi_{ij} + \\frac{\\gamma}{2} \\pi_{ij}^2\\Big)
    \\quad\\text{s.t.}\\quad \\sum_j v_j \\pi_{ij} = \\mu_{1,i},\\ \\sum_i w_i \\pi_{ij} = \\mu_{2,j},

solved through its dual by :func:`femot.solve_qrot`. The plan is
:math:`\\pi = (\\alpha \\oplus \\beta - c)_+ / \\gamma` (Part III, Thm 2.7); it is sparse, and as
:math:`\\gamma \\to 0` it concentrates on the graph of the monotone map that
:func:`femot.exact_ot_1d` computes exactly.
"""
import matplotlib.pyplot as plt
import numpy as np

from femot import exact_ot_1d, solve_qrot

n = 200
x = (np.arange(n) + 0.5) / n          # midpoints of a uniform grid on [0, 1]
w = np.full(n, 1.0 / n)               # their quadrature weights
mu1 = np.exp(-(x - 0.3) ** 2 / 0.02) + 0.3
mu1 /= w @ mu1                        # densities with respect to w, unit mass
mu2 = np.exp(-(x - 0.7) ** 2 / 0.01) + 0.1
mu2 /= w @ mu2
c = (x[:, None] - x[None, :]) ** 2    # cost |x - y|^2

exact = exact_ot_1d(x, x, mu1, mu2, w, w)
print(f"exact W_2^2 = {exact.cost:.6f}")

# %%
# Solve for a decreasing sequence of gamma. Every result says whether it converged and how far
# its marginals are from the data; the transport cost tends to the exact one.
results = {}
for gamma in (1e-1, 1e-2, 1e-3):
    res = solve_qrot(c, mu1, mu2, gamma=gamma, eps=0.0, w1=w, w2=w)
    results[gamma] = res
    print(f"gamma = {gamma:.0e}: success={res.success}, {res.nit} Newton steps, residual {res.residual:.1e}, "
          f"<c, pi> - W_2^2 = {res.transport_cost() - exact.cost:.2e}, nonzeros {res.plan.nnz / n**2:.1%}")

# %%
# The plans on the product grid: the support shrinks around the graph of the monotone map.
fig, axs = plt.subplots(1, 3, figsize=(11, 3.6), sharey=True, layout="constrained")
for ax, (gamma, res) in zip(axs, results.items()):
    im = ax.imshow(res.plan.toarray().T, origin="lower", extent=(0, 1, 0, 1), cmap="magma_r")
    ax.set_title(f"plan density, gamma = {gamma:.0e}")
    ax.set_xlabel("x (source)")
fig.colorbar(im, ax=axs, label="pi(x, y)")
axs[0].set_ylabel("y (target)")
plt.show()
