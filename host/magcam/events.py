"""Wire messages -> the public event dicts that `magcam monitor --json` prints.

Every event has ``type`` and ``t`` (device milliseconds); enumerations become names.
"""

from __future__ import annotations

from magcam_fw import protocol as P


def _name(table: tuple, i: int) -> str:
    return table[i] if 0 <= i < len(table) else f"unknown({i})"


def to_event(msg: dict, link=None) -> dict:
    kind = msg["type"]
    if kind == "hello":
        return {"type": "hello", "t": msg["uptime_ms"], "version": msg["version"], "session": msg["session"],
                "firmware": msg["firmware"], "chunk_size": msg["chunk_size"], "mode": _name(P.MODES, msg["mode"])}
    if kind == "encoder":
        return {"type": "encoder", "t": msg["t"], "count": msg["count"], "lens": msg["lens"],
                "velocity": msg["velocity"], "at_min": bool(msg["flags"] & P.ENC_AT_MIN),
                "at_max": bool(msg["flags"] & P.ENC_AT_MAX), "glitches": msg["glitches"]}
    if kind == "attach":
        return {"type": "attach", "t": msg["t"], "state": _name(P.ATTACH_STATES, msg["state"]), "session": msg["session"]}
    if kind == "power":
        return {"type": "power", "t": msg["t"], "state": _name(P.POWER_STATES, msg["state"]), "mv": msg["mv"],
                "ma": msg["ma"], "budget_mw": msg["budget_mw"],
                # What holds a granted or retrying rail's switch open (a fault cause), else None.
                "blocked": _name(P.FAULT_CAUSES, msg["blocked"]) if msg["blocked"] else None,
                "faults": msg["faults"]}
    if kind == "thermal":
        return {"type": "thermal", "t": msg["t"], "c": msg["mc"] / 1000, "state": _name(P.THERMAL_STATES, msg["state"]),
                "fps_x10": msg["fps_x10"]}
    if kind == "fault":
        return {"type": "fault", "t": msg["t"], "cause": _name(P.FAULT_CAUSES, msg["cause"]), "value": msg["value"],
                "count": msg["count"]}
    if kind == "link":
        ev = {"type": "link", "t": msg["t"], "device": {k: msg[k] for k in msg if k not in ("type", "t")}}
        if link is not None:
            ev["host"] = link.stats()
        return ev
    if kind == "log":
        return {"type": "log", "t": msg["t"], "level": msg["level"], "text": msg["text"]}
    return dict(msg)
