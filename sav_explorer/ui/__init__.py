"""The Gradio app over the SAV engine: a model registry, per-session state, plots, handlers and the layout.

    from sav_explorer.ui import build_demo, launch_options
    demo = build_demo()                       # gr.Blocks; nothing is loaded until a visitor acts
    demo.launch(**launch_options())

The layout is in `blocks.py` and `panels.py`; each view's handlers in a module of its own.
"""

from .blocks import build_demo, launch_options

__all__ = ["build_demo", "launch_options"]
