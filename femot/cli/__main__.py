"""``python -m femot.cli``: the same as the ``femot`` console command."""
import sys

from femot.cli import main

sys.exit(main())
