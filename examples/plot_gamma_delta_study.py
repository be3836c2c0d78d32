"""
A gamma, delta -> 0 convergence study
=====================================

Part II proves that the smoothed, regularized transport problems converge to the exact one
when :math:`\\gamma, \\delta \\to 0` along schedules with :math:`\\gamma/\\delta^d \\to 0`
(Part II, (3.1)). A femot study runs such a schedule, compares every level with an exact
reference (here the exact 1D optimal transport by quantile functions), fits rates, and stores
every run so that an interrupted study resumes where it stopped.

The same study is a TOML file for the command line (``femot study FILE --out DIR``); here it
is given as a dictionary.
"""
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from femot.studies import run_study
from femot.studies.config import parse_config

config = {
    "study": {"name": "gallery-transport-1d", "problem": "transport", "seeds": [0]},
    # delta = C gamma^(1/(d+s)) with d = d1 + d2 = 2: gamma / delta^d -> 0
    "schedule": {"n_levels": 4, "gamma0": 8e-4, "factor": 0.25, "s": 0.5, "C": 2.0},
    "mesh": {"nodes_per_delta": 6.0, "domain": [0.0, 1.0]},   # h = delta / 6 at every level
    "transport": {
        "beta": 2.0, "enlarge": True,                          # cost |x - y|^2, smoothing on [-rho, 1 + rho]
        "mu1": [{"type": "gaussian_mixture", "components": [[0.30, 0.08, 0.5], [0.62, 0.05, 0.5]], "mass": 0.6},
                {"type": "diracs", "points": [0.12, 0.85], "weights": [0.2, 0.2]}],
        "mu2": {"type": "gaussian_mixture", "components": [[0.45, 0.10, 0.7], [0.80, 0.06, 0.3]]},
    },
    "report": {"metrics": ["cost_error", "marginal_w1", "plan_w1"], "primary": "cost_error"},
}
study = parse_config(config)
out = tempfile.mkdtemp()
outcome = run_study(study, out, quiet=True, plots=False)
print(f"{len(outcome.rows)} of {len(study.runs)} runs complete; report in {outcome.files.get('report', out)}")

# %%
# The table: one row per level, each with its own success flag and Newton iterations.
print(f"{'gamma':>9s} {'delta':>8s} {'nodes':>6s} {'cost error':>11s} {'plan W1':>9s} {'nit':>4s}  ok")
for row in outcome.rows:
    print(f"{row['gamma']:9.2e} {row['delta']:8.4f} {row['n_nodes']:6d} {row['cost_error']:11.3e} "
          f"{row['plan_w1']:9.3e} {row['nit']:4d}  {row['success']}")

# %%
# Errors against delta, with the rates fitted by least squares on log-log axes.
fig, ax = plt.subplots(figsize=(5.6, 4.0), layout="constrained")
delta = np.array([row["delta"] for row in outcome.rows])
for metric, marker in (("cost_error", "o"), ("marginal_w1", "s"), ("plan_w1", "^")):
    err = np.array([row[metric] for row in outcome.rows])
    rate = next(r for r in outcome.rates if r["metric"] == metric)
    ax.loglog(delta, err, marker + "-", label=f"{metric}  ~ delta^{rate['rate_delta']:.2f}")
ax.set_xlabel("smoothing radius delta (gamma coupled)")
ax.set_ylabel("error against the exact transport")
ax.legend(fontsize=8)
ax.invert_xaxis()
plt.show()
