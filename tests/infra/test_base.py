"""Gate after preflight: what cloud-init's first boot must have left on every host."""

from __future__ import annotations

from typing import Any

import pytest

from picluster.inventory import AdminUser, Host


def test_hostname_is_set_by_cloud_init(host: Any, node: Host) -> None:
    assert host.check_output("hostname") == node.name


def test_cloud_init_has_finished(host: Any) -> None:
    if not host.exists("cloud-init"):
        pytest.skip("cloud-init is not installed on this host")
    status = host.run("cloud-init status")
    assert "status: done" in status.stdout, status.stdout + status.stderr


def test_systemd_has_booted(host: Any) -> None:
    # "degraded" counts: a failed non-essential unit does not make the node unusable (see the README).
    state = host.run("systemctl is-system-running").stdout.strip()
    assert state in ("running", "degraded"), state


def test_sshd_is_running(host: Any) -> None:
    assert host.service("ssh").is_running


def test_automation_user_has_passwordless_sudo(host: Any) -> None:
    assert host.run("sudo -n true").rc == 0


def test_admin_user_exists_with_its_keys(host: Any, admin_user: AdminUser) -> None:
    user = host.user(admin_user.name)
    assert user.exists
    with host.sudo():
        keys = host.file(f"{user.home}/.ssh/authorized_keys")
        assert keys.exists
        for key in admin_user.public_keys():
            assert key.split()[1] in keys.content_string
        assert host.file(f"{user.home}/.ssh").mode == 0o700
