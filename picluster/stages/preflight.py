"""Preflight: every host answers over SSH, cloud-init has finished its first boot, and it says who it is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Decision, Ok, ProbeOutput, StepError

# cloud-init's first boot may still run when a freshly flashed Pi first answers SSH.
CLOUD_INIT_WAIT_S = 600


@dataclass(frozen=True)
class CloudInitFacts:
    installed: bool
    status: str
    exit_code: int
    hostname: str


@dataclass(frozen=True)
class CloudInitFinished:
    """Wait (bounded) until cloud-init has finished on the host; fail when it ended in error."""

    expected_hostname: str
    wait_s: int = CLOUD_INIT_WAIT_S

    @property
    def name(self) -> str:
        return "cloud-init finished"

    def probes(self) -> Mapping[str, str]:
        return {
            "cloud_init": (
                "if command -v cloud-init >/dev/null; then "
                f"timeout {int(self.wait_s)} cloud-init status --wait >/dev/null 2>&1; rc=$?; "
                "cloud-init status 2>/dev/null | sed -n 's/^status: //p'; exit $rc; "
                "else echo not-installed; fi"
            ),
            "hostname": "hostname",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> CloudInitFacts:
        ci = outputs["cloud_init"]
        status = ci.stdout.strip().splitlines()[-1] if ci.stdout.strip() else ""
        return CloudInitFacts(
            installed=status != "not-installed",
            status=status,
            exit_code=ci.exit_code,
            hostname=outputs["hostname"].stdout.strip(),
        )

    def decide(self, facts: CloudInitFacts) -> Decision:
        who = f"host answers as {facts.hostname!r}"
        if facts.hostname != self.expected_hostname:
            who += f" (the os stage sets {self.expected_hostname!r})"
        if not facts.installed:
            return Ok(f"cloud-init is not installed; {who}")
        if facts.exit_code == 124:
            raise StepError(f"cloud-init still running after {self.wait_s}s; look at "
                            "/var/log/cloud-init-output.log on the host, then run again")
        if facts.status in ("done", "disabled") or (facts.status == "degraded done"):
            return Ok(f"cloud-init {facts.status}; {who}")
        raise StepError(f"cloud-init ended with status {facts.status!r} (exit {facts.exit_code}); "
                        "read /var/log/cloud-init.log on the host, fix the seed, and reflash or re-run it")
