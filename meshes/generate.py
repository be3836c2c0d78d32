"""Regenerate the stored meshes of femot (VTU files next to this script) and the gmsh example.

    python meshes/generate.py            # writes meshes/*.vtu and meshes/lshape_user.msh
    python meshes/generate.py OUTDIR     # writes them into OUTDIR

The meshes are built with scikit-fem (see femot.fem.meshes.BUILTIN_MESHES) and written
with meshio; ``femot.fem.load_mesh(name)`` reads them back.

``lshape_user.msh`` stands for a user's own mesh (gmsh 2.2 ASCII, as gmsh writes it): the
L-shaped domain [-1, 1]^2 minus (0, 1]^2 with 833 vertices, its interior vertices moved
by up to 0.2 of the local spacing (seed 0) so that it is not a structured grid.  It is
read by ``femot.fem.load_mesh("meshes/lshape_user.msh")`` (any file meshio reads works the
same), e.g. ``femot demo ocp-2d --mesh meshes/lshape_user.msh``.
"""
import sys
from pathlib import Path

import numpy as np

from femot.fem.meshes import BUILTIN_MESHES, write_builtin_meshes

#: The gmsh example of a user's mesh (see the module docstring).
GMSH_LSHAPE = "lshape_user.msh"


def write_gmsh_lshape(out: Path, seed: int = 0) -> Path:
    """Write the jittered L-shape as a gmsh 2.2 ASCII file; returns its path."""
    import meshio
    import skfem

    m = skfem.MeshTri.init_lshaped().refined(4)
    p = m.p.copy()
    interior = np.setdiff1d(np.arange(p.shape[1]), m.boundary_nodes())
    h = 2.0 / 2**5  # the legs of the refined cells
    rng = np.random.default_rng(seed)
    p[:, interior] += 0.2 * h * rng.uniform(-1.0, 1.0, size=(2, interior.size))
    cells = [("triangle", m.t.T.astype(np.int64))]
    data = {"gmsh:physical": [np.ones(m.t.shape[1], dtype=np.int64)],
            "gmsh:geometrical": [np.ones(m.t.shape[1], dtype=np.int64)]}
    mesh = meshio.Mesh(np.vstack([p, np.zeros((1, p.shape[1]))]).T, cells, cell_data=data)
    path = out / GMSH_LSHAPE
    meshio.write(path, mesh, file_format="gmsh22", binary=False)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for path in write_builtin_meshes(out):
        print(f"{path.name:24s} {BUILTIN_MESHES[path.stem][1]}")
    print(f"{write_gmsh_lshape(out).name:24s} L-shape, 833 vertices, jittered interior (gmsh 2.2)")
