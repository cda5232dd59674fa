"""Export and restore: the classifier as a zip, the head scores, the heatmap, the activations; and back.
And the report: one self-contained HTML file of the current fit and the results the session holds for it.

    handlers = TransferHandlers(default_model)
    archive, scores_csv, heatmap_png, activations, status = handlers.export(session)
    report_html, status = handlers.report(session)

Restored classifiers must match the session's model; nothing is unpickled.
"""

from __future__ import annotations

import dataclasses
import shutil

import gradio as gr

from .. import plots
from ..classifier import SAVClassifier
from ..errors import ClassifierFileError, DataError
from ..manifest import MANIFEST
from ..pipeline import save_activations, save_head_scores
from ..report import ModelInfo, Results, lens_maps, questions_of, write_report
from .classify import check_same_model
from .common import Handlers, file_paths, ui_errors
from .explore import explore_views, fitted
from .housekeeping import room_left
from .session import Fit, Session
from .uploads import classifier_member, extract_zip


def session_results(session: Session) -> Results:
    """What the session ran on its current fit, with its latest evaluation of that fit."""
    fit, held = session.fit, session.evaluation
    if held is None or held.fit_created != fit.created:
        return fit.results
    return dataclasses.replace(fit.results, evaluation=held)


class TransferHandlers(Handlers):
    @ui_errors
    def report(self, session: Session | None, progress=gr.Progress()):
        """One HTML file that opens offline: the fit, its heatmap, where its top heads look, and every result
        the session holds for it (evaluation, own answers, curve, ablation, steering, patching, attribution,
        comparisons)."""
        session = self.session(session)
        clf = fitted(session).snapshot()
        fit = session.fit
        loaded = self.model(session, progress)
        check_same_model(session, loaded)
        results = session_results(session)
        images = fit.examples or (results.evaluation.examples if results.evaluation else [])
        maps = None
        if images:
            progress(0, desc="where the top heads look")
            maps = lens_maps(loaded, clf, images, source="support images" if fit.examples else "queries")
        path = write_report(
            session.fresh_dir("report") / "sav-report.html",
            clf,
            ModelInfo.of(loaded),
            task=fit.task,
            results=results,
            maps=maps,
            questions=questions_of(fit.examples),
        )
        ran = [field.name.replace("_", " ") for field in dataclasses.fields(results) if getattr(results, field.name)]
        included = f"with {', '.join(ran)}" if ran else "with no results yet (run them on Classify and Analyse first)"
        return str(path), f"Report ready, {included}. It opens offline in any browser."

    @ui_errors
    def export(self, session: Session | None):
        """The classifier as a zip, per-head scores as CSV, the heatmap as PNG, activations as safetensors."""
        session = self.session(session)
        clf = fitted(session)
        fit = session.fit
        out = session.fresh_dir("export")
        folder = clf.save(out / "sav-classifier", model_id=fit.model_key.model_id, revision=fit.revision)
        archive = shutil.make_archive(str(out / "sav-classifier"), "zip", root_dir=folder)
        scores = save_head_scores(out / "head-scores.csv", clf)
        png = plots.heatmap_png(clf, fit.n_layers, out / "heatmap.png", about=fit.describe())
        activations = None
        if fit.activations is not None:
            activations = str(save_activations(out, fit.activations, fit.labels, clf.classes_))
        note = "" if activations else " (no activations: this classifier was restored from a file)"
        return archive, str(scores), str(png), activations, f"Exported{note}."

    @ui_errors
    def restore(self, file, session: Session | None, progress=gr.Progress()):
        """Restores a classifier from a zip made by Export; it must match this session's model."""
        session = self.session(session)
        paths = file_paths(file)
        if len(paths) != 1 or paths[0].suffix.lower() != ".zip":
            raise ClassifierFileError("upload the classifier zip that Export made (one .zip file)")
        folder = session.fresh_dir("restored")
        try:
            extract_zip(paths[0], folder, accept=classifier_member, room=room_left(session.workdir))
        except DataError as error:
            raise ClassifierFileError(f"not a classifier zip: {error}") from None
        root = folder if (folder / MANIFEST).exists() else next((p.parent for p in folder.rglob(MANIFEST)), folder)
        try:
            clf = SAVClassifier.load(root)
        except ClassifierFileError as error:  # name the visitor's zip, not the server's folder
            raise ClassifierFileError(str(error).replace(str(root), paths[0].name)) from None
        loaded = self.model(session, progress)
        clf.manifest_.check_matches(loaded.model_id, loaded.revision, loaded.layout)
        question = clf.manifest_.question
        name = f"restored: {paths[0].name}"
        session.keep_fit(Fit(clf, None, [], session.model_key, loaded.revision, loaded.n_layers, name, top_k=len(clf.selected_heads)))
        views = explore_views(session, f"Restored a classifier for {len(clf.classes_)} classes with {len(clf.selected_heads)} heads.")
        return (*views, question or "")
