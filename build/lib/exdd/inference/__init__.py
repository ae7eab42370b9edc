"""Applying a fitted model: batch scoring to a folder, overlays, encoded images from clients."""
