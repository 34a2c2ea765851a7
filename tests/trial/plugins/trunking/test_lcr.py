"""L{plugins.trunking.lcr}: ranking vendor connections for one call.

Realistic multi-vendor decks: the longest vendor prefix prices a route even
when a shorter one is cheaper (cgrates #180), a vendor without the prefix
is left out while the others are ranked (cgrates #1039), full call cost
rather than the per-minute price decides, the profit guarantee, plan
prefixes and weights, each strategy, stable ties, every exclusion reason,
the plan loader, and a property: under C{lcr} the routes of one plan
prefix length come cheapest first, longer plan prefixes always first.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from plugins.trunking.lcr import (
    BLOCKED,
    CURRENCY_MISMATCH,
    DISABLED,
    INVALID_TARIFF,
    NO_RATE,
    NO_TARIFF,
    NOT_IN_PLAN,
    PROFIT_GUARANTEE,
    REASONS,
    UNAVAILABLE,
    UNKNOWN_CONNECTION,
    VENDOR_INACTIVE,
    Candidate,
    PlanError,
    ProfitGuarantee,
    Quality,
    Ranking,
    RoutingPlan,
    candidate_from_rows,
    load_guarantee,
    load_plan,
    plan_from_row,
    rank_routes,
    reference_cost,
)
from rating.cost import quote
from rating.lookup import DestinationRejected, TariffIndex
from tests.trial.plugins.trunking.decks import START, tariff

#: A UK mobile number on the O2 range (the cgrates #180 report).
O2 = "447783855111"


def plan(*entries: tuple[str, list[int]] | tuple[str, list[int], Any],
         **options: Any) -> RoutingPlan:
    """A loaded plan from C{(prefix, connection ids[, weight])} rows."""
    rows = [{"prefix": e[0], "connection_ids": e[1], **({"weight": e[2]} if len(e) > 2
                                                        else {})} for e in entries]
    return load_plan({"strategy": options.pop("strategy", "lcr"), "entries": rows, **options})


def order(ranking: Ranking) -> list[int]:
    """The connection ids in the order to try them."""
    return [r.connection_id for r in ranking.routes]


def reasons(ranking: Ranking) -> dict[int, str]:
    """Each excluded connection's reason."""
    return {e.connection_id: e.reason for e in ranking.excluded}


class LongestPrefixTests(SynchronousTestCase):
    """A vendor's longest prefix prices it; a vendor lacking the prefix is
    only left out."""

    def test_longer_cheaper_prefix_is_used(self) -> None:
        """cgrates #180: A's O2 range (447783) at 0.0079 beats its UK-mobile
        rate (44) at 0.0955, so A is the cheapest route, priced by 447783."""
        a = Candidate(1, "voxbeam", 10, tariff=tariff(("44", "0.0955"), ("447783", "0.0079")))
        b = Candidate(2, "thinq", 11, tariff=tariff(("44", "0.0200")))
        ranking = rank_routes(O2, START, [b, a], plan(("44", [1, 2])))
        self.assertEqual(order(ranking), [1, 2])
        first = ranking.routes[0]
        self.assertEqual((first.matched_prefix, first.rate.id, first.cost),
                         ("447783", "R1", Decimal("0.0079")))
        self.assertEqual(ranking.routes[1].cost, Decimal("0.0200"))

    def test_longer_dearer_prefix_is_used(self) -> None:
        """D rates 44 at 0.01 but 4477 at 0.05: for an O2 number D costs 0.05
        and ranks after B at 0.02, though its shorter prefix is the cheapest."""
        d = Candidate(4, "dearer", tariff=tariff(("44", "0.0100"), ("4477", "0.0500")))
        b = Candidate(2, "thinq", tariff=tariff(("44", "0.0200")))
        ranking = rank_routes(O2, START, [d, b], plan(("44", [4, 2])))
        self.assertEqual(order(ranking), [2, 4])
        self.assertEqual((ranking.routes[1].matched_prefix, ranking.routes[1].cost),
                         ("4477", Decimal("0.0500")))
        other = rank_routes("441632960000", START, [d, b], plan(("44", [4, 2])))
        self.assertEqual(order(other), [4, 2])

    def test_vendor_without_prefix_is_excluded(self) -> None:
        """cgrates #1039: a US-only deck has no rate for the UK; it is left
        out with a reason and the others are still ranked."""
        us = Candidate(3, "us-only", tariff=tariff(("1", "0.0050")))
        uk = Candidate(2, "thinq", tariff=tariff(("44", "0.0200")))
        world = Candidate(5, "world", tariff=tariff(("4", "0.0300")))
        ranking = rank_routes(O2, START, [us, uk, world], plan(("*any", [2, 3, 5])))
        self.assertEqual(order(ranking), [2, 5])
        self.assertEqual(reasons(ranking), {3: NO_RATE})
        self.assertIn(O2, ranking.excluded[0].detail)
        self.assertFalse(ranking.rejected)

    def test_blocked_destination(self) -> None:
        """A vendor that blocks the range (a longer blocked prefix shadows
        its rated one) is left out as blocked."""
        blocking = Candidate(6, "b", tariff=tariff(("44", "0.0010"), blocked=("4477",)))
        ok = Candidate(2, "ok", tariff=tariff(("44", "0.0200")))
        ranking = rank_routes(O2, START, [blocking, ok], plan(("44", [6, 2])))
        self.assertEqual((order(ranking), reasons(ranking)), ([2], {6: BLOCKED}))

    def test_nobody_rates_it(self) -> None:
        """No vendor rates the number: no route, every one explained."""
        a = Candidate(1, "a", tariff=tariff(("33", "0.01")))
        ranking = rank_routes(O2, START, [a], plan(("*any", [1])))
        self.assertTrue(ranking.rejected)
        self.assertEqual(reasons(ranking), {1: NO_RATE})


class CostTests(SynchronousTestCase):
    """The full cost of the reference call ranks, not the per-minute price."""

    def setUp(self) -> None:
        """Two UK decks: 0.010/min billed 60/60, and 0.030/min billed 1/1."""
        self.coarse = Candidate(1, "coarse", tariff=tariff(("44", "0.0100", 60, 60)))
        self.fine = Candidate(2, "fine", tariff=tariff(("44", "0.0300", 1, 1)))
        self.plan = plan(("44", [1, 2]))

    def test_default_minute(self) -> None:
        """A 60 s reference call (the default): coarse 0.0100, fine 0.0300."""
        ranking = rank_routes(O2, START, [self.coarse, self.fine], self.plan)
        self.assertEqual(ranking.duration_s, 60)
        self.assertEqual([(r.connection_id, r.cost) for r in ranking.routes],
                         [(1, Decimal("0.0100")), (2, Decimal("0.0300"))])

    def test_short_call(self) -> None:
        """A 10 s call: the 60 s minimum makes coarse the dearer (0.0100 vs 0.0050)."""
        ranking = rank_routes(O2, START, [self.coarse, self.fine], self.plan, duration_s=10)
        self.assertEqual([(r.connection_id, r.cost) for r in ranking.routes],
                         [(2, Decimal("0.0050")), (1, Decimal("0.0100"))])

    def test_connect_fee_counts(self) -> None:
        """A connect fee of 0.025 makes a 0.005/min deck dearer than 0.02/min."""
        fee = Candidate(3, "fee", tariff=tariff(("44", "0.0050", 60, 60, "0.025")))
        cheap = Candidate(4, "flat", tariff=tariff(("44", "0.0200")))
        ranking = rank_routes(O2, START, [fee, cheap], plan(("44", [3, 4])))
        self.assertEqual(order(ranking), [4, 3])
        self.assertEqual(ranking.routes[1].cost, Decimal("0.0300"))

    def test_same_as_a_quote(self) -> None:
        """A route's cost and breakdown are the rating package's, to the digit."""
        ranking = rank_routes(O2, START, [self.fine], self.plan, duration_s=75)
        breakdown = quote(TariffIndex(self.fine.tariff), O2, START, 75)  # type: ignore[arg-type]
        self.assertEqual(ranking.routes[0].cost, breakdown.cost)
        self.assertEqual(ranking.routes[0].breakdown.as_dict(), breakdown.as_dict())


class ProfitGuaranteeTests(SynchronousTestCase):
    """Routes dearer than the ceiling are dropped (rating.md 4.3)."""

    def setUp(self) -> None:
        """Three vendors at 0.0100, 0.0150 and 0.0200 a minute."""
        self.candidates = [Candidate(1, "a", tariff=tariff(("44", "0.0100"))),
                           Candidate(2, "b", tariff=tariff(("44", "0.0150"))),
                           Candidate(3, "c", tariff=tariff(("44", "0.0200")))]

    def rank(self, guarantee: ProfitGuarantee, customer: str | None = "0.0150") -> Ranking:
        """Rank with C{guarantee}, the customer paying C{customer}."""
        return rank_routes(O2, START, self.candidates,
                           RoutingPlan(entries=plan(("44", [1, 2, 3])).entries,
                                       profit_guarantee=guarantee),
                           customer_cost=None if customer is None else Decimal(customer))

    def test_event_cost(self) -> None:
        """The customer pays 0.0150: equal cost is kept, dearer dropped."""
        ranking = self.rank(ProfitGuarantee())
        self.assertEqual(order(ranking), [1, 2])
        self.assertEqual(reasons(ranking), {3: PROFIT_GUARANTEE})
        self.assertEqual(ranking.ceiling, Decimal("0.0150"))
        self.assertEqual([r.margin for r in ranking.routes],
                         [Decimal("0.0050"), Decimal("0.0000")])
        self.assertEqual(ranking.excluded[0].cost, Decimal("0.0200"))
        self.assertIn("above the ceiling 0.0150", ranking.excluded[0].detail)

    def test_minimum_margins(self) -> None:
        """A 0.001 minimum margin drops the break-even route; 40 % drops all
        but none (0.015 x 0.6 = 0.009 < 0.010): the call is rejected."""
        self.assertEqual(order(self.rank(ProfitGuarantee(min_margin_abs=Decimal("0.001")))),
                         [1])
        ranking = self.rank(ProfitGuarantee(min_margin_pct=Decimal("40")))
        self.assertTrue(ranking.rejected)
        self.assertEqual(set(reasons(ranking).values()), {PROFIT_GUARANTEE})
        self.assertEqual(ranking.ceiling, Decimal("0.009"))

    def test_fixed_ceiling(self) -> None:
        """A fixed max cost needs no customer cost."""
        ranking = self.rank(ProfitGuarantee(max_cost=Decimal("0.0199")), customer=None)
        self.assertEqual(order(ranking), [1, 2])
        self.assertIsNone(ranking.routes[0].margin)

    def test_keep_cheapest_at_a_loss(self) -> None:
        """on_empty cheapest keeps the cheapest route and flags the loss."""
        ranking = self.rank(ProfitGuarantee(on_empty="cheapest"), customer="0.0050")
        self.assertEqual(order(ranking), [1])
        self.assertTrue(ranking.loss and ranking.routes[0].loss)
        self.assertIn("at a loss", ranking.routes[0].reason)
        self.assertEqual(reasons(ranking), {2: PROFIT_GUARANTEE, 3: PROFIT_GUARANTEE})
        self.assertEqual(ranking.routes[0].margin, Decimal("-0.0050"))

    def test_needs_customer_cost(self) -> None:
        """An event-cost guarantee without the customer's cost is a
        programming error, not a silent pass."""
        self.assertRaises(ValueError, self.rank, ProfitGuarantee(), None)

    def test_reference_cost(self) -> None:
        """L{reference_cost} prices the customer's side (45 s billed 30/6 is
        48 s at 0.03/min); an unrated number raises."""
        retail = tariff(("44", "0.0300", 30, 6))
        self.assertEqual(reference_cost(retail, O2, START, 45), Decimal("0.0240"))
        self.assertEqual(reference_cost(TariffIndex(retail), O2, START), Decimal("0.0300"))
        self.assertRaises(DestinationRejected, reference_cost, retail, "33123", START)


class PlanTests(SynchronousTestCase):
    """Plan prefixes, weights and strategies."""

    def setUp(self) -> None:
        """Four UK vendors, from cheapest (1) to dearest (4)."""
        self.candidates = [Candidate(i, f"v{i}", i * 10, tariff=tariff(("44", price)))
                           for i, price in ((1, "0.0100"), (2, "0.0200"), (3, "0.0300"),
                                            (4, "0.0400"))]

    def test_longest_plan_prefix_first(self) -> None:
        """The 4477 entry's routes come before the 44 entry's, however dear;
        a connection in both keeps its longer entry; *any comes last."""
        ranking = rank_routes(O2, START, self.candidates,
                              plan(("44", [1, 2, 4]), ("4477", [4, 3]), ("*any", [1, 2])))
        self.assertEqual(order(ranking), [3, 4, 1, 2])
        self.assertEqual([r.plan_prefix for r in ranking.routes], ["4477", "4477", "44", "44"])
        self.assertEqual(ranking.routes[0].reason, "plan prefix 4477; cost 0.0300")

    def test_entries_that_do_not_match(self) -> None:
        """Connections only in entries for other numbers are not in the plan."""
        ranking = rank_routes(O2, START, self.candidates, plan(("44", [2]), ("33", [1])))
        self.assertEqual(order(ranking), [2])
        self.assertEqual(reasons(ranking), {1: NOT_IN_PLAN, 3: NOT_IN_PLAN, 4: NOT_IN_PLAN})

    def test_lcr_weight_breaks_cost_ties(self) -> None:
        """Equal cost: the higher entry weight first, then the lower id."""
        same = [Candidate(i, f"v{i}", tariff=tariff(("44", "0.0100"))) for i in (1, 2, 3)]
        ranking = rank_routes(O2, START, same, plan(("44", [1, 2], 5), ("44", [3], 10)))
        self.assertEqual(order(ranking), [3, 1, 2])
        self.assertEqual(ranking.routes[1].reason, "plan prefix 44; cost 0.0100; weight 5; "
                                                   "tie broken by connection id 1")

    def test_connection_weight(self) -> None:
        """Equal cost and entry weight: the connection's own weight, then the id."""
        same = [Candidate(i, f"v{i}", tariff=tariff(("44", "0.0100")), weight=w)
                for i, w in ((1, 0), (2, 5), (3, 5), (4, 9))]
        ranking = rank_routes(O2, START, same, plan(("44", [1, 2, 3, 4])))
        self.assertEqual(order(ranking), [4, 2, 3, 1])
        self.assertEqual([r.reason.split("; ", 3)[-1] for r in ranking.routes], [
            "connection weight 9", "connection weight 5; tie broken by connection id 2",
            "connection weight 5; tie broken by connection id 3", "connection weight 0"])
        self.assertEqual(ranking.routes[0].connection_weight, 9)

    def test_priority(self) -> None:
        """priority: weight, then the listed order; cost does not matter."""
        ranking = rank_routes(O2, START, self.candidates,
                              plan(("44", [4, 2], 10), ("44", [1, 3], 1), strategy="priority"))
        self.assertEqual(order(ranking), [4, 2, 1, 3])
        self.assertEqual(ranking.strategy, "priority")

    def test_weighted_is_reproducible(self) -> None:
        """weighted: the same seed gives the same order; weight 0 comes last."""
        weighted = plan(("44", [1], 1), ("44", [2], 9), ("44", [3], 0), strategy="weighted")
        runs = [order(rank_routes(O2, START, self.candidates, weighted,
                                  rng=random.Random(seed))) for seed in (7, 7, 8)]
        self.assertEqual(runs[0], runs[1])
        for run in runs:
            self.assertEqual(run[-1], 3)
            self.assertEqual(sorted(run), [1, 2, 3])

    def test_weighted_share(self) -> None:
        """Weight 9 against 1 leads about nine draws in ten (fixed seed)."""
        weighted = plan(("44", [1], 1), ("44", [2], 9), strategy="weighted")
        rng = random.Random(2024)
        firsts = [order(rank_routes(O2, START, self.candidates, weighted, rng=rng))[0]
                  for _ in range(1000)]
        self.assertTrue(850 <= firsts.count(2) <= 950, firsts.count(2))

    def test_quality(self) -> None:
        """quality: ASR first (missing is worst), then ACD; PDD when asked first."""
        figures = {1: Quality(asr=Decimal("0.40"), acd=Decimal("90"), pdd=Decimal("1.5")),
                   2: Quality(asr=Decimal("0.55"), acd=Decimal("60"), pdd=Decimal("4")),
                   3: Quality(asr=Decimal("0.55"), acd=Decimal("120")),
                   4: Quality()}
        ranking = rank_routes(O2, START, self.candidates,
                              plan(("44", [1, 2, 3, 4]), strategy="quality"), quality=figures)
        self.assertEqual(order(ranking), [3, 2, 1, 4])
        self.assertIn("asr 0.55, acd 120, pdd unknown", ranking.routes[0].reason)
        by_pdd = rank_routes(O2, START, self.candidates,
                             plan(("44", [1, 2, 3, 4]), strategy="quality",
                                  quality_metrics=["pdd"]), quality=figures)
        self.assertEqual(order(by_pdd), [1, 2, 3, 4])

    def test_random_ties(self) -> None:
        """tie_break random spreads equal routes, reproducibly per seed."""
        same = [Candidate(i, f"v{i}", tariff=tariff(("44", "0.0100"))) for i in range(1, 9)]
        tied = plan(("44", list(range(1, 9))), tie_break="random")
        one = order(rank_routes(O2, START, same, tied, rng=random.Random(1)))
        self.assertEqual(one, order(rank_routes(O2, START, same, tied, rng=random.Random(1))))
        self.assertNotEqual(one, list(range(1, 9)))
        self.assertEqual(sorted(one), list(range(1, 9)))


class StabilityTests(SynchronousTestCase):
    """The same inputs give the same answer, whatever their order."""

    def test_candidate_order_does_not_matter(self) -> None:
        """Shuffled candidates rank identically (ties by connection id)."""
        candidates = [Candidate(i, f"v{i}", tariff=tariff(("44", price)))
                      for i, price in enumerate(["0.01", "0.02", "0.01", "0.03", "0.02",
                                                 "0.01"], start=1)]
        the_plan = plan(("44", [6, 5, 4, 3, 2, 1]))
        expected = rank_routes(O2, START, candidates, the_plan).as_dict()
        rng = random.Random(5)
        for _ in range(20):
            shuffled = list(candidates)
            rng.shuffle(shuffled)
            self.assertEqual(rank_routes(O2, START, shuffled, the_plan).as_dict(), expected)
        self.assertEqual([r["connection_id"] for r in expected["routes"]], [1, 3, 6, 2, 5, 4])


class ExclusionTests(SynchronousTestCase):
    """Every reason a candidate is left out, in a fixed order, never an error."""

    def test_every_reason(self) -> None:
        """Each candidate shows the first reason it fails on."""
        uk = tariff(("44", "0.0100"))
        candidates = [
            Candidate(1, "ok", tariff=uk, currency="EUR"),
            Candidate(2, "off", tariff=uk, enabled=False),
            Candidate(3, "gone", tariff=uk, vendor_status="suspended"),
            Candidate(4, "down", tariff=uk),
            Candidate(5, "dollars", tariff=uk, currency="USD"),
            Candidate(6, "bare"),
            Candidate(7, "broken", problem="tariff 9: the stored document is refused"),
            Candidate(8, "france", tariff=tariff(("33", "0.01"))),
            Candidate(9, "elsewhere", tariff=uk),
        ]
        ranking = rank_routes(O2, START, candidates,
                              plan(("44", [1, 2, 3, 4, 5, 6, 7, 8, 99])),
                              unavailable=[4], currency="EUR")
        self.assertEqual(order(ranking), [1])
        self.assertEqual([(e.connection_id, e.reason) for e in ranking.excluded], [
            (9, NOT_IN_PLAN), (99, UNKNOWN_CONNECTION), (2, DISABLED), (3, VENDOR_INACTIVE),
            (4, UNAVAILABLE), (5, CURRENCY_MISMATCH), (6, NO_TARIFF), (7, INVALID_TARIFF),
            (8, NO_RATE)])
        details = {e.connection_id: e.detail for e in ranking.excluded}
        self.assertEqual(details[3], "vendor gone is suspended")
        self.assertIn("USD", details[5])
        self.assertEqual(details[7], "tariff 9: the stored document is refused")
        self.assertEqual({e.plan_prefix for e in ranking.excluded if e.connection_id != 9},
                         {"44"})
        self.assertEqual(len(REASONS), len(set(REASONS)))

    def test_bad_calls(self) -> None:
        """A naive start, a duration under 1 s or a candidate twice are errors."""
        a = Candidate(1, "a", tariff=tariff(("44", "0.01")))
        the_plan = plan(("44", [1]))
        self.assertRaises(ValueError, rank_routes, O2, START.replace(tzinfo=None), [a],
                          the_plan)
        self.assertRaises(ValueError, rank_routes, O2, START, [a], the_plan, duration_s=0)
        self.assertRaises(ValueError, rank_routes, O2, START, [a, a], the_plan)

    def test_json(self) -> None:
        """as_dict is JSON with decimal strings."""
        a = Candidate(1, "a", 7, "trunk-a", tariff=tariff(("44", "0.0100", 30, 6, "0.01")))
        ranking = rank_routes(O2, START, [a, Candidate(2, "b")], plan(("44", [1, 2])),
                              customer_cost=Decimal("0.0300"))
        data = json.loads(json.dumps(ranking.as_dict()))
        self.assertEqual(data["routes"][0], {
            "position": 1, "connection_id": 1, "connection": "trunk-a", "vendor_id": 7,
            "vendor": "a", "plan_prefix": "44", "plan_entry": 0, "weight": "0",
            "connection_weight": 0, "matched_prefix": "44",
            "rate": {"id": "R0", "price": "0.0100", "unit_s": 60, "increment_s": 30,
                     "connect_fee": "0.01"},
            "cost": "0.0200", "margin": "0.0100", "reason": "plan prefix 44; cost 0.0200",
            "loss": False})
        self.assertEqual(data["excluded"][0]["reason"], NO_TARIFF)
        self.assertEqual((data["customer_cost"], data["rejected"], data["start"]),
                         ("0.0300", False, "2024-05-14T10:00:00+00:00"))


class LoaderTests(SynchronousTestCase):
    """Plan documents, guarantees and provisioned rows."""

    def test_plan_document(self) -> None:
        """Every key, with defaults; a blank prefix is the catch-all."""
        loaded = load_plan({"strategy": "weighted", "tie_break": "random",
                            "entries": [{"prefix": "", "connection_ids": [3, 1],
                                         "weight": "2.5"}],
                            "profit_guarantee": {"max_cost": "0.02", "on_empty": "cheapest"},
                            "quality_metrics": ["pdd", "asr"]})
        self.assertEqual(loaded.strategy, "weighted")
        self.assertEqual(loaded.entries[0].prefix, "*any")
        self.assertEqual(loaded.entries[0].weight, Decimal("2.5"))
        self.assertEqual(loaded.profit_guarantee,
                         ProfitGuarantee(Decimal("0.02"), on_empty="cheapest"))
        self.assertEqual(load_plan({}), RoutingPlan())

    def test_plan_problems(self) -> None:
        """Every problem is named by its key path."""
        with self.assertRaises(PlanError) as caught:
            load_plan({"strategy": "cheapest", "colour": 1, "tie_break": "coin",
                       "quality_metrics": ["mos"],
                       "entries": [{"prefix": "44a", "connection_ids": [1, 1, 0, True],
                                    "weight": 0.5},
                                   "x", {"connection_ids": []}],
                       "profit_guarantee": {"max_cost": "-1", "on_empty": "never"}})
        paths = [p.split(":")[0] for p in caught.exception.problems]
        self.assertEqual(paths, [
            "colour", "strategy", "entries[0].prefix", "entries[0].connection_ids[1]",
            "entries[0].connection_ids[2]", "entries[0].connection_ids[3]",
            "entries[0].weight", "entries[1]", "entries[2].prefix",
            "entries[2].connection_ids", "profit_guarantee.max_cost",
            "profit_guarantee.on_empty", "tie_break", "quality_metrics"])
        self.assertRaises(PlanError, load_plan, [])
        self.assertRaises(PlanError, load_guarantee, {"min_margin_pct": "101"})
        self.assertRaises(PlanError, load_guarantee, "event_cost")

    def test_rows(self) -> None:
        """A provisioned routing plan, connection and vendor become inputs."""
        row = {"id": 3, "name": "uk", "strategy": "priority",
               "entries": [{"prefix": "44", "connection_ids": [7], "weight": 1}]}
        self.assertEqual(plan_from_row(row).entries[0].connection_ids, (7,))
        self.assertEqual(plan_from_row({"strategy": "lcr", "entries": None}).entries, ())
        uk = tariff(("44", "0.01"))
        candidate = candidate_from_rows(
            {"id": 7, "vendor_id": 2, "name": "ams", "enabled": False, "weight": 3},
            {"id": 2, "name": "Carrier", "status": "suspended"}, uk, "EUR")
        self.assertEqual((candidate.connection_id, candidate.vendor, candidate.vendor_id,
                          candidate.name, candidate.enabled, candidate.vendor_status,
                          candidate.currency, candidate.weight),
                         (7, "Carrier", 2, "ams", False, "suspended", "EUR", 3))
        orphan = candidate_from_rows({"id": 8, "vendor_id": 5, "name": "x"}, None, None)
        ranking = rank_routes(O2, START, [orphan], plan(("44", [8])))
        self.assertEqual(reasons(ranking), {8: VENDOR_INACTIVE})


_PRICES = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.5"), places=4)


@st.composite
def _scenarios(draw: Any) -> tuple[str, list[Candidate], RoutingPlan, int]:
    """Random vendors (each with a few prefixes of the number at random
    prices) under a plan whose entries use prefixes of the number."""
    number = "4477" + draw(st.text("0123456789", min_size=4, max_size=8))
    count = draw(st.integers(1, 8))
    candidates = []
    for i in range(1, count + 1):
        rows = draw(st.lists(st.tuples(st.integers(1, len(number)), _PRICES), max_size=3,
                             unique_by=lambda r: r[0]))
        rows = [(number[:length], str(price), draw(st.sampled_from([1, 6, 30, 60])),
                 draw(st.sampled_from([1, 6, 60]))) for length, price in rows]
        candidates.append(Candidate(i, f"v{i}", tariff=tariff(*rows) if rows else None,
                                    weight=draw(st.integers(0, 2))))
    entries = []
    for _ in range(draw(st.integers(1, 4))):
        ids = draw(st.lists(st.integers(1, count + 1), min_size=1, max_size=count + 1,
                            unique=True))
        length = draw(st.integers(0, 6))
        entries.append({"prefix": number[:length] if length else "*any",
                        "connection_ids": ids, "weight": draw(st.integers(0, 3))})
    duration = draw(st.integers(1, 400))
    return number, candidates, load_plan({"entries": entries}), duration


class PropertyTests(SynchronousTestCase):
    """Invariants over random decks and plans."""

    @settings(max_examples=150, deadline=None)
    @given(_scenarios())
    def test_lcr_order(self, scenario: tuple[str, list[Candidate], RoutingPlan, int]) -> None:
        """Longer plan prefixes first; within one length, cost never falls
        (equal costs by entry weight, connection weight, id); every candidate is routed or
        left out exactly once; each cost is the vendor tariff's own quote."""
        number, candidates, the_plan, duration = scenario
        ranking = rank_routes(number, START, candidates, the_plan, duration_s=duration)
        routes = ranking.routes
        keys = [(-len(r.plan_prefix.replace("*any", "")), r.cost, -r.weight,
                 -r.connection_weight, r.connection_id) for r in routes]
        self.assertEqual(keys, sorted(keys))
        self.assertEqual([r.position for r in routes], list(range(1, len(routes) + 1)))
        seen = [r.connection_id for r in routes] + [e.connection_id for e in ranking.excluded]
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual({c.connection_id for c in candidates} - set(seen), set())
        by_id = {c.connection_id: c for c in candidates}
        for r in routes:
            own = quote(TariffIndex(by_id[r.connection_id].tariff),  # type: ignore[arg-type]
                        number, START, duration)
            self.assertEqual((r.cost, r.matched_prefix), (own.cost, own.prefix))
            self.assertTrue(number.startswith(r.matched_prefix))

    @settings(max_examples=60, deadline=None)
    @given(_scenarios(), st.integers(0, 2**32))
    def test_guarantee_bound(self, scenario: tuple[str, list[Candidate], RoutingPlan, int],
                             cents: int) -> None:
        """With an event-cost guarantee, no kept route costs more than the
        customer pays, and nothing kept is also excluded."""
        number, candidates, the_plan, duration = scenario
        customer = Decimal(cents % 5000) / 10000
        guarded = RoutingPlan(the_plan.strategy, the_plan.entries, ProfitGuarantee())
        ranking = rank_routes(number, START, candidates, guarded, customer_cost=customer,
                              duration_s=duration)
        self.assertTrue(all(r.cost <= customer for r in ranking.routes))
        self.assertTrue(all(r.margin is not None and r.margin >= 0 for r in ranking.routes))
        plain = rank_routes(number, START, candidates, the_plan, duration_s=duration)
        self.assertEqual([r.connection_id for r in ranking.routes],
                         [r.connection_id for r in plain.routes if r.cost <= customer])
