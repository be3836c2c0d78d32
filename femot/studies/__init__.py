"""Convergence studies: sweeps over coupled (gamma, delta) schedules with exact references.

``femot study CONFIG.toml --out DIR`` (or :func:`run_study`) runs a schedule
gamma_n, delta_n -> 0 with gamma_n / delta_n^d -> 0 (Part II (3.1)), optionally over
several meshes and seeds, for one problem, and compares every level with the problem's
exact reference (docs/studies.md). Modules:

* config    -- TOML schema, validation (errors name the field), chains and run ids;
* problems  -- the study problems (lower level, control) with references and metrics;
* metrics   -- Wasserstein distances of marginals, controls and plans; fitted rates;
* store     -- one atomically written, checksummed file per run plus a manifest (resume;
  damaged runs are recomputed), the lock of the output directory;
* execution -- chains on the serial / process-pool / dask backends, progress bar;
* report    -- CSV and Markdown tables, log-log plots, report.md;
* fields    -- the error type, value checks and mesh specification shared by config and problems;
* runner    -- :func:`run_study` (the command ``femot study`` is :mod:`femot.cli.study`);
* paths     -- in-memory solves along a schedule (:func:`lower_level_path`, :func:`control_path`);
* control_exact -- the study problem ``control-exact`` (2D control against the exact (OCP)).
"""
from femot.studies import control_exact as _control_exact  # noqa: F401  (registers the study "control-exact")
from femot.studies.config import ConfigError, Study, load_config, parse_config
from femot.studies.runner import StudyOutcome, run_study

__all__ = ["run_study", "StudyOutcome", "load_config", "parse_config", "Study", "ConfigError"]
