# METADATA
# title: rolegate entry points
# description: |
#   The two decisions rolegate asks for, compiled to WebAssembly with
#     opa build -t wasm -e rolegate/connect -e rolegate/statement
#   Each concern (one file, one package) adds denials to a set: an object
#   {"priority": n, "rule": id, "reason": text}. The denial with the lowest
#   priority wins (ties: rule id, then reason), so the answer never depends on
#   the order rules are evaluated in. With no denial, the grant of
#   rolegate.services (connect) or rolegate.commands (statement) decides;
#   anything else is a deny. See docs/policy.md for the contract.
#   An author's own concern does not edit this file: it goes in package
#   rolegate.hooks (deny_connect, deny_statement), which rolegate.extension
#   reads and turns into denials of the same shape.
package rolegate

import data.rolegate.commands
import data.rolegate.dangerous
import data.rolegate.environment
import data.rolegate.extension
import data.rolegate.maintenance
import data.rolegate.network
import data.rolegate.services
import data.rolegate.session
import data.rolegate.tables
import data.rolegate.write_windows

# Denials of the connection, from every connect-time concern.
connect_denials := ((services.denials | network.denials) | environment.denials) | extension.connect_denials

# Denials of the statement, from every statement-time concern.
statement_denials := (((session.denials | dangerous.denials) | maintenance.denials) | commands.denials) | optional_statement_denials

# The per-service data restrictions and the author's hooks, evaluated only when
# the service has such data or a hook exists. Evaluated for every statement
# they cost ~2 µs per decision in wasm (sets built and joined even when empty);
# behind this test, under 0.5 µs (measured against the shipped data, which uses
# neither). A concern added to rolegate.tables or rolegate.write_windows must
# depend on the keys tested here.
optional_statement_denials := (tables.denials | write_windows.denials) | extension.statement_denials if {
	has_optional_concerns
} else := set()

has_optional_concerns if data.services[input.identity.name].tables

has_optional_concerns if data.services[input.identity.name].write_windows

has_optional_concerns if data.rolegate.hooks.deny_statement

default connect := {
	"allow": false,
	"role": null,
	"database": null,
	"rule": "default-deny",
	"reason": "no rule allowed this connection",
}

# The first denial, else the service's grant.
connect := {"allow": false, "role": null, "database": null, "rule": d.rule, "reason": d.reason} if {
	d := first(connect_denials)
} else := services.grant

default statement := {
	"allow": false,
	"rule": "default-deny",
	"reason": "no rule allowed this statement",
}

# The first denial, else the role kind's grant.
statement := {"allow": false, "rule": d.rule, "reason": d.reason} if {
	d := first(statement_denials)
} else := commands.grant

# first(denials) is the denial with the lowest priority; ties go to the
# smaller rule id, then the smaller reason. Undefined for an empty set.
first(denials) := {"rule": top[1], "reason": top[2]} if {
	top := sort([[d.priority, d.rule, d.reason] | some d in denials])[0]
}
