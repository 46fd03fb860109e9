# METADATA
# title: data lint
# description: |
#   Consistency checks of the data document (data.json, data.catalog): a set of
#   messages, empty when the data is sound. Not an entry point: buildPolicy runs
#   `opa eval data.rolegate.lint.errors` and refuses data with errors, and
#   lint_test.rego keeps the shipped data clean. A mistake here would otherwise
#   show up as a silent deny (or, for a malformed window, a window that never
#   opens).
#
#   Unknown keys are errors too (messages starting "unknown-key:"), wherever the
#   data has a fixed shape: a service entry, its tables and write windows, a role,
#   a maintenance window, the catalog and its entries. A misspelt key is a key
#   the library never reads: "require_tl": true would silently drop the TLS
#   requirement. Free-form data for an author's own hooks goes under a service's
#   "custom" object. The top level of the data document cannot be checked here:
#   enumerating data's keys from a rule would also enumerate the rules
#   themselves, this one included (a recursion OPA refuses); the JSON Schema
#   docs/policy-schema/data.json covers it.
package rolegate.lint

auth_methods := {"scram-sha-256", "cert", "jwt"}

weekdays := {"monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"}

# Negated checks call helpers with bound arguments only: OPA evaluates a call's
# arguments before `not`, so `not f(x.missing)` is undefined, not true.
errors contains "data.services is missing or not an object" if not services_object

errors contains "data.roles is missing or not an object" if not roles_object

errors contains "data.catalog is missing (policies/catalog/data.json)" if not catalog_object

services_object if is_object(data.services)

roles_object if is_object(data.roles)

catalog_object if is_object(data.catalog)

errors contains sprintf("services[%q] must be an object", [name]) if {
	some name, service in data.services
	not is_object(service)
}

# --- services -----------------------------------------------------------------

errors contains sprintf("services[%q].env must be a non-empty string", [name]) if {
	some name, service in data.services
	not non_empty_string(object.get(service, "env", null))
}

errors contains sprintf("services[%q].roles must be a non-empty array of role names", [name]) if {
	some name, service in data.services
	not non_empty_string_array(object.get(service, "roles", null))
}

errors contains sprintf("services[%q].roles names %q, which data.roles lacks", [name, role]) if {
	some name, service in data.services
	some role in service.roles
	not data.roles[role]
}

errors contains sprintf("services[%q].default_role %v is not among its roles", [name, service.default_role]) if {
	some name, service in data.services
	service.default_role
	not service.default_role in service.roles
}

errors contains sprintf("services[%q].databases must be a non-empty array of database names", [name]) if {
	some name, service in data.services
	not non_empty_string_array(object.get(service, "databases", null))
}

errors contains sprintf("services[%q].cidrs must be an array of CIDR ranges (none admits no client)", [name]) if {
	some name, service in data.services
	not is_array(object.get(service, "cidrs", null))
}

errors contains sprintf("services[%q].cidrs: %v is not a CIDR range like 10.0.0.0/8 or fd00::/8", [name, cidr]) if {
	some name, service in data.services
	some cidr in service.cidrs
	not valid_cidr(cidr)
}

errors contains sprintf("services[%q].methods: %v is not one of scram-sha-256, cert, jwt", [name, method]) if {
	some name, service in data.services
	some method in service.methods
	not method in auth_methods
}

errors contains sprintf("services[%q].require_tls must be true or false", [name]) if {
	some name, service in data.services
	not is_boolean(object.get(service, "require_tls", false))
}

errors contains sprintf("services[%q].tables must be an object with allow and/or write", [name]) if {
	some name, service in data.services
	tables := service.tables
	not is_object(tables)
}

errors contains sprintf("services[%q].tables.%s must be an array of table names like \"orders\" or \"public.orders\"", [name, field]) if {
	some name, service in data.services
	some field in ["allow", "write"]
	value := service.tables[field]
	not table_name_array(value)
}

errors contains sprintf("services[%q].tables.write names %q, which tables.allow does not admit", [name, entry]) if {
	some name, service in data.services
	is_array(service.tables.allow)
	some entry in service.tables.write
	not admitted(entry, service.tables.allow)
}

errors contains sprintf("services[%q].write_windows must be an array of windows (an empty one opens none)", [name]) if {
	some name, service in data.services
	value := service.write_windows
	not is_array(value)
}

# --- unknown keys -------------------------------------------------------------

# The keys of each fixed-shape object, as the library reads them
# (docs/policy-schema/data.json lists the same ones; a test keeps them equal).
service_keys := {
	"description", "env", "roles", "default_role", "databases", "cidrs",
	"methods", "require_tls", "tables", "write_windows", "custom",
}

tables_keys := {"allow", "write"}

role_keys := {"kind", "description"}

maintenance_window_keys := {"name", "description", "weekdays", "start", "end", "services", "databases"}

write_window_keys := {"name", "description", "weekdays", "start", "end"}

catalog_keys := {
	"version", "classes", "kinds", "commands", "forbidden_commands", "parameters",
	"protected_tables", "denied_functions", "denied_function_prefixes",
	"admin_functions", "write_functions", "previous_day",
}

class_keys := {"writes", "deny_rule", "label"}

kind_keys := {"allows", "admin"}

denial_keys := {"rule", "reason"}

# [path, object, known keys] of every object with a fixed shape.
shaped contains [sprintf("services[%q]", [name]), service, service_keys] if {
	some name, service in data.services
}

shaped contains [sprintf("services[%q].tables", [name]), service.tables, tables_keys] if {
	some name, service in data.services
}

shaped contains [path, window, keys] if {
	some [path, window, keys] in window_entries
}

shaped contains [sprintf("roles[%q]", [role]), entry, role_keys] if {
	some role, entry in data.roles
}

shaped contains ["catalog", data.catalog, catalog_keys] if catalog_object

shaped contains [sprintf("catalog.classes[%q]", [class]), entry, class_keys] if {
	some class, entry in data.catalog.classes
}

shaped contains [sprintf("catalog.kinds[%q]", [kind]), entry, kind_keys] if {
	some kind, entry in data.catalog.kinds
}

shaped contains [sprintf("catalog.%s[%q]", [table, key]), entry, denial_keys] if {
	some table in ["forbidden_commands", "parameters", "protected_tables"]
	some key, entry in data.catalog[table]
}

errors contains sprintf("unknown-key: %s.%s is not a key the library reads (%s)", [path, key, hint(key, keys)]) if {
	some [path, object, keys] in shaped
	is_object(object)
	some key, _ in object
	not key in keys
}

# A misspelt hook in the author's package rolegate.hooks would never run. Its
# other rules are the author's helpers; only names that look like a hook are
# flagged (deny…/allow…, or one slip from a hook's name). Rules over input are
# evaluated here without one: a partial set shows as an empty set (flagged), a
# complete rule is undefined and cannot be seen.
hook_names := {"deny_connect", "deny_statement"}

errors contains sprintf("unknown-key: data.rolegate.hooks.%s is not a hook the library reads (%s)", [key, hint(key, hook_names)]) if {
	some key, _ in data.rolegate.hooks
	not key in hook_names
	looks_like_a_hook(lower(key))
}

looks_like_a_hook(key) if startswith(key, "deny")

looks_like_a_hook(key) if startswith(key, "allow")

looks_like_a_hook(key) if {
	some name in hook_names
	similar_key(key, name)
}

# "did you mean require_tls?": known keys that start with the same three
# letters, or that are one slip away (a letter wrong, missing or extra, or two
# letters swapped).
hint(key, keys) := sprintf("did you mean %s?", [concat(" or ", sort(similar))]) if {
	similar := {known | some known in keys; similar_key(lower(key), known)}
	count(similar) > 0
} else := sprintf("known keys: %s", [concat(", ", sort(keys))])

similar_key(key, known) if substring(key, 0, 3) == substring(known, 0, 3)

similar_key(key, known) if {
	count(key) == count(known)
	differing := [i | some i in numbers.range(0, count(key) - 1); substring(key, i, 1) != substring(known, i, 1)]
	count(differing) <= 2
}

similar_key(key, known) if one_letter_more(key, known)

similar_key(key, known) if one_letter_more(known, key)

one_letter_more(longer, shorter) if {
	count(longer) == count(shorter) + 1
	some i in numbers.range(0, count(shorter))
	concat("", [substring(longer, 0, i), substring(longer, i + 1, -1)]) == shorter
}

# --- roles --------------------------------------------------------------------

errors contains sprintf("roles[%q].kind %v is not a kind of data.catalog.kinds", [role, object.get(entry, "kind", null)]) if {
	some role, entry in data.roles
	not data.catalog.kinds[entry.kind]
}

# --- environments ---------------------------------------------------------------

errors contains sprintf("env_exceptions[%q] must be an array of environment names", [env]) if {
	some env, admitted in data.env_exceptions
	not non_empty_string_array(admitted)
}

# --- maintenance windows --------------------------------------------------------

# Per-window checks run on an array only.
windows := data.maintenance_windows if is_array(data.maintenance_windows)

errors contains "maintenance_windows must be an array" if {
	data.maintenance_windows
	not is_array(data.maintenance_windows)
}

# [path, window, known keys] of every window: the maintenance windows and each
# service's write windows share the checks below (and the code that opens them).
window_entries contains [sprintf("maintenance_windows[%d]", [i]), window, maintenance_window_keys] if {
	some i, window in windows
}

window_entries contains [sprintf("services[%q].write_windows[%d]", [name, i]), window, write_window_keys] if {
	some name, service in data.services
	is_array(service.write_windows)
	some i, window in service.write_windows
}

errors contains sprintf("%s must be an object", [path]) if {
	some [path, window, _] in window_entries
	not is_object(window)
}

errors contains sprintf("maintenance_windows[%d].name must be a non-empty string", [i]) if {
	some i, window in windows
	not non_empty_string(object.get(window, "name", null))
}

errors contains sprintf("%s.%s must be \"HH:MM\" (00:00 to 24:00)", [path, field]) if {
	some [path, window, _] in window_entries
	some field in ["start", "end"]
	not valid_clock(object.get(window, field, null))
}

errors contains sprintf("%s.weekdays: %v is not a day name like \"Sunday\"", [path, day]) if {
	some [path, window, _] in window_entries
	some day in window.weekdays
	not valid_day(day)
}

errors contains sprintf("%s.%s must be an array of names", [path, field]) if {
	some [path, window, _] in window_entries
	some field in ["weekdays", "services", "databases"]
	value := window[field]
	not non_empty_string_array(value)
}

# --- catalog ------------------------------------------------------------------

errors contains sprintf("catalog.commands[%q]: class %v is not in catalog.classes", [command, class]) if {
	some command, class in data.catalog.commands
	class != "copy"
	not data.catalog.classes[class]
}

errors contains sprintf("catalog.kinds[%q].allows: %v is not in catalog.classes", [kind, class]) if {
	some kind, entry in data.catalog.kinds
	some class in entry.allows
	not data.catalog.classes[class]
}

errors contains sprintf("catalog.classes[%q] needs writes (boolean), deny_rule and label (strings)", [class]) if {
	some class, entry in data.catalog.classes
	not well_formed_class(entry)
}

errors contains sprintf("catalog.%s[%q] needs a rule and a reason (strings)", [table, key]) if {
	some table in ["forbidden_commands", "parameters", "protected_tables"]
	some key, entry in data.catalog[table]
	not well_formed_denial(entry)
}

errors contains sprintf("catalog.previous_day[%q] must be the day before it (maintenance windows across midnight need it)", [day]) if {
	catalog_object
	some day in weekdays
	not valid_day(object.get(object.get(data.catalog, "previous_day", {}), day, null))
}

errors contains sprintf("catalog.%s[%q] must be a reason (string)", [table, key]) if {
	some table in ["denied_functions", "denied_function_prefixes", "admin_functions", "write_functions"]
	some key, reason in data.catalog[table]
	not non_empty_string(reason)
}

# --- helpers ------------------------------------------------------------------

non_empty_string(value) if {
	is_string(value)
	value != ""
}

non_empty_string_array(value) if {
	is_array(value)
	count(value) > 0
	every item in value {
		non_empty_string(item)
	}
}

# "orders" or "public.orders": one dot at most, no empty part.
table_name_array(value) if {
	is_array(value)
	every item in value {
		is_string(item)
		regex.match(`^[^.]+(\.[^.]+)?$`, item)
	}
}

# An allow list admits the written entry: listed as is, or an unqualified allow
# entry covers every schema, or an unqualified write entry is allowed in some schema.
admitted(entry, allow) if entry in allow

admitted(entry, allow) if {
	parts := split(entry, ".")
	count(parts) == 2
	parts[1] in allow
}

admitted(entry, allow) if {
	not contains(entry, ".")
	some allowed in allow
	endswith(allowed, concat("", [".", entry]))
}

valid_cidr(value) if {
	is_string(value)
	contains(value, "/")
	net.cidr_contains(value, value)
}

valid_day(value) if {
	is_string(value)
	lower(value) in weekdays
}

valid_clock(value) if {
	is_string(value)
	regex.match(`^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$`, value)
}

well_formed_class(entry) if {
	is_boolean(entry.writes)
	non_empty_string(entry.deny_rule)
	non_empty_string(entry.label)
}

well_formed_denial(entry) if {
	non_empty_string(entry.rule)
	non_empty_string(entry.reason)
}
