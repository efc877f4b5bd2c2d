"""mlptrain's SLURM launcher: Hydra's submitit launcher, with requeued jobs that resume.

(Hydra only accepts launchers from the ``hydra_plugins`` namespace, hence this package's place.)

``hydra/launcher=slurm`` (configs/hydra/launcher/slurm.yaml) selects :class:`SlurmLauncher`: the
submitit launcher plus two rules.

* A job that finds a checkpoint in its own output dir resumes from it (``trainer.resume``).  A job is
  requeued either by submitit (its USR2, before the time limit or on a preemption notice) or by SLURM
  itself (``--requeue``: preemption, node failure); both re-run the same Hydra job, in the same dir
  (the sweep dir was resolved once, at submission).
* The signals end training gracefully, so that checkpoint is current to the step: SIGTERM is the
  trainer's own graceful stop, and submitit's USR2 is routed to it too (:class:`GracefulRequeue`)
  before submitit requeues.  A job running ``trainer.devices`` ranks is requeued at once and its
  launcher stops the ranks with SIGTERM, which they answer the same way.

:class:`LocalLauncher` is the same on ``submitit_local``, to try the requeue path on one machine.
"""

from __future__ import annotations

import logging
import signal
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf, open_dict

from mlptrain.signals import GracefulStop

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as base
except ImportError:  # the optional extra (pip install 'mlptrain[submitit]') is not installed: nothing to offer
    base = None

log = logging.getLogger("mlptrain")


def job_dir(launcher, overrides: list[str], dir_key: str, job_num: int) -> Path:
    """The output dir the Hydra job ``job_num`` with ``overrides`` runs in (as ``run_job`` computes it)."""
    cfg = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, list(overrides))
    with open_dict(cfg.hydra.job):
        cfg.hydra.job.num = job_num
    return Path(str(OmegaConf.select(cfg, dir_key))) / str(cfg.hydra.sweep.subdir)


class GracefulRequeue:
    """submitit's signal (USR2: the time limit is near, or a preemption notice) as a graceful stop.

    submitit's own handler checkpoints the *call* and requeues at once, wherever training is.  While
    the trainer runs, this hands the signal to its stop handler instead (finish the step, write
    ``last.pt``, exit), and then lets submitit requeue.  Outside training, submitit's handler runs as is.
    """

    def __enter__(self) -> GracefulRequeue:
        import submitit

        self.signum = submitit.JobEnvironment._usr_sig()
        self.requeue = signal.getsignal(self.signum)  # submitit's checkpoint_and_try_requeue
        self.pending = False
        if callable(self.requeue):
            signal.signal(self.signum, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        stop = signal.getsignal(signal.SIGTERM)
        if isinstance(getattr(stop, "__self__", None), GracefulStop):  # training: stop after this step
            self.pending = True
            stop(signum, frame)
        else:
            self.requeue(signum, frame)

    def __exit__(self, exc_type, exc, tb) -> None:
        if callable(self.requeue):
            signal.signal(self.signum, self.requeue)
            if self.pending and exc_type is SystemExit:  # the trainer saved and stopped: requeue now
                self.requeue(self.signum, None)


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
        with GracefulRequeue():
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
