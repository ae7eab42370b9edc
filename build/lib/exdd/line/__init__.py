"""A production line: its workspace, intake, registry, gate, publish, rollback and review."""
