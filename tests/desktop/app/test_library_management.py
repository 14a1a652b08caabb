"""Managing the library in the window, through the real widgets: select a card, rename it in place (F2),
remove it to the trash and take that back (Ctrl+Z, the note's Undo), export (Ctrl+E; replacing a file is
asked first), import by dropping `.familiar` files, add photos by dropping them on a card, edit photos and
facts, delete a picture from the gallery and take that back; and the wizard's rules, which are the CLI's."""

from __future__ import annotations

import zipfile
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from store.library import Library
from store.validation import DEFAULT_KIND
from tests.store.helpers import with_history, write_image


def _pick(window, qtbot, name: str):
    card = window.library_view.cards[name]
    qtbot.waitUntil(card.isVisible)  # a card made by a refresh shows once the event loop has run
    qtbot.mouseClick(card, Qt.MouseButton.LeftButton)
    assert window.library_view.selected == name and card.hasFocus()
    return card


def test_rename_remove_undo_export_import_from_the_window(open_window, drop_files, qtbot, tmp_path: Path) -> None:
    with Library.open(tmp_path / "library") as library:
        with_history(library, tmp_path)
    window = open_window()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    view, library = window.library_view, window.library

    card = _pick(window, qtbot, "rex")
    assert [a.text() for a in view.menu("rex").actions() if a.text()] == [
        "Rename",
        "Edit photos and facts\u2026",
        "Export\u2026",
        "Remove (to the trash)",
    ]
    qtbot.keyClick(card, Qt.Key.Key_F2)
    assert card.name_edit.isVisible() and card.name_edit.selectedText() == "rex"
    qtbot.keyClicks(card.name_edit, "b o")
    assert "one identifier token" in card.name_problem.text() and card.name_problem.isVisible()
    card.name_edit.clear()
    card.name_edit.insert("Böwie")  # QTest types ASCII keys only: insert() is what an input method does
    assert card.name_problem.isHidden()
    qtbot.keyClick(card.name_edit, Qt.Key.Key_Return)
    assert [c.name for c in library.concepts.list()] == ["Böwie"] and len(library.tokens.versions("böwie")) == 2
    assert "Böwie" in view.cards and "Renamed <rex> to <Böwie>" in view.notice.label.text()
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert [c.name for c in library.concepts.list()] == ["rex"]

    card = _pick(window, qtbot, "rex")
    qtbot.keyClick(card, Qt.Key.Key_Delete)
    assert library.concepts.list() == [] and view.cards == {} and window.gallery_view.images == []
    assert [t.name for t in library.concepts.trashed()] == ["rex"]
    assert "Moved <rex> to the trash (3 photos, 2 versions" in view.notice.label.text()
    qtbot.mouseClick(view.notice.button, Qt.MouseButton.LeftButton)  # the note's Undo
    assert library.concepts.get("rex").state == "trained" and len(library.tokens.versions("rex")) == 2
    assert [image.prompt for image in window.gallery_view.images] == ["<rex> at the beach"]
    assert library.concepts.trashed() == [] and "rex" in view.cards

    existing = tmp_path / "rex.familiar"
    existing.write_bytes(b"precious")
    card = _pick(window, qtbot, "rex")
    for answer in ("Cancel", "Replace"):
        qtbot.keyClick(card, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
        dialog = view.dialog
        assert isinstance(dialog, QFileDialog) and "holds its 3 photos" in dialog.windowTitle()
        dialog.selectFile(str(existing))
        dialog.accept()
        question = view.dialog
        assert isinstance(question, QMessageBox)
        assert "already exists" in question.text() and "3 photos" in question.text()
        button = next(b for b in question.buttons() if b.text().replace("&", "") == answer)
        qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not window.work.busy, timeout=30_000)
        if answer == "Cancel":
            assert existing.read_bytes() == b"precious"
    assert zipfile.is_zipfile(existing) and "holds its 3 photos" in view.notice.label.text()

    drop_files(view, [existing])  # onto the library: rex is taken, so it comes in as rex-2
    qtbot.waitUntil(lambda: "rex-2" in view.cards, timeout=30_000)
    assert "<rex> was taken" in view.notice.label.text()
    drop_files(window, [existing])  # anywhere on the window
    qtbot.waitUntil(lambda: "rex-3" in view.cards, timeout=30_000)
    assert len(library.tokens.versions("rex-3")) == 2

    photo = write_image(tmp_path / "more.png", seed=77, fmt="PNG")
    drop_files(view.cards["rex-2"], [photo])
    qtbot.waitUntil(lambda: library.concepts.get("rex-2").photo_count == 4, timeout=30_000)
    qtbot.waitUntil(lambda: "Added 1 photo to <rex-2>" in view.notice.label.text(), timeout=30_000)


def test_edit_photos_and_facts_and_delete_a_picture(open_window, drop_files, qtbot, tmp_path: Path) -> None:
    with Library.open(tmp_path / "library") as library:
        with_history(library, tmp_path)
    window = open_window()
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    view, library, editor = window.library_view, window.library, window.editor
    first, *_ = library.concepts.photos("rex")

    _pick(window, qtbot, "rex")
    view.edit_action.trigger()
    assert window.stack.currentWidget() is editor and editor.title.text() == "Edit <rex>"
    tiles = [editor.tiles.itemAt(i).widget() for i in range(editor.tiles.count())]
    qtbot.mouseClick(next(t for t in tiles if t.key == first.sha256).remove, Qt.MouseButton.LeftButton)
    drop_files(editor.drop, [write_image(tmp_path / "new.jpg", seed=55)])
    assert "3 photos (1 to add, 1 to remove)" in editor.count.text()
    editor.facts.setPlainText("likes the beach")
    editor.kind.setCurrentText("person")
    with qtbot.waitSignal(editor.saved, timeout=30_000):
        qtbot.mouseClick(editor.save, Qt.MouseButton.LeftButton)
    rex = library.concepts.get("rex")
    assert (rex.kind, rex.facts, rex.photo_count) == ("person", "likes the beach", 3)
    assert first.sha256 not in {p.sha256 for p in library.concepts.photos("rex")} and not first.path.exists()
    assert window.stack.currentWidget() is view

    _pick(window, qtbot, "rex")
    view.edit_action.trigger()
    for tile in [editor.tiles.itemAt(i).widget() for i in range(editor.tiles.count())]:
        qtbot.mouseClick(tile.remove, Qt.MouseButton.LeftButton)
    assert not editor.save.isEnabled() and "A concept needs at least 1 photo" in editor.count.text()
    qtbot.mouseClick(editor.cancel, Qt.MouseButton.LeftButton)
    assert library.concepts.get("rex").photo_count == 3 and window.stack.currentWidget() is view

    window.show_page("Gallery")
    gallery = window.gallery_view
    assert [i.prompt for i in gallery.images] == ["<rex> at the beach"]
    gallery.grid.setCurrentRow(0)
    gallery.grid.setFocus()
    qtbot.keyClick(gallery.grid, Qt.Key.Key_Delete)
    assert gallery.images == [] and library.gallery.list() == []
    qtbot.keyClick(window, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    assert [i.prompt for i in gallery.images] == ["<rex> at the beach"]
    assert library.gallery.list("rex")[0].version_ids == (library.tokens.active("rex").id,)


def test_the_wizard_takes_one_photo_with_a_warning_a_unicode_name_and_the_cli_default_kind(
    open_window, drop_files, qtbot, tmp_path: Path
) -> None:
    window = open_window()
    window.library_view.add.emit()
    wizard = window.wizard
    assert wizard.kind.currentText() == DEFAULT_KIND
    drop_files(wizard.drop, [write_image(tmp_path / "one.jpg", seed=3)])
    qtbot.waitUntil(lambda: not wizard.pending, timeout=30_000)
    assert "Only 1 photo" in wizard.count.text() and "3-5 photos" in wizard.count.text()
    qtbot.keyClicks(wizard.name, "b o")
    assert "one identifier token" in wizard.name_message.text() and "any alphabet" in wizard.name_message.text()
    wizard.name.clear()
    wizard.name.insert("Böwie")  # QTest types ASCII keys only: insert() is what an input method does
    assert wizard.name_message.text() == "You will mention it as <Böwie>." and wizard.add_only.isEnabled()
    with qtbot.waitSignal(wizard.created, timeout=30_000):
        wizard.add_only.click()
    concept = window.library.concepts.get("BÖWIE")
    assert (concept.name, concept.kind, concept.photo_count) == ("Böwie", DEFAULT_KIND, 1)
    assert "Böwie" in window.library_view.cards

    drop_files(window.library_view, [write_image(tmp_path / "two.jpg", seed=4)])  # photos on the library: a new one
    assert window.stack.currentWidget() is wizard
    qtbot.waitUntil(lambda: len(wizard.photos) == 1, timeout=30_000)
