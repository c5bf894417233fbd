"""cloud-init has finished this boot: read from its result file, waiting (bounded) only when it is missing.

`cloud-init status --wait` starts Python and takes about 1.5 s even when cloud-init is long done; the
result file /run/cloud-init/result.json (tmpfs: written at the end of every boot's final stage) says
the same in a millisecond, so the wait runs only while the file is not there yet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Decision, Ok, ProbeOutput, StepError

RESULT = "/run/cloud-init/result.json"
WAIT_S = 600


@dataclass(frozen=True)
class CloudInitFacts:
    """Whether cloud-init is installed, the result file (None: still missing after the wait), errors in it."""

    installed: bool
    result: str | None
    waited_out: bool


class CloudInitDone:
    """Ensure cloud-init has finished on the host (waiting up to `wait_s`); fail when it ended in errors."""

    def __init__(self, wait_s: int = WAIT_S) -> None:
        self.wait_s = int(wait_s)

    @property
    def name(self) -> str:
        """Return the step label."""
        return "cloud-init finished"

    def probes(self) -> Mapping[str, str]:
        """Read the result file; only when it is missing, wait for cloud-init first."""
        return {"result": (
            "command -v cloud-init >/dev/null || { echo not-installed; exit 0; }; "
            f"[ -e {RESULT} ] || timeout {self.wait_s} cloud-init status --wait >/dev/null 2>&1; "
            f"rc=$?; cat {RESULT} 2>/dev/null || exit $rc"
        )}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> CloudInitFacts:
        """Type the output."""
        out = outputs["result"]
        text = out.stdout.strip()
        if text == "not-installed":
            return CloudInitFacts(False, None, False)
        return CloudInitFacts(True, text if out.ok and text else None, out.exit_code == 124)

    def decide(self, facts: CloudInitFacts) -> Decision:
        """Ok when done without errors."""
        if not facts.installed:
            return Ok("cloud-init is not installed")
        if facts.result is None:
            if facts.waited_out:
                raise StepError(f"cloud-init still running after {self.wait_s}s; look at "
                                "/var/log/cloud-init-output.log on the host, then run again")
            raise StepError(f"cloud-init left no {RESULT}: it did not finish this boot; "
                            "read /var/log/cloud-init.log on the host")
        try:
            errors = json.loads(facts.result)["v1"]["errors"]
        except (ValueError, KeyError, TypeError) as e:
            raise StepError(f"cannot read {RESULT}: {e}") from e
        if errors:
            raise StepError(f"cloud-init finished with errors: {'; '.join(map(str, errors))[:300]}; "
                            "read /var/log/cloud-init.log on the host, fix the seed, and reflash or re-run it")
        return Ok("cloud-init done")
