"""Regenerate the stored meshes of femot (VTU files next to this script).

    python meshes/generate.py            # writes meshes/*.vtu
    python meshes/generate.py OUTDIR     # writes OUTDIR/*.vtu

The meshes are built with scikit-fem (see femot.fem.meshes.BUILTIN_MESHES) and written
with meshio; ``femot.fem.load_mesh(name)`` reads them back.
"""
import sys
from pathlib import Path

from femot.fem.meshes import BUILTIN_MESHES, write_builtin_meshes

if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for path in write_builtin_meshes(out):
        print(f"{path.name:24s} {BUILTIN_MESHES[path.stem][1]}")
