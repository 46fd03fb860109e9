package rolegate.text_test

import data.rolegate.text

test_of_keeps_strings if text.of("app_reader") == "app_reader"

test_of_renders_other_values_as_json if {
	text.of(42) == "42"
	text.of(null) == "null"
	text.of(["a"]) == `["a"]`
}

test_field_reads_present_keys if text.field({"rule": "x"}, "rule", "fallback") == "x"

test_field_falls_back if {
	text.field({}, "rule", "fallback") == "fallback"
	text.field("not an object", "rule", "fallback") == "fallback"
}

test_field_renders_non_strings if text.field({"rule": 7}, "rule", "fallback") == "7"
