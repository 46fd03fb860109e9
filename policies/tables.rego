# METADATA
# title: per-service table allow-lists
# description: |
#   A service entry may list the tables it may use, as data:
#     "tables": {"allow": ["public.orders", "customers"], "write": ["public.orders"]}
#   allow  optional: every table the statement touches must be listed, else
#          service-table-not-allowed
#   write  optional: every table the statement writes must be listed, else
#          service-table-not-writable
#   Without a list there is no check of that kind; an empty list admits no table.
#   Names are matched as PostgreSQL stores them (case-folded unless quoted):
#     "orders"         a table named orders in any schema, qualified or not
#     "public.orders"  orders qualified with public, and an unqualified orders:
#                      rolegate does not resolve search_path, so an unqualified
#                      name is taken to be in public, PostgreSQL's default
#     "sales.orders"   only a reference written sales.orders
#   Because of that assumption a service whose lists name a public.* table may
#   not change search_path (service-search-path). A table or schema name that
#   itself holds a dot never matches (it could not be told apart from a
#   qualified entry): fail closed.
# schemas:
#   - input: schema.statement_input
package rolegate.tables

import data.rolegate.text

service := data.services[input.identity.name]

allow_list := service.tables.allow

write_list := service.tables.write

# listed(table, names): the statement's table reference matches an entry of names.
# An unqualified entry: any schema.
listed(table, names) if {
	not contains(table.name, ".")
	table.name in names
}

# A qualified reference: schema.name.
listed(table, names) if {
	is_string(table.schema)
	not contains(table.schema, ".")
	not contains(table.name, ".")
	concat(".", [table.schema, table.name]) in names
}

# An unqualified reference: taken to be in public.
listed(table, names) if {
	table.schema == null
	not contains(table.name, ".")
	concat(".", ["public", table.name]) in names
}

# The reference as the statement wrote it, for reasons.
shown(table) := concat(".", [table.schema, table.name]) if {
	is_string(table.schema)
} else := text.of(table.name)

# Each denial tests that its list exists before `not listed(table, list)`: OPA
# evaluates a call's arguments before `not`, so with a missing list the negation
# would be undefined, and the denial would vanish instead of being skipped on
# purpose.
denials contains {
	"priority": 75,
	"rule": "service-table-not-allowed",
	"reason": concat("", [
		input.identity.name, " may not use table ", shown(table),
		" (not in its tables.allow)",
	]),
} if {
	allow_list
	some table in input.statement.tables
	not listed(table, allow_list)
}

denials contains {
	"priority": 85,
	"rule": "service-table-not-writable",
	"reason": concat("", [
		input.identity.name, " may not write table ", shown(table),
		" (not in its tables.write)",
	]),
} if {
	write_list
	some table in input.statement.tables
	"write" in table.access
	not listed(table, write_list)
}

# Lists naming a public.* table rely on unqualified names resolving to public.
relies_on_public if {
	some name in allow_list
	startswith(name, "public.")
}

relies_on_public if {
	some name in write_list
	startswith(name, "public.")
}

# SET / SET LOCAL / set_config() of search_path; SHOW reads it, RESET returns
# to the session's default.
changes_search_path if {
	input.statement.parameter == "search_path"
	input.statement.command != "SHOW"
	input.statement.command != "RESET"
}

denials contains {
	"priority": 74,
	"rule": "service-search-path",
	"reason": concat("", [
		input.identity.name, " may not change search_path: its tables lists name public.* tables, ",
		"and rolegate takes unqualified table names to be in public",
	]),
} if {
	changes_search_path
	relies_on_public
}
