"""What an upstream connection reports: the retained ``<prefix>/bridge/upstream/<name>``
message, the admin API's ``upstreams`` list and the TUI's Upstreams tab share this shape."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

State = Literal["connected", "connecting", "disconnected"]


@dataclass(frozen=True, slots=True)
class UpstreamStatus:
    name: str
    host: str
    port: int
    protocol: int  # 5 or 4
    client_id: str  # ours, on the upstream broker
    state: State
    since: float  # wall-clock time the state began
    queued: int  # waiting locally to go up (queued + in flight)
    forwarded: int  # messages the upstream acknowledged (out), since start
    received: int  # messages from the upstream committed locally (in), since start
    dropped: int  # messages the local queue limits dropped, since start
    duplicates: int  # QoS 1 messages sent up again after a reconnect or restart, since start
    rate_out: float  # messages/s forwarded, recent
    rate_in: float  # messages/s received, recent
    last_error: str | None

    def as_json(self) -> dict[str, object]:
        return asdict(self)


def upstream_sys_figures(statuses: Iterable[UpstreamStatus]) -> list[tuple[str, str]]:
    """$SYS/broker/upstream/<name>/...: where a Mosquitto user looks for a bridge's state."""
    out: list[tuple[str, str]] = []
    for st in statuses:
        p = f"upstream/{st.name}/"
        out += [
            (p + "state", st.state),
            (p + "queued", str(st.queued)),
            (p + "forwarded", str(st.forwarded)),
            (p + "received", str(st.received)),
            (p + "dropped", str(st.dropped)),
            (p + "duplicates", str(st.duplicates)),
        ]
    return out
