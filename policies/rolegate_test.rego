package rolegate_test

import data.rolegate
import data.rolegate.fixtures_test as f

connect(doc) := result if {
	result := rolegate.connect with input as doc
		with data.services as f.services
		with data.roles as f.roles
		with data.env_exceptions as f.env_exceptions
}

statement(doc) := result if {
	result := rolegate.statement with input as doc
		with data.services as f.services
		with data.roles as f.roles
		with data.maintenance_windows as f.windows
}

test_connect_allow_shape if {
	connect(f.connect("orders-svc", {})) == {
		"allow": true,
		"role": "app_reader",
		"database": "app",
		"rule": "service-default-role",
		"reason": "orders-svc connects to app as its default role app_reader",
	}
}

test_connect_deny_shape if {
	connect(f.connect("nobody", {})) == {
		"allow": false,
		"role": null,
		"database": null,
		"rule": "unknown-service",
		"reason": "no service named \"nobody\" in data.services",
	}
}

test_connect_first_denial_wins if {
	# wrong environment (30), address (40), database (50) and role (60) at once
	doc := f.connect("dev-svc", {"client": {"addr": "not-an-address"}, "request": {"database": "x", "role": "app_admin"}})
	connect(doc).rule == "environment-mismatch"
	doc2 := f.connect("orders-svc", {"client": {"addr": "192.0.2.1"}, "request": {"database": "x", "role": "app_admin"}})
	connect(doc2).rule == "client-address-not-allowed"
}

test_connect_requested_role if {
	connect(f.connect("orders-svc", {"request": {"role": "app_writer"}})).role == "app_writer"
	connect(f.connect("orders-svc", {"request": {"role": "app_admin"}})).rule == "role-not-allowed"
}

test_statement_allow_shape if {
	statement(f.statement("app_reader", "SELECT", f.reads("orders"))) == {
		"allow": true,
		"rule": "allow-read",
		"reason": "app_reader (reader) may run SELECT",
	}
}

test_statement_deny_shape if {
	statement(f.statement("app_reader", "DELETE", f.writes("orders"))) == {
		"allow": false,
		"rule": "read-only-role",
		"reason": "app_reader is a reader role and DELETE here is a write",
	}
}

# app_admin is listed for the dba service only.
as_dba := {"identity": {"name": "dba"}}

test_dangerous_beats_everything_for_admins if {
	doc := f.statement("app_admin", "SELECT", object.union(f.calls("pg_read_file"), as_dba))
	statement(doc).rule == "denied-function"
}

test_role_kind_is_reported_before_the_window if {
	# A reader's DELETE inside a window: the lasting reason wins.
	doc := f.statement("app_reader", "DELETE", object.union(f.writes("orders"), f.at("Sunday", 3, 0)))
	statement(doc).rule == "read-only-role"
	doc2 := f.statement("app_writer", "DELETE", object.union(f.writes("orders"), f.at("Sunday", 3, 0)))
	statement(doc2).rule == "maintenance-window"
}

test_several_denials_of_one_priority_pick_the_smaller_rule_id if {
	# copy-program (30) and copy-server-file (31); two denied functions share priority 20
	doc := f.statement("app_admin", "COPY", object.union({"statement": {"flags": {"copy_program": true, "copy_file": true}}}, as_dba))
	statement(doc).rule == "copy-program"
	both := f.statement("app_admin", "SELECT", object.union(as_dba, {"statement": {"functions": [
		{"schema": null, "name": "pg_read_file"},
		{"schema": null, "name": "dblink"},
	]}}))
	statement(both) == {
		"allow": false,
		"rule": "denied-function",
		"reason": "dblink() is a dblink function: it connects from the database server and runs SQL rolegate cannot inspect",
	}
}

test_session_recheck_comes_first if {
	doc := f.statement("app_reader", "DELETE", {"identity": {"name": "gone-svc"}})
	statement(doc).rule == "unknown-service"
}

test_statement_without_any_grant_is_default_denied if {
	# no denial, no grant: a role whose kind allows nothing
	doc := f.statement("app_reader", "SELECT", {})
	decision := rolegate.statement with input as doc
		with data.services as f.services
		with data.roles as f.roles
		with data.catalog.kinds as {"reader": {"allows": []}}
		with data.catalog.classes.read as {"writes": false, "label": "a read"}
	decision.rule == "command-not-allowed"
	decision2 := rolegate.statement with input as doc
		with data.services as f.services
		with data.roles as f.roles
		with data.catalog.kinds as {"reader": {"allows": []}}
		with data.catalog.classes as {}
	decision2 == {"allow": false, "rule": "default-deny", "reason": "no rule allowed this statement"}
}

test_connect_without_grant_is_default_denied if {
	# a service whose default_role is not a string: the grant cannot be built
	decision := rolegate.connect with input as f.connect("odd", {})
		with data.services as {"odd": {"env": "prod", "roles": [7], "default_role": 7, "databases": ["app"], "cidrs": ["0.0.0.0/0"]}}
		with data.roles as {7: {"kind": "reader"}}
	decision == {
		"allow": false,
		"role": null,
		"database": null,
		"rule": "default-deny",
		"reason": "no rule allowed this connection",
	}
}

test_missing_service_fields_fail_closed if {
	bare := {"bare": {"env": "prod", "default_role": "app_reader", "cidrs": ["0.0.0.0/0"]}}
	decision := rolegate.connect with input as f.connect("bare", {})
		with data.services as bare
		with data.roles as f.roles
	decision.allow == false
	decision.rule == "database-not-allowed"
	no_roles := rolegate.connect with input as f.connect("bare", {"request": {"role": "app_reader"}})
		with data.services as {"bare": {"env": "prod", "databases": ["app"], "cidrs": ["0.0.0.0/0"]}}
		with data.roles as f.roles
	no_roles.rule == "role-not-allowed"
	in_session := rolegate.statement with input as f.statement("app_reader", "SELECT", {"identity": {"name": "bare"}})
		with data.services as bare
		with data.roles as f.roles
	in_session.rule == "role-not-allowed"
}

test_first_of_nothing_is_undefined if {
	not rolegate.first(set())
}

# orders-svc restricted to some tables and to office hours, as data only.
restricted := object.union(f.services, {"orders-svc": object.union(f.services["orders-svc"], {
	"tables": {"allow": ["public.orders", "public.customers"], "write": ["public.orders"]},
	"write_windows": [{"weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"], "start": "08:00", "end": "18:00"}],
})})

restricted_statement(doc) := result if {
	result := rolegate.statement with input as doc
		with data.services as restricted
		with data.roles as f.roles
		with data.maintenance_windows as f.windows
}

test_table_lists_and_write_windows_from_data if {
	office := f.at("Tuesday", 10, 0)
	restricted_statement(f.statement("app_writer", "UPDATE", object.union(f.writes("orders"), office))).rule == "allow-write"
	restricted_statement(f.statement("app_writer", "SELECT", object.union(f.reads("payments"), office))) == {
		"allow": false,
		"rule": "service-table-not-allowed",
		"reason": "orders-svc may not use table payments (not in its tables.allow)",
	}
	restricted_statement(f.statement("app_writer", "UPDATE", object.union(f.writes("customers"), office))).rule == "service-table-not-writable"
	evening := f.at("Tuesday", 19, 0)
	restricted_statement(f.statement("app_writer", "UPDATE", object.union(f.writes("orders"), evening))).rule == "service-write-window"
	restricted_statement(f.statement("app_reader", "SELECT", object.union(f.reads("orders"), evening))).rule == "allow-read"
}

test_new_denials_rank_between_the_shipped_ones if {
	# an unlisted table beats the role kind (75 < 80)
	reader_writes := f.statement("app_reader", "DELETE", object.union(f.writes("payments"), f.at("Tuesday", 10, 0)))
	restricted_statement(reader_writes).rule == "service-table-not-allowed"

	# the role kind beats an unwritable table (80 < 85): a reader cannot write anywhere
	reader_writes_listed := f.statement("app_reader", "DELETE", object.union(f.writes("customers"), f.at("Tuesday", 10, 0)))
	restricted_statement(reader_writes_listed).rule == "read-only-role"

	# the service's own window beats a maintenance window (88 < 90)
	sunday := f.statement("app_writer", "DELETE", object.union(f.writes("orders"), f.at("Sunday", 3, 0)))
	restricted_statement(sunday).rule == "service-write-window"
}

test_hook_denials_reach_both_entry_points if {
	hook := {{"rule": "no-friday-deploys", "reason": "not on a Friday"}}
	decision := rolegate.statement with input as f.statement("app_reader", "SELECT", f.reads("orders"))
		with data.services as f.services
		with data.roles as f.roles
		with data.rolegate.hooks.deny_statement as hook
	decision == {"allow": false, "rule": "no-friday-deploys", "reason": "not on a Friday"}
	denied := rolegate.connect with input as f.connect("orders-svc", {})
		with data.services as f.services
		with data.roles as f.roles
		with data.rolegate.hooks.deny_connect as {"night only"}
	denied == {"allow": false, "role": null, "database": null, "rule": "hook-denied", "reason": "night only"}
}

test_hook_priority_ranks_it_among_the_shipped_denials if {
	doc := f.statement("app_reader", "DELETE", f.writes("orders"))
	late := rolegate.statement with input as doc
		with data.services as f.services
		with data.roles as f.roles
		with data.rolegate.hooks.deny_statement as {{"rule": "mine", "reason": "r"}}
	late.rule == "read-only-role"
	early := rolegate.statement with input as doc
		with data.services as f.services
		with data.roles as f.roles
		with data.rolegate.hooks.deny_statement as {{"rule": "mine", "reason": "r", "priority": 5}}
	early.rule == "mine"
}

test_each_optional_concern_alone_is_consulted if {
	only_windows := object.union(f.services, {"orders-svc": object.union(f.services["orders-svc"], {"write_windows": []})})
	windows := rolegate.statement with input as f.statement("app_writer", "DELETE", f.writes("orders"))
		with data.services as only_windows
		with data.roles as f.roles
	windows.rule == "service-write-window"
	only_tables := object.union(f.services, {"orders-svc": object.union(f.services["orders-svc"], {"tables": {"allow": []}})})
	tables := rolegate.statement with input as f.statement("app_reader", "SELECT", f.reads("orders"))
		with data.services as only_tables
		with data.roles as f.roles
	tables.rule == "service-table-not-allowed"

	# a false hook adds nothing, and the shipped grant decides
	hooked := rolegate.statement with input as f.statement("app_reader", "SELECT", f.reads("orders"))
		with data.services as f.services
		with data.roles as f.roles
		with data.rolegate.hooks.deny_statement as false
	hooked.rule == "allow-read"
}
