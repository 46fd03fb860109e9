package rolegate.services_test

import data.rolegate.fixtures_test as f
import data.rolegate.services

rules(doc) := result if {
	result := {d.rule | some d in services.denials} with input as doc
		with data.services as f.services
		with data.roles as f.roles
}

grant(doc) := result if {
	result := services.grant with input as doc
		with data.services as f.services
		with data.roles as f.roles
}

test_default_role_is_granted if {
	doc := f.connect("orders-svc", {})
	rules(doc) == set()
	grant(doc) == {
		"allow": true,
		"role": "app_reader",
		"database": "app",
		"rule": "service-default-role",
		"reason": "orders-svc connects to app as its default role app_reader",
	}
}

test_requested_role_is_honoured_when_listed if {
	doc := f.connect("orders-svc", {"request": {"role": "app_writer"}})
	rules(doc) == set()
	grant(doc).role == "app_writer"
	grant(doc).rule == "service-requested-role"
}

test_requested_role_is_refused_when_not_listed if {
	rules(f.connect("orders-svc", {"request": {"role": "app_admin"}})) == {"role-not-allowed"}
}

test_unknown_service_is_denied if {
	rules(f.connect("nobody", {})) == {"unknown-service"}
}

test_auth_method_must_be_listed if {
	rules(f.connect("dba", {"client": {"addr": "10.99.0.5"}})) == {"auth-method-not-allowed"}
	rules(f.connect("dba", {"identity": {"method": "cert"}, "client": {"addr": "10.99.0.5"}})) == set()
}

test_database_must_be_listed if {
	rules(f.connect("orders-svc", {"request": {"database": "postgres"}})) == {"database-not-allowed"}
}

test_service_without_default_role_needs_a_requested_role if {
	rules(f.connect("no-default", {})) == {"no-default-role"}
	rules(f.connect("no-default", {"request": {"role": "app_reader"}})) == set()
}

test_default_role_outside_the_roles_list_is_refused if {
	rules(f.connect("bad-default", {})) == {"role-not-allowed"}
}

test_role_without_a_known_kind_is_refused if {
	rules(f.connect("ghost-role", {})) == {"unknown-role"}
}
