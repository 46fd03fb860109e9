# METADATA
# title: test fixtures
# description: |
#   Inputs and data shared by the *_test.rego files. Tests pin their data with
#   `with data.services as fixtures.services …` so that editing the example
#   data.json never changes what they prove; data.catalog is the shipped one.
package rolegate.fixtures_test

services := {
	"orders-svc": {
		"env": "prod",
		"roles": ["app_reader", "app_writer"],
		"default_role": "app_reader",
		"databases": ["app"],
		"cidrs": ["10.1.0.0/16", "fd00:1::/32"],
	},
	"dba": {
		"env": "prod",
		"roles": ["app_reader", "app_admin"],
		"default_role": "app_reader",
		"databases": ["app"],
		"cidrs": ["10.99.0.0/24"],
		"methods": ["cert"],
		"require_tls": true,
	},
	"no-default": {
		"env": "prod",
		"roles": ["app_reader"],
		"databases": ["app"],
		"cidrs": ["0.0.0.0/0"],
	},
	"bad-default": {
		"env": "prod",
		"roles": ["app_reader"],
		"default_role": "app_writer",
		"databases": ["app"],
		"cidrs": ["0.0.0.0/0"],
	},
	"ghost-role": {
		"env": "prod",
		"roles": ["ghost"],
		"default_role": "ghost",
		"databases": ["app"],
		"cidrs": ["0.0.0.0/0"],
	},
	"dev-svc": {
		"env": "dev",
		"roles": ["app_writer"],
		"default_role": "app_writer",
		"databases": ["app"],
		"cidrs": ["0.0.0.0/0", "::/0"],
	},
	"no-env": {
		"roles": ["app_reader"],
		"default_role": "app_reader",
		"databases": ["app"],
		"cidrs": ["0.0.0.0/0"],
	},
	"no-cidrs": {
		"env": "prod",
		"roles": ["app_reader"],
		"default_role": "app_reader",
		"databases": ["app"],
	},
}

roles := {
	"app_reader": {"kind": "reader"},
	"app_writer": {"kind": "writer"},
	"app_admin": {"kind": "admin"},
	"ghost": {"kind": "poltergeist"},
}

env_exceptions := {"staging": ["dev"]}

# Sunday 02:00-04:00, and Saturday 23:00 to Sunday 01:00 for orders-svc on app only.
windows := [
	{"name": "sunday-drill", "weekdays": ["Sunday"], "start": "02:00", "end": "04:00"},
	{
		"name": "saturday-night",
		"weekdays": ["saturday"],
		"start": "23:00",
		"end": "01:00",
		"services": ["orders-svc"],
		"databases": ["app"],
	},
]

time := {
	"unix_ns": 1795820100000000000,
	"rfc3339": "2026-11-27T22:55:00Z",
	"weekday": "Friday",
	"hour": 22,
	"minute": 55,
	"tz": "UTC",
}

identity(name) := {"name": name, "method": "scram-sha-256", "claims": {}, "cert": null}

connect_input := {
	"identity": identity("orders-svc"),
	"client": {"addr": "10.1.2.3", "port": 51544, "tls": true},
	"request": {"database": "app", "role": null, "application_name": "orders-api"},
	"time": time,
	"proxy": {"env": "prod", "instance": "rolegate-1"},
}

# A connect input for `name`, with `changes` merged in (recursively).
connect(name, changes) := object.union(object.union(connect_input, {"identity": identity(name)}), changes)

no_flags := {
	"data_modifying_cte": false,
	"into": false,
	"locking": false,
	"copy_program": false,
	"copy_file": false,
}

# A statement input: `role` runs `command`, with `changes` merged in (recursively).
statement(role, command, changes) := object.union(
	{
		"identity": identity("orders-svc"),
		"client": {"addr": "10.1.2.3", "port": 51544, "tls": true},
		"time": time,
		"proxy": {"env": "prod", "instance": "rolegate-1"},
		"session": {"role": role, "database": "app", "in_transaction": false},
		"statement": {
			"sql": "-- (facts only)",
			"command": command,
			"protocol": "simple",
			"tables": [],
			"functions": [],
			"columns": [],
			"flags": no_flags,
			"parameter": null,
		},
	},
	changes,
)

reads(name) := {"statement": {"tables": [{"schema": null, "name": name, "access": ["read"]}]}}

writes(name) := {"statement": {"tables": [{"schema": null, "name": name, "access": ["write"]}]}}

calls(name) := {"statement": {"functions": [{"schema": null, "name": name}]}}

at(weekday, hour, minute) := {"time": {"weekday": weekday, "hour": hour, "minute": minute}}
