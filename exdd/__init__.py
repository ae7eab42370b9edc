"""exdd: explicit dual-distribution surface-defect detection (ExDD, arXiv 2507.15335)."""

import os

# torch and faiss each bring their own OpenMP runtime; with the default active waiting,
# the idle threads of one spin on the cores the other is computing on (predict ran at a
# third of its speed). Passive waiting must be chosen before either runtime starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
