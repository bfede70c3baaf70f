from __future__ import annotations

from pathlib import Path

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
