"""femot: bilevel optimization of quadratically regularized optimal transport on FE meshes.

The mathematics is written out in the ``docs/`` folder of the repository. Docstrings cite
equations as "Part I/II/III (x.y)"; these are the papers listed below.

References
----------
.. [1] S. Hillbrecht, C. Meyer, "Bilevel optimization of the Kantorovich problem and its
   quadratic regularization. Part I: Existence results", arXiv:2206.13220, 2022.
.. [2] S. Hillbrecht, P. Manns, C. Meyer, "Bilevel optimization of the Kantorovich problem
   and its quadratic regularization. Part II: Convergence analysis", arXiv:2211.07287, 2022.
.. [3] S. Hillbrecht, "Bilevel optimization of the Kantorovich problem and its quadratic
   regularization. Part III: The finite-dimensional case", arXiv:2406.08992, 2024.
.. [4] D. A. Lorenz, P. Manns, C. Meyer, "Quadratically regularized optimal transport",
   Appl. Math. Optim. 83(3):1919-1949, 2021.
"""
from importlib import metadata as _metadata

from femot.core import DenseCost, GeometricCost, QROTResult, exact_ot, exact_ot_1d, solve_qrot

try:  # one home for the version: pyproject.toml
    __version__ = _metadata.version("femot")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
__all__ = ["solve_qrot", "exact_ot", "exact_ot_1d", "QROTResult", "DenseCost", "GeometricCost", "__version__"]
