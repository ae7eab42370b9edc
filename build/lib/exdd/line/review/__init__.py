"""Operator review: the scored-image queue, the append-only verdict store, masks, export.

Each night the line's accepted images are scored by the champion into
``<scores_dir>/<run_id>/scores.csv`` (+ heatmap overlays and raw anomaly maps) in the line
workspace. Operators confirm or correct the flags; every verdict is appended (never
updated) to a SQL table, and the definite ones (defect with a mask, normal) are written
into the line's inbox in the labels format ``exdd validate`` reads, so the next night's
run learns from them. The Streamlit dashboard (``dashboards/``) is a thin layer over this
package:

- :mod:`~exdd.line.review.queue`: the scoring runs' rows, filtered and judged;
- :mod:`~exdd.line.review.verdicts`: the verdict store (any SQLAlchemy database);
- :mod:`~exdd.line.review.masks`: operator masks, cut from a stored map or uploaded;
- :mod:`~exdd.line.review.export`: definite verdicts into the line's inbox;
- :mod:`~exdd.line.review.auth`: who is acting (typed name, shared secret or proxy header).
"""
