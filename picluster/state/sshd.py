"""SSH hardening as an sshd_config drop-in that can never lock the automation user out.

The drop-in is only written when the automation user's inventory key is in its authorized_keys
(its key login keeps working once passwords are off), when sshd reads the drop-in directory at all,
and when `sshd -t` accepts the new file; sshd is then reloaded (running sessions stay).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from picluster.remote import Change, Command, Decision, ProbeOutput, StepError
from picluster.state._fs import q
from picluster.state.checked_file import CheckedFile
from picluster.state.files import FileFacts

SSHD_CONFIG = "/etc/ssh/sshd_config"
DROPIN_DIR = "/etc/ssh/sshd_config.d"
# sshd keeps the FIRST value it reads, and reads the drop-ins (in name order) where sshd_config
# includes them, usually at its top: our name sorts before cloud-init's 50-cloud-init.conf.
DROPIN = f"{DROPIN_DIR}/01-picluster-hardening.conf"
INCLUDE = re.compile(r"^\s*Include\s+/etc/ssh/sshd_config\.d/\*\.conf\s*$", re.IGNORECASE | re.MULTILINE)
RELOAD = "sshd -t && systemctl try-reload-or-restart ssh.service"


@dataclass(frozen=True)
class SshdFacts:
    """The drop-in's facts, the automation user's authorized keys, and whether sshd_config includes drop-ins."""

    file: FileFacts
    authorized: str | None
    includes_dropins: bool


def key_blob(line: str) -> str:
    """Return the base64 part of a public key line."""
    parts = line.split()
    return parts[1] if len(parts) > 1 else ""


class SshdHardening:
    """Ensure the hardening drop-in (rendered by the caller) is in place without locking `user` out.

    + user: the user picluster connects as; one of `keys` must be in its authorized_keys
    """

    def __init__(self, content: str, *, user: str, keys: Sequence[str], path: str = DROPIN) -> None:
        self.file = CheckedFile(path, content, check="sshd -t -f {path}", mode=0o644)
        self.user = user
        self.keys = [k for k in (key_blob(k) for k in keys) if k]
        if not self.keys:
            raise ValueError(f"no SSH key for {user}: hardening would leave no way in")

    @property
    def name(self) -> str:
        """Return the step label."""
        return f"sshd hardening {self.file.path}"

    def probes(self) -> Mapping[str, str]:
        """The drop-in, the user's authorized_keys, and sshd_config's Include line."""
        home = f"$(getent passwd {q(self.user)} | cut -d: -f6)"
        return {
            **{f"file.{k}": v for k, v in self.file.probes().items()},
            "authorized": f'cat "{home}/.ssh/authorized_keys"',
            "config": f"cat {SSHD_CONFIG}",
        }

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> SshdFacts:
        """Type the outputs."""
        file = self.file.parse({k.removeprefix("file."): v for k, v in outputs.items() if k.startswith("file.")},
                               marks)
        authorized = outputs["authorized"].stdout if outputs["authorized"].ok else None
        return SshdFacts(file, authorized, bool(INCLUDE.search(outputs["config"].stdout)))

    def decide(self, facts: SshdFacts) -> Decision:
        """Write the checked drop-in and reload sshd, or refuse with what would lock the user out."""
        decision = self.file.decide(facts.file)
        if not isinstance(decision, Change):
            return decision
        if not facts.includes_dropins:
            raise StepError(f"{SSHD_CONFIG} has no 'Include {DROPIN_DIR}/*.conf' line, so the hardening would not "
                            "take effect; add it at the top of the file, then run again")
        present = {key_blob(line) for line in (facts.authorized or "").splitlines()}
        if not present & set(self.keys):
            raise StepError(f"refusing to turn password login off: none of {self.user}'s inventory keys is in its "
                            "~/.ssh/authorized_keys, so picluster could be locked out; add the key, then run again")
        return Change(decision.diff, [*decision.commands, Command(RELOAD)], decision.sets, decision.clears)
