"""Run ``femot demo identification`` (options: --json OUT --plot DIR --seed S --seeds K --quick --quiet ...)."""
import sys

from femot.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", "identification"] + sys.argv[1:]))
