"""SAV Explorer's web app: `python app.py` serves it on the bundled teaching model, offline.

    python app.py                                   # http://127.0.0.1:7860
    python app.py --model HuggingFaceTB/SmolVLM-256M-Instruct --port 8000
    SAV_MODEL=Qwen/Qwen2-VL-2B-Instruct python app.py

On a Hugging Face Space the default model comes from the Space variable `SAV_MODEL`.
"""

from __future__ import annotations

import argparse
import logging
import os

from sav_explorer.models import default_model_id
from sav_explorer.ui import build_demo, launch_options


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve the SAV Explorer app.")
    parser.add_argument(
        "--model",
        default=default_model_id(),
        help="default model: hub id or local folder (default: $SAV_MODEL or the bundled teaching model)",
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs the network)")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    demo = build_demo(default_model=args.model)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_options())
