"""The feature rows' store: every line's feature vector, sparse (CSR), read in place by batches.

A SKOL line has about 116 non-zeros of 3,091 columns, so memory follows the text, not lines x vocabulary.
The store is what the feature cache keeps on disk (``.npy`` files, memory-mapped when read back) and what
splits, windows and evaluation units index; none of them copies it.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# float16 halves the stored values; TF-IDF needs no more precision. Batches are float32.
FEATURE_DTYPE = np.float16


@dataclass
class SparseRows:
    """Feature rows in CSR form: row ``i``'s non-zeros are ``indices``/``data[indptr[i]:indptr[i + 1]]``.

    The last row is always empty: it is the padding row that windows point at past a chunk's end
    (a real line always has its bias feature). Splits and evaluation units index these rows; they
    never copy them.
    """

    indptr: np.ndarray  # int64, one more than the rows
    indices: np.ndarray  # int32 column of every non-zero
    data: np.ndarray  # FEATURE_DTYPE value of every non-zero
    n_features: int

    @property
    def n_rows(self) -> int:
        """Rows, the padding row included."""
        return len(self.indptr) - 1

    @property
    def pad_row(self) -> int:
        """Index of the empty padding row."""
        return self.n_rows - 1

    @property
    def nnz(self) -> int:
        """Stored non-zeros."""
        return int(self.indptr[-1])

    def csr(self, rows: np.ndarray | None = None):
        """A float32 ``scipy.sparse.csr_matrix`` of the given rows (all when ``None``), gathered without
        a dense copy."""
        from scipy import sparse

        rows = np.arange(self.n_rows) if rows is None else np.asarray(rows).reshape(-1)
        starts = np.asarray(self.indptr[rows])
        lengths = np.asarray(self.indptr[rows + 1]) - starts
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        take = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
        return sparse.csr_matrix((np.asarray(self.data[take], dtype=np.float32), np.asarray(self.indices[take]),
                                  indptr), shape=(len(rows), self.n_features))

    def dense(self, rows: np.ndarray) -> np.ndarray:
        """Dense float32 rows, shaped ``rows.shape + (n_features,)`` (one batch at a time, never the corpus)."""
        rows = np.asarray(rows)
        flat = self.csr(rows.reshape(-1)).toarray().astype(np.float32, copy=False)
        return flat.reshape(rows.shape + (self.n_features,))

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Column ids (int32) and values (float32) of the given rows, shaped ``rows.shape + (k,)``.

        ``k`` is the largest non-zero count among the rows (at least 1); shorter rows, and the padding
        row, are filled with id 0 and value 0, which add nothing to an embedding bag.
        """
        rows = np.asarray(rows)
        flat = rows.reshape(-1)
        starts = self.indptr[flat]
        lengths = self.indptr[flat + 1] - starts
        k = max(int(lengths.max(initial=0)), 1)
        if self.nnz == 0:
            return np.zeros(rows.shape + (k,), np.int32), np.zeros(rows.shape + (k,), np.float32)
        pos = starts[:, None] + np.arange(k)
        real = np.arange(k) < lengths[:, None]
        pos = np.where(real, pos, 0)
        ids = np.where(real, np.asarray(self.indices[pos.reshape(-1)]).reshape(pos.shape), 0).astype(np.int32)
        vals = np.where(real, np.asarray(self.data[pos.reshape(-1)]).reshape(pos.shape), 0).astype(np.float32)
        return ids.reshape(rows.shape + (k,)), vals.reshape(rows.shape + (k,))

    @staticmethod
    def from_csr(matrix, pad_row: bool = True) -> "SparseRows":
        """Rows from a scipy CSR matrix, with an empty padding row appended when ``pad_row``."""
        matrix = matrix.tocsr()
        matrix.sum_duplicates()
        matrix.sort_indices()
        indptr = np.asarray(matrix.indptr, dtype=np.int64)
        if pad_row:
            indptr = np.append(indptr, indptr[-1])
        return SparseRows(indptr, np.asarray(matrix.indices, dtype=np.int32),
                          np.asarray(matrix.data, dtype=FEATURE_DTYPE), int(matrix.shape[1]))

    def save(self, folder: Path) -> None:
        """Write the three arrays as ``.npy`` files in ``folder`` (each atomically)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("indptr", "indices", "data"):
            tmp = folder / f".{name}.npy.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, getattr(self, name))
            os.replace(tmp, folder / f"{name}.npy")

    @staticmethod
    def load(folder: Path, n_features: int) -> "SparseRows":
        """Rows saved by :meth:`save`, memory-mapped: nothing is read until a batch needs it."""
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in ("indptr", "indices", "data")}
        return SparseRows(arrays["indptr"], arrays["indices"], arrays["data"], n_features)


def return_freed_memory() -> None:
    """Hand memory freed by Python and numpy back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). Freed blocks inside the heap otherwise stay resident: on 4 copies of SKOL about 360 MB
    after reading and featurising."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def concatenate_freeing(blocks: list[np.ndarray], dtype, total: int) -> np.ndarray:
    """``np.concatenate(blocks)``, dropping each block once copied, so that the corpus's rows are held
    about once rather than twice (``blocks`` is emptied)."""
    out, pos = np.empty(total, dtype=dtype), 0
    blocks.reverse()
    while blocks:
        block = blocks.pop()
        out[pos : pos + len(block)] = block
        pos += len(block)
    return out
