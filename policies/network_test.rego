package rolegate.network_test

import data.rolegate.fixtures_test as f
import data.rolegate.network

rules(doc) := result if {
	result := {d.rule | some d in network.denials} with input as doc with data.services as f.services
}

from(addr) := {"client": {"addr": addr}}

test_ipv4_inside_a_range_is_allowed if {
	rules(f.connect("orders-svc", from("10.1.200.7"))) == set()
}

test_ipv4_outside_the_ranges_is_denied if {
	rules(f.connect("orders-svc", from("10.2.0.1"))) == {"client-address-not-allowed"}
}

test_ipv6_inside_a_range_is_allowed if {
	rules(f.connect("orders-svc", from("fd00:1:ffff::7"))) == set()
}

test_ipv6_outside_the_ranges_is_denied if {
	rules(f.connect("orders-svc", from("fd00:2::7"))) == {"client-address-not-allowed"}
}

test_ipv6_range_does_not_admit_ipv4 if {
	rules(f.connect("dev-svc", from("2001:db8::1"))) == set()
	rules(f.connect("orders-svc", from("192.0.2.1"))) == {"client-address-not-allowed"}
}

test_unparseable_address_is_denied if {
	rules(f.connect("orders-svc", from("not-an-address"))) == {"client-address-not-allowed"}
}

test_service_without_cidrs_admits_nobody if {
	rules(f.connect("no-cidrs", from("10.1.2.3"))) == {"client-address-not-allowed"}
}

test_tls_required if {
	rules(f.connect("dba", {"client": {"addr": "10.99.0.5", "tls": false}})) == {"tls-required"}
	rules(f.connect("dba", {"client": {"addr": "10.99.0.5", "tls": true}})) == set()
}

test_unknown_service_is_left_to_the_services_package if {
	rules(f.connect("nobody", {})) == set()
}
