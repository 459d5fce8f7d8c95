"""sah's launcher for one machine with GPUs: ``hydra/launcher=gpus`` (see ``config.py``)."""
