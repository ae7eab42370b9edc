"""Online scoring: the champion of a line behind HTTP (``exdd serve``).

``images`` checks and scores encoded images held in memory (shared with the MLflow pyfunc),
``follower`` keeps the line's champion loaded as the registry alias moves, ``batcher`` runs
the model on one thread and groups waiting requests, ``app`` is the HTTP service.
"""
