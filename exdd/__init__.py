"""exdd: explicit dual-distribution surface-defect detection (ExDD, arXiv 2507.15335)."""

from exdd import runtime

runtime.configure()  # before torch or faiss start: see exdd/runtime.py

__version__ = "0.1.0"
