"""Label events and a race of two labels on one item."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from defect_assets.storage.labeling import (
    LabelEvent,
    LabelLog,
)


def event(kind="label", label="defect", labeler="ana", item="i1", image="a.png", after="", target=""):
    return LabelEvent(kind=kind, queue="q-1", item=item, batch="b1", image=image, image_id="ab" * 32,
                      labeler=labeler, model_version="m-1", label=label if kind == "label" else "", after=after,
                      target=target)


def race_two_labels_on_one_item(*stores, posts: int = 16) -> list[tuple[LabelEvent, bool]]:
    """One labeler posting ``ok`` and ``defect`` for one item ``posts`` times at the same instant,
    through one LabelLog per post over the given store clients (several service replicas, say):
    what each append returned (the stored event, created)."""
    barrier = threading.Barrier(posts)

    def post(k):
        log = LabelLog(stores[k % len(stores)])
        barrier.wait()
        return log.append(event(label="ok" if k % 2 else "defect"))

    with ThreadPoolExecutor(posts) as pool:
        return list(pool.map(post, range(posts)))
