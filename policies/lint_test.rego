package rolegate.lint_test

import data.rolegate.fixtures_test as f
import data.rolegate.lint

# The shipped data (policies/data.json + policies/catalog/data.json) is clean.
test_shipped_data_is_clean if {
	count(lint.errors) == 0
}

test_fixture_services_report_their_flaws if {
	errors := lint.errors with data.services as f.services with data.roles as f.roles
	errors == {
		`roles["ghost"].kind poltergeist is not a kind of data.catalog.kinds`,
		`services["bad-default"].default_role app_writer is not among its roles`,
		`services["no-env"].env must be a non-empty string`,
		`services["no-cidrs"].cidrs must be an array of CIDR ranges (none admits no client)`,
	}
}

test_malformed_service_fields if {
	services := {"t": "not an object", "s": {
		"env": "prod",
		"roles": [],
		"databases": "app",
		"cidrs": ["10.0.0.1", "10.0.0.0/33"],
		"methods": ["password"],
		"require_tls": "yes",
		"default_role": "r",
	}}
	errors := lint.errors with data.services as services with data.roles as {"r": {"kind": "reader"}}
	errors == {
		`services["s"].roles must be a non-empty array of role names`,
		`services["s"].default_role r is not among its roles`,
		`services["s"].databases must be a non-empty array of database names`,
		`services["s"].cidrs: 10.0.0.1 is not a CIDR range like 10.0.0.0/8 or fd00::/8`,
		`services["s"].cidrs: 10.0.0.0/33 is not a CIDR range like 10.0.0.0/8 or fd00::/8`,
		`services["s"].methods: password is not one of scram-sha-256, cert, jwt`,
		`services["s"].require_tls must be true or false`,
		`services["t"] must be an object`,
	}
}

test_unknown_role_in_a_service if {
	services := {"s": {"env": "prod", "roles": ["nope"], "databases": ["app"], "cidrs": []}}
	lint.errors == {`services["s"].roles names "nope", which data.roles lacks`} with data.services as services
}

test_missing_documents if {
	errors := lint.errors with data.services as [] with data.roles as 1 with data.catalog as null
	errors == {
		"data.services is missing or not an object",
		"data.roles is missing or not an object",
		"data.catalog is missing (policies/catalog/data.json)",
	}
}

test_absent_documents if {
	errors := lint.errors with data.services as {} with data.roles as {} with data.catalog as {}
	every message in errors {
		startswith(message, "catalog.previous_day")
	}
	"data.services is missing or not an object" in lint.errors with data.services as null
}

test_malformed_windows if {
	windows := [
		{"start": "3:00", "end": "24:00"},
		"nightly",
		{"name": "w", "start": "02:00", "end": "25:00", "weekdays": ["Sun"], "services": []},
	]
	errors := lint.errors with data.maintenance_windows as windows
	errors == {
		"maintenance_windows[0].name must be a non-empty string",
		"maintenance_windows[1] must be an object",
		`maintenance_windows[0].start must be "HH:MM" (00:00 to 24:00)`,
		`maintenance_windows[2].end must be "HH:MM" (00:00 to 24:00)`,
		`maintenance_windows[2].weekdays: Sun is not a day name like "Sunday"`,
		"maintenance_windows[2].services must be an array of names",
	}
	lint.errors == {"maintenance_windows must be an array"} with data.maintenance_windows as {"name": "x"}
}

test_malformed_env_exceptions if {
	lint.errors == {`env_exceptions["staging"] must be an array of environment names`} with data.env_exceptions as {"staging": "dev"}
}

test_malformed_catalog if {
	catalog := {
		"classes": {"read": {"writes": "no"}},
		"kinds": {"reader": {"allows": ["read", "teleport"]}},
		"commands": {"SELECT": "read", "COPY": "copy", "FLY": "air"},
		"forbidden_commands": {"LOAD": {"rule": "forbidden-command"}},
		"parameters": {},
		"protected_tables": {},
		"denied_functions": {"pg_read_file": 1},
		"denied_function_prefixes": {},
		"admin_functions": {},
		"write_functions": {"nextval": ""},
		"previous_day": {"monday": "sunday", "tuesday": "monday", "wednesday": "tuesday", "thursday": "wednesday", "friday": "thursday", "saturday": "friday"},
	}
	errors := lint.errors with data.catalog as catalog with data.roles as {} with data.services as {}
	errors == {
		`catalog.commands["FLY"]: class air is not in catalog.classes`,
		`catalog.kinds["reader"].allows: teleport is not in catalog.classes`,
		`catalog.classes["read"] needs writes (boolean), deny_rule and label (strings)`,
		`catalog.forbidden_commands["LOAD"] needs a rule and a reason (strings)`,
		`catalog.denied_functions["pg_read_file"] must be a reason (string)`,
		`catalog.write_functions["nextval"] must be a reason (string)`,
		`catalog.previous_day["sunday"] must be the day before it (maintenance windows across midnight need it)`,
	}
}
