"""The gallery of generated images."""

from __future__ import annotations

import pytest

from store.errors import NotFoundError, PhotoError
from store.library import Library
from tests.store.helpers import image_bytes, noise_image, state_bytes


def test_generated_images_are_kept_with_prompt_seed_and_versions(library: Library) -> None:
    library.concepts.add("bo")
    library.concepts.add("rex")
    bo = library.tokens.add("bo", state_bytes(seed=1))
    rex = library.tokens.add("rex", state_bytes(seed=2))
    png = image_bytes(noise_image((512, 512), seed=3))
    both = library.gallery.add(
        png, prompt="<bo> and <rex> at the beach", seed=42, version_ids=[rex.id, bo.id], params={"cfg": 3.0}
    )
    alone = library.gallery.add(image_bytes(noise_image((32, 32), seed=4), "JPEG"), prompt="a cat", seed=7)
    assert both.path.read_bytes() == png and both.thumbnail.exists() and both.format == "png"
    assert (both.prompt, both.seed, both.version_ids, both.params) == (
        "<bo> and <rex> at the beach",
        42,
        (bo.id, rex.id),
        {"cfg": 3.0},
    )
    assert alone.format == "jpeg" and alone.version_ids == ()
    assert [i.id for i in library.gallery.list()] == [alone.id, both.id]
    assert [i.id for i in library.gallery.list("rex")] == [both.id]

    only_rex = library.gallery.add(
        image_bytes(noise_image((64, 64), seed=5)), prompt="<rex>", seed=8, version_ids=[rex.id]
    )
    library.concepts.remove("rex")  # the images only rex made leave; "<bo> and <rex>" stays in bo's gallery
    assert [i.id for i in library.gallery.list()] == [alone.id, both.id] and only_rex.path.exists()
    library.concepts.empty_trash()  # now they go for good
    assert [i.id for i in library.gallery.list()] == [alone.id, both.id]
    assert library.gallery.get(both.id).version_ids == (bo.id,)
    assert [i.id for i in library.gallery.list("bo")] == [both.id]
    assert both.path.read_bytes() == png and both.thumbnail.exists()
    assert not only_rex.path.exists() and not only_rex.thumbnail.exists()
    library.gallery.remove(alone.id)
    assert [i.id for i in library.gallery.list()] == [both.id] and not alone.path.exists()


def test_gallery_refusals(library: Library) -> None:
    with pytest.raises(PhotoError, match="not a photo"):
        library.gallery.add(b"not an image", prompt="x", seed=1)
    with pytest.raises(NotFoundError, match="version"):
        library.gallery.add(image_bytes(noise_image((16, 16))), prompt="x", seed=1, version_ids=[99])
    assert library.gallery.list() == []
    assert list((library.root / "generated").rglob("*.*")) == []
