"""The Raspberry Pi bootloader tries USB boot: read BOOT_ORDER from its EEPROM configuration.

A Pi 4 boots from its USB SSD only when BOOT_ORDER names USB mass storage (the hex digit 4; the digits
are tried right to left, e.g. 0xf14: USB, then SD, then again). With an older EEPROM the Pi keeps
needing its SD card. The step never changes the EEPROM: it says what to do (see the README).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from picluster.remote import Decision, Ok, ProbeOutput, skip

USB_MSD = "4"
NO_VCGENCMD = 3
_ORDER = re.compile(r"^BOOT_ORDER=(0x[0-9a-fA-F]+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class BootOrderFacts:
    """BOOT_ORDER as the bootloader has it ("" when its configuration sets none; None: not readable)."""

    order: str | None
    why: str = ""


def boot_order(config: str) -> str:
    """Return BOOT_ORDER from `vcgencmd bootloader_config` output ("" when it sets none)."""
    found = _ORDER.findall(config)
    return found[-1].lower() if found else ""


def tries_usb(order: str) -> bool:
    """Return whether a BOOT_ORDER value tries USB mass storage boot."""
    return USB_MSD in order.lower().removeprefix("0x")


class UsbBootOrder:
    """Warn (an explicit skip with what to do) when the Pi's bootloader does not try USB boot."""

    name = "bootloader tries USB boot"

    def probes(self) -> Mapping[str, str]:
        """The bootloader's configuration, through the firmware."""
        return {"config": f"command -v vcgencmd >/dev/null || exit {NO_VCGENCMD}; vcgencmd bootloader_config"}

    def parse(self, outputs: Mapping[str, ProbeOutput], marks: frozenset[str]) -> BootOrderFacts:
        """Type the output."""
        out = outputs["config"]
        if out.exit_code == NO_VCGENCMD:
            return BootOrderFacts(None, "no vcgencmd on this host (not a Raspberry Pi, or libraspberrypi-bin "
                                        "is missing)")
        if not out.ok:
            return BootOrderFacts(None, f"`vcgencmd bootloader_config` exited {out.exit_code}")
        return BootOrderFacts(boot_order(out.stdout))

    def decide(self, facts: BootOrderFacts) -> Decision:
        """Ok when USB boot is tried; else a skip that says how to fix the EEPROM."""
        if facts.order is None:
            return skip(f"{facts.why}: the bootloader's BOOT_ORDER cannot be read")
        if facts.order and tries_usb(facts.order):
            return Ok(f"BOOT_ORDER={facts.order} tries USB mass storage boot")
        shown = f"BOOT_ORDER={facts.order}" if facts.order else "no BOOT_ORDER (an old EEPROM)"
        return skip(f"{shown} does not try USB boot: this Pi needs its SD card to start; update its EEPROM "
                    "(rpi-eeprom-update -a) and set BOOT_ORDER=0xf14 (raspi-config: Advanced, Boot Order, USB "
                    "Boot), see the README's 'On real Pis'")
