"""What the network tasks share: the runner base, pre-trained weights and adapters,
pruning, progress lines and DDP ranks."""
