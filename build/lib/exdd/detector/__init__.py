"""The detector core: backbone features, coreset banks, nearest-neighbour search, scoring.

Works on arrays and explicit arguments; knows nothing of lines, workspaces or registries.
"""
