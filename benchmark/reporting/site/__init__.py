"""The static results site (``python -m benchmark.aggregate --site DIR``): see
:mod:`benchmark.reporting.site.build`."""

from benchmark.reporting.site.build import build_site

__all__ = ["build_site"]
