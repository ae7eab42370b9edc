"""Data: image and mask readers, the KSDD2 layout and download, the demo line, synthesis."""
