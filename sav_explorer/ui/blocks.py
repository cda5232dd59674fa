"""The layout: support set and controls on the left, the head heatmap and its tabs on the right.

    demo = build_demo(default_model="sav-explorer/shapes-llava")
    demo.launch(**launch_options())

Events are wired with explicit `api_name`s (the HTTP API that tests drive). Model work shares one
concurrency group ("model"); re-scoring and light events run at once, never queued behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr

from ..models import ASSETS, default_model_id
from .analyse import AnalyseHandlers
from .causal import CausalHandlers
from .classify import ClassifyHandlers
from .common import example_tasks
from .explore import ExploreHandlers
from .housekeeping import UPLOAD_MAX_AGE_S, start_cache_bound, start_sweeper
from .inspect import InspectHandlers
from .live import LiveHandlers
from .panels import build_panels
from .registry import ModelRegistry
from .resume import RESUMED, ResumeHandlers
from .session import MAX_UPLOAD, SESSION_TTL_S, Session
from .support import SupportHandlers
from .transfer import TransferHandlers

MODEL_GROUP = "model"


class Explorer(
    SupportHandlers,
    ExploreHandlers,
    InspectHandlers,
    CausalHandlers,
    AnalyseHandlers,
    ClassifyHandlers,
    LiveHandlers,
    TransferHandlers,
    ResumeHandlers,
):
    """Every view's handlers over one model registry: what the layout wires to events."""


def gpu_decorator() -> Callable[[Callable], Callable]:
    """On Hugging Face's ZeroGPU hardware, model work runs under `spaces.GPU`; anywhere else nothing changes."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda fn: fn
    return spaces.GPU


INTRO = """## SAV Explorer <span class="sav-small">which attention heads of a vision-language model separate your classes, \
where they look, and how they vote ([Sparse Attention Vectors](https://arxiv.org/abs/2412.00142)). \
**1** a few labeled images per class · **2** Extract · **3** pick *k* or heads on the heatmap · **4** classify, evaluate, export</span>
"""

CSS = """
#sav-gallery img, #sav-preview img, #sav-overlay img, #sav-class-maps img, #sav-voting-maps img, #sav-mistakes img,
#sav-hover-thumb img { image-rendering: pixelated; }
.sav-small { font-size: 0.9em; color: var(--body-text-color-subdued); font-weight: normal; }
.sav-banner p { margin: 0; }
#sav-canvas { border: 1px solid var(--border-color-primary); border-radius: 6px; cursor: crosshair; touch-action: none;
  width: 256px; height: 256px; background: white; }
#sav-palette { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin-top: 6px; font-size: 0.85em; }
.sav-swatch { width: 26px; height: 26px; border-radius: 50%; border: 2px solid white; box-shadow: 0 0 0 1px #999; cursor: pointer; }
.sav-swatch.sav-chosen { box-shadow: 0 0 0 3px #333; }
/* Gradio shrinks the column count to the number of images, so one image would fill the width: keep the columns */
#sav-gallery .grid-container, #sav-preview .grid-container { grid-template-columns: repeat(8, minmax(60px, 1fr)) !important; }
#sav-voting-maps .grid-container { grid-template-columns: repeat(5, minmax(100px, 1fr)) !important; }
#sav-class-maps .grid-container { grid-template-columns: repeat(3, minmax(100px, 1fr)) !important; }
#sav-mistakes .grid-container { grid-template-columns: repeat(6, minmax(100px, 1fr)) !important; }
#sav-mistakes .thumbnail-lg > img { position: absolute; top: 0; left: 0; width: 100%; height: calc(100% - 32px); }
#sav-mistakes .caption-label { bottom: 0; left: 0; right: 0; max-width: 100%; border: 0; border-radius: 0; opacity: 1; padding: 0 4px;
  font-size: 11px; line-height: 16px; height: 32px; white-space: normal; overflow: hidden; text-align: center; }
#sav-hover-thumb { position: fixed; z-index: 1000; pointer-events: none; display: none; padding: 3px; background: white;
  border: 1px solid var(--border-color-primary); border-radius: 4px; box-shadow: 0 2px 8px rgba(0, 0, 0, 0.25); }
#sav-hover-thumb img { display: block; width: 96px; height: 96px; object-fit: contain; }
/* captions in a strip under each thumbnail, never over the image */
:is(#sav-gallery, #sav-preview, #sav-voting-maps, #sav-class-maps) .thumbnail-lg > img {
  position: absolute; top: 0; left: 0; width: 100%; height: calc(100% - 18px); }
:is(#sav-gallery, #sav-preview, #sav-voting-maps, #sav-class-maps) .caption-label {
  bottom: 0; left: 0; right: 0; max-width: 100%; border: 0; border-radius: 0; opacity: 1; padding: 0 4px;
  font-size: 12px; line-height: 18px; height: 18px; text-align: center; }
"""

PAGE_JS = (Path(__file__).resolve().parent / "bridge.js").read_text(encoding="utf-8")  # the heatmap's click and k bridge


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
    start_sweeper(SESSION_TTL_S)  # session folders of ended apps, and this app's own stale ones
    gpu = gpu_decorator()
    model_events = {"concurrency_id": MODEL_GROUP, "concurrency_limit": 1}
    instant = {"concurrency_limit": None, "show_progress": "hidden"}

    # Gradio's cache (uploads, refused ones included, and outputs): deleted by age, and held within a bound in bytes
    with gr.Blocks(title="SAV Explorer", fill_width=True, delete_cache=(UPLOAD_MAX_AGE_S // 4, UPLOAD_MAX_AGE_S)) as demo:
        # a callable: every visitor's first event gets a new Session, made once even when two events arrive together
        session = gr.State(Session.new, time_to_live=SESSION_TTL_S, delete_callback=explorer.sessions.release)
        # the browser's key to its session: a reload finds the session again (the server keeps it, in memory)
        browser_token = gr.BrowserState(None, storage_key="sav-explorer-session")
        gr.Markdown(INTRO)
        ui = build_panels(default_model, example_tasks())
        support_views = [session, ui.support_table, ui.gallery, ui.question, ui.support_status]
        explore_views = [session, ui.heatmap, ui.summary, ui.selection, ui.heads, ui.k, ui.status]
        detail_views = [ui.predicted, ui.votes, ui.head_votes, ui.answer]
        inspect_views = [
            session,
            ui.inspect_title,
            ui.inspect_image,
            ui.inspect_overlay,
            ui.inspect_shares,
            ui.class_maps,
            ui.inspect_toggle,
        ]

        banners = [ui.explore_banner, ui.classify_banner]

        def then_banners(event):
            """After anything that changes the support set, the question, the model or the fit: say what the result belongs to."""
            return event.then(explorer.banners, [ui.question, session], banners, **instant)

        def then_counted(event):
            """After a change of the support set or the model, and after an extraction (which measures the time per
            token): the support set's image tokens counted. Not after k or a head toggle, which change neither:
            counting runs the processor over the support images."""
            return event.then(explorer.token_preview, [ui.image_tokens, session, ui.max_pixels], [ui.token_preview], **instant)

        def then_support(event):
            """After a change of the support set or the model: the banners, then the token count; the status
            line of an earlier extraction goes."""
            event.success(explorer.support_changed, None, [ui.status], **instant)
            return then_counted(then_banners(event))

        def then_new_fit(event):
            """After a new fit (an extraction, a restore): the Inspect panel and the Classify tab's results, which
            belong to the fit before, are emptied (both keep theirs when the fit did not change)."""
            inspect_panel = [ui.inspect_title, ui.inspect_image, ui.inspect_overlay, ui.inspect_shares, ui.class_maps, ui.inspect_toggle]
            event.then(explorer.fresh_inspect_views, [session], inspect_panel, **instant)
            classify_panel = [ui.results, ui.detail_choice, *detail_views, ui.preview, ui.voting_maps, ui.live_result, ui.live_timing]
            return event.then(explorer.fresh_classify_views, [session], classify_panel, **instant)

        def then_explore(event):
            """After anything that changes the voting heads: the top-k / custom switch, the inspected head's
            rank and button, and the banners follow."""
            event = event.then(explorer.mode_view, [session], [ui.mode], **instant)
            event = event.then(explorer.inspect_header_views, [session], [ui.inspect_title, ui.inspect_toggle], **instant)
            return then_banners(event)

        def then_held_out(event):
            """After a new fit (an extraction, a restore): the evaluation's views and its errors follow, emptied
            once they belong to a fit that is no longer current. Not after k: the evaluation keeps its heads."""
            held_out = [ui.accuracy, ui.confusion, ui.per_class, ui.mistakes_note, ui.mistakes, ui.projection_head, ui.projection]
            return event.then(explorer.held_out_views, [session], held_out, **instant)

        # ------------------------------------------------------------------ model and support set
        loading = ui.load_model.click(
            gpu(explorer.choose_model),
            [ui.model, ui.dtype, ui.revision, session],
            [session, ui.model_status],
            api_name="load_model",
            **model_events,
        )
        then_support(loading)
        loading.failure(explorer.model_in_use, [session], [ui.model, ui.dtype, ui.revision, ui.model_status], **instant)
        then_support(
            ui.load_task.click(explorer.load_example, [ui.task, session], support_views, api_name="load_example", concurrency_limit=None)
        )
        then_support(
            ui.add.click(
                explorer.add_images,
                [ui.new_images, ui.new_label, session],
                [*support_views, ui.new_images, ui.new_label],
                api_name="add_images",
                concurrency_limit=None,
            )
        )
        then_support(
            ui.upload.click(
                explorer.upload_support,
                [ui.data_files, session, ui.data_format],
                support_views,
                api_name="upload_support",
                concurrency_limit=None,
            )
        )
        then_support(
            ui.support_table.input(
                explorer.edit_labels, [ui.support_table, session], support_views, api_name="edit_labels", concurrency_limit=None
            )
        )
        then_support(ui.clear.click(explorer.clear_support, [session], support_views, api_name="clear_support", concurrency_limit=None))
        # `change`, not `input`: a question pasted or set by a script changes what a result belongs to as typing does
        ui.question.change(explorer.banners, [ui.question, session], banners, api_name="banners", trigger_mode="always_last", **instant)
        ui.image_tokens.input(
            explorer.token_preview,
            [ui.image_tokens, session, ui.max_pixels],
            [ui.token_preview],
            api_name="token_preview",
            trigger_mode="always_last",
            **instant,
        )
        ui.max_pixels.release(
            explorer.token_preview, [ui.image_tokens, session, ui.max_pixels], [ui.token_preview], trigger_mode="always_last", **instant
        )

        # ------------------------------------------------------------------ extraction and re-scoring
        extraction = ui.extract.click(explorer.arm_extraction, [session], [ui.status], api_name="arm_extraction", **instant).then(
            gpu(explorer.extract),
            [ui.question, ui.max_pixels, ui.batch_size, ui.k, ui.scoring, session, ui.image_tokens],
            explore_views,
            api_name="extract",
            show_progress_on=[ui.heatmap],
            **model_events,
        )
        then_counted(then_explore(extraction.then(explorer.model_status, [session], [ui.model_status], api_name="model_status", **instant)))
        then_held_out(extraction)
        then_new_fit(extraction)
        ui.cancel.click(explorer.cancel, [session], [ui.status], api_name="cancel", concurrency_limit=None, show_progress="hidden")
        then_explore(ui.k.input(explorer.set_k, [ui.k, session], explore_views, api_name="set_k", trigger_mode="always_last", **instant))
        then_explore(ui.mode.input(explorer.set_mode, [ui.mode, session], explore_views, api_name="set_mode", **instant))
        then_explore(
            ui.heads.input(
                explorer.set_heads, [ui.heads, session], explore_views, api_name="set_heads", trigger_mode="always_last", **instant
            )
        )
        then_explore(ui.click.change(explorer.toggle_head, [ui.click, session], explore_views, api_name="toggle_head", **instant))

        # ------------------------------------------------------------------ inspect a head
        inspect_inputs = [ui.inspect_cell, ui.inspect_image, session]
        ui.inspect_cell.change(gpu(explorer.inspect), inspect_inputs, inspect_views, api_name="inspect", **model_events)
        ui.inspect_image.input(gpu(explorer.inspect), inspect_inputs, inspect_views, api_name="inspect_image", **model_events)
        then_explore(
            ui.inspect_toggle.click(
                explorer.toggle_inspected, [session], [*explore_views, ui.inspect_toggle], api_name="toggle_inspected", **instant
            )
        )

        # ------------------------------------------------------------------ classify and evaluate
        classify_views = [session, ui.results, ui.detail_choice, *detail_views, ui.preview]
        ui.classify.click(
            gpu(explorer.classify),
            [ui.queries, ui.query_question, session],
            classify_views,
            api_name="classify",
            show_progress_on=[ui.results],
            **model_events,
        ).then(gpu(explorer.voting_heads), [ui.detail_choice, session], [ui.voting_maps], api_name="voting_heads", **model_events)
        ui.queries.upload(  # dropped or pasted images are classified at once
            gpu(explorer.classify), [ui.queries, ui.query_question, session], classify_views, api_name="classify_on_drop", **model_events
        ).then(gpu(explorer.voting_heads), [ui.detail_choice, session], [ui.voting_maps], **model_events)
        ui.drawing.change(  # a finished stroke: only the latest drawing waits, behind at most one model call
            gpu(explorer.classify_drawing),
            [ui.drawing, ui.query_question, session],
            [session, ui.live_result, ui.live_timing],
            api_name="classify_drawing",
            trigger_mode="always_last",
            show_progress="hidden",
            **model_events,
        ).then(explorer.classified_views, [session], classify_views, **instant).then(
            gpu(explorer.voting_heads), [ui.detail_choice, session], [ui.voting_maps], show_progress="hidden", **model_events
        )
        ui.detail_choice.input(explorer.show_detail, [ui.detail_choice, session], detail_views, api_name="show_detail", **instant).then(
            gpu(explorer.voting_heads), [ui.detail_choice, session], [ui.voting_maps], **model_events
        )
        ui.head_votes.select(
            explorer.inspect_vote_row, [ui.detail_choice, session], [ui.inspect_cell, ui.inspect_image, ui.views], **instant
        )
        mistake_views = [ui.mistakes_note, ui.mistakes, ui.projection_head, ui.projection]
        ui.run_test.click(
            gpu(explorer.evaluate_test),
            [ui.test_files, ui.use_example, ui.query_question, session],
            [session, ui.accuracy, ui.confusion, ui.per_class],
            api_name="evaluate",
            show_progress_on=[ui.accuracy],
            **model_events,
        ).then(explorer.mistakes_views, [ui.projection_head, session], mistake_views, api_name="mistakes", **instant)
        ui.projection_head.input(explorer.project_head, [ui.projection_head, session], [ui.projection], api_name="project_head", **instant)
        ui.mistakes.select(
            explorer.inspect_mistake, [ui.projection_head, session], [ui.inspect_cell, ui.inspect_image, ui.views], **instant
        ).then(None, js="() => document.querySelector('#sav-inspect')?.scrollIntoView({block: 'start'})")

        # ------------------------------------------------------------------ analyse
        test_inputs = [ui.analyse_files, ui.analyse_example]
        ui.ask_model.click(
            gpu(explorer.own_answers),
            [*test_inputs, ui.answer_method, ui.query_question, session],
            [ui.analysis_summary, ui.analysis_rows],
            api_name="own_answers",
            show_progress_on=[ui.analysis_summary],
            **model_events,
        )
        ui.run_ablation.click(
            gpu(explorer.ablate),
            [*test_inputs, ui.ablation_mode, ui.answer_method, ui.random_draws, ui.query_question, session],
            [ui.ablation_summary, ui.ablation_rows],
            api_name="ablate",
            show_progress_on=[ui.ablation_summary],
            **model_events,
        )
        ui.draw_curve.click(
            gpu(explorer.curve),
            [*test_inputs, ui.curve_test, ui.query_question, session],
            [ui.curve_plot, ui.curve_note],
            api_name="curve",
            show_progress_on=[ui.curve_plot],
            **model_events,
        )
        ui.analyse_tab.select(explorer.task_choices, [session], [ui.first_task, ui.second_task], api_name="task_choices", **instant)
        ui.analyse_tab.select(
            explorer.causal_choices, [session], [ui.steer_target, ui.patch_source, ui.patch_target], api_name="causal_choices", **instant
        )
        ui.run_steer.click(
            gpu(explorer.steer),
            [ui.steer_target, ui.steer_mode, ui.steer_alpha, ui.random_draws, *test_inputs, ui.answer_method, ui.query_question, session],
            [ui.steer_summary, ui.steer_rows],
            api_name="steer",
            show_progress_on=[ui.steer_summary],
            **model_events,
        )
        for button, handler, name in ((ui.run_patch, explorer.patch_pair, "patch"), (ui.run_sweep, explorer.sweep_pair, "sweep")):
            button.click(
                gpu(handler),
                [ui.patch_source, ui.patch_target, session],
                [ui.patch_summary, ui.causal_map, ui.colouring],
                api_name=name,
                show_progress_on=[ui.patch_summary],
                **model_events,
            )
        ui.run_attribute.click(
            gpu(explorer.attribute_heads),
            [*test_inputs, ui.query_question, ui.colouring, session],
            [ui.causal_map, ui.causal_scatter, ui.causal_note, ui.colouring],
            api_name="attribute",
            show_progress_on=[ui.causal_note],
            **model_events,
        )
        ui.colouring.change(
            explorer.colour_heads,
            [ui.colouring, session],
            [ui.causal_map, ui.causal_scatter, ui.causal_note],
            api_name="colour_heads",
            **instant,
        )
        ui.compare.click(
            explorer.compare,
            [ui.first_task, ui.second_task, ui.compare_k, session],
            [ui.first_map, ui.second_map, ui.comparison],
            api_name="compare",
            concurrency_limit=None,
        )

        # ------------------------------------------------------------------ export and restore
        ui.export.click(
            explorer.export,
            [session],
            [ui.clf_file, ui.scores_file, ui.png_file, ui.acts_file, ui.export_status],
            api_name="export",
            concurrency_limit=None,
        )
        ui.make_report.click(  # the top heads' lens runs the model
            gpu(explorer.report),
            [session],
            [ui.report_file, ui.report_status],
            api_name="report",
            show_progress_on=[ui.report_status],
            **model_events,
        )
        restored = ui.restore.click(
            gpu(explorer.restore), [ui.restore_file, session], [*explore_views, ui.query_question], api_name="restore", **model_events
        )
        then_counted(then_explore(restored))
        then_held_out(restored)
        then_new_fit(restored)
        restored.then(explorer.support_status, [session], [ui.support_status], **instant)
        demo.load(None, js=PAGE_JS)
        then_counted(
            then_explore(
                demo.load(
                    explorer.resume,
                    [browser_token, session],
                    [session, browser_token, *(getattr(ui, name) for name in RESUMED)],
                    api_name="resume",
                    **instant,
                )
            )
        )
    demo.queue(default_concurrency_limit=None)
    start_cache_bound(demo)
    return demo
