"""
Transportation identification from a MATLAB instance file
=========================================================

Part III's application: from an observed plan :math:`\\pi_d` and an observed marginal
:math:`\\mu_{1,d}`, recover the marginal :math:`\\mu_1` whose regularized optimal plan matches
the observations,

.. math::

    \\min_{\\mu_1 \\in \\text{simplex}} \\tfrac12 \\|S_{\\gamma,\\varepsilon}(\\mu_1, \\mu_2^d) - \\pi_d\\|_D^2
    + \\tfrac{\\lambda}{2} \\|\\mu_1 - \\mu_{1,d}\\|_{D_1}^2 ,

solved by the nonsmooth trust-region method (Part III, Algorithm 4.1).

``femot identify FILE.mat`` and :func:`femot.problems.load_instance` read the instance files of
the authors' MATLAB code as they are (variables ``c_d``, ``mu2_d``, ``pi_star`` or ``pi_d``,
``mu1_star`` or ``mu1_d``, ...). So that this example runs anywhere, it first writes such a file
from femot's generator of the instances of Part III, Section 4.2 (seed 0).
"""
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import scipy.io as sio
import scipy.sparse as sp

from femot.problems import load_instance, problem_from_instance
from femot.problems.instances import identification_instance

seed, n = 0, 30
truth = identification_instance(n, seed)
path = Path(tempfile.mkdtemp()) / f"instance_{n}x{n}.mat"
sio.savemat(path, {"c_d": truth["c_d"], "mu2_d": sp.csc_matrix(truth["mu2_d"][:, None]),
                   "mu1_star": sp.csc_matrix(truth["mu1_true"][:, None]), "pi_star": sp.csc_matrix(truth["pi_true"]),
                   "mu1_0": np.full((n, 1), 1.0 / n)})
print(f"seed {seed}: wrote {path.name} with variables {sorted(v[0] for v in sio.whosmat(path))}")

# %%
# Read it back and solve at gamma = eps = 1e-4.
data = load_instance(path)
problem = problem_from_instance(data, gamma=1e-4, eps=1e-4)
res = problem.solve()
print(res.message)
print(f"success={res.success}, {res.nit} iterations, J = {res.fun:.4e}")
err = np.abs(res.x - truth["mu1_true"]).max()
print(f"max |mu1 - mu1*| = {err:.2e}; J at the truth mu1* = {problem(truth['mu1_true'])[0]:.4e}")

# %%
# The recovered marginal and plan beside the truth.
fig, axs = plt.subplots(1, 3, figsize=(12, 3.6), layout="constrained")
axs[0].bar(np.arange(n) - 0.2, truth["mu1_true"], width=0.4, label="true mu1*")
axs[0].bar(np.arange(n) + 0.2, res.x, width=0.4, label="identified mu1")
axs[0].set_xlabel("node i")
axs[0].set_ylabel("mass")
axs[0].legend(fontsize=8)
pi_d = truth["pi_true"].toarray()
for ax, plan, title in ((axs[1], pi_d, "observed plan pi_d"), (axs[2], sp.csr_array(res.plan).toarray(),
                                                                "plan of the answer")):
    im = ax.imshow(plan, cmap="Blues", vmin=0, vmax=pi_d.max())
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("j")
    ax.set_ylabel("i")
fig.colorbar(im, ax=axs[1:], label="plan entry")
plt.show()
