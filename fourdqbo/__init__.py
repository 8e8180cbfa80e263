"""fourdqbo: keep one QuickBooks Online company in step with a 4D EMR practice."""

__version__ = "0.2.0"
