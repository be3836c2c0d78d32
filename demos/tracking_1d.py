"""Run ``femot demo tracking-1d`` (options: --json OUT --plot DIR --quick --quiet ...)."""
import sys

from femot.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", "tracking-1d"] + sys.argv[1:]))
