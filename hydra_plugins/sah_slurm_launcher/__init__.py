"""sah's SLURM launcher: ``hydra/launcher=slurm`` (conf/hydra/launcher/slurm.yaml).

hydra-submitit-launcher's SlurmLauncher plus a check of the request against the cluster before
anything is submitted, a line while jobs pend (with SLURM's reason) and ``scancel`` of this
sweep's jobs when it is interrupted. The cluster logic is plain text parsing in ``cluster.py``.
"""
