"""Tables, fitted rates (with 95% confidence intervals), log-log plots and report.md of a
study (docs/studies.md)."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np

from femot._docstrings import fill_doc
from femot.studies.metrics import fit_rate_ci, observed_orders
from femot.studies.registry import get_problem
from femot.studies.store import write_if_changed

__all__ = ["table_rows", "fit_rates", "format_table", "write_outputs", "METRIC_DOC"]

# the two result arguments of the output functions
_outputs_doc = fill_doc(rows_rates="""
rows : list of dict
    The rows of :func:`table_rows`.
rates : list of dict
    The rates of :func:`fit_rates`.
""")

#: One line per metric for the report.
METRIC_DOC = {
    "cost_error": "|regularized transport cost - exact W_beta^beta| (exact by quantile functions)",
    "objective_error": "|regularized objective (cost + gamma/2 |pi|^2) - exact W_beta^beta|",
    "marginal_w1": "max_k W1(k-th marginal of the plan, mu_k) (both normalized to probability measures)",
    "marginal_w2": "max_k W2(k-th marginal of the plan, mu_k) (both normalized to probability measures)",
    "plan_w1": "W1 on Omega_1 x Omega_2 (Euclidean ground metric) between the regularized and the exact "
               "plan, normalized to probability measures; exact OT by POT's network simplex if installed, else "
               "by the HiGHS LP up to 250000 support pairs ('-' beyond)",
    "control_w1": "W1(regularized control, exact control) (exact CDF formula in 1D)",
    "control_w2": "W2(regularized control, exact control) (exact quantile formula in 1D)",
    "objective_gap": "J(regularized control) - min J, J the unregularized (OCP) objective",
    "value_error": "|optimal value of (OCP^delta_gamma) - optimal value of (OCP)|",
    "fun_bias": "|fun - exact_fun|: the regularized objective against the exact (OCP) objective of the same control",
    "state_error": "|y_gamma^delta - y_exact|_{L2}",
    "control_w1_total": "W1(regularized control, exact discrete control on the finest mesh of the study): the "
                        "total error (regularization + discretization)",
    "control_w2_total": "W2(regularized control, exact discrete control on the finest mesh of the study)",
    "discretization_w1": "W1(exact discrete control on the level's mesh, exact discrete control on the finest "
                         "mesh): the discretization error of the reference",
}


def table_rows(study, records: dict) -> list[dict]:
    """Flat rows (one per run, in chain/level order) of the stored results; missing runs are skipped.

    Parameters
    ----------
    study : Study
        The validated study (its chains, levels and metrics).
    records : dict
        Stored run records by run id (see :meth:`RunStore.read`).

    Returns
    -------
    list of dict
        One row per stored run: chain, seed, mesh, level, gamma, delta, h, the metrics, the
        observed orders ``order_<metric>`` between consecutive levels, convergence status,
        certificate, warm start and time.
    """
    rows = []
    for ch in study.chains:
        crow = []
        for lv in ch.levels:
            rec = records.get(lv.id)
            if rec is None:
                continue
            info = rec.get("info", {})
            h = getattr(lv, "h", math.nan)
            row = {"chain": ch.label, "seed": ch.seed, "mesh": rec.get("mesh_label", ""), "level": lv.index,
                   "gamma": lv.gamma, "delta": lv.delta, "ratio": lv.ratio, "h": h,
                   "delta_over_h": lv.delta / h if h and h > 0 and lv.delta > 0 else math.nan,
                   "n_nodes": info.get("n_nodes", ""), "id": lv.id}
            for m in study.metrics:
                row[m] = _f(rec["metrics"].get(m))
            row["nit"] = info.get("nit", "")
            row["success"] = bool(info.get("success", False))
            row["status"] = _status(info)
            cert = info.get("certificate")
            if cert is None:  # other problems: the optimizer's stationarity measure, if any
                cert = "relative_stationarity" if "relative_stationarity" in info else \
                    ("stationarity" if "stationarity" in info else None)
            row["certificate"] = cert or ""
            if "finest_mesh" in info:
                row["finest_mesh"] = info["finest_mesh"]
                row["finest_reference_ok"] = info.get("finest_reference_status") == 0
            row["certificate_value"] = _f(info.get(cert)) if cert else math.nan
            row["warm_start"] = rec.get("warm_start", "")
            row["time_s"] = rec.get("time_s", "")
            crow.append(row)
        if crow:
            g = [r["gamma"] for r in crow]
            for m in study.metrics:
                orders = observed_orders(g, [abs(r[m]) for r in crow])
                for r, o in zip(crow, orders):
                    r[f"order_{m}"] = o
        rows += crow
    return rows


def _status(info) -> str:
    """Short convergence status of a run: converged / iteration limit / failed."""
    if info.get("success"):
        return "converged"
    msg = str(info.get("message", "")).lower()
    if "iteration" in msg and ("limit" in msg or "maximum" in msg):
        return "iteration limit"
    return "failed" if msg else ""


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def fit_rates(study, rows: list[dict]) -> list[dict]:
    """Per chain and metric: rates in gamma and delta, monotone decrease, reduction factor.

    Parameters
    ----------
    study : Study
        The validated study.
    rows : list of dict
        The rows of :func:`table_rows`.

    Returns
    -------
    list of dict
        One entry per (chain with at least two rows, metric): the fitted rates with their
        95% intervals (:func:`femot.studies.metrics.fit_rate_ci`) in gamma and delta,
        whether the error decreases at every level, the reduction factor first/last and
        the first and last errors.
    """
    out = []
    for ch in study.chains:
        cr = [r for r in rows if r["chain"] == ch.label]
        if len(cr) < 2:
            continue
        g = np.array([r["gamma"] for r in cr])
        de = np.array([r["delta"] for r in cr])
        for m in study.metrics:
            e = np.abs(np.array([r[m] for r in cr]))
            fin = e[np.isfinite(e)]
            cg, cd = fit_rate_ci(g, e), fit_rate_ci(de, e)
            out.append({
                "chain": ch.label, "metric": m, "levels": len(cr), "levels_used": cg["n"],
                "rate_gamma": cg["rate"], "rate_gamma_lo": cg["lo"], "rate_gamma_hi": cg["hi"],
                "rate_delta": cd["rate"], "rate_delta_lo": cd["lo"], "rate_delta_hi": cd["hi"],
                "decreasing": bool(fin.size == e.size and np.all(np.diff(e) < 0)),
                "reduction": float(e[0] / e[-1]) if e[-1] > 0 and np.isfinite(e[0]) else math.nan,
                "first": float(e[0]), "last": float(e[-1]),
            })
    return out


# ----------------------------------------------------------------------------- text tables


def _num(v, kind="e"):
    if v is None or v == "":
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "NO"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if not math.isfinite(v):
        return "-"
    if kind == "g":
        return f"{v:.4g}"
    if kind == "o":
        return f"{v:+.2f}"
    return f"{v:.3e}"


def _uses_delta(study) -> bool:
    return bool(get_problem(study.problem).uses_delta)


def _columns(study, rows):
    multi = len(study.chains) > 1
    ud = _uses_delta(study)
    hcol = ["h", "delta_over_h"] if ud and any(np.isfinite(_f(r.get("h"))) for r in rows) else []
    cols = (["chain"] if multi else []) + ["level", "gamma"] + (["delta"] if ud else []) + hcol \
        + (["ratio"] if ud else []) + ["n_nodes"]
    for m in study.metrics:
        cols.append(m)
        if m == study.primary:
            cols.append(f"order_{m}")
    cert = ["certificate_value"] if any(np.isfinite(_f(r.get("certificate_value"))) for r in rows) else []
    return cols + ["nit"] + cert + ["success"]


_HEAD = {"ratio": "gamma/delta^d", "n_nodes": "nodes", "success": "ok", "level": "lvl", "delta_over_h": "delta/h",
         "certificate_value": "certificate"}
_KIND = {"gamma": "e", "delta": "g", "ratio": "e", "h": "g", "delta_over_h": "g"}
_CERT = {"fw_gap": "fw", "relative_stationarity": "rel.stat", "stationarity": "stat"}


def _cell(col, v, row=None):
    if col.startswith("order_"):
        return _num(v, "o")
    if col == "certificate_value":
        if v is None or not np.isfinite(_f(v)):
            return "-"
        kind = _CERT.get((row or {}).get("certificate", ""), "")
        return f"{kind} {float(v):.1e}".strip()
    if col in ("chain", "warm_start", "mesh", "status", "certificate"):
        return str(v)
    return _num(v, _KIND.get(col, "e"))


def _head(col):
    if col.startswith("order_"):
        return "order(gamma)"
    return _HEAD.get(col, col)


@_outputs_doc
def format_table(study, rows, rates) -> str:
    """The study table and the fitted rates as plain text (printed by ``femot study``).

    Parameters
    ----------
    study : Study
        The validated study.
    %(rows_rates)s

    Returns
    -------
    str
        The aligned table followed by one line per fitted rate.
    """
    cols = _columns(study, rows)
    cells = [[_head(c) for c in cols]] + [[_cell(c, r.get(c), r) for c in cols] for r in rows]
    width = [max(len(x[i]) for x in cells) for i in range(len(cols))]
    lines = ["  ".join(x[i].rjust(width[i]) if i or len(study.chains) == 1 else x[i].ljust(width[i])
                       for i in range(len(cols))) for x in cells]
    lines.insert(1, "-" * len(lines[0]))
    lines.append("")
    lines.append("fitted rates (least squares of log error vs log gamma / log delta):")
    ud = _uses_delta(study)
    if not ud:
        lines[-1] = "fitted rates (least squares of log error vs log gamma):"
    lines.append("  (95% confidence intervals of the slope from the least-squares fit, Student t with n - 2 "
                 "degrees of freedom; n = levels used)")
    for r in rates:
        tag = f"{r['chain']}: " if len(study.chains) > 1 else ""
        used = r.get("levels_used", r["levels"])
        if not used or used < 2:
            lines.append(f"  {tag}{r['metric']:>17}   not fitted: {used or 0} of {r['levels']} levels have a "
                         f"positive error (a rate needs two)")
            continue
        mono = "decreasing at every level" if r["decreasing"] else "NOT decreasing at every level"
        lines.append(f"  {tag}{r['metric']:>17} ~ gamma^{_rate(r, 'gamma')}"
                     + (f" ~ delta^{_rate(r, 'delta')}" if ud else "")
                     + f"   (n = {r.get('levels_used', r['levels'])}; {mono}, {_num(r['reduction'], 'g')}x over "
                       f"{r['levels']} levels)")
    return "\n".join(lines)


def _rate(r, key) -> str:
    """'0.56 [0.49, 0.63]' (rate and its 95% interval) or '0.56' without an interval."""
    v = r.get(f"rate_{key}")
    if v is None or not np.isfinite(v):
        return "-"
    lo, hi = r.get(f"rate_{key}_lo", math.nan), r.get(f"rate_{key}_hi", math.nan)
    if lo is None or not np.isfinite(lo):
        return f"{v:.3g}"
    return f"{v:.3g} [{lo:.3g}, {hi:.3g}]"


def markdown_table(header, rows) -> str:
    """A Markdown (pipe) table.

    Parameters
    ----------
    header : sequence of str
        Column titles.
    rows : iterable of sequence
        The rows; every cell is converted with ``str``.

    Returns
    -------
    str
        The table, one line per row, without a trailing newline.
    """
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _csv(rows, cols) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if isinstance(r.get(c), float) and not math.isfinite(r.get(c)) else r.get(c))
                    for c in cols})
    return buf.getvalue()


# ----------------------------------------------------------------------------- plots

_AXIS_LABEL = {"gamma": "gamma (quadratic regularization)", "delta": "delta (smoothing radius)"}
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">")
_LINES = ("-", "--", "-.", ":")


def _style(k: int) -> str:
    """Marker and line style of the k-th curve of a figure: curves that coincide stay visible."""
    return _MARKERS[k % len(_MARKERS)] + _LINES[(k // len(_MARKERS) + k) % len(_LINES)]


def _narrow_log_ticks(lo: float, hi: float) -> list:
    """Major ticks m 10^k of a log range shorter than two decades: mantissas 1, 2, 5 (or, in a
    range holding fewer than three of those, 1, 1.5, 2, 3, 4, 5, 6, 8), at most six of them."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for subs in ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)):
        ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in subs if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= 3:
            break
    stride = max(1, math.ceil(len(ticks) / 6))
    return ticks[::stride]


def _tidy_log_axes(ax) -> None:
    """Readable log axes. matplotlib labels the minor ticks of a range shorter than a decade or
    two (or falls back to linear ticks), and the labels ``3x10^-4 4x10^-4 ...`` overlap; here a
    short range gets a few major ticks labelled compactly and no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
        lo, hi = min(lo, hi), max(lo, hi)
        if axis.get_scale() != "log" or not lo > 0 or math.log10(hi / lo) >= 2:
            continue
        axis.set_major_locator(FixedLocator(_narrow_log_ticks(lo, hi)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        axis.set_minor_formatter(NullFormatter())


def _same_as(e, drawn: dict) -> str:
    """' (= m)' when the finite values ``e`` equal those of an already drawn metric ``m``."""
    for m, prev in drawn.items():
        if prev.shape == e.shape and np.allclose(prev, e, rtol=1e-12, atol=0, equal_nan=True):
            return f" (= {m})"
    return ""


@_outputs_doc
def make_plots(study, rows, rates, folder) -> list[str]:
    """One log-log figure per metric (error vs gamma and vs delta, one line per chain,
    dashed least-squares fits) and an overview of all metrics against gamma.

    Parameters
    ----------
    study : Study
        The validated study.
    %(rows_rates)s
    folder : str or os.PathLike
        Output folder of the PNG files (created if missing).

    Returns
    -------
    list of str
        Paths of the figures written (the overview first, when there is one).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    chains = [ch.label for ch in study.chains]
    axes = (("gamma", "rate_gamma"), ("delta", "rate_delta")) if _uses_delta(study) else (("gamma", "rate_gamma"),)
    for m in study.metrics:
        fig, axs = plt.subplots(1, len(axes), figsize=(5 * len(axes), 4), squeeze=False)
        axs = axs[0]
        plotted = False
        for k, lab in enumerate(chains):
            cr = [r for r in rows if r["chain"] == lab]
            e = np.abs(np.array([r[m] for r in cr], dtype=float))
            ok = np.isfinite(e) & (e > 0)
            if ok.sum() < 1:
                continue
            rate = next((r for r in rates if r["chain"] == lab and r["metric"] == m), None)
            for ax, (key, rk) in zip(axs, axes):
                x = np.array([r[key] for r in cr], dtype=float)
                ln, = ax.loglog(x[ok], e[ok], _style(k), label=lab if len(chains) > 1 else m)
                if rate is not None and np.isfinite(rate[rk]) and ok.sum() >= 2:
                    c = np.polyfit(np.log(x[ok]), np.log(e[ok]), 1)
                    ax.loglog(x[ok], np.exp(np.polyval(c, np.log(x[ok]))), "--", color=ln.get_color(), alpha=0.7,
                              label=f"fit: {key}^{rate[rk]:.2f}")
            plotted = True
        if not plotted:
            plt.close(fig)
            continue
        for ax, (key, _) in zip(axs, axes):
            ax.set_xlabel(_AXIS_LABEL[key])
            ax.set_ylabel(m)
            ax.grid(True, which="both", alpha=0.3)
            _tidy_log_axes(ax)
            ax.legend(fontsize=8)
        fig.suptitle(f"{study.name}: {m}")
        fig.tight_layout()
        p = folder / f"{m}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        out.append(str(p))
    ek = _error_kinds_plot(study, rows, folder, plt)
    if ek:
        out.append(ek)
    # Overview: all metrics of the first chain vs gamma.
    cr = [r for r in rows if r["chain"] == chains[0]]
    if len(cr) >= 2:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        g = np.array([r["gamma"] for r in cr])
        drawn: dict = {}
        for k, m in enumerate(study.metrics):
            e = np.abs(np.array([r[m] for r in cr], dtype=float))
            ok = np.isfinite(e) & (e > 0)
            if ok.any():
                ax.loglog(g[ok], e[ok], _style(k), label=m + _same_as(e, drawn), alpha=0.85)
                drawn[m] = e
        ax.set_xlabel(_AXIS_LABEL["gamma"])
        ax.set_ylabel("error (each metric's own units)")
        ax.grid(True, which="both", alpha=0.3)
        _tidy_log_axes(ax)
        ax.legend(fontsize=8)
        ax.set_title(f"{study.name} ({chains[0]})")
        fig.tight_layout()
        p = folder / "overview.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        out.insert(0, str(p))
    return out


# ----------------------------------------------------------------------------- files


@_outputs_doc
def write_outputs(study, root, rows, rates, *, plots: bool = True, problem=None, runs_info=None) -> dict:
    """results.csv, results.md, rates.csv, figures/*.png and report.md in ``root``.

    Every file is a function of the rows (the stored runs), so a call on an unchanged
    study rewrites nothing; the figures are redrawn when the results changed or when
    one of them is missing.

    Parameters
    ----------
    study : Study
        The validated study.
    root : str or os.PathLike
        The study's output directory.
    %(rows_rates)s
    plots : bool, optional
        Draw the figures.  Default True.
    problem : StudyProblem, optional
        The study problem, whose ``notes`` go into report.md.
    runs_info : dict, optional
        Counts of the runs (e.g. ``failed``) for the report's header.

    Returns
    -------
    dict
        Paths of the files: ``csv``, ``markdown``, ``rates``, ``report`` and ``figures``
        (a list).
    """
    root = Path(root)
    cols = ["chain", "seed", "mesh", "level", "gamma", "delta", "h", "delta_over_h", "ratio", "n_nodes"] + \
        list(study.metrics) + [f"order_{m}" for m in study.metrics] + \
        ["nit", "success", "status", "certificate", "certificate_value", "warm_start", "time_s", "id"]
    changed = write_if_changed(root / "results.csv", _csv(rows, cols))
    rcols = ["chain", "metric", "levels", "levels_used", "rate_gamma", "rate_gamma_lo", "rate_gamma_hi",
             "rate_delta", "rate_delta_lo", "rate_delta_hi", "decreasing", "reduction", "first", "last"]
    write_if_changed(root / "rates.csv", _csv(rates, rcols))
    tcols = _columns(study, rows)
    md_table = markdown_table([_head(c) for c in tcols], [[_cell(c, r.get(c), r) for c in tcols] for r in rows])
    ud = _uses_delta(study)
    rate_table = markdown_table(
        (["chain"] if len(study.chains) > 1 else []) + ["metric", "rate in gamma [95% CI]"]
        + (["rate in delta [95% CI]"] if ud else []) + ["levels used", "decreasing", "reduction"],
        [([r["chain"]] if len(study.chains) > 1 else []) + [r["metric"], _rate(r, "gamma")]
         + ([_rate(r, "delta")] if ud else [])
         + [str(r.get("levels_used", r["levels"])), "yes" if r["decreasing"] else "no", _num(r["reduction"], "g")]
         for r in rates])
    write_if_changed(root / "results.md", f"# {study.name}: results\n\n{md_table}\n\n## Fitted rates\n\n"
                                          f"{rate_table}\n")
    figures = []
    if plots and rows:
        expected = _expected_figures(study, rows, root / "figures")
        if changed or not all(Path(f).is_file() for f in expected):
            figures = make_plots(study, rows, rates, root / "figures")
        else:
            figures = expected
    write_if_changed(root / "report.md", _report(study, rows, rates, md_table, rate_table, figures, root, problem,
                                                 runs_info or {}))
    return {"csv": str(root / "results.csv"), "markdown": str(root / "results.md"),
            "rates": str(root / "rates.csv"), "report": str(root / "report.md"), "figures": figures}


def _error_kinds(study, rows) -> list:
    """(regularization error, total error) metric pairs of the problem present in the rows,
    plus the discretization error when recorded."""
    kinds = get_problem(study.problem).error_kinds
    have = lambda m: m in study.metrics and any(np.isfinite(_f(r.get(m))) for r in rows)
    return [(a, b) for a, b in kinds if have(a) and have(b)]


def _error_kinds_plot(study, rows, folder, plt):
    """errors_vs_delta.png: per chain, the error at fixed h (exact discrete reference on the
    level's mesh), the total error (reference on the finest mesh) and the discretization
    error of the reference, against delta; h <= delta / R marked on a second axis."""
    pairs = _error_kinds(study, rows) if _uses_delta(study) else []
    if not pairs or sum(1 for _ in rows) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for lab in [ch.label for ch in study.chains]:
        cr = [r for r in rows if r["chain"] == lab]
        de = np.array([r["delta"] for r in cr], dtype=float)
        tag = f" ({lab})" if len(study.chains) > 1 else ""
        series = [(a, "o-", f"{a}: same-mesh reference (regularization at fixed h)") for a, _ in pairs[:1]] + \
                 [(b, "s--", f"{b}: finest-mesh reference (total)") for _, b in pairs[:1]]
        if "discretization_w1" in study.metrics:
            series.append(("discretization_w1", "^:", "discretization_w1: reference on level mesh vs finest"))
        drawn: dict = {}
        for m, style, text in series:
            e = np.abs(np.array([_f(r.get(m)) for r in cr]))
            ok = np.isfinite(e) & (e > 0)
            if ok.any():
                ax.loglog(de[ok], e[ok], style, label=text + _same_as(e, drawn) + tag, alpha=0.85)
                drawn[m] = e
    ax.set_xlabel("delta (mesh refined with delta: h <= delta / %g)" % study.resolution_ratio
                  if getattr(study, "mesh_mode", "") == "coupled" else "delta")
    ax.set_ylabel(f"error: {pairs[0][0]}, {pairs[0][1]}")
    ax.grid(True, which="both", alpha=0.3)
    _tidy_log_axes(ax)
    ax.legend(fontsize=7)
    ax.set_title(f"{study.name}: error kinds against delta")
    fig.tight_layout()
    p = Path(folder) / "errors_vs_delta.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return str(p)


def _expected_figures(study, rows, folder) -> list[str]:
    """The files :func:`make_plots` draws for these rows (in its order)."""
    folder = Path(folder)
    out = []
    for m in study.metrics:
        e = np.abs(np.array([r[m] for r in rows], dtype=float))
        if np.any(np.isfinite(e) & (e > 0)):
            out.append(str(folder / f"{m}.png"))
    if _uses_delta(study) and _error_kinds(study, rows) and len(rows) >= 2:
        out.append(str(folder / "errors_vs_delta.png"))
    first = study.chains[0].label
    if sum(r["chain"] == first for r in rows) >= 2:
        out.insert(0, str(folder / "overview.png"))
    return out


def _report(study, rows, rates, md_table, rate_table, figures, root, problem, runs_info) -> str:
    L = [f"# Convergence study: {study.name}", ""]
    if study.description:
        L += [study.description.strip(), ""]
    L += ["## Setup", "",
          f"- problem: `{study.problem}`; parameters:",
          *_param_lines(study.params),
          (f"- coupled schedule (Part II (3.1)): {len(study.gammas)} levels, d = d1 + d2 = {study.d}, "
           f"gamma from {study.gammas[0]:.3e} to {study.gammas[-1]:.3e}, delta from {study.deltas[0]:.4g} to "
           f"{study.deltas[-1]:.4g}, gamma/delta^d from {study.ratios[0]:.3e} to {study.ratios[-1]:.3e}"
           if _uses_delta(study) else
           f"- schedule: {len(study.gammas)} levels, gamma from {study.gammas[0]:.3e} to {study.gammas[-1]:.3e}"),
          f"- chains (mesh, seed): {', '.join(ch.label for ch in study.chains)}; seeds {study.seeds}",
          *_resolution_lines(study, rows),
          f"- runs: {len(rows)} of {len(study.runs)} complete"
          + (f"; {runs_info.get('failed', 0)} failed" if runs_info.get("failed") else ""),
          "", "## Results", "",
          "`order(gamma)`: observed order of the primary metric between consecutive levels, "
          "log(e_n / e_(n-1)) / log(gamma_n / gamma_(n-1)).", "", md_table, "", "## Fitted rates", "",
          "Least-squares slopes of log(error) against log(gamma)"
          + (" and log(delta)" if _uses_delta(study) else "") + " per chain.", "", rate_table, ""]
    L += _convergence_lines(rows)
    L += _error_kind_lines(study, rows, rates)
    if figures:
        L += ["## Figures", ""]
        for f in figures:
            rel = os.path.relpath(f, root)
            L += [f"![{Path(f).stem}]({rel})", ""]
    L += ["## Error measures", ""]
    for m in study.metrics:
        L.append(f"- `{m}`: {METRIC_DOC.get(m, '')}")
    notes = str(getattr(problem, "notes", "") or "") if problem is not None else ""
    if notes:
        L += ["", notes]
    L += ["", "## Runs", "",
          "Each run is one level of one chain (all levels of the schedule for one mesh and seed, run in "
          "order; level n warm-starts from the state of level n-1). Results are in `runs/<id>.json`, "
          "warm-start states in `runs/<id>.npz`; the id hashes the run's parameters and those of the levels "
          "it was warm-started from. An interrupted study resumes from the stored results and states.", ""]
    bad = [r for r in rows if not r["success"]]
    if bad:
        L += ["Runs whose solver did not report success (their numbers are still listed above):", ""]
        L += [f"- chain {r['chain']}, level {r['level']} (`{r['id']}`)" for r in bad]
        L.append("")
    return "\n".join(L) + "\n"


def _resolution_lines(study, rows) -> list[str]:
    if not _uses_delta(study) or not getattr(study, "mesh_mode", ""):
        return []
    R = study.resolution_ratio
    hs = [(r["level"], r["h"], r["delta"]) for r in rows if np.isfinite(_f(r.get("h")))]
    mode = {"coupled": f"refined with delta (mesh.refine_with_delta = {R:g}: at every level the coarsest uniform "
                       f"refinement with h <= delta / {R:g})",
            "generated": "generated intervals following delta (mesh.nodes_per_delta)"}.get(study.mesh_mode,
                                                                                         "given by the config")
    out = [f"- mesh: {mode}; h = longest cell edge; validation requires h <= delta / {R:g} at every level "
           f"(femot.fem.smoothing.check_resolution)"]
    if hs:
        worst = min(hs, key=lambda t: t[2] / t[1])
        out.append(f"- resolution: delta / h between {min(d / h for _, h, d in hs):.3g} (level {worst[0]}) and "
                   f"{max(d / h for _, h, d in hs):.3g}; h from {max(h for _, h, _ in hs):.4g} to "
                   f"{min(h for _, h, _ in hs):.4g}")
    if R < 4:
        out.append(f"- note: mesh.resolution_ratio = {R:g} < 4 was chosen in the config; delta is resolved by fewer "
                   f"than 4 cells per radius")
    if getattr(study, "finest", None) is not None:
        out.append(f"- finest mesh of the study (total-error reference): {study.finest.label()}")
    return out


def _convergence_lines(rows) -> list[str]:
    """Per level: upper-level status and certificate."""
    if not any(r.get("certificate") for r in rows):
        return []
    L = ["## Upper-level convergence", "",
         "Per level the optimizer's status and its certificate: `fw` = the Frank-Wolfe gap of the convex value "
         "formulation (an upper bound on f - min f), `rel.stat` = the relative stationarity theta_R / "
         "theta_R(start) of the plan formulation.", ""]
    hdr = ["chain", "lvl", "h", "delta", "delta/h", "status", "certificate", "nit"]
    body = [[r["chain"], str(r["level"]), _num(r.get("h"), "g"), _num(r["delta"], "g"),
             _num(r.get("delta_over_h"), "g"), r.get("status", ""), _cell("certificate_value",
                                                                         r.get("certificate_value"), r),
             str(r.get("nit", ""))] for r in rows]
    n_ok = sum(bool(r["success"]) for r in rows)
    return L + [markdown_table(hdr, body), "", f"{n_ok} of {len(rows)} levels converged.", ""]


def _error_kind_lines(study, rows, rates) -> list[str]:
    pairs = _error_kinds(study, rows)
    if not pairs:
        return []
    a, b = pairs[0]
    L = ["## Errors kept apart", "",
         f"`{a}` is the distance to the exact discrete reference on the level's own mesh (regularization and "
         f"smoothing error at fixed h); `{b}` the distance to the exact discrete reference on the finest mesh of "
         f"the study (total error)"
         + ("; `discretization_w1` the distance between the two references (discretization error)."
            if "discretization_w1" in study.metrics else "."), ""]
    fm = sorted({r["finest_mesh"] for r in rows if r.get("finest_mesh")})
    if fm:
        ok = all(r.get("finest_reference_ok", False) for r in rows if r.get("finest_mesh"))
        L += [f"The finest-mesh reference is the exact discrete (OCP) QP on {', '.join(fm)} (solved exactly: the QP "
              f"is posed in the plan between the admissible vertices and the prior's atoms, so it is feasible on "
              f"every mesh of the study; {'certified on every run' if ok else 'NOT certified on every run'}). "
              f"Controls are compared as measures on their own vertex sets (no interpolation).", ""]
    for ch in study.chains:
        cr = [r for r in rows if r["chain"] == ch.label]
        reg = [_f(r.get(a)) for r in cr]
        dis = [_f(r.get("discretization_w1")) for r in cr] if "discretization_w1" in study.metrics else None
        tag = f"chain {ch.label}: " if len(study.chains) > 1 else ""
        if dis is not None and all(np.isfinite(reg)) and all(np.isfinite(dis)):
            dom_reg = [r["level"] for r, x, y in zip(cr, reg, dis) if x >= y]
            dom_dis = [r["level"] for r, x, y in zip(cr, reg, dis) if y > x]
            L.append(f"- {tag}regularization dominates at levels {dom_reg or 'none'}; discretization dominates at "
                     f"levels {dom_dis or 'none'} (largest ratio discretization / regularization "
                     f"{max(y / x for x, y in zip(reg, dis) if x > 0):.3g})")
    L.append("")
    return L


def _param_value(v) -> str:
    """One parameter as TOML-like text: tables as ``{key = value, ...}``, floats short."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_param_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_param_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return f'"{v}"'
    return str(v).lower() if isinstance(v, bool) else str(v)


def _param_lines(params: dict) -> list[str]:
    """The problem's parameters, one indented bullet each (long values cut at 300 characters)."""
    out = []
    for k, v in params.items():
        text = _param_value(v)
        out.append(f"  - `{k}` = `{text if len(text) <= 300 else text[:300] + ' ...'}`")
    return out
