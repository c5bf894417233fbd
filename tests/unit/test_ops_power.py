"""Telling a host is down from the network, against real sockets on 127.0.0.1: a port that listens, one whose
listener stops (sshd stopped: resets), one that no longer answers at all (the kernel halted)."""

from __future__ import annotations

import errno
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ops_support import inventory

from picluster.inventory import Host
from picluster.ops import power
from picluster.ops.timeline import Timeline

QUICK = 0.2   # seconds a connect may take here before the port counts as silent


class Port:
    """A TCP port on 127.0.0.1 playing a host's SSH port through its power-off.

    `stop()`: sshd is gone, the kernel answers with a reset. `halt()`: nothing answers — a listener with a full
    accept queue, whose kernel drops every new SYN, as a halted host's address does.
    """

    def __init__(self) -> None:
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []

    def _listen(self, port: int) -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(0 if port else 8)
        return s

    def stop(self) -> None:
        self.listener.close()

    def halt(self) -> None:
        self.listener.close()
        self.listener = self._listen(self.port)
        filler = socket.create_connection(("127.0.0.1", self.port), timeout=QUICK)   # fills the queue
        self.held.append(filler)

    def close(self) -> None:
        for s in [self.listener, *self.held]:
            s.close()


@pytest.fixture
def ports() -> Iterator[dict[str, Port]]:
    made: dict[str, Port] = {}
    yield made
    for p in made.values():
        p.close()


def probe_for(ports: dict[str, Port], hosts: list[Host]) -> Callable[[str, int], power.PortState]:
    """The real `port_state`, aimed at each host's stand-in port."""
    by_address = {h.ssh.address: ports[h.name] for h in hosts}
    return lambda address, port: power.port_state("127.0.0.1", by_address[address].port, timeout=QUICK)


def test_port_state_open_then_refused_when_the_listener_stops_then_silent_when_nothing_answers(
        ports: dict[str, Port]) -> None:
    p = ports["one"] = Port()
    assert power.port_state("127.0.0.1", p.port, timeout=QUICK) == "open"
    p.stop()
    assert power.port_state("127.0.0.1", p.port, timeout=QUICK) == "refused"
    p.halt()
    started = time.monotonic()
    assert power.port_state("127.0.0.1", p.port, timeout=QUICK) == "silent"
    assert time.monotonic() - started >= QUICK * 0.9          # it waited for an answer that never came


@pytest.mark.parametrize(("code", "state"), [(errno.EHOSTUNREACH, "silent"), (errno.ENETUNREACH, "silent"),
                                              (errno.ECONNRESET, "refused"), (errno.ECONNABORTED, "refused")])
def test_an_unreachable_host_is_silent_a_reset_is_refused(monkeypatch: pytest.MonkeyPatch, code: int,
                                                           state: str) -> None:
    def connect(*args: object, **kwargs: object) -> socket.socket:
        raise OSError(code, errno.errorcode[code])

    monkeypatch.setattr(socket, "create_connection", connect)
    assert power.port_state("127.0.0.1", 22) == state


def test_a_real_host_is_down_after_two_silent_polls_a_reset_is_not_down(tmp_path: Path) -> None:
    host = inventory(tmp_path).hosts["node2"]
    answers = iter(["open", "refused", "refused", "silent", "refused", "silent", "silent"])
    observer = power.PowerObserver(probe=lambda address, port: next(answers))  # type: ignore[arg-type]
    seen = [observer.poll(host) for _ in range(7)]
    assert [down for _, down in seen] == [False, False, False, False, False, False, True]
    assert "silent" in observer.how


def test_the_callers_record_decides_where_the_address_answers_after_the_host_stopped(tmp_path: Path) -> None:
    host = inventory(tmp_path).hosts["node2"]
    record = {"node2": False}
    observer = power.PowerObserver(record.__getitem__, probe=lambda address, port: "refused",
                                   how="the lab's record of the node's container")
    assert observer.poll(host) == ("refused", False)
    record["node2"] = True
    assert observer.poll(host) == ("refused", True)
    assert observer.how == "the lab's record of the node's container"
    assert "record" in power.PowerObserver(record.__getitem__).how


def later(seconds: float, *steps: object) -> None:
    """Run each step (a callable) `seconds` apart, in the background."""

    def go() -> None:
        for step in steps:
            time.sleep(seconds)
            step()  # type: ignore[operator]

    threading.Thread(target=go, daemon=True).start()


def test_a_host_whose_sshd_stops_is_down_only_once_its_port_goes_silent(tmp_path: Path,
                                                                        ports: dict[str, Port]) -> None:
    inv = inventory(tmp_path, agents=2)
    hosts = [inv.hosts["node2"], inv.hosts["node3"]]
    for h in hosts:
        ports[h.name] = Port()

    def poweroff(h: Host) -> str:
        later(0.3, ports[h.name].stop, ports[h.name].halt)     # sshd stops, then the kernel halts
        return ""

    tl, outcome = Timeline(), dict[str, str]()
    left = power.power_off_group("agents", hosts, tl, outcome, power.PowerObserver(probe=probe_for(ports, hosts)),
                                 timeout=5, poweroff=poweroff, poll=0.05)

    assert left == [] and outcome == {"node2": "down", "node3": "down"}
    for name in ("node2", "node3"):
        closed, down = tl.first(name, "ssh closed"), tl.first(name, "down")
        assert closed is not None and closed.detail == "port 22 refused"
        assert down is not None and down.at >= 0.6 > closed.at      # the reset was not taken for down


def test_an_address_that_keeps_refusing_is_still_up_unless_the_callers_record_says_stopped(
        tmp_path: Path, ports: dict[str, Port]) -> None:
    inv = inventory(tmp_path, agents=1)
    hosts = [inv.hosts["node2"]]
    ports["node2"] = Port()
    stopped: set[str] = set()

    def poweroff(h: Host) -> str:
        later(0.1, ports[h.name].stop, lambda: stopped.add(h.name))   # a lab node: resets for ever
        return ""

    tl, outcome = Timeline(), dict[str, str]()
    left = power.power_off_group("agents", hosts, tl, outcome, power.PowerObserver(probe=probe_for(ports, hosts)),
                                 timeout=0.6, poweroff=poweroff, poll=0.05)
    assert left == ["node2"] and outcome == {"node2": "still up"}
    still = tl.first("node2", "still up")
    assert still is not None and still.detail == "not down after 0.6s"

    ports["node2"] = Port()
    stopped.clear()
    tl, outcome = Timeline(), dict[str, str]()
    observer = power.PowerObserver(stopped.__contains__, probe=probe_for(ports, hosts))
    left = power.power_off_group("agents", hosts, tl, outcome, observer, timeout=5, poweroff=poweroff, poll=0.05)
    assert left == [] and outcome == {"node2": "down"}


def test_a_refused_poweroff_is_failed_and_not_waited_for(tmp_path: Path, ports: dict[str, Port]) -> None:
    inv = inventory(tmp_path, agents=1)
    hosts = [inv.hosts["node2"]]
    ports["node2"] = Port()
    progress: list[tuple[int, int, list[str]]] = []
    tl, outcome = Timeline(), dict[str, str]()
    left = power.power_off_group("agents", hosts, tl, outcome, power.PowerObserver(probe=probe_for(ports, hosts)),
                                 timeout=5, poweroff=lambda h: "Access denied",
                                 waiting=lambda group, done, total, pending: progress.append((done, total, pending)))
    assert left == ["node2"] and outcome == {"node2": "failed"}
    assert [e.what for e in tl.events] == ["group started", "poweroff failed", "group done"]
    assert progress == [(1, 1, [])]
