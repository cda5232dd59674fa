"""Space readiness: spaces.yaml and the README's front matter agree, `python app.py` serves and prints
its URL, the default model follows `$SAV_MODEL` and `--model`, and ZeroGPU's decorator wraps model calls."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gradio
import yaml

from app_harness import free_port
from sav_explorer.ui.registry import GATED_MODELS, POPULAR_MODELS

REPO = Path(__file__).resolve().parent.parent


def front_matter() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must open with the Space's front matter"
    return yaml.safe_load(text.split("---\n")[1])


def test_readme_front_matter_agrees_with_spaces_yaml():
    space = yaml.safe_load((REPO / "spaces.yaml").read_text(encoding="utf-8"))
    variables = space.pop("variables")
    assert front_matter() == space
    assert space["sdk"] == "gradio" and space["sdk_version"] == gradio.__version__
    assert f"gradio=={space['sdk_version']}" in (REPO / "requirements.txt").read_text()
    assert space["python_version"] == "3.11" and (REPO / space["app_file"]).is_file()
    assert space["suggested_hardware"] and space["title"]
    assert space["preload_from_hub"] == [m for m in POPULAR_MODELS if m not in GATED_MODELS]
    assert variables["SAV_MODEL"] == "sav-explorer/shapes-llava"


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, **env}
    )


def test_default_model_from_environment_and_flag():
    code = """
        import os
        import app
        print(app.parse_args([]).model, app.parse_args(["--model", "Qwen/Qwen2-VL-2B-Instruct"]).model)
        del os.environ["SAV_MODEL"]
        print(app.parse_args([]).model)
    """
    done = run_python(code, SAV_MODEL="HuggingFaceTB/SmolVLM-256M-Instruct")
    assert done.stdout.split() == ["HuggingFaceTB/SmolVLM-256M-Instruct", "Qwen/Qwen2-VL-2B-Instruct", "sav-explorer/shapes-llava"], (
        done.stderr
    )


def test_python_app_py_serves_and_prints_its_url():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    try:
        lines = []
        for line in process.stdout:  # ends when the server prints its URL (or the process dies)
            lines.append(line)
            if "Running on local URL" in line:
                break
        assert f"http://127.0.0.1:{port}" in "".join(lines), "".join(lines)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_model_calls_run_under_zerogpu_decorator_when_spaces_is_present():
    code = """
        import sys, types
        wrapped = []
        spaces = types.ModuleType("spaces")
        def GPU(fn):
            wrapped.append(fn.__name__)
            return fn
        spaces.GPU = GPU
        sys.modules["spaces"] = spaces
        from sav_explorer.ui import build_demo
        build_demo()
        print(sorted(wrapped))
    """
    done = run_python(code)
    model_work = ["choose_model", "extract", "classify", "evaluate_test", "restore", "inspect", "voting_heads", "classify_drawing"]
    model_work += ["own_answers", "ablate", "curve", "steer", "patch_pair", "sweep_pair", "attribute_heads"]  # the Analyse tab
    model_work += ["report"]  # the Export tab's report runs the top heads' lens
    assert set(ast.literal_eval(done.stdout.strip())) == set(model_work), done.stderr  # inspect and voting_heads are wired twice each
