"""Idempotent primitives: each reads its facts, decides ok (why) or change (the diff), then applies."""

from picluster.state.apt import Apt
from picluster.state.files import Directory, File, Line
from picluster.state.kernel import CmdlineArgs, KernelModule, Sysctl
from picluster.state.systemd import Service
from picluster.state.users import User

__all__ = ["Apt", "CmdlineArgs", "Directory", "File", "KernelModule", "Line", "Service", "Sysctl", "User"]
