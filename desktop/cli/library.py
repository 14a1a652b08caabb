"""`familiar concept ...`, `familiar export` and `familiar import`: the concept library from the command line.

No torch here, except for `concept add --instant`, which loads the model and the Aligner to predict the new
concept's tokens; the other commands only touch the store, so they answer at once.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from store.validation import CONTROL_CHARACTERS, DEFAULT_KIND, KINDS, MAX_PHOTOS_PER_CONCEPT, TRASH_DAYS

if TYPE_CHECKING:
    from store.library import Library
    from store.models import Run


def register(sub: argparse._SubParsersAction) -> None:
    concept = sub.add_parser("concept", help="add, list, show, rename, remove or restore your concepts")
    actions = concept.add_subparsers(dest="action", metavar="ACTION")
    concept.set_defaults(handler=lambda _args: _print_help(concept))

    add = actions.add_parser("add", help="add a concept from its photos (3-5 is best)")
    add.add_argument("name", help="how you will write it in prompts, as <name> (letters of any alphabet)")
    add.add_argument(
        "photos",
        nargs="+",
        type=Path,
        metavar="PHOTO",
        help=f"JPEG, PNG, WebP or HEIC files: 1 to {MAX_PHOTOS_PER_CONCEPT}, 3-5 from different angles work best",
    )
    add.add_argument("--kind", choices=KINDS, default=DEFAULT_KIND, help="what the concept is")
    add.add_argument("--facts", default="", help="what you want the model to know about it")
    add.add_argument(
        "--instant",
        action="store_true",
        help="also predict its learned tokens from the first photo with the Aligner (usable at once, no training)",
    )
    add.add_argument("--aligner", type=Path, help="Aligner file for --instant (default: the demo model's)")
    add.add_argument(
        "--dino", help="DINOv2 folder for --instant (default: the one the Aligner records; not for a micro-world one)"
    )
    add.add_argument("--model", help="base model for --instant: 'demo' (default), a model folder, or a hub id")
    add.add_argument("--device", help="device for --instant (default auto)")
    add.set_defaults(handler=run_add)

    listing = actions.add_parser("list", help="list the concepts in the library")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)

    show = actions.add_parser("show", help="show a concept, its photos and learned-token versions")
    show.add_argument("name", help="the concept")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=run_show)

    rename = actions.add_parser("rename", help="rename a concept")
    rename.add_argument("old", help="its current name")
    rename.add_argument("new", help="the new name")
    rename.set_defaults(handler=run_rename)

    remove = actions.add_parser(
        "remove", help=f"move a concept to the trash (restorable for {TRASH_DAYS} days, then deleted)"
    )
    remove.add_argument("name", help="the concept")
    remove.set_defaults(handler=run_remove)

    restore = actions.add_parser("restore", help="bring a concept back from the trash, whole")
    restore.add_argument("name", help="the concept in the trash")
    restore.add_argument("--as", dest="as_name", metavar="NEW", help="restore under this name (when it is taken)")
    restore.set_defaults(handler=run_restore)

    trash = actions.add_parser("trash", help="list the concepts in the trash, or empty it")
    trash.add_argument("--empty", action="store_true", help="delete everything in the trash for good")
    trash.add_argument("--json", action="store_true", help="print JSON")
    trash.set_defaults(handler=run_trash)

    export = sub.add_parser("export", help="write a concept, with its photos, to one .familiar file")
    export.add_argument("name", help="the concept")
    export.add_argument("-o", "--output", type=Path, required=True, metavar="FILE", help="the .familiar file to write")
    export.add_argument("--force", action="store_true", help="replace FILE if it exists")
    export.set_defaults(handler=run_export)

    importing = sub.add_parser("import", help="add a concept from a .familiar file")
    importing.add_argument("file", type=Path, help="a .familiar file")
    importing.add_argument("--rename", metavar="NEW", help="import under this name (when the name is taken)")
    importing.set_defaults(handler=run_import)


def _shown(text: str) -> str:
    """Text from the library made safe for a terminal: control characters, which could be escape sequences
    that move the cursor or rewrite the screen, are printed as `\\x1b`-style escapes."""
    return CONTROL_CHARACTERS.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def _json(value: object) -> str:
    """Indented JSON for the terminal; `json` escapes C0 controls in strings but leaves DEL and C1 ones raw."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return re.sub("[\x7f-\x9f]", lambda found: f"\\u{ord(found.group()):04x}", text)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _open(args: argparse.Namespace) -> Library:
    from store.library import Library

    return Library.open(args.data_dir)


def run_add(args: argparse.Namespace) -> int:
    if args.instant:
        return _add_instant(args)
    stray = [f"--{option}" for option in ("aligner", "dino", "model", "device") if getattr(args, option) is not None]
    if stray:
        print(f"familiar: error: {', '.join(stray)} only apply with --instant", file=sys.stderr)
        return 2
    warning = _check_photo_count(args.photos)
    with _open(args) as library:
        concept = library.concepts.add(args.name, args.photos, kind=args.kind, facts=args.facts)
    print(f"added {concept.name} ({concept.kind}, {_photos(concept.photo_count)})")
    if warning:
        print(f"familiar: warning: {warning}", file=sys.stderr)
    return 0


def _check_photo_count(photos: list[Path]) -> str | None:
    """The rules the app's wizard follows too: 1 to MAX_PHOTOS_PER_CONCEPT; returns the warning below 3."""
    from store.validation import check_photo_count, photo_count_warning

    return photo_count_warning(check_photo_count(len(photos)))


def _add_instant(args: argparse.Namespace) -> int:
    """Predict the concept's rows from its first photo, then add the concept and keep them as an instant
    version; nothing is stored when any step fails."""
    from engine.aligner.model import demo_aligner_path, instant_state, load_aligner
    from engine.errors import EngineError
    from engine.model.loading import DEMO_NAME, load_model
    from store.photos import clean_photo, read_photo_file

    warning = _check_photo_count(args.photos)
    model = args.model or DEMO_NAME
    if args.aligner is None and model != DEMO_NAME:
        raise EngineError(
            f"--instant with --model {model} needs --aligner PATH: an Aligner trained for that model "
            "(familiar aligner train)"
        )
    for photo in args.photos:  # the checks `concepts.add` makes, before the model loads
        clean_photo(read_photo_file(photo), str(photo))
    loaded = load_model(model, device=args.device or "auto")
    if loaded.is_demo:
        print(
            "familiar: note: the demo model knows only the micro-world's 32x32 creature scenes and cannot yet tell "
            "whether a photo shows a given creature, so its instant tokens show the mechanism, not recognition",
            file=sys.stderr,
        )
    aligner = load_aligner(args.aligner or demo_aligner_path(), loaded.fingerprint, args.dino, loaded.device)
    started = time.perf_counter()
    state = instant_state(aligner, args.photos[0], args.name, loaded.fingerprint)
    seconds = time.perf_counter() - started
    with _open(args) as library:
        concept = library.concepts.add(args.name, args.photos, kind=args.kind, facts=args.facts)
        try:
            version = library.tokens.add(concept.name, state.to_bytes(), kind="instant")
        except BaseException:
            library.concepts.purge(concept.name)
            raise
    print(
        f"added {concept.name} ({concept.kind}, {_photos(concept.photo_count)}) with instant tokens "
        f"(v{version.number}, from {args.photos[0].name} in {seconds:.2f} s)"
    )
    if warning:
        print(f"familiar: warning: {warning}", file=sys.stderr)
    return 0


def _run_cell(run: Run | None) -> str:
    """A run in a few words: `done`, `running 12/40`, `interrupted at 12/40`."""
    if run is None:
        return "-"
    steps = f"{run.step}/{run.total_steps}" if run.total_steps else f"step {run.step}"
    if run.status in ("failed", "cancelled"):
        stopped = "interrupted" if (run.error or "").startswith("interrupted") else run.status
        return f"{stopped} at {steps}"
    return run.status if run.status in ("done", "queued") else f"{run.status} {steps}"


def _resume_hint(run: Run) -> str:
    return (
        f"<{_shown(run.concept)}>: training run {run.id} stopped ({_run_cell(run)}); "
        f"continue it with: familiar train {_shown(run.concept)} --resume"
    )


def run_list(args: argparse.Namespace) -> int:
    from store.models import as_dict

    with _open(args) as library, library.reading():
        concepts = library.concepts.list()
        runs = {c.name: library.runs.list(c.name) for c in concepts}
        stopped = [r for c in concepts if (r := library.runs.interrupted(c.name)) is not None]
    if args.json:
        latest = {name: as_dict(found[0]) if found else None for name, found in runs.items()}
        print(_json([{**as_dict(c), "last_run": latest[c.name]} for c in concepts]))
        return 0
    if not concepts:
        print("no concepts yet; add one with: familiar concept add NAME PHOTO...")
        return 0
    rows = [("NAME", "KIND", "STATE", "PHOTOS", "LAST RUN", "UPDATED")]
    rows += [
        (_shown(c.name), c.kind, c.state, str(c.photo_count), _run_cell(next(iter(runs[c.name]), None)), c.updated_at)
        for c in concepts
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    for run in stopped:
        print(_resume_hint(run))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from store.models import as_dict

    with _open(args) as library, library.reading():
        concept = library.concepts.get(args.name)
        photos = library.concepts.photos(args.name)
        versions = library.tokens.versions(args.name)
        runs = library.runs.list(args.name)
        stopped = library.runs.interrupted(args.name)
    if args.json:
        shown = {**as_dict(concept), "photos": [as_dict(p) for p in photos]}
        shown["token_versions"] = [as_dict(v) for v in versions]
        shown["runs"] = [as_dict(r) for r in runs]
        print(_json(shown))
        return 0
    print(f"{concept.name} ({concept.kind}): {concept.state}")
    print(f"facts: {_shown(concept.facts) or '(none)'}")
    print(f"created {concept.created_at}, updated {concept.updated_at}")
    print(f"photos ({len(photos)}):")
    for p in photos:
        print(f"  {p.role:<9} {p.width}x{p.height} {p.format:<4} {p.sha256[:12]}  {_shown(p.original_name)}")
    print(f"learned tokens ({len(versions)} versions):")
    for v in versions:
        mark = "*" if v.active else " "
        metrics = json.dumps(v.metrics, sort_keys=True) if v.metrics else ""
        print(f"  {mark} v{v.number} {v.kind:<7} {v.created_at}  base {v.base_fingerprint[:12]}  {metrics}".rstrip())
    print(f"training runs ({len(runs)}):")
    for r in runs:
        epochs = r.config.get("epochs")
        detail = f"{epochs} epoch{'' if epochs == 1 else 's'}" if epochs is not None else ""
        why = f"  {_shown(r.error)}" if r.error else ""
        print(f"  run {r.id:<3} {_run_cell(r):<24} {r.created_at}  {detail}{why}".rstrip())
    if stopped is not None:
        print(_resume_hint(stopped))
    if concept.active is not None:
        from desktop.services.verdict import verdict

        judged = verdict(concept.name, concept.active.metrics, kind=concept.active.kind, photo_count=len(photos))
        print(f"verdict (v{concept.active.number}):")
        for line in judged.lines():
            print(f"  {_shown(line)}")
    return 0


def run_rename(args: argparse.Namespace) -> int:
    with _open(args) as library:
        concept = library.concepts.rename(args.old, args.new)
    print(f"renamed {args.old} to {concept.name}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    with _open(args) as library:
        trashed = library.concepts.remove(args.name)
    print(
        f"moved {trashed.name} to the trash ({trashed.photo_count} photos, {trashed.version_count} versions);"
        f" restore it with: familiar concept restore {trashed.name} (until {trashed.expires_at[:10]})"
    )
    return 0


def _photos(count: int) -> str:
    return f"{count} photo{'s' if count != 1 else ''}"


def run_restore(args: argparse.Namespace) -> int:
    with _open(args) as library:
        concept = library.concepts.restore(args.name, as_name=args.as_name)
    print(f"restored {concept.name} ({concept.kind}, {concept.photo_count} photos, {concept.state})")
    return 0


def run_trash(args: argparse.Namespace) -> int:
    from store.models import as_dict

    with _open(args) as library:
        if args.empty:
            gone = library.concepts.empty_trash()
            print(f"deleted {len(gone)} concept{'s' if len(gone) != 1 else ''} for good" + (": " if gone else ""))
            for name in gone:
                print(f"  {name}")
            return 0
        trashed = library.concepts.trashed()
    if args.json:
        print(_json([as_dict(t) for t in trashed]))
    elif not trashed:
        print(f"the trash is empty (removed concepts stay there {TRASH_DAYS} days)")
    else:
        rows = [("NAME", "KIND", "PHOTOS", "VERSIONS", "REMOVED", "DELETED ON")]
        rows += [
            (t.name, t.kind, str(t.photo_count), str(t.version_count), t.trashed_at[:16], t.expires_at[:10])
            for t in trashed
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def run_export(args: argparse.Namespace) -> int:
    with _open(args) as library:
        concept = library.concepts.get(args.name)
        path = library.export_concept(args.name, args.output, overwrite=args.force)
    print(
        f"exported {concept.name} to {path}; the file holds its {_photos(concept.photo_count)}: share it only"
        " with people who may see them"
    )
    return 0


def run_import(args: argparse.Namespace) -> int:
    with _open(args) as library:
        concept = library.import_concept(args.file, rename=args.rename)
    print(f"imported {concept.name} ({concept.kind}, {concept.photo_count} photos, {concept.state})")
    return 0
