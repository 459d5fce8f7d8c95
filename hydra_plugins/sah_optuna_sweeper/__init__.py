"""sah's Optuna sweeper for Hydra: ``hydra/sweeper=sah_optuna`` (see ``config.py``)."""
