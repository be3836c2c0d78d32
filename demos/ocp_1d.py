"""Run ``femot demo ocp-1d`` (options: --json OUT --plot DIR --quick --quiet ...)."""
import sys

from femot.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", "ocp-1d"] + sys.argv[1:]))
