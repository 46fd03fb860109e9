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

# A sound service entry to add one mistake to.
sound := {
	"env": "prod",
	"roles": ["app_reader"],
	"default_role": "app_reader",
	"databases": ["app"],
	"cidrs": ["10.0.0.0/8"],
}

service_errors(entry) := result if {
	result := lint.errors with data.services as {"s": entry} with data.roles as {"app_reader": {"kind": "reader"}}
}

test_misspelt_service_key_names_the_key_and_the_likely_one if {
	service_errors(object.union(sound, {"require_tl": true})) == {`unknown-key: services["s"].require_tl is not a key the library reads (did you mean require_tls?)`}
	service_errors(object.union(sound, {"Databse": ["x"]})) == {`unknown-key: services["s"].Databse is not a key the library reads (did you mean databases?)`}
	service_errors(object.union(sound, {"dafault_role": "x", "zone": "eu"})) == {
		`unknown-key: services["s"].dafault_role is not a key the library reads (did you mean default_role?)`,
		`unknown-key: services["s"].zone is not a key the library reads (known keys: cidrs, custom, databases, default_role, description, env, methods, require_tls, roles, tables, write_windows)`,
	}
}

test_every_documented_service_key_is_accepted if {
	full := object.union(sound, {
		"description": "d",
		"methods": ["cert"],
		"require_tls": true,
		"tables": {"allow": ["public.orders", "customers"], "write": ["public.orders"]},
		"write_windows": [{"name": "w", "description": "d", "weekdays": ["Monday"], "start": "08:00", "end": "18:00"}],
		"custom": {"anything": {"goes": ["here"]}},
	})
	service_errors(full) == set()
}

test_unknown_keys_in_nested_objects if {
	entry := object.union(sound, {
		"tables": {"allow": ["orders"], "wirte": ["orders"], "xallow": []},
		"write_windows": [{"from": "08:00", "start": "08:00", "end": "09:00"}],
	})
	service_errors(entry) == {
		`unknown-key: services["s"].tables.wirte is not a key the library reads (did you mean write?)`,
		`unknown-key: services["s"].tables.xallow is not a key the library reads (did you mean allow?)`,
		`unknown-key: services["s"].write_windows[0].from is not a key the library reads (known keys: description, end, name, start, weekdays)`,
	}
	roles := lint.errors with data.roles as object.union(data.roles, {"r": {"kind": "reader", "knd": 1}})
	roles == {`unknown-key: roles["r"].knd is not a key the library reads (did you mean kind?)`}
	windows := lint.errors with data.maintenance_windows as [{"name": "w", "start": "01:00", "end": "02:00", "service": ["s"]}]
	windows == {`unknown-key: maintenance_windows[0].service is not a key the library reads (did you mean services?)`}
}

test_unknown_keys_in_the_catalog if {
	catalog := object.union(data.catalog, {
		"comands": {},
		"classes": {"read": {"writes": false, "deny_rule": "x", "label": "a read", "lable": "y"}},
		"kinds": {"reader": {"allows": ["read"], "admn": true}},
		"forbidden_commands": {"LOAD": {"rule": "x", "reason": "y", "reasn": "z"}},
	})
	errors := lint.errors with data.catalog as catalog
	errors == {
		`unknown-key: catalog.comands is not a key the library reads (did you mean commands?)`,
		`unknown-key: catalog.classes["read"].lable is not a key the library reads (did you mean label?)`,
		`unknown-key: catalog.kinds["reader"].admn is not a key the library reads (did you mean admin?)`,
		`unknown-key: catalog.forbidden_commands["LOAD"].reasn is not a key the library reads (did you mean reason?)`,
	}
}

test_malformed_tables if {
	service_errors(object.union(sound, {"tables": ["orders"]})) == {`services["s"].tables must be an object with allow and/or write`}
	lists := object.union(sound, {"tables": {"allow": ["a.b.c", "", "public."], "write": "orders"}})
	service_errors(lists) == {
		`services["s"].tables.allow must be an array of table names like "orders" or "public.orders"`,
		`services["s"].tables.write must be an array of table names like "orders" or "public.orders"`,
	}
	service_errors(object.union(sound, {"tables": {"allow": [7]}})) == {`services["s"].tables.allow must be an array of table names like "orders" or "public.orders"`}
}

test_write_list_must_be_admitted_by_the_allow_list if {
	entry := object.union(sound, {"tables": {
		"allow": ["public.orders", "customers", "crm.leads"],
		"write": ["public.orders", "sales.customers", "leads", "public.payments", "payments"],
	}})
	service_errors(entry) == {
		`services["s"].tables.write names "public.payments", which tables.allow does not admit`,
		`services["s"].tables.write names "payments", which tables.allow does not admit`,
	}

	# without an allow list, the write list stands alone
	service_errors(object.union(sound, {"tables": {"write": ["payments"]}})) == set()
}

test_malformed_write_windows if {
	service_errors(object.union(sound, {"write_windows": {"start": "08:00"}})) == {`services["s"].write_windows must be an array of windows (an empty one opens none)`}
	service_errors(object.union(sound, {"write_windows": []})) == set()
	windows := [
		"office",
		{"weekdays": ["Mon"], "start": "8:00", "end": "24:00"},
		{"weekdays": "Monday", "start": "08:00", "end": "09:00"},
	]
	service_errors(object.union(sound, {"write_windows": windows})) == {
		`services["s"].write_windows[0] must be an object`,
		`services["s"].write_windows[1].start must be "HH:MM" (00:00 to 24:00)`,
		`services["s"].write_windows[1].weekdays: Mon is not a day name like "Sunday"`,
		`services["s"].write_windows[2].weekdays must be an array of names`,
	}
}

test_misspelt_hooks_are_flagged_and_helpers_are_not if {
	hooks := {
		"deny_statment": set(),
		"deny": {"x"},
		"allow_statement": true,
		"dny_connect": set(),
		"deny_connect": set(),
		"deny_statement": set(),
		"pii_tables": {"customers"},
	}
	errors := lint.errors with data.rolegate.hooks as hooks
	errors == {
		"unknown-key: data.rolegate.hooks.deny_statment is not a hook the library reads (did you mean deny_connect or deny_statement?)",
		"unknown-key: data.rolegate.hooks.deny is not a hook the library reads (did you mean deny_connect or deny_statement?)",
		"unknown-key: data.rolegate.hooks.allow_statement is not a hook the library reads (known keys: deny_connect, deny_statement)",
		"unknown-key: data.rolegate.hooks.dny_connect is not a hook the library reads (did you mean deny_connect?)",
	}
}
