"""`combined`: a logistic regression over the label-free scores, fitted on a labelled calibration
split to predict errors, and kept in the run as JSON (RUN/combined.json, no pickle).

What it needs: the labels of a calibration split (by default the run's val), never those of the
samples it scores. It is cross-fitted: the calibration split is cut into `folds` folds by a hash
of each sample id, and a calibration sample is scored by the fit of the other folds, so no
sample is scored by a fit that saw its label; every other split (an unlabeled one included) is
scored by the fit on the whole calibration split. Its features are standardised by their mean
and standard deviation on the calibration split.

What it predicts (`target`): the errors of the run's own final ensemble (``"ensemble"``), or the
errors of another run's final ensemble on the same calibration samples (a path: a cheap model of
another family, e.g. `confusion zoo`'s sklearn:logreg), which measured better as a stand-in for
other models' errors (README, "Which difficulty score?").

    fit = fit_combined(features, errors, sample_ids, folds=5)       # arrays in, a CombinedFit out
    fit.save(run_path); CombinedFit.load(run_path)
    scores = fit.apply(features, sample_ids, calibration=True)      # cross-fitted on calibration
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._files import write_json_atomic
from .errors import InputError, ParameterError, RunStoreError

__all__ = ["COMBINED_FILE", "FOLDS", "FORMAT", "CombinedFit", "check_folds", "fit_combined", "folds_of"]

COMBINED_FILE = "combined.json"
FORMAT = "confusion-combined/1"
FOLDS = 5


def check_folds(folds: int) -> int:
    """A number of cross-fitting folds, checked.

    Parameters
    ----------
    folds : int
        Folds.

    Returns
    -------
    int
        `folds`.

    Raises
    ------
    ParameterError
        Unless 2 <= folds <= 50 (parameter ``folds``).
    """
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or not 2 <= folds <= 50:
        raise ParameterError(f"{{folds}} must be a whole number from 2 to 50, got {folds!r}", "folds")
    return int(folds)


def folds_of(sample_ids: np.ndarray, folds: int) -> np.ndarray:
    """Each sample's fold: CRC-32 of its id modulo `folds` (fixed by the id alone).

    Parameters
    ----------
    sample_ids : array-like of str
        Sample ids.
    folds : int
        Folds.

    Returns
    -------
    ndarray of int64
        0..folds-1 per sample.
    """
    return np.array([zlib.crc32(str(s).encode()) % folds for s in np.asarray(sample_ids)], dtype=np.int64)


@dataclass
class CombinedFit:
    """A fitted `combined`: its features, their standardisation, the full fit and one per fold.

    Attributes
    ----------
    features : list of str
        The label-free scores it reads, in order.
    mean, scale : list of float
        Their mean and standard deviation on the calibration split.
    coef : list of float
        The full fit's weights (on standardised features).
    intercept : float
        The full fit's intercept.
    fold_coef : list of list of float
        Per fold, the weights of the fit on the other folds.
    fold_intercept : list of float
        Per fold, its intercept.
    calibration : str
        The calibration split.
    target : str
        What it predicts: "ensemble", or the path of the run whose errors it predicts.
    recorded_epochs : list of int
        The committed epochs of the run its features came from.
    n_calibration, n_errors : int
        Labelled calibration samples, and errors among them.
    cross_fitted_auroc : float
        AUROC of the cross-fitted scores for the target's errors on the calibration split.
    extra : dict
        Anything else kept with the fit (k of the neighbourhood scores).
    """

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    fold_coef: list[list[float]]
    fold_intercept: list[float]
    calibration: str
    target: str
    recorded_epochs: list[int]
    n_calibration: int
    n_errors: int
    cross_fitted_auroc: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def folds(self) -> int:
        """The number of cross-fitting folds."""
        return len(self.fold_coef)

    def apply(self, features: np.ndarray, sample_ids: np.ndarray, *, calibration: bool) -> np.ndarray:
        """The fitted log-odds of an error, higher = harder.

        Parameters
        ----------
        features : ndarray, shape (samples, len(features))
            The label-free scores, in `self.features` order.
        sample_ids : array-like of str
            The samples' ids (they choose each calibration sample's fold).
        calibration : bool
            Whether these are the calibration split's samples: each is then scored by the fit
            of the folds it is not in.

        Returns
        -------
        ndarray of float64, shape (samples,)
            Log-odds; NaN where a feature is NaN.
        """
        z = (np.asarray(features, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        if not calibration:
            return z @ np.asarray(self.coef) + self.intercept
        fold = folds_of(sample_ids, self.folds)
        out = np.empty(len(z))
        for f in range(self.folds):
            at = fold == f
            out[at] = z[at] @ np.asarray(self.fold_coef[f]) + self.fold_intercept[f]
        return out

    def save(self, run: Path) -> None:
        """Write RUN/combined.json (atomically).

        Parameters
        ----------
        run : Path
            The run directory.
        """
        write_json_atomic(Path(run) / COMBINED_FILE, {"format": FORMAT, **asdict(self)})

    @classmethod
    def load(cls, run: Path) -> CombinedFit | None:
        """The fit kept in RUN/combined.json, or None where there is none.

        Parameters
        ----------
        run : Path
            The run directory.

        Returns
        -------
        CombinedFit or None
            The fit.

        Raises
        ------
        RunStoreError
            Where the file is damaged or not a fit of this format.
        """
        path = Path(run) / COMBINED_FILE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            if data.pop("format") != FORMAT:
                raise ValueError("another format")
            fit = cls(**data)
            width = len(fit.features)
            shapes = [len(fit.mean), len(fit.scale), len(fit.coef), *map(len, fit.fold_coef)]
            if any(s != width for s in shapes) or len(fit.fold_intercept) != fit.folds or fit.folds < 2:
                raise ValueError("inconsistent lengths")
            numbers = np.array([*fit.mean, *fit.scale, *fit.coef, fit.intercept, *np.ravel(fit.fold_coef), *fit.fold_intercept], dtype=np.float64)
            if not np.isfinite(numbers).all() or min(fit.scale) <= 0:
                raise ValueError("numbers that are not finite")
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise RunStoreError(f"{path} is damaged ({error}); fit it again with `confusion combine`") from None
        return fit


def fit_combined(
    features: np.ndarray,
    errors: np.ndarray,
    sample_ids: np.ndarray,
    names: list[str],
    *,
    folds: int = FOLDS,
    calibration: str = "val",
    target: str = "ensemble",
    recorded_epochs: list[int] | None = None,
    extra: dict[str, Any] | None = None,
) -> CombinedFit:
    """Fit `combined` on the labelled calibration samples.

    Parameters
    ----------
    features : ndarray, shape (samples, len(names))
        The label-free scores of the labelled calibration samples.
    errors : ndarray of bool, shape (samples,)
        Whether the target erred on each.
    sample_ids : array-like of str
        Their ids.
    names : list of str
        The features' names.
    folds : int
        Cross-fitting folds, 2..50.
    calibration : str
        The calibration split's name (kept with the fit).
    target : str
        What `errors` are of (kept with the fit).
    recorded_epochs : list of int, optional
        The run's committed epochs (kept with the fit).
    extra : dict, optional
        Kept with the fit.

    Returns
    -------
    CombinedFit
        The fit.

    Raises
    ------
    InputError
        Where a fold lacks both errors and correct predictions, or a feature is not finite.
    """
    from sklearn.metrics import roc_auc_score

    folds = check_folds(folds)
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(errors, dtype=bool)
    if x.ndim != 2 or x.shape != (len(y), len(names)):
        raise InputError(f"features must be (samples, {len(names)}), got {x.shape}")
    if not np.isfinite(x).all():
        raise InputError("the features of combined must be finite on every labelled calibration sample")
    fold = folds_of(sample_ids, folds)
    for f in range(folds):
        rest = y[fold != f]
        if rest.all() or not rest.any():
            raise InputError(
                f"combined needs errors and correct predictions in every fold of the calibration split {calibration!r} "
                f"({int(y.sum())} errors among {len(y)} labelled samples); use more calibration samples or fewer folds"
            )
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    z = (x - mean) / scale

    coef, intercept = _fitted(z, y, np.ones(len(y), dtype=bool))
    per_fold = [_fitted(z, y, fold != f) for f in range(folds)]
    fit = CombinedFit(
        features=list(names),
        mean=[float(v) for v in mean],
        scale=[float(v) for v in scale],
        coef=coef,
        intercept=intercept,
        fold_coef=[c for c, _ in per_fold],
        fold_intercept=[i for _, i in per_fold],
        calibration=calibration,
        target=target,
        recorded_epochs=list(recorded_epochs or []),
        n_calibration=len(y),
        n_errors=int(y.sum()),
        cross_fitted_auroc=0.0,
        extra=dict(extra or {}),
    )
    scored = fit.apply(x, sample_ids, calibration=True)
    fit.cross_fitted_auroc = float(roc_auc_score(y, scored)) if 0 < y.sum() < len(y) else float("nan")
    return fit


def _fitted(z: np.ndarray, y: np.ndarray, rows: np.ndarray) -> tuple[list[float], float]:
    """The weights and intercept of a logistic regression fitted on `rows`."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=1.0, max_iter=2000).fit(z[rows], y[rows])
    return [float(c) for c in model.coef_[0]], float(model.intercept_[0])
