"""Synthetic defects for the positive memory bank (paper section 3.2).

Two backends: ``sdxl`` (the paper's SDXL inpainting of real defect masks) and
``procedural`` (an offline renderer for machines without a GPU or the weights, also used by
the demo data set). Both write a KSDD2-layout set plus a provenance manifest.
"""

from exdd.data.synth.dataset import BACKENDS, regenerate, synthesize
from exdd.data.synth.provenance import PROVENANCE_FILE, Provenance, read_provenance

__all__ = ["BACKENDS", "PROVENANCE_FILE", "Provenance", "read_provenance", "regenerate",
           "synthesize"]
