"""The graceful-shutdown consistency rule (pure) and the kubeconfig server rewrite."""

from __future__ import annotations

import pytest
import yaml

from picluster.kube import KubeError
from picluster.kube.kubeconfig import rewrite_server
from picluster.kube.shutdown import shutdown_problems, timespan_seconds


def test_pi_cluster_settings_with_a_matching_logind_delay_are_consistent() -> None:
    assert shutdown_problems(30, 10, 30) == []
    assert shutdown_problems(30, 10, 45) == []


def test_critical_period_must_leave_time_for_ordinary_pods() -> None:
    (problem,) = shutdown_problems(30, 30, 30)
    assert problem == ("shutdownGracePeriodCriticalPods (30s) must be less than shutdownGracePeriod (30s): it is "
                       "the part of the grace period kept for critical pods, so ordinary pods would get 0s")
    assert len(shutdown_problems(30, 40, 60)) == 1


def test_logind_delay_below_the_grace_period_is_refused() -> None:
    (problem,) = shutdown_problems(30, 10, 5)
    assert problem.startswith("logind InhibitDelayMaxSec is 5s, below shutdownGracePeriod (30s): systemd would "
                              "power off after 5s")
    assert problem.endswith("set InhibitDelayMaxSec=30 (or more) in the logind drop-in")
    (unset,) = shutdown_problems(30, 10, None)
    assert unset.startswith("logind InhibitDelayMaxSec is not set, so its default 5s applies, below")


def test_both_problems_are_reported_and_zero_grace_is_off() -> None:
    assert len(shutdown_problems(30, 30, 10)) == 2
    (off,) = shutdown_problems(0, 0, None)
    assert off.startswith("shutdownGracePeriod is 0s: graceful node shutdown is off")
    assert shutdown_problems(30, -1, 30) == ["shutdownGracePeriodCriticalPods is -1s: it cannot be negative"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("30", 30), ("30s", 30), ("1min 30s", 90), ("1m30s", 90), ("500ms", 0.5), ("2h", 7200), (" 45 s ", 45),
])
def test_timespans_in_seconds(text: str, seconds: float) -> None:
    assert timespan_seconds(text) == seconds
    assert timespan_seconds("infinity") == float("inf")


@pytest.mark.parametrize("text", ["", "soon", "30 parsecs", "30s later"])
def test_bad_timespans_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        timespan_seconds(text)


K3S_YAML = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTi==
    server: https://127.0.0.1:6443
  name: default
contexts:
- context: {cluster: default, user: default}
  name: default
current-context: default
kind: Config
users:
- name: default
  user: {client-certificate-data: Y2VydA==, client-key-data: a2V5}
"""


def test_kubeconfig_server_points_at_the_server_ip() -> None:
    out = yaml.safe_load(rewrite_server(K3S_YAML, "https://10.0.0.11:6443"))
    assert out["clusters"][0]["cluster"] == {"certificate-authority-data": "LS0tLS1CRUdJTi==",
                                             "server": "https://10.0.0.11:6443"}
    assert out["users"] == yaml.safe_load(K3S_YAML)["users"]
    with pytest.raises(KubeError, match="no cluster named 'other'"):
        rewrite_server(K3S_YAML, "https://10.0.0.11:6443", cluster="other")
    with pytest.raises(KubeError, match="has no clusters"):
        rewrite_server("kind: Config\n", "https://10.0.0.11:6443")
