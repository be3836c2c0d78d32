"""The study report reads well: tick labels of narrow log ranges, coinciding curves, metrics
that cannot be fitted, the parameters of the setup and the definition of the order column."""
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from femot.studies import report  # noqa: E402
from femot.studies.config import parse_config  # noqa: E402
from femot.studies.runner import run_study  # noqa: E402

CONFIG = {
    "study": {"name": "report-check", "problem": "transport", "seeds": [0]},
    "schedule": {"n_levels": 4, "gamma0": 8e-4, "factor": 0.25, "s": 0.5, "C": 2.0},
    "mesh": {"nodes_per_delta": 6.0, "domain": [0.0, 1.0]},
    "transport": {"beta": 2.0, "enlarge": True,
                    "mu1": {"type": "gaussian_mixture", "components": [[0.35, 0.08, 1.0]]},
                    "mu2": {"type": "gaussian_mixture", "components": [[0.6, 0.1, 1.0]]}},
    "report": {"metrics": ["cost_error", "marginal_w1"], "primary": "cost_error"},
}


def _labels(axis):
    plt.gcf().canvas.draw()
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()], \
        [t.get_text() for t in axis.get_ticklabels(minor=True) if t.get_text()]


def test_narrow_log_range_gets_readable_major_labels_and_no_minor_labels():
    fig, ax = plt.subplots()
    ax.loglog([3e-4, 4e-4, 6e-4, 9e-4], [1.0, 2.0, 3.0, 4.0])
    major, minor = _labels(ax.xaxis)
    assert not major or len(minor) > 0  # matplotlib's default labels minor ticks of such a range
    report._tidy_log_axes(ax)
    major, minor = _labels(ax.xaxis)
    assert minor == [] and 3 <= len(major) <= 6
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.xaxis.get_majorticklocs() if lo <= t <= hi]
    mantissas = {round(t / 10 ** math.floor(math.log10(t)), 6) for t in ticks}
    assert mantissas <= {1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0} and len(ticks) == len(major)
    assert all(len(label) <= 7 for label in major), major  # '0.0004', not '4 x 10^-4' in TeX
    plt.close(fig)


def test_coinciding_curves_are_named_and_styled_apart():
    e = np.array([1e-2, 5e-3, np.nan])
    assert report._same_as(e.copy(), {"control_w1": e}) == " (= control_w1)"
    assert report._same_as(e * (1 + 1e-6), {"control_w1": e}) == ""
    styles = [report._style(k) for k in range(12)]
    assert len(set(styles)) == 12


def test_report_defines_order_lists_parameters_and_reports_unfitted_metrics(tmp_path):
    study = parse_config(CONFIG)
    out = run_study(study, tmp_path, quiet=True, plots=False)
    assert out.complete
    text = (tmp_path / "report.md").read_text()
    assert "order(gamma)" in text and "log(e_n / e_(n-1)) / log(gamma_n / gamma_(n-1))" in text
    assert "- `mu1` = `" in text and "{'type'" not in text  # a parameter list, not a dict repr
    rows = out.rows
    for r in rows:  # a metric that is zero on every level (e.g. discretization error on one mesh)
        r["marginal_w1"] = 0.0
    rates = report.fit_rates(study, rows)
    table = report.format_table(study, rows, rates)
    assert "marginal_w1   not fitted: 0 of 4 levels have a positive error" in table
    assert "NOT decreasing" not in table.split("marginal_w1")[-1]


def test_coupling_error_names_the_keys_that_were_given():
    import pytest

    from femot.studies import ConfigError

    bad = dict(CONFIG, schedule={"n_levels": 3, "gamma0": 8e-4, "factor": 0.25, "s": 0.5, "C": 2.0})
    with pytest.raises(ConfigError, match=r"^schedule.n_levels/gamma0/factor \(with s, C\): the schedule violates"):
        parse_config(bad)
    gs = [8e-4 * 0.25 ** k for k in range(3)]
    with pytest.raises(ConfigError, match=r"^schedule.gammas: the schedule violates"):
        parse_config(dict(CONFIG, schedule={"gammas": gs, "s": 0.5, "C": 2.0}))
