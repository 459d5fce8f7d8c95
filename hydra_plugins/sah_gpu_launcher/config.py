"""Config of the GPU launcher (registered as ``hydra/launcher=sah_gpus``; conf/hydra/launcher/
gpus.yaml is the name users type).

No ``from __future__ import annotations``: Hydra's plugin scanner runs this module before it is
in ``sys.modules``, where dataclasses cannot resolve string annotations.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class GpuLauncherConf:
    _target_: str = "hydra_plugins.sah_gpu_launcher.gpu_launcher.GpuLauncher"
    # Jobs running at once; null = as many as there are GPU slots (1 on a machine without GPUs).
    n_jobs: int | None = None
    # GPUs given to each job (set >1 with trainer=ddp).
    gpus_per_job: int = 1
    # GPU ids to share out; null = CUDA_VISIBLE_DEVICES if set, else every GPU torch sees.
    gpus: list[str] | None = None
    # Lock files that keep several sweeps on one machine off each other's GPUs; null = a
    # per-user folder under the system temp dir. Set share_across_processes=false to skip.
    lock_dir: str | None = None
    share_across_processes: bool = True


ConfigStore.instance().store(
    group="hydra/launcher", name="sah_gpus", node=GpuLauncherConf, provider="sah"
)
