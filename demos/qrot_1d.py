"""Regularized plans for decreasing gamma beside the exact plan: `python demos/qrot_1d.py --plot out/`."""
import sys

from femot.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", "qrot-1d"] + sys.argv[1:]))
