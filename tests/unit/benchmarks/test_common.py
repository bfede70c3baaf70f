from __future__ import annotations

from pathlib import Path

import pytest
from benchmarks.common import best_of_each, update_readme


def test_readme_block_is_replaced_whether_empty_or_filled(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- bench:a -->\n<!-- /bench:a -->\ntail\n")
    assert update_readme("a", "| t |", readme)
    assert readme.read_text() == "# x\n<!-- bench:a -->\n| t |\n<!-- /bench:a -->\ntail\n"
    assert update_readme("a", "| u |\n| v |", readme)
    assert readme.read_text() == "# x\n<!-- bench:a -->\n| u |\n| v |\n<!-- /bench:a -->\ntail\n"
    assert not update_readme("missing", "x", readme)


def test_best_of_each_alternates_and_keeps_each_best() -> None:
    calls: list[str] = []
    best = best_of_each({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3
    assert set(best) == {"a", "b"} and all(0 <= t < 1 for t in best.values())


def test_a_summary_goes_to_its_own_block_and_the_full_table_to_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import common

    readme, page = tmp_path / "README.md", tmp_path / "page.md"
    readme.write_text("<!-- bench:r:summary -->\n<!-- /bench:r:summary -->\n")
    page.write_text("<!-- bench:r -->\n<!-- /bench:r -->\n")
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "DOC_FILES", lambda: [readme, page])
    common.save(common.Result("r", "R", "| full |", {"x": 1}, summary="| short |"))
    assert "| short |" in readme.read_text() and "| full |" not in readme.read_text()
    assert "| full |" in page.read_text() and "| short |" not in page.read_text()
    assert "python -m benchmarks r` reproduces it" in readme.read_text()


def test_the_rollout_tables_are_redrawn_from_saved_figures() -> None:
    from benchmarks.bench_rollout import render

    def outcome(world: str, outcome: str, expected: str, naive: str) -> dict[str, object]:
        return {
            "seed": 1, "world": world, "mode": "shadow", "expected": expected,
            "outcome": outcome, "day": 35 if outcome != "no action" else None, "looks": 1,
            "labelled": {"champion": 10, "challenger": 10}, "intervals": {},
            "difference": {"estimate": 0.1, "low": 0.05, "high": 0.15},
            "sequential": {"z": 2.0, "se": 0.02}, "requests": 20, "errors": 0,
            "naive": naive, "naive_day": None,
        }  # fmt: skip

    data = {
        "outcomes": [
            outcome("better", "promoted", "promoted", "promoted"),
            outcome("unchanged", "promoted", "no action", "no action"),
        ],
        "test_figures": {"1": {"good": 0.83, "weak": 0.65}},
        "days": 77,
        "seeds": [1],
        "customers": 4000,
    }
    result = render(data, "2026-12-04 21:23 UTC")
    assert result.measured_at == "2026-12-04 21:23 UTC"
    assert "1 of 2 outcomes as expected with the sequential rule, 2 of 2 with the naive" in (
        result.markdown
    )
    assert "| 0.040 |" in result.markdown  # the decidable gap: z x se
    assert "promoted (wrong)" in result.markdown
    assert "4,000-customer" in result.summary and "weak one 0.65-0.65" in result.summary
    assert "| unchanged | shadow | no action | 0 of 1: promoted (35) | 1 of 1: no action |" in (
        result.summary
    )
