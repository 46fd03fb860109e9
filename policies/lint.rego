# METADATA
# title: data lint
# description: |
#   Consistency checks of the data document (data.json, data.catalog): a set of
#   messages, empty when the data is sound. Not an entry point: buildPolicy runs
#   `opa eval data.rolegate.lint.errors` and refuses data with errors, and
#   lint_test.rego keeps the shipped data clean. A mistake here would otherwise
#   show up as a silent deny (or, for a malformed window, a window that never
#   opens).
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

errors contains sprintf("maintenance_windows[%d] must be an object", [i]) if {
	some i, window in windows
	not is_object(window)
}

errors contains sprintf("maintenance_windows[%d].name must be a non-empty string", [i]) if {
	some i, window in windows
	not non_empty_string(object.get(window, "name", null))
}

errors contains sprintf("maintenance_windows[%d].%s must be \"HH:MM\" (00:00 to 24:00)", [i, field]) if {
	some i, window in windows
	some field in ["start", "end"]
	not valid_clock(object.get(window, field, null))
}

errors contains sprintf("maintenance_windows[%d].weekdays: %v is not a day name like \"Sunday\"", [i, day]) if {
	some i, window in windows
	some day in window.weekdays
	not valid_day(day)
}

errors contains sprintf("maintenance_windows[%d].%s must be an array of names", [i, field]) if {
	some i, window in windows
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
