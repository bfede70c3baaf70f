"""One-row LightGBM predictions through LightGBM's single-row fast C API.

``Booster.predict`` spends about 17 µs per call on one row building a predictor, checking the
input and converting it, against about 3 µs for the trees themselves. The service scores one
row per request, so a loaded model's boosters are wrapped (:func:`fast_rows`): a call with one
float64 row goes through ``LGBM_BoosterPredictForMatSingleRowFast`` with a configuration made
once (same parameters as ``Booster.predict(x, num_threads=1)``: normal predictions, every
iteration up to the best one), and anything else goes to ``Booster.predict`` unchanged. The
scorer's own code (offsets, clipping, uplift differences) runs as before on the wrapped
boosters' outputs, so the answers are the same numbers (a test compares them).
"""

from __future__ import annotations

import ctypes
import logging
import threading
from typing import Any

import numpy as np

log = logging.getLogger("shopml.serving")

_PREDICT_NORMAL = 0  # C_API_PREDICT_NORMAL
_PREDICT_RAW_SCORE = 1  # C_API_PREDICT_RAW_SCORE
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64


class RowBooster:
    """A LightGBM ``Booster`` whose one-row predictions take the fast path.

    ``row`` is the caller's preallocated row (its address is computed once). The fast
    configuration is not safe to share between threads, so a call that finds it busy takes
    ``Booster.predict`` instead (requests are scored on the event loop's thread anyway).
    """

    def __init__(self, booster: Any, row: np.ndarray | None = None) -> None:
        from lightgbm.basic import _LIB

        self.booster = booster
        self.ncol = int(booster.num_feature())
        self._lib = _LIB
        # One fast configuration per prediction type (normal, raw score), made when first used.
        self._configs: dict[int, ctypes.c_void_p] = {}
        self._config = self._configure(_PREDICT_NORMAL)
        self._predict = _LIB.LGBM_BoosterPredictForMatSingleRowFast
        self._out = np.empty(1, dtype="float64")
        self._out_ptr = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._out_len = ctypes.c_int64(0)
        self._out_len_ref = ctypes.byref(self._out_len)
        self._row = row
        self._row_ptr = ctypes.c_void_p(row.ctypes.data) if row is not None else None
        self._lock = threading.Lock()

    def _configure(self, predict_type: int) -> ctypes.c_void_p:
        from lightgbm.basic import _safe_call

        config = self._configs.get(predict_type)
        if config is None:
            config = ctypes.c_void_p()
            _safe_call(
                self._lib.LGBM_BoosterPredictForMatSingleRowFastInit(
                    self.booster._handle,
                    ctypes.c_int(predict_type),
                    ctypes.c_int(0),
                    ctypes.c_int(self.booster.best_iteration),  # as Booster.predict's default
                    ctypes.c_int(_FLOAT64),
                    ctypes.c_int32(self.ncol),
                    ctypes.c_char_p(b"num_threads=1"),
                    ctypes.byref(config),
                )
            )
            self._configs[predict_type] = config
        return config

    def predict(self, x: Any, num_threads: int = 1, **kwargs: Any) -> Any:
        raw_score = bool(kwargs.pop("raw_score", False))
        if (
            kwargs
            or num_threads != 1
            or not isinstance(x, np.ndarray)
            or x.shape != (1, self.ncol)
            or x.dtype != np.float64
            or not x.flags.c_contiguous
            or not self._lock.acquire(blocking=False)
        ):
            return self.booster.predict(x, num_threads=num_threads, raw_score=raw_score, **kwargs)
        try:
            config = self._configure(_PREDICT_RAW_SCORE) if raw_score else self._config
            ptr = self._row_ptr if x is self._row else ctypes.c_void_p(x.ctypes.data)
            failed = self._predict(config, ptr, self._out_len_ref, self._out_ptr)
            if failed or self._out_len.value != 1:  # raises its error
                return self.booster.predict(x, num_threads=num_threads, raw_score=raw_score)
            return self._out.copy()
        finally:
            self._lock.release()

    def __getattr__(self, name: str) -> Any:
        booster = self.__dict__.get("booster")
        if booster is None:  # not constructed (yet)
            raise AttributeError(name)
        return getattr(booster, name)

    def __del__(self) -> None:
        for config in self.__dict__.get("_configs", {}).values():
            if config.value:
                self._lib.LGBM_FastConfigFree(config)
                config.value = None


def fast_rows(scorer: Any, row: np.ndarray | None) -> int:
    """Wrap the single-output LightGBM boosters of ``scorer`` (a ``BoosterScorer``, or any
    scorer built on some: its :meth:`~shopml.runtime.scorers.Scorer.parts`) in
    :class:`RowBooster`; returns how many were wrapped. Anything that cannot be wrapped is left
    as it was. A part that reads a matrix of its own (not the service's row) is wrapped without
    the row: its one-row calls still take the fast path."""
    from shopml.runtime.scorers import BoosterScorer

    if not isinstance(scorer, BoosterScorer):
        parts = scorer.parts() if hasattr(scorer, "parts") else []
        return sum(fast_rows(p, row if p.features == scorer.features else None) for p in parts)
    wrapped = []
    count = 0
    for booster in scorer.boosters:  # builds them from their model strings
        if isinstance(booster, RowBooster) or booster.num_model_per_iteration() != 1:
            wrapped.append(booster)
            continue
        try:
            wrapped.append(RowBooster(booster, row))
            count += 1
        except Exception:
            log.debug("single-row fast path unavailable", exc_info=True)
            wrapped.append(booster)
    # The scorer keeps its boosters here (rebuilt from the model strings when unpickled).
    scorer._boosters = wrapped
    return count
