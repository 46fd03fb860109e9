# METADATA
# title: environment segregation
# description: |
#   A service connects only through a proxy of its own environment: a "dev"
#   service is refused by a proxy whose input.proxy.env is "prod".
#   data.env_exceptions maps a proxy environment to the other service
#   environments it also admits, e.g. {"staging": ["dev"]}.
# schemas:
#   - input: schema.connect_input
package rolegate.environment

import data.rolegate.text

service := data.services[input.identity.name]

# The service's environment; null (matches no proxy) when the entry has none.
service_env := object.get(service, "env", null)

env_admitted if {
	is_string(service_env)
	service_env == input.proxy.env
}

env_admitted if {
	is_string(service_env)
	service_env in data.env_exceptions[input.proxy.env]
}

denials contains {
	"priority": 30,
	"rule": "environment-mismatch",
	"reason": concat("", [
		input.identity.name, " belongs to environment ", text.of(service_env),
		" and may not connect through a \"", input.proxy.env, "\" proxy",
	]),
} if {
	service
	not env_admitted
}
