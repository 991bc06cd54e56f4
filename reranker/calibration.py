"""Calibrated scores: a monotone map from a scorer's raw score to P(relevant).

A cross-encoder's logit (or a bi-encoder's cosine) ranks well but means nothing as a number:
OpenSearch's rerank processor writes it as is, TEI and Cohere squash it with a sigmoid, and
Elasticsearch's ``text_similarity_reranker`` maps it with ``max(s, 0) + min(exp(s), 1)``; none
of these is a probability, so a ``min_score`` or a fused score means something different for
every model. A :class:`Calibration` is fitted on judged pairs (``crossrank calibrate``) and
saved beside the model as ``calibration.json``; the local scorer, the scorer service and the
remote client apply it and report ``ScoreResult.calibrated``.

Methods (all monotone, so a calibrated ranking is the raw ranking):

- ``temperature``: ``sigmoid(slope * s)``, one parameter (``slope = 1 / T``);
- ``platt``: ``sigmoid(slope * s + intercept)``, logistic regression on the raw score;
- ``isotonic``: a non-parametric non-decreasing step fit, only with at least
  :data:`ISOTONIC_MIN_POSITIVES` relevant (and as many non-relevant) pairs. It is stored as
  knots (each step's mean score, its probability) interpolated linearly with ``np.interp``,
  plus :data:`TIE_BREAK` of the Platt fit, so that the map is strictly increasing (no two
  raw scores share a probability, and the ranking survives calibration; far out in the
  tails, where the logistic saturates in double precision, scores may tie).

Applying needs only numpy; fitting uses scikit-learn (``pip install crossrank[eval]``),
imported when called. Where the judged pairs come from is recorded (:class:`FitInfo`): in a
BEIR collection only some documents are judged, so the engine's unjudged top-k documents are
taken as non-relevant (:data:`UNJUDGED`), and the queries are split in two by a hash of their
id (:func:`query_split`): the calibration is fitted on one half and measured on the other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from crossrank.reranker.errors import ConfigurationError

__all__ = [
    "CALIBRATION_FILE",
    "ISOTONIC_MIN_POSITIVES",
    "SPLIT_RULE",
    "UNJUDGED",
    "Calibration",
    "CalibrationQuality",
    "FitInfo",
    "apply_calibration",
    "brier_score",
    "expected_calibration_error",
    "fit_calibration",
    "load_calibration",
    "measure",
    "query_split",
    "read_calibration",
    "reliability_bins",
    "sigmoid_scores",
]

#: the file a local model's calibration is saved in, inside the model's folder
CALIBRATION_FILE = "calibration.json"
#: isotonic regression needs at least this many relevant pairs (and as many non-relevant)
ISOTONIC_MIN_POSITIVES = 50
#: the share of the Platt fit blended into an isotonic map to make it strictly increasing
TIE_BREAK = 1e-6
#: an isotonic step's probability is kept this far from 0 and 1 (a few dozen pairs are
#: no proof of certainty; and the tie-break stays visible in double precision)
CERTAINTY = 1e-4
#: how the documents of a window that nobody judged are counted
UNJUDGED = "unjudged top-k documents taken as non-relevant"
#: how the queries are split into a fit half and a measure half
SPLIT_RULE = "queries split by the first byte of sha1(query id): even fit, odd measure"

Method = Literal["temperature", "platt", "isotonic"]


def query_split(query_id: str) -> Literal["fit", "measure"]:
    """Which half a query belongs to (:data:`SPLIT_RULE`): deterministic, by its id only."""
    return "fit" if hashlib.sha1(query_id.encode()).digest()[0] % 2 == 0 else "measure"


def sigmoid_scores(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """The logistic function over an array, without overflow."""
    s = np.asarray(scores, dtype=np.float64)
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * s))
    return out


class FitInfo(BaseModel):
    """What a calibration was fitted on, as its JSON states it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``beir``: a BEIR folder's qrels over the engine's top-k; ``file``: a labelled file
    source: Literal["beir", "file", "arrays"]
    collection: str | None = None
    #: which queries: :data:`SPLIT_RULE`'s fit half, or all of them
    split: str = SPLIT_RULE
    queries: int = Field(0, ge=0)
    pairs: int = Field(0, ge=0)
    positives: int = Field(0, ge=0)
    #: how unjudged pairs were counted (:data:`UNJUDGED` for top-k windows)
    negatives: str = "judged non-relevant"
    window: int | None = None
    scorer: str | None = None


class CalibrationQuality(BaseModel):
    """Calibration error of probabilities against labels: ECE (10 equal-width bins) and
    Brier score, with how many pairs (and relevant ones) they were measured on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pairs: int
    positives: int
    ece: float
    brier: float


class Calibration(BaseModel):
    """A fitted monotone map from raw score to P(relevant); see the module docstring.

    ``slope`` and ``intercept`` are the logistic fit (``temperature``: intercept 0); for
    ``isotonic`` they are only its tie-break, and ``knots_x`` / ``knots_y`` are the steps.
    ``measured`` holds the calibration error on the measure half, ``before`` (the sigmoid of
    the raw score, as TEI and Cohere report it) and ``after``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    method: Method
    slope: float = Field(gt=0)
    intercept: float = 0.0
    knots_x: tuple[float, ...] = ()
    knots_y: tuple[float, ...] = ()
    fitted_on: FitInfo | None = None
    measured: dict[str, CalibrationQuality] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Calibration:
        if self.method == "temperature" and self.intercept != 0.0:
            raise ValueError("a temperature calibration has no intercept")
        if self.method != "isotonic":
            if self.knots_x or self.knots_y:
                raise ValueError(f"a {self.method} calibration has no knots")
            return self
        x, y = np.asarray(self.knots_x), np.asarray(self.knots_y)
        if len(x) < 2 or len(x) != len(y):
            raise ValueError("an isotonic calibration needs two or more knots (x and y)")
        if not (np.all(np.isfinite(x)) and np.all(np.diff(x) > 0)):
            raise ValueError("isotonic knots_x must be finite and strictly increasing")
        if not (np.all((y >= 0) & (y <= 1)) and np.all(np.diff(y) >= 0)):
            raise ValueError("isotonic knots_y must be non-decreasing probabilities")
        return self

    def apply(self, scores: Sequence[float] | np.ndarray, *, squashed: bool = False) -> list[float]:
        """P(relevant) of each raw score (strictly increasing in the score).

        ``squashed``: the scores are ``sigmoid(raw)`` (a scorer with ``sigmoid=True``); they
        are mapped back to raw first.
        """
        s = np.asarray(scores, dtype=np.float64)
        if squashed:
            p = np.clip(s, 1e-15, 1 - 1e-15)
            s = np.log(p) - np.log1p(-p)
        logistic = sigmoid_scores(self.slope * s + self.intercept)
        if self.method != "isotonic":
            return [float(v) for v in logistic]
        steps = np.interp(s, np.asarray(self.knots_x), np.asarray(self.knots_y))
        return [float(v) for v in (1 - TIE_BREAK) * steps + TIE_BREAK * logistic]

    def save(self, path: Path | str) -> Path:
        """Write the calibration as JSON; a folder gets :data:`CALIBRATION_FILE` inside."""
        path = Path(path)
        if path.is_dir():
            path = path / CALIBRATION_FILE
        path.write_text(self.model_dump_json(indent=1) + "\n", encoding="utf-8")
        return path


def apply_calibration(
    calibration: Calibration | None, scores: Sequence[float], *, squashed: bool = False
) -> list[float] | None:
    """``calibration.apply(scores)``, or None without a calibration: what a scorer puts in
    ``ScoreResult.calibrated``."""
    return None if calibration is None else calibration.apply(scores, squashed=squashed)


def read_calibration(path: Path | str) -> Calibration:
    """The calibration saved at ``path``; :class:`ConfigurationError` (one line) when the
    file is missing or not a calibration."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read calibration file {path}: {exc.strerror}") from exc
    try:
        return Calibration.model_validate(json.loads(text))
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()
        reason = first[1].strip() if len(first) > 1 else first[0] if first else type(exc).__name__
        raise ConfigurationError(f"{path} is not a crossrank calibration: {reason}") from exc


def load_calibration(model_dir: Path | str) -> Calibration | None:
    """The calibration saved beside a local model (``<model_dir>/calibration.json``), or
    None when there is none (or ``model_dir`` is a hub name, not a folder)."""
    path = Path(model_dir) / CALIBRATION_FILE
    return read_calibration(path) if path.is_file() else None


# ---------------------------------------------------------------------- measuring


def _arrays(
    probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = (np.asarray(labels) > 0).astype(np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError("one probability per label")
    return p, y


def reliability_bins(
    probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """Per non-empty equal-width bin of probability: (mean probability, fraction relevant,
    pairs): the points of a reliability diagram."""
    p, y = _arrays(probs, labels)
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append((float(p[mask].mean()), float(y[mask].mean()), int(mask.sum())))
    return out


def expected_calibration_error(
    probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray, bins: int = 10
) -> float:
    """ECE: the pair-weighted mean of |mean probability - fraction relevant| over bins."""
    points = reliability_bins(probs, labels, bins)
    total = sum(n for _, _, n in points)
    return sum(n * abs(p - f) for p, f, n in points) / total if total else 0.0


def brier_score(probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Mean squared difference between probability and label (0 or 1)."""
    p, y = _arrays(probs, labels)
    return float(np.mean((p - y) ** 2)) if len(p) else 0.0


def measure(
    probs: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
) -> CalibrationQuality:
    """ECE and Brier of ``probs`` against ``labels`` (> 0: relevant)."""
    p, y = _arrays(probs, labels)
    return CalibrationQuality(
        pairs=len(p),
        positives=int(y.sum()),
        ece=expected_calibration_error(p, y),
        brier=brier_score(p, y),
    )


# ---------------------------------------------------------------------- fitting


def _logistic(s: np.ndarray, y: np.ndarray, intercept: bool) -> tuple[float, float]:
    """Unregularised logistic regression of ``y`` on ``s``: (slope, intercept)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=np.inf, fit_intercept=intercept, max_iter=1000)
    model.fit(s.reshape(-1, 1), y.astype(int))
    return float(model.coef_[0, 0]), float(model.intercept_[0]) if intercept else 0.0


def _isotonic_knots(s: np.ndarray, y: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The steps of an isotonic fit as knots: each step's mean score and its probability."""
    from sklearn.isotonic import IsotonicRegression

    fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit_transform(s, y)
    order = np.argsort(s, kind="stable")
    xs, ys = s[order], np.asarray(fitted)[order]
    knots_x: list[float] = []
    knots_y: list[float] = []
    start = 0
    for i in range(1, len(xs) + 1):
        if i == len(xs) or ys[i] != ys[start]:
            knots_x.append(float(xs[start:i].mean()))
            knots_y.append(float(np.clip(ys[start], CERTAINTY, 1 - CERTAINTY)))
            start = i
    if len(knots_x) == 1:  # one step: a flat map over the range seen
        lo, hi = float(xs[0]), float(xs[-1])
        knots_x, knots_y = [lo, hi if hi > lo else lo + 1.0], knots_y * 2
    return tuple(knots_x), tuple(knots_y)


def fit_calibration(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    method: Method | Literal["auto"] = "auto",
    *,
    fitted_on: FitInfo | None = None,
) -> Calibration:
    """Fit a calibration of raw ``scores`` to ``labels`` (> 0: relevant).

    ``auto``: ``isotonic`` with at least :data:`ISOTONIC_MIN_POSITIVES` relevant and as many
    non-relevant pairs, else ``platt``. A scorer whose scores fall as relevance rises (a
    negative slope) gets a nearly flat map at the base rate (slope 1e-6), never a
    decreasing one. :class:`ConfigurationError` without both classes, or for ``isotonic``
    on too few pairs.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = (np.asarray(labels) > 0).astype(np.float64)
    if s.shape != y.shape or s.ndim != 1 or not np.all(np.isfinite(s)):
        raise ConfigurationError("calibration needs one finite score per label")
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives == 0 or negatives == 0:
        raise ConfigurationError(
            f"calibration needs relevant and non-relevant pairs; got {positives} relevant, "
            f"{negatives} non-relevant"
        )
    if method == "auto":
        enough = min(positives, negatives) >= ISOTONIC_MIN_POSITIVES
        method = "isotonic" if enough else "platt"
    if method == "isotonic" and min(positives, negatives) < ISOTONIC_MIN_POSITIVES:
        raise ConfigurationError(
            f"isotonic calibration needs at least {ISOTONIC_MIN_POSITIVES} relevant and "
            f"non-relevant pairs; got {positives} relevant, {negatives} non-relevant "
            "(use platt)"
        )
    slope, intercept = _logistic(s, y, intercept=method != "temperature")
    if slope <= 0:  # no usable signal: the base rate, kept strictly increasing
        base = positives / len(y)
        slope = 1e-6
        intercept = 0.0 if method == "temperature" else float(np.log(base / (1 - base)))
    knots: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())
    if method == "isotonic":
        knots = _isotonic_knots(s, y)
    return Calibration(
        method=method,
        slope=slope,
        intercept=intercept,
        knots_x=knots[0],
        knots_y=knots[1],
        fitted_on=fitted_on,
    )
