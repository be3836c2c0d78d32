"""Run ``femot demo ocp-2d-exact`` (options: --levels A:B --json OUT --plot DIR --quick --quiet ...)."""
import sys

from femot.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", "ocp-2d-exact"] + sys.argv[1:]))
