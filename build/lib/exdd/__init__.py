"""exdd: explicit dual-distribution surface-defect detection (ExDD, arXiv 2507.15335).

Importing exdd changes no process-wide setting: the CPU tuning of ``exdd.runtime`` is
applied by the entry points (the ``exdd`` command, the Airflow tasks, the MLflow pyfunc,
the benchmarks), where it is measured.
"""

__version__ = "0.1.0"
