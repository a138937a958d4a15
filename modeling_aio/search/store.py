"""A gallery as a LanceDB table: one row per image (embedding, path, modality, person id, camera, timestamp, source,
model), filtered search, incremental adds and deletes.

LanceDB is embedded (a folder, no server) and its client opens the same tables on object storage (`s3://`, `gs://`,
`az://`) or on a LanceDB Enterprise / Cloud cluster (`db://`) by changing the URI; docs/database.md says why it was
chosen over Milvus Lite and Qdrant (measured) and what was run here. Every add and delete is one commit of a new
table version, so an interrupted `aio-reid index` leaves the previous version whole and its rerun adds only the
files not yet stored. A table records the model fingerprint that embedded it (schema metadata): adding or searching
with another model is refused.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

TABLE = "gallery"
MODEL_KEY = b"aio_reid.model"
# Below this many rows a search is exact (a scan: ~25 ms for 20k rows, LanceDB's flat search is slow); from it on an
# IVF-PQ index answers, its candidates re-ranked by the full vectors. Measured 2026-12-03 on 2 cores (docs/database.md):
# on two builds of the 1M x 512 index, with a filter keeping 10%, nprobes 10 gave recall@10 0.989 and 0.949 (the
# k-means of a build matters), nprobes 20 / refine 10 0.999 and 0.979 at 15-17 ms. Unfiltered, a person's many crops
# are near-ties: on 20k vectors refine 10 gave recall 0.80 and refine 30 1.000 (12.9 ms).
ANN_MIN_ROWS = 5_000
NPROBES = 20
REFINE_FACTOR = 10
REFINE_FACTOR_UNFILTERED = 30
REMOTE_SCHEMES = ("s3://", "gs://", "az://", "db://", "memory://")


def is_store(target: str | Path) -> bool:
    """Whether `target` names a LanceDB gallery (a remote URI, or a folder holding the gallery table)."""
    text = str(target)
    return text.startswith(REMOTE_SCHEMES) or (Path(text) / f"{TABLE}.lance").is_dir()


def table_schema(dim: int, model_fingerprint: str):
    import pyarrow as pa

    return pa.schema([
        pa.field("vector", pa.list_(pa.float32(), dim)),
        pa.field("path", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("person_id", pa.string()),
        pa.field("camera", pa.string()),
        pa.field("timestamp", pa.timestamp("us")),
        pa.field("source", pa.string()),
        pa.field("model", pa.string()),
    ], metadata={MODEL_KEY: model_fingerprint.encode()})


@dataclass
class GalleryFilter:
    """Which gallery entries a search may return: cameras, a time window [after, before), sources, modality."""

    cameras: Sequence[str] | None = None
    after: dt.datetime | None = None
    before: dt.datetime | None = None
    sources: Sequence[str] | None = None
    modality: str | None = None

    def where(self) -> str | None:
        """The SQL predicate LanceDB evaluates (values quoted), or None for no filter."""
        clauses = []
        if self.cameras:
            clauses.append(f"camera IN ({', '.join(quote(c) for c in self.cameras)})")
        if self.sources:
            clauses.append(f"source IN ({', '.join(quote(s) for s in self.sources)})")
        if self.modality:
            clauses.append(f"modality = {quote(self.modality)}")
        if self.after is not None:
            clauses.append(f"timestamp >= TIMESTAMP '{naive_utc(self.after).isoformat(sep=' ')}'")
        if self.before is not None:
            clauses.append(f"timestamp < TIMESTAMP '{naive_utc(self.before).isoformat(sep=' ')}'")
        return " AND ".join(clauses) or None

    def __bool__(self) -> bool:
        return self.where() is not None


def quote(value: Any) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def naive_utc(moment: dt.datetime) -> dt.datetime:
    """Timestamps are stored as naive UTC; aware datetimes are converted, naive ones taken as UTC."""
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def parse_time(text: str, option: str) -> dt.datetime:
    """An ISO 8601 date or date-time (e.g. 2026-12-01T14:00), or an error naming the option."""
    try:
        return naive_utc(dt.datetime.fromisoformat(text))
    except ValueError:
        raise ValueError(f"{option} {text!r} is not an ISO 8601 date or time, e.g. 2026-12-01T14:00.") from None


class GalleryStore:
    """The gallery table of a LanceDB database at `uri`, embedded by one model."""

    def __init__(self, table, uri: str):
        self.table, self.uri = table, uri

    @classmethod
    def open(cls, uri: str | Path, model_fingerprint: str | None = None, dim: int | None = None,
             create: bool = False) -> "GalleryStore":
        """Opens (or with `create`, makes) the gallery at `uri`; with `model_fingerprint`, refuses a gallery that
        another model embedded."""
        try:
            import lancedb
        except ImportError:
            raise ImportError("a database gallery needs lancedb: pip install 'aio-reid[db]'") from None
        uri = str(uri)
        if not uri.startswith(REMOTE_SCHEMES) and Path(uri).exists() and not Path(uri).is_dir():
            raise NotADirectoryError(f"gallery database {uri} is a file, not a folder.")
        if not create and not is_store(uri):
            raise FileNotFoundError(f"{uri} holds no aio-reid gallery database; create it with "
                                    f"`aio-reid index FOLDER --db {uri}`.")
        database = lancedb.connect(uri)
        if TABLE in database.list_tables().tables:
            store = cls(database.open_table(TABLE), uri)
            if model_fingerprint is not None and store.model_fingerprint != model_fingerprint:
                raise ValueError(f"gallery {uri} was embedded by model {store.model_fingerprint!r}, not this "
                                 f"model {model_fingerprint!r}; index into a new database or delete this one.")
            return store
        if model_fingerprint is None or dim is None:
            raise FileNotFoundError(f"{uri} holds no aio-reid gallery table.")
        return cls(database.create_table(TABLE, schema=table_schema(dim, model_fingerprint)), uri)

    @property
    def model_fingerprint(self) -> str:
        return (self.table.schema.metadata or {}).get(MODEL_KEY, b"").decode()

    @property
    def dim(self) -> int:
        return self.table.schema.field("vector").type.list_size

    def __len__(self) -> int:
        return self.table.count_rows()

    def paths(self) -> set[str]:
        """Every stored image path (what an incremental `index` skips)."""
        rows = len(self)
        if not rows:
            return set()
        return set(self.table.search().select(["path"]).limit(rows).to_arrow()["path"].to_pylist())

    def add(self, vectors: np.ndarray, records: Sequence[dict]) -> None:
        """Appends rows in one commit: `records` carry path, modality, person_id, camera, timestamp, source."""
        import pyarrow as pa

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors) != len(records) or (len(vectors) and vectors.shape[1] != self.dim):
            raise ValueError(f"{len(vectors)} vectors of shape {vectors.shape} for {len(records)} records; the "
                             f"gallery holds {self.dim}-d vectors.")
        if not np.isfinite(vectors).all():
            raise ValueError("refusing to store non-finite (NaN/inf) embeddings.")
        if not len(records):
            return
        schema = self.table.schema
        columns = {"vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), self.dim)}
        for name in ("path", "modality", "person_id", "camera", "source"):
            columns[name] = pa.array([None if r.get(name) is None else str(r[name]) for r in records], pa.string())
        columns["timestamp"] = pa.array([r.get("timestamp") for r in records], pa.timestamp("us"))
        columns["model"] = pa.array([self.model_fingerprint] * len(records), pa.string())
        self.table.add(pa.table(columns, schema=schema))

    def delete(self, selection: GalleryFilter) -> int:
        """Deletes the entries `selection` matches (one commit); how many."""
        where = selection.where()
        if where is None:
            raise ValueError("delete needs a selection (--before, --after, --source, --camera); refusing to delete "
                             "the whole gallery.")
        before = len(self)
        self.table.delete(where)
        return before - len(self)

    def count(self, selection: GalleryFilter | None = None) -> int:
        where = selection.where() if selection else None
        return self.table.count_rows(where) if where else len(self)

    def build_index(self, min_rows: int = ANN_MIN_ROWS) -> str:
        """Scalar indexes on the filter columns (bitmaps for the few cameras and sources, a B-tree for time), and an
        IVF-PQ vector index once the gallery has `min_rows` rows;
        once they exist, new rows are folded into them incrementally (`optimize`)."""
        from lancedb.index import BTree, Bitmap, IvfPq

        rows = len(self)
        if self.has_vector_index():
            self.table.optimize()
            return "IVF-PQ"
        if not any(index.columns == ["camera"] for index in self.table.list_indices()):
            for column, config in (("camera", Bitmap()), ("source", Bitmap()), ("timestamp", BTree())):
                self.table.create_index(column, config=config, replace=True)
        else:
            self.table.optimize()
        if rows < min_rows:
            return "exact (scan)"
        self.table.create_index("vector", config=IvfPq(distance_type="dot", num_partitions=int(np.sqrt(rows) / 4),
                                                     num_sub_vectors=self.dim // 8), replace=True)
        return "IVF-PQ"

    def has_vector_index(self) -> bool:
        return any(index.columns == ["vector"] for index in self.table.list_indices())

    def search(self, vector: np.ndarray, k: int, selection: GalleryFilter | None = None) -> list[dict]:
        """The k best entries (highest cosine similarity first) among those `selection` allows, each a dict of its
        columns plus `score`."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        if len(vector) != self.dim:
            raise ValueError(f"query vector has {len(vector)} dimensions, the gallery {self.dim}.")
        query = self.table.search(np.asarray(vector, dtype=np.float32)).distance_type("dot")
        where = selection.where() if selection else None
        if where is not None:
            query = query.where(where, prefilter=True)
        if self.has_vector_index():
            query = query.nprobes(NPROBES).refine_factor(REFINE_FACTOR if where else REFINE_FACTOR_UNFILTERED)
        rows = query.select(["path", "modality", "person_id", "camera", "timestamp", "source"]).limit(k).to_list()
        for row in rows:
            row["score"] = 1.0 - float(row.pop("_distance"))
        return rows


__all__ = ["GalleryStore", "GalleryFilter", "is_store", "parse_time", "table_schema"]
