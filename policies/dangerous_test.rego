package rolegate.dangerous_test

import data.rolegate.dangerous
import data.rolegate.fixtures_test as f

rules(doc) := result if {
	result := {d.rule | some d in dangerous.denials} with input as doc with data.roles as f.roles
}

set_param(command, name) := {"statement": {"command": command, "parameter": name}}

test_file_and_network_functions_are_denied_for_every_role if {
	every role in ["app_reader", "app_writer", "app_admin"] {
		every name in [
			"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_waldir",
			"lo_import", "lo_export", "lo_get", "loread", "lowrite",
			"dblink", "dblink_exec", "dblink_connect", "pg_file_write",
			"query_to_xml", "ts_stat", "ts_rewrite",
			"table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
			"schema_to_xml", "schema_to_xml_and_xmlschema", "database_to_xml", "database_to_xmlschema",
		] {
			rules(f.statement(role, "SELECT", f.calls(name))) == {"denied-function"}
		}
	}
}

test_schema_qualified_functions_are_denied_too if {
	doc := f.statement("app_admin", "SELECT", {"statement": {"functions": [{"schema": "pg_catalog", "name": "pg_read_file"}]}})
	rules(doc) == {"denied-function"}
}

test_ordinary_functions_pass if {
	every name in ["now", "count", "lower", "current_setting", "pg_sleep", "jsonb_build_object", "currval", "cursor_to_xml", "xpath"] {
		rules(f.statement("app_reader", "SELECT", f.calls(name))) == set()
	}
}

test_set_config_of_role_is_a_role_switch if {
	doc := f.statement("app_admin", "SELECT", object.union(f.calls("set_config"), {"statement": {"parameter": "role"}}))
	rules(doc) == {"role-switch"}
	doc2 := f.statement("app_writer", "SELECT", object.union(f.calls("set_config"), {"statement": {"parameter": "session_authorization"}}))
	rules(doc2) == {"role-switch"}
}

test_set_config_of_a_harmless_parameter_passes if {
	doc := f.statement("app_reader", "SELECT", object.union(f.calls("set_config"), {"statement": {"parameter": "application_name"}}))
	rules(doc) == set()
}

test_set_config_with_a_computed_name_is_denied if {
	rules(f.statement("app_admin", "SELECT", f.calls("set_config"))) == {"dynamic-set-config"}
}

test_role_switch_commands_are_denied_for_every_role if {
	every role in ["app_reader", "app_admin"] {
		rules(f.statement(role, "SET ROLE", {})) == {"role-switch"}
		rules(f.statement(role, "SET", set_param("SET", "role"))) == {"role-switch"}
		rules(f.statement(role, "RESET", set_param("RESET", "role"))) == {"role-switch"}
		rules(f.statement(role, "RESET ROLE", {})) == {"role-switch"}
		rules(f.statement(role, "SET SESSION AUTHORIZATION", set_param("SET SESSION AUTHORIZATION", "session_authorization"))) == {"role-switch"}
		rules(f.statement(role, "DISCARD ALL", {})) == {"role-switch"}
	}
}

test_show_of_a_protected_parameter_passes if {
	rules(f.statement("app_reader", "SHOW", set_param("SHOW", "role"))) == set()
	rules(f.statement("app_reader", "SHOW", set_param("SHOW", "client_encoding"))) == set()
}

test_parser_differential_parameters_are_pinned if {
	rules(f.statement("app_admin", "SET", set_param("SET", "client_encoding"))) == {"parser-differential"}
	rules(f.statement("app_admin", "SET", set_param("SET", "standard_conforming_strings"))) == {"parser-differential"}
	rules(f.statement("app_reader", "RESET", set_param("RESET", "client_encoding"))) == {"parser-differential"}
}

test_other_protected_parameters if {
	rules(f.statement("app_admin", "SET", set_param("SET", "session_replication_role"))) == {"protected-parameter"}
}

test_harmless_set_passes if {
	every name in ["statement_timeout", "application_name", "search_path", "timezone", "work_mem"] {
		rules(f.statement("app_reader", "SET", set_param("SET", name))) == set()
	}
}

test_copy_program_and_server_files_are_denied_for_every_role if {
	rules(f.statement("app_admin", "COPY", {"statement": {"flags": {"copy_program": true}}})) == {"copy-program"}
	rules(f.statement("app_admin", "COPY", {"statement": {"flags": {"copy_file": true}}})) == {"copy-server-file"}
}

test_forbidden_commands_are_denied_for_admins_too if {
	every command in ["ALTER SYSTEM", "LOAD", "CREATE EXTENSION", "CREATE LANGUAGE", "CREATE TABLESPACE", "CREATE SUBSCRIPTION", "CREATE EVENT TRIGGER"] {
		rules(f.statement("app_admin", command, {})) == {"forbidden-command"}
	}
}

test_writing_pg_settings_is_denied if {
	rules(f.statement("app_admin", "UPDATE", f.writes("pg_settings"))) == {"pg-settings-write"}
	rules(f.statement("app_reader", "SELECT", f.reads("pg_settings"))) == set()
}

test_admin_functions_need_an_admin_kind if {
	rules(f.statement("app_writer", "SELECT", f.calls("pg_terminate_backend"))) == {"admin-function"}
	rules(f.statement("app_reader", "SELECT", f.calls("pg_logical_emit_message"))) == {"admin-function"}
	rules(f.statement("app_reader", "SELECT", f.calls("pg_reload_conf"))) == {"admin-function"}
	rules(f.statement("app_admin", "SELECT", f.calls("pg_terminate_backend"))) == set()
}

test_catalog_entries_with_missing_fields_still_deny if {
	doc := f.statement("app_admin", "LOAD", {})
	denials := dangerous.denials with input as doc with data.catalog.forbidden_commands as {"LOAD": {}}
	denials == {{"priority": 41, "rule": "forbidden-command", "reason": "denied by data.catalog"}}
}
