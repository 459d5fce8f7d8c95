"""sah: subarachnoid-hemorrhage CT research framework (segmentation, PEFT transfer, prognosis)."""

__version__ = "0.1.0"
