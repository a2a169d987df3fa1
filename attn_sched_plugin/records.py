"""Plain records that adapters hand back to the core, the doctor and the logs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class EngineSupport:
    """What an adapter can say about its engine without importing it."""

    engine: str
    installed_version: str | None
    supported: bool
    reason: str = ""
    fa3_build: str = ""  # the build (``providers.BUILDS``) whose metadata the adapter would use

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class AdapterReport:
    """What an adapter did to its engine in this process."""

    engine: str
    version: str
    fa3_build: str
    active: bool
    covered: list[str] = field(default_factory=list)
    engine_native: list[str] = field(default_factory=list)
    passed_through: dict[str, str] = field(default_factory=dict)
    wrapped: list[str] = field(default_factory=list)
    reason: str = ""
    note: str = ""  # what an active adapter still leaves alone that users would expect covered

    def as_dict(self) -> dict:
        return asdict(self)

    def one_line(self) -> str:
        if not self.active:
            return f"attn-sched: inactive for {self.engine} {self.version}: {self.reason}"
        return (
            f"attn-sched: active for {self.engine} {self.version} with FA3 build {self.fa3_build}; "
            f"covered: {', '.join(self.covered) or 'none'}" + (f"; {self.note}" if self.note else "")
        )
