"""Image input tokens by the providers' published rules (tokmagic/protocols/images.py),
checked against the worked examples of OpenAI's and Anthropic's vision guides (FACTS.md
§3), on real PNGs: an image is sized from its header, never tokenised as text."""
from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from tokmagic.protocols import images

from .pictures import png, png_data_url

REMOTE = "https://upload.example.com/cat.png"


@pytest.mark.parametrize("size", [(1, 1), (9, 3), (1024, 1024), (2048, 4096)])
def test_pictures_are_real_pngs(size):
    data = png(*size)
    picture = Image.open(io.BytesIO(data))
    picture.load()
    assert picture.format == "PNG" and picture.size == size
    assert images.image_size(data) == size
    assert images.data_url_size(png_data_url(*size)) == size


@pytest.mark.parametrize("model,size,tokens", [
    # the guide's examples for gpt-4o: fit in 2048 x 2048, shortest side to 768, 170 a tile + 85
    ("gpt-4o", (1024, 1024), 765),     # 768 x 768: 4 tiles
    ("gpt-4o", (2048, 4096), 1105),    # 768 x 1536: 6 tiles
    # the same steps with each family's base and tile
    ("gpt-4o-mini", (1024, 1024), 2833 + 4 * 5667),
    ("gpt-5", (2048, 4096), 70 + 6 * 140),
    ("o1", (1024, 1024), 75 + 4 * 150),
    # smaller than 768 on its short side: not scaled up, one tile
    ("gpt-4o", (300, 200), 85 + 170),
])
def test_tile_models_high_detail(model, size, tokens):
    assert images.openai_image_tokens(png_data_url(*size), "high", model) == tokens


@pytest.mark.parametrize("model,base", [("gpt-4o", 85), ("gpt-4o-mini", 2833), ("gpt-5", 70), ("o3", 75)])
@pytest.mark.parametrize("url", [png_data_url(2048, 4096), REMOTE])
def test_tile_models_low_detail_cost_the_base_whatever_the_image(model, base, url):
    assert images.openai_image_tokens(url, "low", model) == base


@pytest.mark.parametrize("model,multiplier", [("gpt-4.1-mini", 1.62), ("gpt-4.1-nano", 2.46), ("o4-mini", 1.72)])
@pytest.mark.parametrize("size,patches", [
    ((1024, 1024), 32 * 32),   # under the cap: every 32 px patch
    ((1800, 2400), 1452),      # the guide's example: shrunk to 1056 x 1408, 33 x 44 patches
])
def test_patch_models(model, multiplier, size, patches):
    assert images.openai_image_tokens(png_data_url(*size), "high", model) == math.ceil(patches * multiplier)


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini"])
def test_an_image_that_cannot_be_sized_is_not_estimable(model):
    """A remote URL (not fetched) at high detail, or on a patch model, has no local count."""
    assert images.openai_image_tokens(REMOTE, "high", model) is None
    assert images.openai_image_tokens("data:image/png;base64,bm90IGFuIGltYWdl", "high", model) is None


@pytest.mark.parametrize("size,tokens", [
    ((200, 200), 54), ((1000, 1000), 1334), ((1092, 1092), 1590),  # the guide's examples
    ((3000, 3000), 1600),  # long edge past 1568: scaled down first, capped
])
def test_anthropic_images(size, tokens):
    assert images.anthropic_image_tokens(*size) == tokens
