"""Search: gallery indexes (`index`, faiss in a folder), database galleries with filters (`store`, LanceDB), the
`AIOSearcher` API (`searcher`), layouts that give ids and cameras (`layout`), re-ranking (`rerank`) and result
pictures (`visualize`)."""

from .index import INDEX_FORMAT_VERSION, GalleryIndex, SearchHit, measure_recall, merge_parts
from .rerank import k_reciprocal_rerank
from .layout import LAYOUTS
from .searcher import AIOSearcher, describe_image, list_images
from .store import GalleryFilter, GalleryStore

__all__ = ["AIOSearcher", "GalleryIndex", "GalleryStore", "GalleryFilter", "SearchHit", "list_images", "merge_parts", "k_reciprocal_rerank",
           "measure_recall", "describe_image", "LAYOUTS", "INDEX_FORMAT_VERSION"]
