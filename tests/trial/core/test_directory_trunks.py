"""Tests for the trunking lookups of L{b2bua.core.directory.Directory} and
the L{b2bua.core.networks.NetworkTable} behind them: trunks by id, customer,
account and source address (the most specific network wins, IPv4 and IPv6),
vendor connections by source address, ported numbers, a customer's dial
plan and routing plan, and the same lookups through a live
L{b2bua.core.snapshot.Snapshot}."""

from __future__ import annotations

import ipaddress
import operator
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from b2bua.core.directory import Directory, DirectoryFrozen, PortedNumber, Tenant
from b2bua.core.networks import NetworkTable, host_address, parse_address
from b2bua.core.snapshot import Snapshot
from b2bua.db.changes import ChangeFeed


class NetworkTableTests(SynchronousTestCase):
    """L{NetworkTable}: the longest prefix holding an address."""

    def test_most_specific_wins(self) -> None:
        """A /32 beats a /24 beats a /8, whatever the order given."""
        table = NetworkTable([("10.0.0.0/8", "wide"), ("10.1.2.3/32", "host"),
                              ("10.1.2.0/24", "narrow")])
        self.assertEqual([table.lookup(a) for a in ("10.1.2.3", "10.1.2.4", "10.9.9.9",
                                                    "11.0.0.1")],
                         ["host", "narrow", "wide", None])
        self.assertEqual(len(table), 3)

    def test_ipv6(self) -> None:
        """IPv6 networks, matched apart from IPv4 ones."""
        table = NetworkTable([("2001:db8::/32", "wide"), ("2001:db8:1::/48", "narrow"),
                              ("0.0.0.0/1", "v4")])
        self.assertEqual(table.lookup("2001:db8:1::5"), "narrow")
        self.assertEqual(table.lookup("2001:DB8:2::5"), "wide")
        self.assertIsNone(table.lookup("2001:db9::1"))
        self.assertIsNone(table.lookup("::1"))

    def test_address_forms(self) -> None:
        """Mapped IPv4, brackets, zones and address objects are read; text
        that is no address matches nothing."""
        table = NetworkTable([("192.0.2.0/24", "v4"), ("fe80::/64", "link")])
        self.assertEqual(table.lookup("::ffff:192.0.2.9"), "v4")
        self.assertEqual(table.lookup(ipaddress.ip_address("192.0.2.1")), "v4")
        self.assertEqual(table.lookup("[fe80::1]"), "link")
        self.assertEqual(table.lookup("fe80::1%eth0"), "link")
        for text in ("", "pbx.example.com", "192.0.2.1:5060", "192.0.2.256"):
            self.assertIsNone(table.lookup(text), text)

    def test_duplicates_and_invalid_entries(self) -> None:
        """A network given twice keeps its first value; entries that are no
        network are left out; both are reported."""
        table = NetworkTable([("192.0.2.0/24", 1), ("192.0.2.0/24", 2), ("nonsense", 3),
                              ("192.0.2.1/24", 4)])
        self.assertEqual(table.lookup("192.0.2.5"), 1)
        self.assertEqual(table.duplicates, ("192.0.2.0/24",))
        self.assertEqual(table.invalid, ("nonsense", "192.0.2.1/24"))
        self.assertIsNone(NetworkTable().lookup("192.0.2.1"))

    def test_parse_and_host_address(self) -> None:
        """L{parse_address} and L{host_address} on what transports and
        provisioning write."""
        self.assertEqual(str(parse_address("::ffff:10.0.0.1")), "10.0.0.1")
        self.assertIsNone(parse_address(None))  # type: ignore[arg-type]
        for text, expected in (("192.0.2.1:5060", "192.0.2.1"), ("192.0.2.1", "192.0.2.1"),
                               ("[2001:db8::1]:5061", "2001:db8::1"),
                               ("2001:db8::1", "2001:db8::1"), ("sip.example.com:5060", None),
                               ("", None)):
            found = host_address(text)
            self.assertEqual(None if found is None else str(found), expected, text)


def trunk(ident: int, customer_id: int = 7, mode: str = "ip", sources: tuple[str, ...] = (),
          **more: Any) -> dict[str, Any]:
    """A trunk row as the loader reads it."""
    return {"id": ident, "customer_id": customer_id, "name": f"pbx {ident}",
            "auth_mode": mode, "allowed_sources": list(sources), "account_id": None,
            "transport": "udp", "codecs": [], "max_calls": 0, "max_calls_in": 0,
            "max_calls_out": 0, "max_cps": 0, "routing_plan_id": None, "caller_id_format": {},
            "status": "active", **more}


def data() -> dict[str, list[dict[str, Any]]]:
    """Two customers with trunks, three connections, two ported numbers."""
    return {
        "customers": [
            {"id": 7, "sip_domain": "acme.example", "name": "acme", "currency": "EUR",
             "billing_timezone": "UTC", "status": "active",
             "dial_plan": {"country_code": "31", "rules": [{"match": "0"}]},
             "routing_plan_id": 2},
            {"id": 8, "sip_domain": "beta.example", "name": "beta", "currency": "EUR",
             "billing_timezone": "UTC", "status": "active", "dial_plan": {},
             "routing_plan_id": None}],
        "trunks": [
            trunk(1, sources=("10.0.0.0/8",)),
            trunk(2, sources=("10.1.0.0/16", "2001:db8::/32"), routing_plan_id=3),
            trunk(3, customer_id=8, mode="both", sources=("10.1.2.0/24",), account_id=41),
            trunk(4, customer_id=8, mode="digest", sources=("10.1.2.3/32",), account_id=42),
            trunk(5, customer_id=8, sources=("2001:db8:5::/48", "10.1.0.0/16")),
            trunk(6, customer_id=99, sources=("10.1.2.3/32",)),
        ],
        "routing_plans": [{"id": 2, "name": "default"}, {"id": 3, "name": "premium"}],
        "connections": [
            {"id": 10, "address": "192.0.2.1:5060", "inbound_sources": []},
            {"id": 11, "address": "sip.carrier.example:5060",
             "inbound_sources": ["203.0.113.0/24", "2001:db8:ffff::/48"]},
            {"id": 12, "address": "[2001:db8:aaaa::1]:5060", "inbound_sources": []},
            {"id": 13, "address": "sip.other.example", "inbound_sources": ["203.0.113.64/26"]},
        ],
        "lnp_entries": [{"id": 1, "number": "+31612345678", "routing_prefix": "1234",
                         "carrier": "blue"},
                        {"id": 2, "number": "31201234567", "routing_prefix": "D042",
                         "carrier": ""}],
    }


class DirectoryTrunkTests(SynchronousTestCase):
    """The trunking lookups of a directory built from rows."""

    def setUp(self) -> None:
        """The directory of L{data}."""
        self.directory = Directory.from_rows(data())

    def ids(self, rows: list[Any]) -> list[int]:
        """The ids of C{rows}."""
        return [row["id"] for row in rows]

    def test_trunks(self) -> None:
        """By id and by customer, in id order; a customer that is not in the
        directory brings no trunks."""
        self.assertEqual(self.ids(self.directory.trunks()), [1, 2, 3, 4, 5])
        self.assertEqual(self.directory.trunk(2)["routing_plan_id"], 3)
        self.assertIsNone(self.directory.trunk(6))
        self.assertEqual(self.ids(self.directory.trunks_for_customer(8)), [3, 4, 5])
        self.assertEqual(self.directory.trunks_for_customer(99), [])

    def test_by_source_most_specific_wins(self) -> None:
        """The narrowest network holding the address decides, across
        customers; digest-only trunks are never found by address."""
        find = self.directory.trunk_by_source
        self.assertEqual(find("10.1.2.3")["id"], 3)  # /24 of trunk 3 (4 is digest only)
        self.assertEqual(find("10.1.9.9")["id"], 2)  # /16: trunk 2 listed it first
        self.assertEqual(find("10.200.0.1")["id"], 1)  # /8
        self.assertIsNone(find("192.168.0.1"))
        self.assertEqual(find("::ffff:10.1.2.200")["id"], 3)

    def test_by_source_ipv6(self) -> None:
        """IPv6 sources: the /48 beats the /32."""
        find = self.directory.trunk_by_source
        self.assertEqual(find("2001:db8:5::1")["id"], 5)
        self.assertEqual(find("2001:db8:6::1")["id"], 2)
        self.assertEqual(find("[2001:db8:5::1]")["id"], 5)
        self.assertIsNone(find("2001:db9::1"))

    def test_by_account(self) -> None:
        """digest and both trunks are found by their account."""
        self.assertEqual(self.directory.trunk_by_account(41)["id"], 3)
        self.assertEqual(self.directory.trunk_by_account(42)["id"], 4)
        self.assertIsNone(self.directory.trunk_by_account(43))

    def test_routing_plan_for_trunk(self) -> None:
        """A trunk's own plan, else its customer's, else none."""
        self.assertEqual(self.directory.routing_plan_for_trunk(2)["name"], "premium")
        self.assertEqual(self.directory.routing_plan_for_trunk(1)["name"], "default")
        self.assertIsNone(self.directory.routing_plan_for_trunk(3))
        self.assertIsNone(self.directory.routing_plan_for_trunk(99))

    def test_connection_by_source(self) -> None:
        """Inbound sources, most specific first; without any, the IP
        address of the connection's address (never a host name)."""
        find = self.directory.connection_by_source
        self.assertEqual(find("192.0.2.1")["id"], 10)
        self.assertEqual(find("203.0.113.1")["id"], 11)
        self.assertEqual(find("203.0.113.70")["id"], 13)
        self.assertEqual(find("2001:db8:ffff::9")["id"], 11)
        self.assertEqual(find("2001:db8:aaaa::1")["id"], 12)
        self.assertIsNone(find("2001:db8:aaaa::2"))
        self.assertIsNone(find("192.0.2.2"))

    def test_lnp(self) -> None:
        """Ported numbers, with or without the leading +."""
        self.assertEqual(self.directory.lnp("+31612345678"),
                         PortedNumber("+31612345678", "1234", "blue"))
        self.assertEqual(self.directory.lnp("31612345678").routing_prefix, "1234")
        self.assertEqual(self.directory.lnp("+31201234567").routing_prefix, "D042")
        self.assertIsNone(self.directory.lnp("31612345670"))
        self.assertIsNone(self.directory.lnp(""))

    def test_tenant_plans(self) -> None:
        """The tenant carries its routing plan and read-only dial plan; its
        whole row is there too."""
        tenant = self.directory.tenant_by_id(7)
        self.assertEqual(tenant.routing_plan_id, 2)
        self.assertEqual(tenant.dial_plan["country_code"], "31")
        self.assertRaises(TypeError, operator.setitem, tenant.dial_plan, "x", 1)
        self.assertEqual(tenant, Tenant("acme.example", "acme", 7, "EUR", "UTC", 2))
        self.assertEqual(self.directory.tenant("beta.example").dial_plan, {})
        self.assertEqual(self.directory.tenant_row(7)["dial_plan"]["rules"], [{"match": "0"}])
        self.assertIsNone(self.directory.tenant_row(99))
        self.assertEqual(Tenant("x").dial_plan, {})

    def test_frozen_rows_and_counts(self) -> None:
        """Rows are read-only, the directory is published, and the counts
        include trunks, ported numbers and conflicting sources."""
        self.assertRaises(TypeError, operator.setitem, self.directory.trunk(1), "name", "x")
        self.assertRaises(DirectoryFrozen, self.directory.add_tenant, Tenant("new.example"))
        counts = self.directory.counts()
        self.assertEqual((counts["trunks"], counts["lnp_entries"], counts["source_conflicts"]),
                         (5, 2, 1))

    def test_bad_sources_do_not_break_a_load(self) -> None:
        """A network that is not one (stored before it was checked) is left
        out; the rest of the directory is built."""
        rows = data()
        rows["trunks"] = [trunk(1, sources=("not a network", "192.0.2.0/24"))]
        rows["connections"] = [{"id": 10, "address": "192.0.2.1", "inbound_sources": ["x"]}]
        directory = Directory.from_rows(rows)
        self.assertEqual(directory.trunk_by_source("192.0.2.9")["id"], 1)
        self.assertIsNone(directory.connection_by_source("192.0.2.1"))

    def test_hand_built_directory(self) -> None:
        """A directory built by hand has no trunks and finds nothing."""
        directory = Directory()
        self.assertEqual((directory.trunks(), directory.trunk_by_source("10.0.0.1"),
                          directory.connection_by_source("10.0.0.1"), directory.lnp("1")),
                         ([], None, None, None))


class SnapshotTrunkTests(SynchronousTestCase):
    """The same lookups through a live snapshot, on its current directory."""

    def test_delegates(self) -> None:
        """Each lookup reads the directory loaded last."""
        loaded: list[dict[str, Any]] = [data()]
        feed = ChangeFeed()
        snapshot = Snapshot(object(), feed, Clock(),  # type: ignore[arg-type]
                            load=lambda database: succeed(loaded[-1]))
        self.successResultOf(snapshot.start())
        self.assertEqual(snapshot.trunk(1)["id"], 1)
        self.assertEqual(self.ids(snapshot.trunks()), [1, 2, 3, 4, 5])
        self.assertEqual(self.ids(snapshot.trunks_for_customer(7)), [1, 2])
        self.assertEqual(snapshot.trunk_by_source("10.1.2.3")["id"], 3)
        self.assertEqual(snapshot.trunk_by_account(42)["id"], 4)
        self.assertEqual(snapshot.routing_plan_for_trunk(1)["id"], 2)
        self.assertEqual(snapshot.connection_by_source("192.0.2.1")["id"], 10)
        self.assertEqual(snapshot.lnp("31612345678").carrier, "blue")
        self.assertEqual(snapshot.tenant_row(8)["name"], "beta")
        changed = data()
        changed["trunks"] = [trunk(9, sources=("10.1.2.3",))]
        loaded.append(changed)
        feed.publish("trunk", 9, "create")
        self.assertEqual(snapshot.trunk_by_source("10.1.2.3")["id"], 9)
        self.assertIsNone(snapshot.trunk(1))
        self.successResultOf(snapshot.stop())

    def ids(self, rows: list[Any]) -> list[int]:
        """The ids of C{rows}."""
        return [row["id"] for row in rows]
