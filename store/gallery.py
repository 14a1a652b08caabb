"""Generated images, kept with the prompt, seed and concept versions that made them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from store import faults
from store.errors import InvalidValueError, NotFoundError
from store.models import GeneratedImage, loads, utc_now
from store.photos import check_generated_image, extension
from store.validation import check_count, to_json

if TYPE_CHECKING:
    from store.library import Library

MAX_PROMPT_CHARS = 10_000


# Images with no concept, or with at least one concept that is not in the trash.
_SHOWN = (
    "WHERE NOT EXISTS (SELECT 1 FROM generated_image_versions gv WHERE gv.image_id = generated_images.id)"
    " OR EXISTS (SELECT 1 FROM generated_image_versions gv JOIN token_versions v ON v.id = gv.version_id"
    " JOIN concepts c ON c.id = v.concept_id WHERE gv.image_id = generated_images.id AND c.trashed_at IS NULL)"
)


class Gallery:
    """Generated images; reach it as `library.gallery`."""

    def __init__(self, library: Library) -> None:
        self._lib = library

    def add(
        self,
        image: bytes,
        *,
        prompt: str,
        seed: int,
        version_ids: Sequence[int] = (),
        params: Mapping[str, Any] | None = None,
    ) -> GeneratedImage:
        """Keep a generated PNG or JPEG with its prompt, seed, the token versions it used (ids) and any
        other generation settings (`params`, a JSON object)."""
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS:
            raise InvalidValueError(f"the prompt must be text of at most {MAX_PROMPT_CHARS} characters")
        check_count(seed, "seed")
        params_json = to_json(params or {}, "params")
        fmt, width, height, thumbnail = check_generated_image(image, "generated image")
        with self._lib.change() as change:
            sha = change.stage("generated", image, extension(fmt))
            change.stage("thumbs", thumbnail, "jpg", key=sha)
            change.lock()
            for version_id in version_ids:
                if self._lib.db.execute("SELECT 1 FROM token_versions WHERE id = ?", [version_id]).fetchone() is None:
                    raise NotFoundError(f"no learned-token version with id {version_id}")
            image_id = int(
                self._lib.db["generated_images"]
                .insert(
                    {
                        "sha256": sha,
                        "format": fmt,
                        "width": width,
                        "height": height,
                        "size_bytes": len(image),
                        "prompt": prompt,
                        "seed": seed,
                        "params": params_json,
                        "created_at": utc_now(),
                    }
                )
                .last_pk
            )
            for version_id in sorted(set(version_ids)):
                self._lib.db["generated_image_versions"].insert({"image_id": image_id, "version_id": version_id})
            faults.reach("generated image row")
        return self.get(image_id)

    def get(self, image_id: int) -> GeneratedImage:
        images = self._select("WHERE id = ?", [image_id])
        if not images:
            raise NotFoundError(f"no generated image {image_id}")
        return images[0]

    def list(self, name: str | None = None) -> list[GeneratedImage]:
        """Generated images, newest first; only those made with a concept's versions when `name` is given.

        Images made only with concepts in the trash are left out (they come back when one is restored)."""
        with self._lib.reading():
            if name is None:
                return self._select(_SHOWN + " ORDER BY id DESC", [])
            concept_id = self._lib.concept_id(name)
            return self._select(
                "WHERE id IN (SELECT gv.image_id FROM generated_image_versions gv JOIN token_versions v"
                " ON v.id = gv.version_id WHERE v.concept_id = ?) ORDER BY id DESC",
                [concept_id],
            )

    def remove(self, image_id: int) -> None:
        with self._lib.change(lock=True) as change:
            image = self.get(image_id)
            self._lib.db.execute("DELETE FROM generated_images WHERE id = ?", [image_id])
            change.discard("generated", image.sha256, extension(image.format))
            change.discard("thumbs", image.sha256, "jpg")

    def _select(self, where: str, params: list[Any]) -> list[GeneratedImage]:
        with self._lib.reading() as db:
            rows = list(db.query(f"SELECT * FROM generated_images {where}", params))
            ids = [row["id"] for row in rows]
            versions: dict[int, list[int]] = {}
            placeholders = ",".join("?" * len(ids))
            for image_id, version_id in db.execute(
                "SELECT image_id, version_id FROM generated_image_versions"
                f" WHERE image_id IN ({placeholders}) ORDER BY version_id",
                ids,
            ):
                versions.setdefault(image_id, []).append(version_id)
        layout = self._lib.layout
        return [
            GeneratedImage(
                id=row["id"],
                sha256=row["sha256"],
                format=row["format"],
                width=row["width"],
                height=row["height"],
                size_bytes=row["size_bytes"],
                prompt=row["prompt"],
                seed=row["seed"],
                params=loads(row["params"]),
                version_ids=tuple(versions.get(row["id"], ())),
                created_at=row["created_at"],
                path=layout.file("generated", row["sha256"], extension(row["format"])),
                thumbnail=layout.file("thumbs", row["sha256"], "jpg"),
            )
            for row in rows
        ]
