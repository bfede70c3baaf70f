"""What a pipeline run hands back: per use case the decision and the champion, and where to look."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class UseCaseSummary:
    """One use case in one pipeline run.

    ``status`` is this run's training outcome (promoted, challenger, skipped, failed);
    ``cached`` says the training was skipped because the same inputs were already trained.
    The champion fields describe the registry after the run, whatever this run decided.
    """

    usecase: str
    status: str
    reason: str = ""
    version: str | None = None
    cached: bool = False
    seconds: float = 0.0
    metric: str | None = None
    champion_version: str | None = None
    champion_metric: float | None = None
    baseline_metric: float | None = None
    scored_rows: int | None = None
    scores_path: str | None = None
    score_error: str | None = None


@dataclass
class PipelineSummary:
    """The outcome of a pipeline (or retrain) run, printable as a table or JSON."""

    data: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    features: list[dict[str, Any]] = field(default_factory=list)
    online: list[dict[str, Any]] = field(default_factory=list)
    usecases: list[UseCaseSummary] = field(default_factory=list)
    monitoring: dict[str, Any] = field(default_factory=dict)
    next_steps: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> list[UseCaseSummary]:
        return [u for u in self.usecases if u.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
