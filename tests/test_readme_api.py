"""The README's Python example runs as written (from the repository root)."""

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.slow
def test_the_python_api_example_runs(tmp_path, monkeypatch, capsys):
    (block,) = python_blocks("Python API")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "flagged classes:" in printed and "report.html" in printed
    assert (tmp_path / "grids" / "notebook" / "report.html").is_file()
    assert (tmp_path / "grids" / "notebook" / "summary.csv").is_file()
    assert len(list((tmp_path / "runs" / "notebook").iterdir())) == 1


def test_the_package_exports_what_the_readme_uses():
    import triggerlab as tl

    for name in tl.__all__:
        assert getattr(tl, name) is not None
    with pytest.raises(AttributeError):
        tl.not_a_name  # noqa: B018
