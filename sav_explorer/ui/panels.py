"""The page's widgets, by panel: the support column on the left; Explore (heatmap and Inspect), Classify,
Analyse and Export on the right. `build_panels` returns them by name; `blocks.build_demo` wires their events.

    with gr.Blocks() as demo:
        ui = build_panels(default_model, tasks)
        ui.extract.click(...)
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import get_args

import gradio as gr

from .. import plots
from ..method import Scoring
from ..official import FORMATS
from .budget import default_budget
from .classify import HEAD_VOTES
from .common import md
from .inspect import INSPECT_PROMPT
from .live import DRAW_PROMPT, canvas_html
from .registry import model_choices
from .session import MAX_BATCH, MAX_PIXELS_CAP
from .support import DTYPE_CHOICES

HEATMAP_HELP = (
    "Hover a cell for its scores. **Click a cell to inspect that head** (where it looks, below); "
    "**shift-click** to add or remove it from the heads that vote. Framed cells vote."
)

# Thumbnail galleries show two whole rows (Gradio's rows are 100 px with 8 px between, from 8 px down): at
# 170 px the second row was cut through its shapes, which read as images cropped at their edges.
TWO_ROWS = 8 + 2 * 108


class CheckedSlider(gr.Slider):
    """A slider whose out-of-range value reaches the handler: Gradio's own bound check raised before it,
    so the box kept 0 or 200 while the heatmap and the head list kept the k that votes. The handler
    warns and puts the box back."""

    def preprocess(self, payload):
        return payload

    def get_block_name(self) -> str:
        return "slider"  # the page draws it with Gradio's own slider


def build_panels(default_model: str, tasks: list[str]) -> SimpleNamespace:
    """Creates every widget inside the current `gr.Blocks`; returns them as attributes."""
    with gr.Row(equal_height=False):
        # --------------------------------------------------------------- left: model, support set, controls
        with gr.Column(scale=4, min_width=340):
            with gr.Row(equal_height=False):
                model = gr.Dropdown(
                    model_choices(default_model), value=default_model, label="Model", allow_custom_value=True, scale=4, elem_id="sav-model"
                )  # check_allowed refuses, with a clear message
                load_model = gr.Button("Load model", scale=1, size="sm", min_width=90)
            with gr.Accordion("Model options", open=False):
                with gr.Row():
                    dtype = gr.Dropdown(list(DTYPE_CHOICES), value="default", label="dtype (default: float32 on CPU, bfloat16 on GPU)")
                    revision = gr.Textbox(label="Revision (branch, tag or commit; empty: latest)")
            model_status = gr.Markdown(
                f"Model **{md(default_model)}** loads on first use.", elem_classes="sav-small", elem_id="sav-model-status"
            )
            with gr.Tabs():
                with gr.Tab("Example task"):
                    with gr.Row(equal_height=True):
                        task = gr.Dropdown(
                            tasks,
                            value=tasks[0] if tasks else None,
                            label="Bundled task (teaching model's shapes world)",
                            elem_id="sav-task",
                            scale=3,
                        )
                        load_task = gr.Button("Load example task", variant="secondary", scale=2)
                with gr.Tab("Label images"):
                    new_images = gr.File(file_count="multiple", file_types=["image"], label="Images of one class", elem_id="sav-new-images")
                    new_label = gr.Textbox(label="Their label", placeholder="e.g. red", elem_id="sav-new-label")
                    add = gr.Button("Add to support set")
                with gr.Tab("Upload a file"):
                    gr.Markdown(
                        "A zip of class sub-folders (`red/…png`, `blue/…png`), a zip with a JSONL/CSV file and its images, "
                        "or a JSONL/CSV file uploaded together with its images. Rows: `image`, `question`, `label`. "
                        "Or a task file of the official SAVs repository (choose its format): its images are found among "
                        "the uploaded files by name.",
                        elem_classes="sav-small",
                    )
                    data_files = gr.File(
                        file_count="multiple", file_types=[".zip", ".jsonl", ".csv", ".json", "image"], label="Zip, or data file + images"
                    )
                    data_format = gr.Dropdown(
                        ["rows", *(f"official:{f.name}" for f in FORMATS.values())], value="rows", label="Format", elem_id="sav-format"
                    )
                    upload = gr.Button("Use these files")
            support_status = gr.Markdown("No support examples yet.", elem_classes="sav-small")
            question = gr.Textbox(
                label="Question asked about every image", placeholder="e.g. what color is the shape ?", elem_id="sav-question", lines=1
            )
            with gr.Row():
                extract = gr.Button("Extract heads", variant="primary", scale=3, elem_id="sav-extract")
                cancel = gr.Button("Cancel", variant="stop", scale=1)
            status = gr.Markdown("", elem_classes="sav-small", elem_id="sav-status")
            gallery = gr.Gallery(
                label="Support images",
                columns=8,
                height=TWO_ROWS,
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
            token_preview = gr.Markdown("", elem_id="sav-token-preview", elem_classes="sav-small")
            with gr.Accordion("Settings", open=False):
                image_tokens = gr.Number(
                    value=default_budget(),
                    precision=0,
                    minimum=0,
                    label="Image tokens per image, at most (0: the processor's own settings)",
                    elem_id="sav-image-tokens",
                )
                max_pixels = gr.Slider(
                    64, MAX_PIXELS_CAP, value=448 * 448, step=64, label="Max pixels per image (larger images are scaled down)"
                )
                batch_size = gr.Slider(1, MAX_BATCH, value=8, step=1, label="Batch size", elem_id="sav-batch")
                scoring = gr.Radio(
                    list(get_args(Scoring)), value="in-sample", label="Head scoring (in-sample: the paper's; loo: leave-one-out)"
                )

        # --------------------------------------------------------------- right: heatmap, classify, export
        with gr.Column(scale=6):
            with gr.Tabs() as views:
                with gr.Tab("Explore", id="explore"):
                    explore_banner = gr.Markdown("", elem_classes="sav-banner", elem_id="sav-explore-banner")
                    heatmap = gr.Plot(plots.head_heatmap(None, 0), elem_id="sav-heatmap", show_label=False)
                    gr.Markdown(HEATMAP_HELP, elem_classes="sav-small")
                    click = gr.Textbox(visible="hidden", elem_id="sav-click", label="shift-clicked cell")
                    inspect_cell = gr.Textbox(visible="hidden", elem_id="sav-inspect-cell", label="clicked cell")
                    with gr.Row(equal_height=True):
                        mode = gr.Radio(
                            ["top-k", "custom set"], value="top-k", label="Heads that vote", elem_id="sav-mode", scale=1, min_width=160
                        )
                        k = CheckedSlider(
                            1, 64, value=20, step=1, label="k: number of top-scoring heads that vote", elem_id="sav-k", scale=4
                        )
                    heads = gr.Dropdown([], value=[], multiselect=True, label="Heads that vote (edit to choose a custom set)")
                    summary = gr.Markdown("")
                    with gr.Accordion("Selected heads", open=False):
                        selection = gr.Dataframe(headers=["rank", "layer", "head", "in-sample", "leave-one-out"], interactive=False)
                    with gr.Group(elem_id="sav-inspect"):
                        inspect_title = gr.Markdown(INSPECT_PROMPT)
                        with gr.Row(equal_height=False):
                            with gr.Column(scale=3, min_width=260):
                                inspect_image = gr.Dropdown([], label="On image", interactive=True, elem_id="sav-inspect-image")
                                inspect_overlay = gr.Image(
                                    label="Attention from the last token", type="pil", height=300, interactive=False, elem_id="sav-overlay"
                                )
                                inspect_shares = gr.Markdown("", elem_classes="sav-small")
                                inspect_toggle = gr.Button("Add to the selection", size="sm", interactive=False)
                            with gr.Column(scale=4, min_width=260):
                                gr.Markdown(
                                    "**Mean map per class** over its support images (up to 12 each, scaled to a square)",
                                    elem_classes="sav-small",
                                )
                                class_maps = gr.Gallery(
                                    label="Mean map per class over its support images (the image scaled to a square)",
                                    show_label=False,
                                    columns=3,
                                    height=380,
                                    object_fit="contain",
                                    allow_preview=False,
                                    elem_id="sav-class-maps",
                                )
                with gr.Tab("Classify"):
                    classify_banner = gr.Markdown("", elem_classes="sav-banner", elem_id="sav-classify-banner")
                    with gr.Row():
                        queries = gr.File(
                            file_count="multiple", file_types=["image"], label="Images to classify", scale=3, elem_id="sav-queries"
                        )
                        with gr.Column(scale=2):
                            query_question = gr.Textbox(label="Question (default: the support set's)")
                            classify = gr.Button("Classify", variant="primary")
                    with gr.Accordion("Draw: the heads vote as soon as a stroke ends", open=True):
                        with gr.Row(equal_height=False):
                            gr.HTML(canvas_html(), elem_id="sav-draw-block")
                            with gr.Column():
                                live_result = gr.Markdown(DRAW_PROMPT, elem_id="sav-live-result")
                                live_timing = gr.Markdown("", elem_id="sav-live-timing", elem_classes="sav-small")
                        drawing = gr.Textbox(visible="hidden", elem_id="sav-drawing", label="drawing")
                    preview = gr.Gallery(
                        label="Classified images",
                        show_label=False,
                        columns=8,
                        height=TWO_ROWS,
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
                        with gr.Column(scale=2):
                            predicted = gr.Markdown("", elem_id="sav-label")
                        votes = gr.Plot(plots.votes_chart(None), show_label=False, scale=3)
                    answer = gr.Textbox(label="The model's own generated answer", interactive=False)
                    head_votes = gr.Dataframe(
                        headers=HEAD_VOTES,
                        label="Per-head votes and cosine similarity to each class mean (click a row to inspect that head)",
                        interactive=False,
                        elem_id="sav-head-votes",
                    )
                    gr.Markdown("**Where each voting head looks**, with its vote (the selected image above)", elem_classes="sav-small")
                    voting_maps = gr.Gallery(
                        label="Where each voting head looks, with its vote",
                        show_label=False,
                        columns=5,
                        height=320,
                        object_fit="contain",
                        allow_preview=True,
                        elem_id="sav-voting-maps",
                    )
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
                    gr.Markdown("### The errors, looked at")
                    mistakes_note = gr.Markdown("", elem_id="sav-mistakes-note")
                    mistakes = gr.Gallery(
                        label="Misclassified: true class → SAV's label · votes (click one to inspect a head on it)",
                        show_label=False,
                        columns=6,
                        height=180,
                        object_fit="contain",
                        allow_preview=False,
                        elem_id="sav-mistakes",
                    )
                    projection_head = gr.Dropdown(
                        [], label="Head to project (one of the voting heads)", interactive=True, elem_id="sav-projection-head"
                    )
                    projection = gr.Plot(
                        plots.projection_chart([], [], empty="Evaluate on a labeled test set to see its errors here"),
                        show_label=False,
                        elem_id="sav-projection",
                    )
                    gr.Markdown(
                        "Each dot is an example, placed by the projected head's activation (scaled to length 1, as SAV compares "
                        "by cosine) on its first two principal components; colour: the true class; ✕: misclassified. "
                        "Hover a point to see its image.",
                        elem_classes="sav-small",
                    )
                with gr.Tab("Analyse", elem_id="sav-analyse") as analyse_tab:
                    gr.Markdown(
                        "Does the model **need** the voting heads, and does SAV beat the model's **own answers**? "
                        "Both ask the model itself, on a labeled test set: the example task's queries or an upload.",
                        elem_classes="sav-small",
                    )
                    with gr.Row():
                        analyse_files = gr.File(
                            file_count="multiple", file_types=[".zip", ".jsonl", ".csv", "image"], label="Labeled test set", scale=3
                        )
                        with gr.Column(scale=2):
                            analyse_example = gr.Checkbox(label="No upload: use the example task's queries", value=True)
                            answer_method = gr.Radio(
                                ["generate", "likelihood"], value="generate", label="The model's answer: free text, or the likeliest class"
                            )
                    with gr.Row(equal_height=False):  # each result in its own place: one never hides the other
                        with gr.Column():
                            ask_model = gr.Button("Compare with the model's own answers")
                            analysis_summary = gr.Markdown("", elem_id="sav-analysis-summary")
                            analysis_rows = gr.Dataframe(
                                headers=["example", "label", "the model's answer"],
                                column_widths=["50%", "20%", "30%"],
                                interactive=False,
                                wrap=True,
                                max_height=300,
                                elem_id="sav-analysis-rows",
                            )
                        with gr.Column():
                            with gr.Row():
                                ablation_mode = gr.Radio(["mean", "zero"], value="mean", label="Ablation", scale=1)
                                random_draws = gr.Slider(0, 5, value=3, step=1, label="Random-head draws", scale=1)
                            run_ablation = gr.Button("Ablate the voting heads", variant="primary")
                            ablation_summary = gr.Markdown("", elem_id="sav-ablation-summary")
                            ablation_rows = gr.Dataframe(
                                headers=["example", "label", "answer", "after ablation"],
                                column_widths=["40%", "16%", "20%", "24%"],
                                interactive=False,
                                wrap=True,
                                max_height=300,
                                elem_id="sav-ablation-rows",
                            )
                    gr.Markdown(
                        "### Decodable or causal?\n"
                        "SAV reads heads whose output *separates* the classes. Do they *carry* the answer? **Steer**: put one "
                        "class's mean into the voting heads and see whether the model's answer becomes that class (random heads "
                        "of the same layers as the control). **Patch**: run one support image with the voting heads taken from "
                        "another's run; **Sweep** patches every head alone. **Attribute**: each head's direct push on the true "
                        "class's logit, and the logit lens.",
                        elem_classes="sav-small",
                    )
                    with gr.Row():
                        steer_target = gr.Dropdown([], label="Steer to class", scale=2, allow_custom_value=True, elem_id="sav-steer-target")
                        steer_mode = gr.Radio(["replace", "add"], value="replace", label="Steering", scale=2)
                        steer_alpha = gr.Number(value=1.0, label="alpha (add)", scale=1)
                        run_steer = gr.Button("Steer the voting heads", variant="primary", scale=2)
                    steer_summary = gr.Markdown("", elem_id="sav-steer-summary")
                    steer_rows = gr.Dataframe(
                        headers=["example", "label", "answer", "after steering"], interactive=False, wrap=True, max_height=260
                    )
                    with gr.Row():
                        patch_source = gr.Dropdown([], label="Patch from (source)", scale=3, allow_custom_value=True)
                        patch_target = gr.Dropdown([], label="into (target)", scale=3, allow_custom_value=True)
                        run_patch = gr.Button("Patch", scale=1)
                        run_sweep = gr.Button("Sweep every head", scale=1)
                    patch_summary = gr.Markdown("", elem_id="sav-patch-summary")
                    with gr.Row():
                        colouring = gr.Radio(
                            ["SAV accuracy", "direct logit attribution", "patching effect"],
                            value="SAV accuracy",
                            label="Colour heads by",
                            scale=3,
                        )
                        run_attribute = gr.Button("Attribute (test set)", scale=1)
                    causal_note = gr.Markdown("", elem_classes="sav-small", elem_id="sav-causal-note")
                    with gr.Row():
                        causal_map = gr.Plot(
                            plots.head_heatmap(None, 0, empty="Steer, Sweep or Attribute to colour the heads"), show_label=False
                        )
                        causal_scatter = gr.Plot(plots.head_heatmap(None, 0, empty="Accuracy against the causal measure"), show_label=False)
                    gr.Markdown("### Accuracy against k")
                    with gr.Row():
                        curve_test = gr.Checkbox(label="Also on the test set (captures it once)", value=True)
                        draw_curve = gr.Button("Draw the curve")
                    curve_plot = gr.Plot(plots.curve_chart(None), show_label=False, elem_id="sav-curve")
                    curve_note = gr.Markdown("", elem_classes="sav-small")
                    gr.Markdown("### Compare two tasks")
                    with gr.Row():
                        first_task = gr.Dropdown([], label="Task", scale=2, allow_custom_value=True)  # compare checks the name
                        second_task = gr.Dropdown([], label="with task", scale=2, allow_custom_value=True)
                        compare_k = gr.Number(value=10, precision=0, minimum=1, label="top k", scale=1)
                        compare = gr.Button("Compare", scale=1)
                    comparison = gr.Markdown("", elem_id="sav-comparison")
                    with gr.Row():
                        first_map = gr.Plot(
                            plots.head_heatmap(None, 0, empty="Extract two tasks, then Compare"),
                            show_label=False,
                            elem_id="sav-compare-first",
                        )
                        second_map = gr.Plot(plots.head_heatmap(None, 0, empty=" "), show_label=False, elem_id="sav-compare-second")
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
                    gr.Markdown(
                        "### Report\nOne HTML file to send or keep: the classifier, its heatmap, where its top heads look, and "
                        "every result this session ran on it (evaluation, curve, ablation, steering, comparisons). "
                        "It opens offline in any browser.",
                    )
                    with gr.Row(equal_height=True):
                        make_report = gr.Button("Make the report", scale=1, elem_id="sav-make-report")
                        report_file = gr.File(label="Report (.html)", scale=3, elem_id="sav-report-file")
                    report_status = gr.Markdown("", elem_id="sav-report-status")
                    gr.Markdown("### Restore a classifier")
                    restore_file = gr.File(file_types=[".zip"], label="Classifier zip", elem_id="sav-restore-file")
                    restore = gr.Button("Restore")

    return SimpleNamespace(
        **{name: value for name, value in locals().items() if isinstance(value, gr.components.Component | gr.Button | gr.Tab | gr.Tabs)}
    )
