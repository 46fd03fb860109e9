# METADATA
# title: services
# description: |
#   Who may connect, to which database, as which role. data.services maps an
#   authenticated identity name to its service entry:
#     roles         roles the service may use (its default_role among them)
#     default_role  used when the client requests no role
#     databases     databases it may connect to
#     methods       optional: accepted authentication methods
#   A requested role (input.request.role) is honoured only if the service lists
#   it; it never falls back to the default.
# schemas:
#   - input: schema.connect_input
package rolegate.services

import data.rolegate.text

# The entry of the authenticated identity, undefined for an unknown one.
service := data.services[input.identity.name]

requested := input.request.role

# Membership tests are rules without arguments so that `not x` is true when a
# field is missing: `not a in b.missing` would be undefined (OPA evaluates the
# operands first), and a denial guarded by it would silently vanish.
method_listed if input.identity.method in service.methods

database_listed if input.request.database in service.databases

requested_role_listed if requested in service.roles

default_role_listed if service.default_role in service.roles

role_kind_known if data.catalog.kinds[data.roles[role].kind]

# The role the connection gets: the requested one, else the default.
role := requested if {
	requested != null
} else := service.default_role

denials contains {
	"priority": 10,
	"rule": "unknown-service",
	"reason": concat("", ["no service named \"", input.identity.name, "\" in data.services"]),
} if {
	not service
}

denials contains {
	"priority": 20,
	"rule": "auth-method-not-allowed",
	"reason": concat("", [
		input.identity.name, " may not authenticate with ", input.identity.method,
		" (allowed: ", text.of(service.methods), ")",
	]),
} if {
	service.methods
	not method_listed
}

denials contains {
	"priority": 50,
	"rule": "database-not-allowed",
	"reason": concat("", [input.identity.name, " may not connect to database ", input.request.database]),
} if {
	service
	not database_listed
}

denials contains {
	"priority": 60,
	"rule": "role-not-allowed",
	"reason": concat("", [input.identity.name, " may not use the requested role ", requested]),
} if {
	requested != null
	service
	not requested_role_listed
}

denials contains {
	"priority": 60,
	"rule": "no-default-role",
	"reason": concat("", [input.identity.name, " requested no role and its service entry has no default_role"]),
} if {
	requested == null
	service
	not service.default_role
}

denials contains {
	"priority": 60,
	"rule": "role-not-allowed",
	"reason": concat("", ["the default role ", text.of(service.default_role), " of ", input.identity.name, " is not among its roles"]),
} if {
	requested == null
	service.default_role
	not default_role_listed
}

denials contains {
	"priority": 70,
	"rule": "unknown-role",
	"reason": concat("", ["role ", text.of(role), " has no kind in data.roles and data.catalog.kinds"]),
} if {
	role
	not role_kind_known
}

grant := {
	"allow": true,
	"role": role,
	"database": input.request.database,
	"rule": "service-requested-role",
	"reason": concat("", [input.identity.name, " connects to ", input.request.database, " as the requested role ", role]),
} if {
	requested != null
} else := {
	"allow": true,
	"role": role,
	"database": input.request.database,
	"rule": "service-default-role",
	"reason": concat("", [input.identity.name, " connects to ", input.request.database, " as its default role ", role]),
}
