"""The layout: support set and controls on the left, the head heatmap and its tabs on the right.

    demo = build_demo(default_model="sav-explorer/shapes-llava")
    demo.launch(**launch_options())

Events are wired with explicit `api_name`s (the HTTP API that tests drive). Model work shares one
concurrency group ("model"); re-scoring and light events run at once, never queued behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import gradio as gr

from ..method import Scoring
from ..models import ASSETS, default_model_id
from . import plots
from .classify import ClassifyHandlers
from .common import example_tasks, md
from .explore import ExploreHandlers
from .registry import ModelRegistry, model_choices
from .session import MAX_BATCH, MAX_PIXELS_CAP, MAX_UPLOAD, SESSION_TTL_S, close_session
from .support import DTYPE_CHOICES, SupportHandlers
from .transfer import TransferHandlers

MODEL_GROUP = "model"


class Explorer(SupportHandlers, ExploreHandlers, ClassifyHandlers, TransferHandlers):
    """Every view's handlers over one model registry: what the layout wires to events."""


def gpu_decorator() -> Callable[[Callable], Callable]:
    """On Hugging Face's ZeroGPU hardware, model work runs under `spaces.GPU`; anywhere else nothing changes."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU


INTRO = """# SAV Explorer
Few-shot image classification from the attention heads of a generative vision-language model
([Sparse Attention Vectors](https://arxiv.org/abs/2412.00142)). **1.** Pick a support set: a few labeled images per class.
**2.** Extract: the model reads each image once, and every head gets a score, the share of support
images that land nearest their own class mean. **3.** Pick *k* or click heads on the heatmap; the top heads vote.
**4.** Classify new images, measure held-out accuracy, export the classifier.
"""

CSS = """
#sav-gallery img, #sav-preview img { image-rendering: pixelated; }
.sav-small { font-size: 0.9em; color: var(--body-text-color-subdued); }
"""

# plotly_click on the heatmap -> "layer,head,nonce" in a hidden textbox, whose input event Python handles.
# Gradio 6 plots emit only `change`, so the listener is attached here, again whenever the plot is redrawn.
CLICK_BRIDGE = """
() => {
  const bind = () => {
    document.querySelectorAll('#sav-heatmap .js-plotly-plot').forEach((plot) => {
      if (plot.__savBound || typeof plot.on !== 'function') return;
      plot.__savBound = true;
      plot.on('plotly_click', (event) => {
        const point = event && event.points && event.points[0];
        if (!point || point.z === null) return;
        const box = document.querySelector('#sav-click textarea, #sav-click input');
        if (!box) return;
        box.value = `${point.y},${point.x},${Date.now()}`;
        box.dispatchEvent(new Event('input', { bubbles: true }));
      });
    });
  };
  new MutationObserver(bind).observe(document.body, { childList: true, subtree: true });
  bind();
}
"""


def launch_options() -> dict:
    """Keyword arguments for `demo.launch`: look, upload cap, and the bundled examples as servable files."""
    return {
        # system fonts: the default theme fetches web fonts, which an offline machine cannot
        "theme": gr.themes.Soft(
            primary_hue="indigo",
            neutral_hue="slate",
            font=["ui-sans-serif", "system-ui", "sans-serif"],
            font_mono=["ui-monospace", "monospace"],
        ),
        "css": CSS,
        "max_file_size": MAX_UPLOAD,
        "allowed_paths": [str(ASSETS)],
    }


def build_demo(default_model: str | None = None, registry: ModelRegistry | None = None) -> gr.Blocks:
    default_model = default_model or default_model_id()
    explorer = Explorer(default_model, registry)
    gpu = gpu_decorator()
    tasks = example_tasks()
    model_events = {"concurrency_id": MODEL_GROUP, "concurrency_limit": 1}
    instant = {"concurrency_limit": None, "show_progress": "hidden"}

    with gr.Blocks(title="SAV Explorer", fill_width=True) as demo:
        session = gr.State(None, time_to_live=SESSION_TTL_S, delete_callback=close_session)
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            # --------------------------------------------------------------- left: model, support set, controls
            with gr.Column(scale=4, min_width=340):
                with gr.Row(equal_height=False):
                    model = gr.Dropdown(
                        model_choices(default_model), value=default_model, label="Model", allow_custom_value=True, scale=4
                    )  # check_allowed refuses, with a clear message
                    load_model = gr.Button("Load model", scale=1, size="sm", min_width=90)
                with gr.Accordion("Model options", open=False):
                    with gr.Row():
                        dtype = gr.Dropdown(list(DTYPE_CHOICES), value="default", label="dtype (default: float32 on CPU, bfloat16 on GPU)")
                        revision = gr.Textbox(label="Revision (branch, tag or commit; empty: latest)")
                model_status = gr.Markdown(f"Model **{md(default_model)}** loads on first use.", elem_classes="sav-small")
                gr.Markdown("### 1 · Support set")
                with gr.Tabs():
                    with gr.Tab("Example task"):
                        task = gr.Dropdown(
                            tasks,
                            value=tasks[0] if tasks else None,
                            label="Bundled task (teaching model's shapes world)",
                            elem_id="sav-task",
                        )
                        load_task = gr.Button("Load example task", variant="secondary")
                    with gr.Tab("Label images"):
                        new_images = gr.File(
                            file_count="multiple", file_types=["image"], label="Images of one class", elem_id="sav-new-images"
                        )
                        new_label = gr.Textbox(label="Their label", placeholder="e.g. red", elem_id="sav-new-label")
                        add = gr.Button("Add to support set")
                    with gr.Tab("Upload a file"):
                        gr.Markdown(
                            "A zip of class sub-folders (`red/…png`, `blue/…png`), a zip with a JSONL/CSV file and its images, "
                            "or a JSONL/CSV file uploaded together with its images. Rows: `image`, `question`, `label`.",
                            elem_classes="sav-small",
                        )
                        data_files = gr.File(
                            file_count="multiple", file_types=[".zip", ".jsonl", ".csv", "image"], label="Zip, or data file + images"
                        )
                        upload = gr.Button("Use these files")
                support_status = gr.Markdown("No support examples yet.")
                gallery = gr.Gallery(
                    label="Support images",
                    columns=6,
                    height=260,
                    object_fit="contain",
                    elem_id="sav-gallery",
                    show_label=False,
                    allow_preview=False,
                )
                with gr.Accordion("Support set as a table: edit labels here", open=False):
                    support_table = gr.Dataframe(
                        headers=["#", "image", "label", "question"],
                        interactive=True,
                        static_columns=[0, 1, 3],
                        wrap=True,
                        elem_id="sav-support-table",
                    )
                    clear = gr.Button("Clear support set", size="sm")
                question = gr.Textbox(
                    label="Question asked about every image", placeholder="e.g. what color is the shape ?", elem_id="sav-question"
                )
                with gr.Accordion("Settings", open=False):
                    max_pixels = gr.Slider(
                        64, MAX_PIXELS_CAP, value=448 * 448, step=64, label="Max pixels per image (larger images are scaled down)"
                    )
                    batch_size = gr.Slider(1, MAX_BATCH, value=8, step=1, label="Batch size", elem_id="sav-batch")
                    scoring = gr.Radio(
                        list(get_args(Scoring)), value="in-sample", label="Head scoring (in-sample: the paper's; loo: leave-one-out)"
                    )
                with gr.Row():
                    extract = gr.Button("Extract heads", variant="primary", scale=3)
                    cancel = gr.Button("Cancel", variant="stop", scale=1)
                status = gr.Markdown("", elem_classes="sav-small")

            # --------------------------------------------------------------- right: heatmap, classify, export
            with gr.Column(scale=6):
                with gr.Tabs():
                    with gr.Tab("Explore"):
                        heatmap = gr.Plot(plots.head_heatmap(None, 0), elem_id="sav-heatmap", show_label=False)
                        gr.Markdown(
                            "Hover a cell for its scores; **click a cell to add or remove that head**. Framed cells vote.",
                            elem_classes="sav-small",
                        )
                        click = gr.Textbox(visible="hidden", elem_id="sav-click", label="clicked cell")
                        k = gr.Slider(1, 64, value=20, step=1, label="k: number of top-scoring heads that vote", elem_id="sav-k")
                        heads = gr.Dropdown([], value=[], multiselect=True, label="Selected heads (edit to choose any set)")
                        summary = gr.Markdown("")
                        with gr.Accordion("Selected heads", open=False):
                            selection = gr.Dataframe(headers=["rank", "layer", "head", "in-sample", "leave-one-out"], interactive=False)
                    with gr.Tab("Classify"):
                        with gr.Row():
                            queries = gr.File(
                                file_count="multiple", file_types=["image"], label="Images to classify", scale=3, elem_id="sav-queries"
                            )
                            with gr.Column(scale=2):
                                query_question = gr.Textbox(label="Question (default: the support set's)")
                                classify = gr.Button("Classify", variant="primary")
                        preview = gr.Gallery(
                            label="Classified images",
                            columns=8,
                            height=300,
                            object_fit="contain",
                            elem_id="sav-preview",
                            allow_preview=False,
                        )
                        results = gr.Dataframe(
                            headers=["image", "predicted", "votes", "model's own answer"],
                            interactive=False,
                            wrap=True,
                            elem_id="sav-results",
                            column_widths=["26%", "14%", "40%", "20%"],
                        )
                        detail_choice = gr.Dropdown([], label="Details for", interactive=True)
                        with gr.Row():
                            predicted = gr.Label(label="SAV prediction", num_top_classes=5, scale=2, elem_id="sav-label")
                            votes = gr.Plot(plots.votes_chart(None), show_label=False, scale=3)
                        answer = gr.Textbox(label="The model's own generated answer", interactive=False)
                        head_votes = gr.Dataframe(label="Per-head votes and cosine similarity to each class mean", interactive=False)
                        gr.Markdown("### Held-out accuracy")
                        with gr.Row():
                            test_files = gr.File(
                                file_count="multiple",
                                file_types=[".zip", ".jsonl", ".csv", "image"],
                                label="Labeled test set (like the support set)",
                                scale=3,
                            )
                            with gr.Column(scale=2):
                                use_example = gr.Checkbox(label="No upload: use the example task's queries", value=True)
                                run_test = gr.Button("Evaluate")
                        accuracy = gr.Markdown("")
                        with gr.Row():
                            confusion = gr.Plot(plots.confusion_chart(None), show_label=False, scale=3)
                            per_class = gr.Dataframe(headers=["class", "accuracy"], interactive=False, scale=2)
                    with gr.Tab("Export"):
                        gr.Markdown(
                            "Download the classifier (a zip you can restore below), the per-head scores, the heatmap "
                            "and the support activations."
                        )
                        export = gr.Button("Prepare downloads", variant="primary")
                        with gr.Row():
                            clf_file = gr.File(label="Classifier (.zip)")
                            scores_file = gr.File(label="Per-head scores (.csv)")
                        with gr.Row():
                            png_file = gr.File(label="Heatmap (.png)")
                            acts_file = gr.File(label="Activations (.safetensors)")
                        export_status = gr.Markdown("")
                        gr.Markdown("### Restore a classifier")
                        restore_file = gr.File(file_types=[".zip"], label="Classifier zip")
                        restore = gr.Button("Restore")

        support_views = [session, support_table, gallery, question, support_status]
        explore_views = [session, heatmap, summary, selection, heads, k, status]
        detail_views = [predicted, votes, head_votes, answer]

        load_model.click(
            gpu(explorer.choose_model), [model, dtype, revision, session], [session, model_status], api_name="load_model", **model_events
        )
        load_task.click(explorer.load_example, [task, session], support_views, api_name="load_example", concurrency_limit=None)
        add.click(
            explorer.add_images,
            [new_images, new_label, session],
            [*support_views, new_images, new_label],
            api_name="add_images",
            concurrency_limit=None,
        )
        upload.click(explorer.upload_support, [data_files, session], support_views, api_name="upload_support", concurrency_limit=None)
        support_table.input(explorer.edit_labels, [support_table, session], support_views, api_name="edit_labels", concurrency_limit=None)
        clear.click(explorer.clear_support, [session], support_views, api_name="clear_support", concurrency_limit=None)
        extract.click(
            gpu(explorer.extract),
            [question, max_pixels, batch_size, k, scoring, session],
            explore_views,
            api_name="extract",
            **model_events,
        )
        cancel.click(explorer.cancel, [session], [status], api_name="cancel", concurrency_limit=None, show_progress="hidden")

        k.input(explorer.set_k, [k, session], explore_views, api_name="set_k", trigger_mode="always_last", **instant)
        heads.input(explorer.set_heads, [heads, session], explore_views, api_name="set_heads", trigger_mode="always_last", **instant)
        click.change(explorer.toggle_head, [click, session], explore_views, api_name="toggle_head", **instant)

        classify.click(
            gpu(explorer.classify),
            [queries, query_question, session],
            [session, results, detail_choice, *detail_views, preview],
            api_name="classify",
            **model_events,
        )
        detail_choice.input(explorer.show_detail, [detail_choice, session], detail_views, api_name="show_detail", **instant)
        run_test.click(
            gpu(explorer.evaluate_test),
            [test_files, use_example, query_question, session],
            [session, accuracy, confusion, per_class],
            api_name="evaluate",
            **model_events,
        )

        export.click(
            explorer.export,
            [session],
            [clf_file, scores_file, png_file, acts_file, export_status],
            api_name="export",
            concurrency_limit=None,
        )
        restore.click(gpu(explorer.restore), [restore_file, session], [*explore_views, query_question], api_name="restore", **model_events)
        demo.load(None, js=CLICK_BRIDGE)
    demo.queue(default_concurrency_limit=None)
    return demo
