package rolegate.tables_test

import data.rolegate.fixtures_test as f
import data.rolegate.tables

# orders-svc with table lists; reporting-svc has none.
services := {
	"orders-svc": object.union(f.services["orders-svc"], {"tables": {
		"allow": ["public.orders", "customers", "sales.invoices"],
		"write": ["public.orders"],
	}}),
	"reporting-svc": f.services["orders-svc"],
	"any-schema": object.union(f.services["orders-svc"], {"tables": {"allow": ["orders"], "write": []}}),
}

rules(doc) := result if {
	result := {d.rule | some d in tables.denials} with input as doc
		with data.services as services
}

reasons(doc) := result if {
	result := {d.reason | some d in tables.denials} with input as doc
		with data.services as services
}

table(schema, name, access) := {"schema": schema, "name": name, "access": access}

touching(list) := {"statement": {"tables": list}}

as_service(name) := {"identity": {"name": name}}

select_from(list) := f.statement("app_writer", "SELECT", touching(list))

write_to(list) := f.statement("app_writer", "UPDATE", touching(list))

test_listed_tables_are_allowed if {
	rules(select_from([table(null, "orders", ["read"]), table("public", "customers", ["read"])])) == set()
	rules(write_to([table(null, "orders", ["read", "write"])])) == set()
	rules(write_to([table("public", "orders", ["write"])])) == set()
}

test_a_statement_without_tables_passes if {
	rules(f.statement("app_writer", "SELECT", {})) == set()
}

test_unlisted_table_is_denied_naming_it if {
	doc := select_from([table(null, "orders", ["read"]), table(null, "payments", ["read"])])
	rules(doc) == {"service-table-not-allowed"}
	reasons(doc) == {"orders-svc may not use table payments (not in its tables.allow)"}
}

test_each_unlisted_table_is_a_denial if {
	doc := select_from([table("audit", "log", ["read"]), table(null, "payments", ["read"])])
	reasons(doc) == {
		"orders-svc may not use table audit.log (not in its tables.allow)",
		"orders-svc may not use table payments (not in its tables.allow)",
	}
}

test_unqualified_reference_is_taken_to_be_in_public if {
	# sales.invoices is listed: only a reference written sales.invoices matches
	rules(select_from([table("sales", "invoices", ["read"])])) == set()
	rules(select_from([table(null, "invoices", ["read"])])) == {"service-table-not-allowed"}
	rules(select_from([table("public", "invoices", ["read"])])) == {"service-table-not-allowed"}
}

test_qualified_entry_matches_its_schema_only if {
	rules(select_from([table("archive", "orders", ["read"])])) == {"service-table-not-allowed"}
}

test_unqualified_entry_matches_every_schema if {
	rules(select_from([table(null, "customers", ["read"])])) == set()
	rules(select_from([table("public", "customers", ["read"])])) == set()
	rules(select_from([table("crm", "customers", ["read"])])) == set()
}

test_a_name_with_a_dot_never_matches_a_qualified_entry if {
	# "sales.invoices" as one quoted table name could pass for the entry sales.invoices
	rules(select_from([table(null, "sales.invoices", ["read"])])) == {"service-table-not-allowed"}
	rules(select_from([table("public", "sales.invoices", ["read"])])) == {"service-table-not-allowed"}
	rules(select_from([table("sales.invoices", "x", ["read"])])) == {"service-table-not-allowed"}

	# an unqualified entry names the table, whatever its schema is called
	rules(select_from([table("a.b", "customers", ["read"])])) == set()
}

test_writes_need_the_write_list if {
	doc := write_to([table(null, "customers", ["read", "write"])])
	rules(doc) == {"service-table-not-writable"}
	reasons(doc) == {"orders-svc may not write table customers (not in its tables.write)"}
	rules(write_to([table("sales", "invoices", ["write"])])) == {"service-table-not-writable"}
}

test_unlisted_and_unwritable_both_report if {
	rules(write_to([table(null, "payments", ["write"])])) == {"service-table-not-allowed", "service-table-not-writable"}
}

test_empty_write_list_admits_no_write if {
	doc := object.union(write_to([table("crm", "orders", ["write"])]), as_service("any-schema"))
	rules(doc) == {"service-table-not-writable"}
	reads := object.union(select_from([table("crm", "orders", ["read"])]), as_service("any-schema"))
	rules(reads) == set()
}

test_service_without_lists_is_not_checked if {
	doc := object.union(write_to([table("anything", "at_all", ["write"])]), as_service("reporting-svc"))
	rules(doc) == set()
	unknown := object.union(write_to([table(null, "x", ["write"])]), as_service("nobody"))
	rules(unknown) == set()
}

test_malformed_list_fails_closed if {
	doc := select_from([table(null, "orders", ["read"])])
	denied := {d.rule | some d in tables.denials} with input as doc
		with data.services as {"orders-svc": {"tables": {"allow": "orders"}}}
	denied == {"service-table-not-allowed"}
}

set_search_path(command) := f.statement("app_writer", command, {"statement": {"parameter": "search_path"}})

test_search_path_is_pinned_when_lists_name_public_tables if {
	rules(set_search_path("SET")) == {"service-search-path"}
	reasons(set_search_path("SET")) == {"orders-svc may not change search_path: its tables lists name public.* tables, and rolegate takes unqualified table names to be in public"}

	# set_config('search_path', …) is a SELECT naming the parameter
	rules(set_search_path("SELECT")) == {"service-search-path"}
	rules(set_search_path("SHOW")) == set()
	rules(set_search_path("RESET")) == set()
}

test_search_path_is_free_without_public_entries if {
	rules(object.union(set_search_path("SET"), as_service("any-schema"))) == set()
	rules(object.union(set_search_path("SET"), as_service("reporting-svc"))) == set()
	other := f.statement("app_writer", "SET", {"statement": {"parameter": "statement_timeout"}})
	rules(other) == set()
}

test_public_entry_in_the_write_list_alone_pins_search_path if {
	only_write := {"orders-svc": object.union(f.services["orders-svc"], {"tables": {"write": ["public.orders"]}})}
	denied := {d.rule | some d in tables.denials} with input as set_search_path("SET")
		with data.services as only_write
	denied == {"service-search-path"}
}
