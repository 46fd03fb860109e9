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
package rolegate

import data.rolegate.commands
import data.rolegate.dangerous
import data.rolegate.environment
import data.rolegate.maintenance
import data.rolegate.network
import data.rolegate.services
import data.rolegate.session

# Denials of the connection, from every connect-time concern.
connect_denials := (services.denials | network.denials) | environment.denials

# Denials of the statement, from every statement-time concern.
statement_denials := ((session.denials | dangerous.denials) | maintenance.denials) | commands.denials

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
