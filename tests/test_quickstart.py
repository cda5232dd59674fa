"""The Python API as the README and the notebook show it: the README's "Python" section runs as written,
and examples/quickstart.ipynb executes from start to end in a fresh kernel (nbclient + ipykernel)."""

from __future__ import annotations

import re

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO


def readme_python() -> str:
    """The code block of the README's "Python" section, exactly as a reader copies it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_readmes_python_section_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "assets").symlink_to(REPO / "assets")  # its paths are the repository's; what it writes lands here
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_python(), "README.md (Python)", "exec"), scope)
    printed = capsys.readouterr().out
    assert "SAVClassifier(k=20" in printed and "6 classes (blue, green, orange, purple, red, yellow)" in printed
    assert scope["evaluation"].report.n == 60 and scope["evaluation"].report.accuracy >= 0.9
    report = (tmp_path / "runs" / "colour-report.html").read_text(encoding="utf-8")
    assert "Held-out accuracy" in report and "Where the top heads look" in report


def test_the_quickstart_notebook_runs_from_start_to_end():
    path = REPO / "examples" / "quickstart.ipynb"
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "".join(output.get("text", "") for output in outputs)
    assert "accuracy 1.000 on 6 queries" in text and "flip rate" in text and "sav-quickstart-report.html" in text
    rich = [output.get("data", {}) for output in outputs]
    assert any("SAVClassifier" in data.get("text/html", "") for data in rich)  # the classifier's summary
    assert any("application/vnd.plotly.v1+json" in data for data in rich)  # the heatmap
    assert any("image/png" in data for data in rich)  # the lens overlay
