#!/usr/bin/env python
"""What re-scoring costs a search on a fast index (`aio-reid index --backend openvino-int8`, or `torch-fast`:
--backend): per text query, the time to rank the index and re-score its top N hits by the full model
(`AIOSearcher.search`, `rescore`), cold (each photo embedded by the full model) and warm (the searcher keeps the
photos' vectors), for N = 0 (the index's ranking alone), 20 and 50 (the default); and the indexing throughput, for
scale. Medians over the queries, one query at a time; the gallery is the first --photos photos of a folder
(default: CUHK-PEDES's CUHK01 crops).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from modeling_aio.export import FAST_INDEX_BACKENDS

REPO = Path(__file__).resolve().parents[1]
QUERIES = ("a man in a black jacket and blue jeans carrying a backpack",
           "a woman with long hair wearing a white dress and red shoes",
           "a young man in a grey t-shirt, dark shorts and white sneakers",
           "a person in a yellow coat holding an umbrella")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="aio-reid")
    parser.add_argument("--gallery", type=Path,
                        default=REPO.parent / "shared" / "data" / "CUHK-PEDES" / "imgs" / "CUHK01")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--backend", choices=FAST_INDEX_BACKENDS, default="openvino-int8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default="nothing else running", help="what else ran on the machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from modeling_aio.search import AIOSearcher

    photos = sorted(p for p in args.gallery.rglob("*") if p.suffix.lower() in (".jpg", ".png"))[:args.photos]
    if len(photos) < 50:
        raise SystemExit(f"error: {args.gallery} holds {len(photos)} photos; the benchmark needs at least 50.")
    searcher = AIOSearcher.from_pretrained(args.model, backend=args.backend)
    started = time.perf_counter()
    gallery = searcher.index(photos)
    indexing = len(photos) / (time.perf_counter() - started)
    print(f"{len(photos)} photos of {args.gallery}, {args.threads} threads, {args.note}; model {args.model}, "
          f"backend {args.backend} (indexed at {indexing:.1f} images/s, loading included)")
    for depth in (0, 20, 50):
        cold, warm = [], []
        for query in QUERIES:
            searcher = AIOSearcher(searcher.model, searcher.processor, backend=searcher.backend)  # nothing kept
            searcher.fingerprint  # noqa: B018  (hashing the weights, once per searcher, is not a query's cost)
            for times in (cold, warm):
                start = time.perf_counter()
                searcher.search(gallery, k=10, text=query, rescore=depth)
                times.append(1000 * (time.perf_counter() - start))
        print(f"  re-scoring the top {depth:3d}: {statistics.median(cold):7.1f} ms/query cold, "
              f"{statistics.median(warm):7.1f} ms/query warm (the photos' full-model vectors kept)")


if __name__ == "__main__":
    main()
