"""Export and restore: the classifier as a zip, the head scores, the heatmap, the activations; and back.

    handlers = TransferHandlers(default_model)
    archive, scores_csv, heatmap_png, activations, status = handlers.export(session)

Restored classifiers must match the session's model; nothing is unpickled.
"""

from __future__ import annotations

import shutil

import gradio as gr

from .. import plots
from ..classifier import SAVClassifier
from ..errors import ClassifierFileError, DataError
from ..manifest import MANIFEST
from ..pipeline import save_activations, save_head_scores
from .common import Handlers, file_paths, ui_errors
from .explore import explore_views, fitted
from .housekeeping import room_left
from .session import Fit, Session
from .uploads import classifier_member, extract_zip


class TransferHandlers(Handlers):
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
