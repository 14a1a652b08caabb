"""The add-concept wizard: dropped photos are checked by the store on arrival, refusals are explained in
place, the name is validated as it is typed, and the concept lands in the library as a card."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from desktop.app.wizard import MAX_PHOTOS


def _bad_files(folder: Path, real: Path) -> dict[str, Path]:
    folder.mkdir()
    (folder / "notes.txt").write_text("not a photo")
    (folder / "truncated.jpg").write_bytes(real.read_bytes()[:3000])
    Image.new("RGB", (20, 20), "red").save(folder / "tiny.png")
    (folder / "empty.jpg").write_bytes(b"")
    return {p.name: p for p in folder.iterdir()}


def test_wizard_refuses_bad_files_with_reasons_and_adds_the_concept(
    open_window, drop_files, qtbot, dreambooth: Path, tmp_path: Path
) -> None:
    window = open_window()
    window.library_view.add.emit()
    wizard = window.wizard
    assert window.stack.currentWidget() is wizard
    dogs = sorted((dreambooth / "dog").glob("*.jpg"))
    bad = _bad_files(tmp_path / "bad", dogs[0])

    drop_files(wizard.drop, [*dogs[:3], *bad.values()])
    qtbot.waitUntil(lambda: not wizard.pending, timeout=30_000)
    assert [p.path for p in wizard.photos] == dogs[:3]
    reasons = dict((p.name, why) for p, why in wizard.refused)
    assert "not a photo Familiar can read" in reasons["notes.txt"]
    assert "damaged or truncated" in reasons["truncated.jpg"]
    assert "too small" in reasons["tiny.png"]
    assert "empty" in reasons["empty.jpg"]
    shown = wizard.problems.text()
    assert all(name in shown for name in bad) and "too small" in shown

    drop_files(wizard.drop, [dogs[0]])  # the same photo again
    cat = sorted((dreambooth / "cat").glob("*.jpg"))[0]
    drop_files(wizard.drop, [*dogs[3:5], cat])
    qtbot.waitUntil(lambda: not wizard.pending, timeout=30_000)
    assert len(wizard.photos) == 6 <= MAX_PHOTOS  # the CLI's limit, not 5
    assert "already added" in wizard.problems.text()
    wizard.remove_photo(cat)
    wizard.remove_photo(dogs[4])
    assert len(wizard.photos) == 4

    assert not wizard.add_only.isEnabled()  # no name yet
    qtbot.keyClicks(wizard.name, "9lives")
    assert "starting with a letter" in wizard.name_message.text() and not wizard.add_only.isEnabled()
    wizard.name.clear()
    qtbot.keyClicks(wizard.name, "image")
    assert "reserved" in wizard.name_message.text()
    wizard.name.clear()
    qtbot.keyClicks(wizard.name, "bo")
    assert wizard.name_message.text() == "You will mention it as <bo>." and wizard.add_only.isEnabled()
    wizard.kind.setCurrentText("pet")
    wizard.facts.setPlainText("class: dog\nbreed: corgi")

    with qtbot.waitSignal(wizard.created, timeout=30_000) as created:
        wizard.add_only.click()
    assert created.args == ["bo", False]
    concept = window.library.concepts.get("bo")
    assert (concept.kind, concept.facts, concept.photo_count, concept.state) == (
        "pet",
        "class: dog\nbreed: corgi",
        4,
        "untrained",
    )
    assert window.stack.currentWidget() is window.library_view
    card = window.library_view.cards["bo"]
    assert (
        card.badge.text() == "untrained"
        and not card.verdict.isVisibleTo(card)
        and not card.numbers_button.isVisibleTo(card)
    )

    window.library_view.add.emit()
    assert wizard.photos == [] and wizard.name.text() == ""
    qtbot.keyClicks(wizard.name, "BO")
    assert "already exists" in wizard.name_message.text()
