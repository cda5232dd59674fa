"""In the app, a visitor's images are encoded once: extracting again with a reworded question takes
every image from that visitor's cache, and another visitor's session never does."""

from __future__ import annotations

import re

from app_harness import client

CACHED = re.compile(r"(\d+) of (\d+) images? from the cache")


def extraction_status(outputs) -> str:
    return next(value for value in outputs if isinstance(value, str) and value.startswith("Extracted"))


def cached_of(status: str) -> tuple[int, int]:
    match = CACHED.search(status)
    assert match, f"the extraction status does not say what came from the cache: {status!r}"
    return int(match[1]), int(match[2])


def test_a_reworded_extraction_reads_every_image_from_the_visitors_cache_and_no_one_elses(url):
    visitor = client(url)
    visitor.predict("size", api_name="/load_example")
    first = extraction_status(visitor.predict("is the shape big or small?", 200704, 4, 8, "in-sample", api_name="/extract"))
    reused, total = cached_of(first)
    assert reused == 0 and total > 0
    again = extraction_status(visitor.predict("how big is the shape?", 200704, 4, 8, "in-sample", api_name="/extract"))
    assert cached_of(again) == (total, total)

    newcomer = client(url)  # another session: the same pictures, none of the first visitor's features
    newcomer.predict("size", api_name="/load_example")
    theirs = extraction_status(newcomer.predict("how big is the shape?", 200704, 4, 8, "in-sample", api_name="/extract"))
    assert cached_of(theirs) == (0, total)
