"""``python -m benchmark.aggregate``: the reporting entry point.

See :mod:`benchmark.reporting.aggregate`.
"""

import sys

from benchmark.reporting.aggregate import main

if __name__ == "__main__":
    sys.exit(main())
