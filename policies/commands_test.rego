package rolegate.commands_test

import data.rolegate.commands
import data.rolegate.fixtures_test as f

# The decision of the commands package alone: its denial rule ids, else its grant's rule.
outcome(doc) := result if {
	result := {d.rule | some d in commands.denials} with input as doc with data.roles as f.roles
	count(result) > 0
} else := result if {
	result := {commands.grant.rule} with input as doc with data.roles as f.roles
}

class(doc) := result if {
	result := commands.class with input as doc with data.roles as f.roles
}

test_reader_runs_read_and_session_commands if {
	every command in ["SELECT", "SHOW", "EXPLAIN", "FETCH", "MOVE", "DECLARE CURSOR", "PREPARE", "EXECUTE"] {
		outcome(f.statement("app_reader", command, {})) == {"allow-read"}
	}
	every command in [
		"BEGIN", "START TRANSACTION", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE",
		"SET", "RESET", "LISTEN", "UNLISTEN", "CLOSE", "DEALLOCATE", "DISCARD PLANS", "DISCARD TEMP",
	] {
		outcome(f.statement("app_reader", command, {})) == {"allow-session"}
	}
}

test_reader_may_not_write if {
	every command in ["INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE TABLE", "COPY FROM", "CALL", "NOTIFY", "LOCK TABLE"] {
		outcome(f.statement("app_reader", command, {})) == {"read-only-role"}
	}
}

test_writer_writes if {
	every command in ["INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE TABLE", "COPY FROM", "CALL"] {
		outcome(f.statement("app_writer", command, f.writes("orders"))) == {"allow-write"}
	}
}

test_no_ddl_dcl_code_or_maintenance_outside_admin if {
	every role in ["app_reader", "app_writer"] {
		outcome(f.statement(role, "CREATE TABLE", {})) == {"no-ddl-outside-admin"}
		outcome(f.statement(role, "DROP TABLE", {})) == {"no-ddl-outside-admin"}
		outcome(f.statement(role, "GRANT", {})) == {"no-dcl-outside-admin"}
		outcome(f.statement(role, "ALTER ROLE", {})) == {"no-dcl-outside-admin"}
		outcome(f.statement(role, "DO", {})) == {"no-code-outside-admin"}
		outcome(f.statement(role, "CREATE FUNCTION", {})) == {"no-code-outside-admin"}
		outcome(f.statement(role, "CREATE PROCEDURE", {})) == {"no-code-outside-admin"}
		outcome(f.statement(role, "VACUUM", {})) == {"no-maintenance-outside-admin"}
	}
}

test_admin_runs_ddl_dcl_code_and_maintenance if {
	outcome(f.statement("app_admin", "CREATE TABLE", {})) == {"allow-ddl"}
	outcome(f.statement("app_admin", "ALTER TABLE", {})) == {"allow-ddl"}
	outcome(f.statement("app_admin", "GRANT", {})) == {"allow-dcl"}
	outcome(f.statement("app_admin", "DO", {})) == {"allow-code"}
	outcome(f.statement("app_admin", "VACUUM", {})) == {"allow-maintenance"}
	outcome(f.statement("app_admin", "SELECT", {})) == {"allow-read"}
}

test_writes_below_a_read_make_it_a_write if {
	class(f.statement("app_reader", "SELECT", f.writes("orders"))) == "write"
	class(f.statement("app_reader", "EXPLAIN", f.writes("orders"))) == "write"
	class(f.statement("app_reader", "PREPARE", f.writes("orders"))) == "write"
	class(f.statement("app_reader", "SELECT", {"statement": {"flags": {"data_modifying_cte": true}}})) == "write"
	class(f.statement("app_reader", "SELECT", {"statement": {"flags": {"locking": true}}})) == "write"
	outcome(f.statement("app_reader", "SELECT", {"statement": {"flags": {"locking": true}}})) == {"read-only-role"}
}

test_calls_of_write_functions_make_it_a_write if {
	every name in ["nextval", "setval", "pg_notify"] {
		class(f.statement("app_reader", "SELECT", f.calls(name))) == "write"
		outcome(f.statement("app_reader", "SELECT", f.calls(name))) == {"read-only-role"}
		outcome(f.statement("app_writer", "SELECT", f.calls(name))) == {"allow-write"}
	}
	doc := f.statement("app_reader", "SELECT", {"statement": {"functions": [{"schema": "pg_catalog", "name": "setval"}]}})
	outcome(doc) == {"read-only-role"}
	class(f.statement("app_reader", "SELECT", f.calls("currval"))) == "read"
}

test_select_into_is_ddl if {
	class(f.statement("app_writer", "SELECT", {"statement": {"flags": {"into": true}}})) == "ddl"
	outcome(f.statement("app_writer", "SELECT", {"statement": {"flags": {"into": true}}})) == {"no-ddl-outside-admin"}
}

test_plain_reads_stay_reads if {
	class(f.statement("app_reader", "SELECT", f.reads("orders"))) == "read"
	not commands.writes with input as f.statement("app_reader", "SELECT", f.reads("orders")) with data.roles as f.roles
	commands.writes with input as f.statement("app_writer", "DELETE", f.writes("orders")) with data.roles as f.roles
}

test_copy_to_stdout_is_a_read if {
	class(f.statement("app_reader", "COPY", f.reads("orders"))) == "read"
	outcome(f.statement("app_reader", "COPY", f.reads("orders"))) == {"allow-read"}
}

test_copy_from_stdin_is_a_write if {
	class(f.statement("app_reader", "COPY", f.writes("orders"))) == "write"
	outcome(f.statement("app_reader", "COPY", f.writes("orders"))) == {"read-only-role"}
	outcome(f.statement("app_writer", "COPY", f.writes("orders"))) == {"allow-write"}
}

test_copy_without_tables_is_a_write if {
	class(f.statement("app_reader", "COPY", {})) == "write"
}

test_unknown_command_is_denied if {
	outcome(f.statement("app_admin", "FROBNICATE", {})) == {"unknown-command"}
}

test_unknown_role_gets_neither_grant_nor_kind_denial if {
	doc := f.statement("nobody", "SELECT", {})
	count(commands.denials) == 0 with input as doc with data.roles as f.roles
	not commands.grant with input as doc with data.roles as f.roles
}

test_grant_reason_names_role_kind_and_command if {
	reason := commands.grant.reason with input as f.statement("app_reader", "SELECT", {}) with data.roles as f.roles
	reason == "app_reader (reader) may run SELECT"
}
