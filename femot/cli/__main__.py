"""``python -m femot.cli``: the same as the ``femot`` console command."""
import sys

from femot.cli import main

if __name__ == "__main__":
    sys.exit(main())
