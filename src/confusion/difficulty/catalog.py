"""The difficulty scores, one registered class each, in the order `SCORES` lists them: the
paper's confusion and its decomposition, one model's and one epoch's entropies, the ensemble's
MSP, flips and learning speed (label-free), then Dataset Cartography, forgetting, the margin and
EL2N (they need labels), then the neighbourhood scores of the members' embeddings and the
learned `combined` (label-free on the samples they score). Adding a score is one class here."""

from __future__ import annotations

import numpy as np

from ..neighbours import Neighbourhood
from ..scores import Scores
from ..views import ViewScores
from .base import Block, FromFit, FromNeighbourhood, FromRecord, FromScores, FromViews, LabelScore, ScoreInfo, early_epoch_position, register

__all__ = [
    "CartographyConfidence",
    "CartographyVariability",
    "Combined",
    "Confusion",
    "Disagreement",
    "El2n",
    "EnsembleMsp",
    "ExpectedEntropy",
    "Flips",
    "ForgettingEvents",
    "KnnDisagreement",
    "LastEpochEntropy",
    "Margin",
    "MemberEntropy",
    "SingleModelEntropy",
    "StableEpoch",
    "Untrust",
    "ViewConfusion",
    "ViewDisagreement",
]


@register
class Confusion(FromScores):
    """Entropy of the members' average prediction, averaged over epochs."""

    info = ScoreInfo(
        "confusion",
        False,
        "higher",
        "0..log2 C",
        "bits",
        "all members x all epochs",
        "Simsek, Hall & Sagun 2022; Albiero et al. (eqs. 1-3)",
        "entropy of the members' average prediction, averaged over epochs",
    )
    reads = "ensemble"

    def compute(self, scores: Scores) -> np.ndarray:
        return scores.confusion


@register
class ExpectedEntropy(FromScores):
    """The members' mean entropy, averaged over epochs: what every member is unsure of."""

    info = ScoreInfo(
        "expected_entropy",
        False,
        "higher",
        "0..log2 C",
        "bits",
        "all members x all epochs",
        "the decomposition of confusion (Depeweg et al. 2018)",
        "the members' mean entropy, averaged over epochs: what every member is unsure of",
    )
    reads = "ensemble"

    def compute(self, scores: Scores) -> np.ndarray:
        return scores.expected_entropy


@register
class Disagreement(FromScores):
    """Confusion minus expected entropy: where the members disagree."""

    info = ScoreInfo(
        "disagreement",
        False,
        "higher",
        "0..log2 C",
        "bits",
        "all members x all epochs",
        "mutual information between prediction and member (Depeweg et al. 2018)",
        "confusion minus expected entropy: where the members disagree",
    )
    reads = "ensemble"

    def compute(self, scores: Scores) -> np.ndarray:
        return scores.disagreement


@register
class LastEpochEntropy(FromScores):
    """Entropy of the members' average prediction at the last recorded epoch only (no epoch average)."""

    info = ScoreInfo(
        "last_epoch_entropy",
        False,
        "higher",
        "0..log2 C",
        "bits",
        "all members x last epoch",
        "deep-ensemble predictive entropy (Lakshminarayanan et al. 2017)",
        "entropy of the members' average prediction at the last recorded epoch only (no epoch average)",
    )
    reads = "ensemble"

    def compute(self, scores: Scores) -> np.ndarray:
        return scores.per_epoch[-1]


@register
class MemberEntropy(FromScores):
    """Member 0's entropy, averaged over epochs."""

    info = ScoreInfo(
        "member_entropy",
        False,
        "higher",
        "0..log2 C",
        "bits",
        "member 0 x all epochs",
        "one model's entropy averaged over training (no seed average)",
        "member 0's entropy, averaged over epochs",
    )
    reads = "member"

    def compute(self, scores: Scores) -> np.ndarray:
        return scores.confusion


@register
class SingleModelEntropy(FromScores):
    """Member 0's entropy at the last recorded epoch: one trained model, nothing averaged."""

    info = ScoreInfo(
        "single_model_entropy",
        False,
        "higher",
        "0..log2 C",
        "bits",
        "member 0 x last epoch",
        "the single-model baseline (Hendrycks & Gimpel 2017; FiftyOne's hardness)",
        "member 0's entropy at the last recorded epoch: one trained model, nothing averaged",
    )
    reads = "member"

    def compute(self, scores: Scores) -> np.ndarray:
        return scores.per_epoch[-1]


@register
class EnsembleMsp(FromRecord):
    """1 - max class probability of the members' average, averaged over epochs."""

    info = ScoreInfo(
        "ensemble_msp",
        False,
        "higher",
        "0..1-1/C",
        "probability",
        "all members x all epochs",
        "maximum softmax probability (Hendrycks & Gimpel 2017), of the ensemble, averaged over epochs",
        "1 - max class probability of the members' average, averaged over epochs",
    )
    fields = ("ensemble_top1",)

    def compute(self, block: Block) -> np.ndarray:
        return (1.0 - block.record["ensemble_top1"].astype(np.float64)).mean(axis=0)


@register
class Flips(FromRecord):
    """How often the ensemble's predicted class changes between consecutive recorded epochs."""

    info = ScoreInfo(
        "flips",
        False,
        "higher",
        "0..epochs-1",
        "count",
        "all members x all epochs",
        "prediction flips across training (Toneva et al. 2019, label-free)",
        "how often the ensemble's predicted class changes between consecutive recorded epochs",
    )
    fields = ("ensemble_argmax",)

    def compute(self, block: Block) -> np.ndarray:
        predicted = block.record["ensemble_argmax"]  # (epochs, samples) of eq. 1's average
        return (predicted[1:] != predicted[:-1]).sum(axis=0).astype(np.float64)


@register
class StableEpoch(FromRecord):
    """The first epoch from which the ensemble's predicted class never changes again."""

    info = ScoreInfo(
        "stable_epoch",
        False,
        "higher",
        "first..last recorded epoch",
        "training epoch",
        "all members x all epochs",
        "learning speed (Jiang et al. 2021, 'Characterizing structural regularities')",
        "the first epoch from which the ensemble's predicted class never changes again",
    )
    fields = ("ensemble_argmax",)

    def compute(self, block: Block) -> np.ndarray:
        predicted = block.record["ensemble_argmax"]
        changed = predicted[1:] != predicted[:-1]
        # Last position where the prediction changed (0 if never, or one epoch): from there on it is final.
        if not len(changed):
            return np.full(predicted.shape[1], float(block.epochs[0]))
        last_change = np.where(changed.any(axis=0), len(block.epochs) - 1 - np.argmax(changed[::-1], axis=0), 0)
        return block.epochs[last_change].astype(np.float64)


@register
class CartographyConfidence(LabelScore):
    """Mean probability of the labelled class, over epochs and members."""

    info = ScoreInfo(
        "cartography_confidence",
        True,
        "lower",
        "0..1",
        "probability",
        "all members x all epochs",
        "Dataset Cartography (Swayamdipta et al. 2020)",
        "mean probability of the labelled class, over epochs and members",
    )
    fields = ("member_label",)

    def compute(self, block: Block) -> np.ndarray:
        return block.record["member_label"].astype(np.float64).mean(axis=(0, 1))


@register
class CartographyVariability(LabelScore):
    """Standard deviation over epochs of the probability of the labelled class, averaged over members."""

    info = ScoreInfo(
        "cartography_variability",
        True,
        "higher",
        "0..0.5",
        "probability",
        "all members x all epochs",
        "Dataset Cartography (Swayamdipta et al. 2020)",
        "standard deviation over epochs of the probability of the labelled class, averaged over members",
    )
    fields = ("member_label",)

    def compute(self, block: Block) -> np.ndarray:
        return block.record["member_label"].astype(np.float64).std(axis=1).mean(axis=0)


@register
class ForgettingEvents(LabelScore):
    """Times a member goes from right to wrong between consecutive recorded epochs, averaged over members."""

    info = ScoreInfo(
        "forgetting_events",
        True,
        "higher",
        "0..(epochs-1)/2",
        "count",
        "all members x all epochs",
        "forgetting events (Toneva et al. 2019)",
        "times a member goes from right to wrong between consecutive recorded epochs, averaged over members",
    )
    fields = ("member_argmax",)

    def compute(self, block: Block) -> np.ndarray:
        correct = block.record["member_argmax"] == block.labels  # (members, epochs, samples)
        return (correct[:, :-1] & ~correct[:, 1:]).sum(axis=1).mean(axis=0)


@register
class Margin(LabelScore):
    """Probability of the label minus the largest other, averaged over epochs and members."""

    info = ScoreInfo(
        "margin",
        True,
        "lower",
        "-1..1",
        "probability",
        "all members x all epochs",
        "area under the margin, AUM (Pleiss et al. 2020), on probabilities",
        "probability of the label minus the largest other, averaged over epochs and members",
    )
    fields = ("member_label", "member_other")

    def compute(self, block: Block) -> np.ndarray:
        largest_other = block.record["member_other"].astype(np.float64)  # the largest class but the label
        return (block.record["member_label"].astype(np.float64) - largest_other).mean(axis=(0, 1))


@register
class El2n(LabelScore):
    """L2 norm of (probabilities - one-hot label) at the first recorded epoch at or after 10% of training, averaged over members."""

    info = ScoreInfo(
        "el2n",
        True,
        "higher",
        "0..sqrt 2",
        "L2 norm",
        "all members x one early epoch",
        "EL2N (Paul et al. 2021)",
        "L2 norm of (probabilities - one-hot label) at the first recorded epoch at or after 10% of training, averaged over members",
    )
    fields = ("member_label", "member_sumsq")

    def compute(self, block: Block) -> np.ndarray:
        early = early_epoch_position(len(block.epochs))
        sumsq = block.record["member_sumsq"][:, early].astype(np.float64)  # ||p - onehot(y)||^2 = sum p^2 - 2 p_y + 1
        of_label = block.record["member_label"][:, early].astype(np.float64)
        return np.sqrt(np.maximum(sumsq - 2.0 * of_label + 1.0, 0.0)).mean(axis=0)


@register
class KnnDisagreement(FromNeighbourhood):
    """Share of the k nearest training samples, in each member's embedding, labelled otherwise than the ensemble predicts."""

    info = ScoreInfo(
        "knn_disagreement",
        False,
        "higher",
        "0..1",
        "share of neighbours",
        "all members' embeddings at one epoch; training labels",
        "k-nearest-neighbour label disagreement (Papernot & McDaniel 2018, deep kNN)",
        "share of the k = 15 nearest training samples (each member's embedding, member average) whose label is not the ensemble's prediction",
    )

    def compute(self, found: Neighbourhood) -> np.ndarray:
        return found.knn_disagreement


@register
class Untrust(FromNeighbourhood):
    """d_pred / (d_pred + d_other): distance to the predicted class's nearest training sample against the nearest of another class."""

    info = ScoreInfo(
        "untrust",
        False,
        "higher",
        "0..1",
        "distance ratio",
        "all members' embeddings at one epoch; training labels",
        "the trust score (Jiang et al. 2018) as a 0..1 hardness",
        "distance to the nearest training sample of the predicted class over that plus the distance to the nearest of another class (member average)",
    )

    def compute(self, found: Neighbourhood) -> np.ndarray:
        return found.untrust


@register
class ViewDisagreement(FromViews):
    """Share of (member, test-time view) pairs whose predicted class is not the member's plain prediction."""

    info = ScoreInfo(
        "view_disagreement",
        False,
        "higher",
        "0..1",
        "share of views",
        "all members x test-time views at the last epoch",
        "test-time augmentation consistency (e.g. Ayhan & Berens 2018)",
        "share of (member, view) pairs (flip, 2-pixel shifts) whose predicted class differs from the member's plain prediction",
    )

    def compute(self, found: ViewScores) -> np.ndarray:
        return found.view_disagreement


@register
class ViewConfusion(FromViews):
    """Entropy of the members' average prediction over the test-time views."""

    info = ScoreInfo(
        "view_confusion",
        False,
        "higher",
        "0..log2 C",
        "bits",
        "all members x test-time views at the last epoch",
        "test-time-augmented ensemble entropy (Ashukha et al. 2020)",
        "entropy of the average over members and test-time views (flip, 2-pixel shifts) at the last epoch",
    )

    def compute(self, found: ViewScores) -> np.ndarray:
        return found.view_confusion


@register
class Combined(FromFit):
    """A logistic regression over the label-free scores, fitted on a labelled calibration split (`confusion.combined`)."""

    info = ScoreInfo(
        "combined",
        False,
        "higher",
        "any real number",
        "log-odds of an error",
        "the label-free scores above; the labels of a calibration split (val), never of the scored samples",
        "this toolkit: a cross-fitted logistic regression (stacking) of the label-free scores",
        "fitted log-odds that the target errs, from the label-free scores; cross-fitted on the calibration split, whose labels it needs",
    )
