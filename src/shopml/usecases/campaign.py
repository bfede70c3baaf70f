"""campaign: will this customer respond to a campaign, and how much does sending it change that?

Rows are the sends of the campaigns sent in a window after the cutoff: the treatment group
(sent) and the randomised control group (held out). Each campaign's rows get the point-in-time
customer features at the moment its audience was assigned (so features are strictly before the
send, whichever campaign of the window it is), the customer's own history with earlier
campaigns in both groups (how often they bought when sent one and when held out, and after a
discount), and the campaign's attributes (channel, discount, response window). The label is
whether the customer ordered within the campaign's response window.

The model is a T-learner (:class:`~shopml.runtime.scorers.UpliftScorer`): one LightGBM
classifier of the response on treated sends and one on control sends; the outputs are the
response probability if treated, if not, and their difference, the uplift. The baseline is what
a shop does without an uplift model: target the likeliest responders, with a response model
(the same LightGBM on the treated sends) whose score doubles as the uplift. Metrics: AUC of the
treated response among treated rows, the Qini coefficient of the uplift (decides; higher is
better), and the observed uplift in the top 10% and 30% by predicted uplift.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from shopml.runtime.scorers import Scorer, UpliftScorer
from shopml.usecases import _boosting, _metrics, _plots
from shopml.usecases.base import GatePolicy, LabelledData, MonitorSpec, Predictions, UseCase

if TYPE_CHECKING:
    from shopml.data.warehouse import Warehouse

KEYS = ["campaign_id", "customer_id"]
LABEL = "responded"
TREATED = "treated"
ORACLE = ["p_response_treated", "p_response_control"]
OUTPUTS = ["p_response_treated", "p_response_control", "uplift"]
CHANNEL_CODES = {"email": 0, "sms": 1, "push": 2}
CAMPAIGN_FEATURES = ["channel_code", "discount_pct", "response_window_days"]
HISTORY_FEATURES = [
    "control_sends",
    "control_responses",
    "control_response_rate",
    "discount_sends",
    "discount_responses",
    "discount_response_rate",
    "response_rate_gap",
    "days_since_last_campaign",
]
NON_FEATURES = {"customer_id", "lat", "lon"}


class Campaign(_boosting.BoostedParams, UseCase):
    name = "campaign"
    question = "Will this customer respond to a campaign, and how much does sending it change that?"
    entity = "customer"
    key = "customer_id"
    kind = "uplift"
    required_tables = (
        "customers",
        "products",
        "orders",
        "order_items",
        "campaigns",
        "campaign_sends",
    )
    metrics = ("qini", "auc", "uplift_at_10pct", "uplift_at_30pct", "log_loss")
    gate = GatePolicy(
        "qini",
        higher_is_better=True,
        min_improvement=0.0,
        floors={"auc": 0.6},
        output_range=(-1.0, 1.0),
    )
    monitoring = MonitorSpec(
        features=(
            "recency_days",
            "frequency_orders",
            "orders_90d",
            "campaign_response_rate",
            "control_response_rate",
            "discount_pct",
            "channel_code",
        ),
        prediction="uplift",
        label=LABEL,
        label_delay_days=14,
        performance_metric="auc",
        # An AUC moves little: a drop of this much (relative) is already a real loss.
        max_degradation=0.10,
    )
    # Campaigns sent in two months after the cutoff; their response windows (up to two weeks)
    # close before the next split's cutoff, 75 days on. Windows tile the training period.
    entity_window_days: ClassVar[int] = 60
    horizon_days = 75
    train_cutoffs = 7
    train_step_days = 60

    def arrivals(self, wh: Warehouse, start: datetime, end: datetime) -> pd.DataFrame:
        """Recipients of the campaigns sent between ``start`` and ``end``."""
        return wh.con.execute(
            "SELECT DISTINCT s.customer_id FROM campaign_sends s JOIN campaigns c "
            "USING (campaign_id) WHERE c.sent_at >= ? AND c.sent_at < ? ORDER BY 1",
            [start, end],
        ).df()

    def dataset(self, wh: Warehouse, cutoff: datetime) -> LabelledData:
        from shopml.features._snapshot import as_cutoff

        cutoff = as_cutoff(cutoff)
        window_end = cutoff + timedelta(days=self.entity_window_days)
        label_end = cutoff + timedelta(days=self.horizon_days)
        camps = wh.sql(
            """
            SELECT c.campaign_id, c.channel, c.sent_at, c.response_window_days, c.discount_pct,
                   min(s.assigned_at) AS assigned_at
            FROM campaigns c JOIN campaign_sends s USING (campaign_id)
            WHERE c.sent_at >= ? AND c.sent_at < ?
              AND c.sent_at + to_days(c.response_window_days) < ?
            GROUP BY ALL ORDER BY c.sent_at
            """,
            [cutoff, window_end, label_end],
        )
        parts = [self._campaign_rows(wh, row) for row in camps.itertuples(index=False)]
        parts = [p for p in parts if len(p)]
        oracle: list[str] = []
        if parts:
            df = pd.concat(parts, ignore_index=True)
        else:
            df = pd.DataFrame(columns=[*KEYS, TREATED, LABEL])
        if wh.exists("oracle_campaign_sends") and len(df):
            truth = wh.read("oracle_campaign_sends")
            df = df.merge(truth, on=KEYS, how="left")
            oracle = list(ORACLE)
        df = df.sort_values(KEYS, kind="mergesort").reset_index(drop=True)
        features = [
            c
            for c in df.columns
            if c not in NON_FEATURES and c not in (*KEYS, TREATED, LABEL, *ORACLE)
        ]
        return LabelledData(df, list(KEYS), features, [LABEL], oracle, [cutoff])

    def _campaign_rows(self, wh: Warehouse, camp: Any) -> pd.DataFrame:
        """One campaign's sends with features as of its assignment and the response label."""
        from shopml.features import customer_features

        at = pd.Timestamp(min(camp.assigned_at, camp.sent_at)).to_pydatetime()
        sends = wh.sql(
            """
            SELECT customer_id, "group", responded_at FROM campaign_sends WHERE campaign_id = ?
            """,
            [camp.campaign_id],
        )
        if sends.empty:
            return sends
        from shopml.usecases._history import WEB_COLUMNS, web_history

        b = wh.ibis()
        feats = customer_features(b, at)
        feats = feats.left_join(web_history(b, at), "customer_id").drop("customer_id_right")
        feats = feats.to_pandas()
        for c in WEB_COLUMNS[:3]:
            feats[c] = feats[c].fillna(0).astype("int64")
        hist = campaign_history(wh, at)
        closes = pd.Timestamp(camp.sent_at) + pd.Timedelta(days=int(camp.response_window_days))
        out = pd.DataFrame(
            {
                "campaign_id": camp.campaign_id,
                "customer_id": sends["customer_id"],
                TREATED: (sends["group"] == "treatment").astype("int64"),
                LABEL: (sends["responded_at"].notna() & (sends["responded_at"] <= closes)).astype(
                    "int64"
                ),
            }
        )
        out = out.merge(feats, on="customer_id", how="left").merge(
            hist, on="customer_id", how="left"
        )
        for c in ("control_sends", "control_responses", "discount_sends", "discount_responses"):
            out[c] = out[c].fillna(0).astype("int64")
        with np.errstate(divide="ignore", invalid="ignore"):
            out["response_rate_gap"] = out["campaign_response_rate"] - out["control_response_rate"]
        out["channel_code"] = float(CHANNEL_CODES.get(str(camp.channel), np.nan))
        out["discount_pct"] = float(camp.discount_pct) if pd.notna(camp.discount_pct) else 0.0
        out["response_window_days"] = float(camp.response_window_days)
        return out

    def fit(
        self,
        wh: Warehouse,
        train: LabelledData,
        valid: LabelledData | None,
        params: Mapping[str, Any],
        seed: int = 0,
    ) -> Scorer:
        arms = {}
        for arm, flag in (("treated", 1), ("control", 0)):
            tr = _arm(train, flag)
            va = _arm(valid, flag) if valid is not None else None
            arms[arm] = _boosting.fit_booster_scorer(
                tr,
                va,
                params,
                [("binary", {})],
                [f"p_response_{arm}"],
                seed=seed,
                kind="probability",
                clip=(0.0, 1.0),
            )
        scorer = UpliftScorer(
            features=list(train.features),
            outputs=list(OUTPUTS),
            treated=arms["treated"],
            control=arms["control"],
        )
        scorer.meta["feature_importance"] = arms["treated"].meta["feature_importance"]
        scorer.meta["learner"] = "T-learner (two LightGBM classifiers)"
        return scorer

    def baseline(self, wh: Warehouse, train: LabelledData, cutoff: datetime) -> Scorer:
        # Target the likeliest responders: a response model on the treated sends, whose
        # probability is also the targeting score.
        base = _boosting.fit_booster_scorer(
            _arm(train, 1),
            None,
            self.default_params(),
            [("binary", {})],
            ["p_response"],
            kind="probability",
            clip=(0.0, 1.0),
        )
        base.meta["name"] = "response model (target the likeliest responders)"
        return base

    def score(self, data: LabelledData, predictions: Predictions) -> dict[str, float]:
        p = predictions.values.to_numpy(dtype="float64")
        # An uplift scorer gives (treated, control, uplift); a response model's score is both
        # its treated response and its targeting score.
        return uplift_metrics(data.y.to_numpy(), data.frame[TREATED].to_numpy(), p[:, 0], p[:, -1])

    def oracle_metrics(self, wh: Warehouse, data: LabelledData) -> dict[str, float] | None:
        if not data.has_oracle:
            return None
        pt = data.frame["p_response_treated"].to_numpy(dtype="float64")
        pc = data.frame["p_response_control"].to_numpy(dtype="float64")
        return uplift_metrics(data.y.to_numpy(), data.frame[TREATED].to_numpy(), pt, pt - pc)

    def plots(self, scorer: Scorer, data: LabelledData, outdir: Path) -> list[Path]:
        p = np.asarray(scorer.predict_matrix(scorer.to_matrix(data.frame))).reshape(len(data), -1)
        y = data.y.to_numpy(dtype="float64")
        t = data.frame[TREATED].to_numpy() == 1
        out = [
            _plots.calibration(y[t], p[t, 0], outdir / "calibration_treated.png"),
            _plots.qini(y, t, p[:, -1], outdir / "qini.png"),
        ]
        if "feature_importance" in scorer.meta:
            out.append(
                _plots.importance(
                    scorer.meta["feature_importance"], outdir / "feature_importance.png"
                )
            )
        return out


def _arm(data: LabelledData, flag: int) -> LabelledData:
    frame = data.frame[data.frame[TREATED] == flag].reset_index(drop=True)
    return LabelledData(frame, data.keys, data.features, data.labels, data.oracle, data.cutoffs)


def campaign_history(wh: Warehouse, at: datetime) -> pd.DataFrame:
    """Per customer, from campaigns assigned and sent before ``at``: control sends and how
    often the customer bought anyway, and discounted sends (treated) and responses to them.

    A response counts only if it happened before ``at`` (the stored flag is the current state)
    and within that campaign's window.
    """
    import ibis

    from shopml.features._snapshot import Snapshot, days_between, ratio

    b = wh.ibis()
    snap = Snapshot(b, at)
    c = b.table("campaigns").select(
        "campaign_id", "sent_at", "response_window_days", "discount_pct"
    )
    s = b.table("campaign_sends")
    j = s.join(c, "campaign_id")
    j = j.filter(j.assigned_at < snap.c, j.sent_at < snap.c)
    closes = j.sent_at + j.response_window_days.as_interval("D")
    hit = j.responded_at.notnull() & (j.responded_at < snap.c) & (j.responded_at <= closes)
    control = j.group == "control"
    disc = (j.group == "treatment") & (j.discount_pct.fill_null(0.0) > 0)
    agg = j.group_by("customer_id").aggregate(
        control_sends=j.count(where=control),
        control_responses=j.count(where=control & hit),
        discount_sends=j.count(where=disc),
        discount_responses=j.count(where=disc & hit),
        last_campaign_at=j.sent_at.max(),
    )
    t = agg.select(
        "customer_id",
        "control_sends",
        "control_responses",
        control_response_rate=ratio(agg.control_responses, agg.control_sends),
        discount_sends=agg.discount_sends,
        discount_responses=agg.discount_responses,
        discount_response_rate=ratio(agg.discount_responses, agg.discount_sends),
        days_since_last_campaign=days_between(
            ibis.literal(snap.cutoff, type="timestamp"), agg.last_campaign_at
        ),
    )
    return t.to_pandas()


def uplift_metrics(
    y: np.ndarray, treated: np.ndarray, p_treated: np.ndarray, uplift: np.ndarray
) -> dict[str, float]:
    """Qini and uplift at 10% / 30% over every row; AUC and log loss of the treated response
    among treated rows."""
    y = np.asarray(y, dtype="float64")
    t = np.asarray(treated).astype(bool)
    return {
        "qini": _metrics.qini_coefficient(y, t, uplift),
        "auc": _metrics.auc(y[t], p_treated[t]),
        "uplift_at_10pct": _metrics.uplift_at(y, t, uplift, 0.1),
        "uplift_at_30pct": _metrics.uplift_at(y, t, uplift, 0.3),
        "log_loss": _metrics.log_loss(y[t], p_treated[t]),
    }
