"""``python -m xraygpt_lab`` is the same as the ``xraygpt-lab`` console script."""
import sys

from xraygpt_lab.cli import main

sys.exit(main())
