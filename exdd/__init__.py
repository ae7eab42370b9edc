"""exdd: explicit dual-distribution surface-defect detection (ExDD, arXiv 2507.15335)."""

__version__ = "0.1.0"
