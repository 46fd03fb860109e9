# METADATA
# title: session re-check
# description: |
#   The connect decision fixed the session's role and database; a policy or
#   data reload may since have withdrawn them. Every statement re-checks, with
#   the connect rule ids, that the identity's service still exists and still
#   lists the session's role and database, and that the role has a known kind.
#   (Address, TLS and environment are checked at connect only.)
# schemas:
#   - input: schema.statement_input
package rolegate.session

service := data.services[input.identity.name]

# Rules without arguments, so that `not` is true when a field is missing.
role_listed if input.session.role in service.roles

database_listed if input.session.database in service.databases

role_kind_known if data.catalog.kinds[data.roles[input.session.role].kind]

denials contains {
	"priority": 10,
	"rule": "unknown-service",
	"reason": concat("", ["no service named \"", input.identity.name, "\" in data.services"]),
} if {
	not service
}

denials contains {
	"priority": 11,
	"rule": "role-not-allowed",
	"reason": concat("", [input.identity.name, " may no longer use role ", input.session.role]),
} if {
	service
	not role_listed
}

denials contains {
	"priority": 12,
	"rule": "database-not-allowed",
	"reason": concat("", [input.identity.name, " may no longer use database ", input.session.database]),
} if {
	service
	not database_listed
}

denials contains {
	"priority": 13,
	"rule": "unknown-role",
	"reason": concat("", ["role ", input.session.role, " has no kind in data.roles and data.catalog.kinds"]),
} if {
	not role_kind_known
}
