"""mlptrain's SLURM launcher: Hydra's submitit launcher, with requeued jobs that resume.

(Hydra only accepts launchers from the ``hydra_plugins`` namespace, hence this package's place.)

``hydra/launcher=slurm`` (configs/hydra/launcher/slurm.yaml) selects :class:`SlurmLauncher`: the
submitit launcher plus one rule, that a job which finds a checkpoint in its own output dir resumes
from it (the trainer's ``trainer.resume`` path).  A job is requeued either by submitit (USR2 before
the time limit or on preemption: its ``checkpoint`` hook resubmits the same call) or by SLURM itself
(``--requeue``, on preemption or node failure); both re-run the same Hydra job, whose output dir is
the same because the sweep dir was resolved once, at submission.  The newest ``last.pt`` there is
the state to continue from.  How fresh it is depends on the trainer: one is written every epoch,
and a SIGTERM-triggered save (the reliability work) makes it current to the step.

:class:`LocalLauncher` is the same on ``submitit_local``, to try the requeue path on one machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf, open_dict

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as base
except ImportError:  # the optional extra (pip install mlptrain[slurm]) is not installed: nothing to offer
    base = None

log = logging.getLogger("mlptrain")


def job_dir(launcher, overrides: list[str], dir_key: str, job_num: int) -> Path:
    """The output dir the Hydra job ``job_num`` with ``overrides`` runs in (as ``run_job`` computes it)."""
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = job_num
    return Path(str(OmegaConf.select(cfg, dir_key))) / str(cfg.hydra.sweep.subdir)


class _ResumeOwnDir:
    def __call__(self, sweep_overrides, job_dir_key, job_num, job_id, singleton_state):
        Singleton.set_state(singleton_state)
        setup_globals()
        last = job_dir(self, sweep_overrides, job_dir_key, job_num) / "last.pt"
        if last.is_file():  # a requeued job: continue, in the same dir
            log.info("job %d was requeued: resuming from %s", job_num, last)
            sweep_overrides = [o for o in sweep_overrides if o.lstrip("+").split("=")[0] != "trainer.resume"]
            quoted = str(last.parent).replace("\\", "\\\\").replace("'", "\\'")
            sweep_overrides.append(f"trainer.resume='{quoted}'")  # job dirs hold '=' and ','
        return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)


if base is not None:
    class SlurmLauncher(_ResumeOwnDir, base.SlurmLauncher):
        pass

    class LocalLauncher(_ResumeOwnDir, base.LocalLauncher):
        pass


def register() -> None:
    """Hydra finds launchers by scanning the ``hydra_plugins`` namespace, and that scan does not see the
    part of it an editable install provides: register ours by hand (nothing without the extra)."""
    from hydra.core.plugins import Plugins

    for name in ("SlurmLauncher", "LocalLauncher"):
        if name in globals():
            Plugins.instance().register(globals()[name])
