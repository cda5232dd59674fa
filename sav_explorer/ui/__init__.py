"""The Gradio app over the SAV engine: a model registry, per-session state, plots, handlers and the layout.

from sav_explorer.ui import build_demo, launch_options
demo = build_demo()                       # gr.Blocks; nothing is loaded until a visitor acts
demo.launch(**launch_options())
"""

from .blocks import build_demo, launch_options

__all__ = ["build_demo", "launch_options"]
