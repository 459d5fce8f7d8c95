"""task=segmentation: 2D and 3D blood segmentation (studies 1 and 2)."""
