"""Convergence studies: sweeps over coupled (gamma, delta) schedules with exact references.

``femot study CONFIG.toml --out DIR`` (or :func:`run_study`) runs a schedule
gamma_n, delta_n -> 0 with gamma_n / delta_n^d -> 0 (Part II (3.1)), optionally over
several meshes and seeds, for one kind of study, and compares every level with its exact
reference (docs/studies.md). Modules:

* config, toml_checks, mesh_spec -- the TOML schema and its validation, chains and run ids;
* registry, study_problem -- the study kinds by name and the interface they implement;
* transport_study, control_study, control_exact_study, identification_study,
  tracking_study -- the kinds (line_measures: the measures on the line of their TOML);
* metrics -- Wasserstein distances of marginals, controls and plans; fitted rates;
* store, execution, heartbeat -- stored runs (resume), chains on the backends, progress;
* report, runner -- tables, plots, report.md; :func:`run_study`;
* paths, affine_study -- in-memory solves along a schedule (no store).
"""
from femot.studies.config import Study, load_config, parse_config
from femot.studies.runner import StudyOutcome, run_study
from femot.studies.toml_checks import ConfigError

__all__ = ["run_study", "StudyOutcome", "load_config", "parse_config", "Study", "ConfigError"]
