package rolegate.extension_test

import data.rolegate.extension

statement_hook(value) := result if {
	result := extension.statement_denials with data.rolegate.hooks.deny_statement as value
}

connect_hook(value) := result if {
	result := extension.connect_denials with data.rolegate.hooks.deny_connect as value
}

test_no_hooks_package_adds_nothing if {
	extension.statement_denials == set()
	extension.connect_denials == set()
}

test_objects_keep_their_rule_reason_and_priority if {
	statement_hook({{"rule": "no-pii", "reason": "customers.email is personal data", "priority": 15}}) == {{
		"priority": 15,
		"rule": "no-pii",
		"reason": "customers.email is personal data",
	}}
}

test_priority_and_reason_are_optional if {
	statement_hook({{"rule": "no-pii"}, {"rule": "late", "reason": "too late", "priority": "high"}}) == {
		{"priority": 100, "rule": "no-pii", "reason": "no-pii"},
		{"priority": 100, "rule": "late", "reason": "too late"},
	}
}

test_strings_are_reasons if {
	connect_hook({"batch jobs connect at night only"}) == {{
		"priority": 100,
		"rule": "hook-denied",
		"reason": "batch jobs connect at night only",
	}}
	statement_hook("read-only today") == {{"priority": 100, "rule": "hook-denied", "reason": "read-only today"}}
}

test_arrays_are_read_like_sets if {
	statement_hook(["a", {"rule": "b", "reason": "c"}]) == {
		{"priority": 100, "rule": "hook-denied", "reason": "a"},
		{"priority": 100, "rule": "b", "reason": "c"},
	}
}

test_partial_objects_map_rule_to_reason if {
	statement_hook({"no-pii": "customers.email is personal data", "odd": 7}) == {
		{"priority": 100, "rule": "no-pii", "reason": "customers.email is personal data"},
		{"priority": 100, "rule": "odd", "reason": "7"},
	}
}

test_booleans if {
	statement_hook(true) == {{"priority": 100, "rule": "hook-denied", "reason": "data.rolegate.hooks.deny_statement is true"}}
	connect_hook(true) == {{"priority": 100, "rule": "hook-denied", "reason": "data.rolegate.hooks.deny_connect is true"}}
	statement_hook(false) == set()
	statement_hook(set()) == set()
}

test_malformed_elements_deny if {
	statement_hook({7, {"reason": "no rule"}, {"rule": ""}}) == {
		{"priority": 100, "rule": "hook-malformed", "reason": "data.rolegate.hooks.deny_statement holds 7, which is neither a reason nor an object with a rule"},
		{"priority": 100, "rule": "hook-malformed", "reason": `data.rolegate.hooks.deny_statement holds {"reason":"no rule"}, which is neither a reason nor an object with a rule`},
		{"priority": 100, "rule": "hook-malformed", "reason": `data.rolegate.hooks.deny_statement holds {"rule":""}, which is neither a reason nor an object with a rule`},
	}
	connect_hook(null) == {{"priority": 100, "rule": "hook-malformed", "reason": "data.rolegate.hooks.deny_connect holds null, which is neither a reason nor an object with a rule"}}
}
