"""The only code that touches hosts: connections, the stage runner, and what a step is."""

from picluster.remote.connect import Unreachable, connect
from picluster.remote.execute import Executor, run_steps
from picluster.remote.results import (
    CommandError,
    HostResult,
    HostStatus,
    StageFailed,
    StageResult,
    StepResult,
    StepStatus,
)
from picluster.remote.stage import run_host, run_stage
from picluster.remote.step import (
    APT_UPDATED,
    NEEDS_REBOOT,
    SKIPPED,
    UNITS_CHANGED,
    AnyStep,
    Change,
    Command,
    Decision,
    HostRun,
    Ok,
    ProbeOutput,
    Step,
    StepError,
    changed_mark,
    skip,
)
from picluster.remote.target import HostLike, SshTargetLike

__all__ = [
    "APT_UPDATED",
    "NEEDS_REBOOT",
    "SKIPPED",
    "UNITS_CHANGED",
    "AnyStep",
    "Change",
    "Command",
    "CommandError",
    "Decision",
    "Executor",
    "HostLike",
    "HostResult",
    "HostRun",
    "HostStatus",
    "Ok",
    "ProbeOutput",
    "SshTargetLike",
    "StageFailed",
    "StageResult",
    "Step",
    "StepError",
    "StepResult",
    "StepStatus",
    "Unreachable",
    "changed_mark",
    "connect",
    "run_host",
    "run_stage",
    "run_steps",
    "skip",
]
