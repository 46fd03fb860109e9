# METADATA
# title: dangerous functions and commands
# description: |
#   Denied for every role, admin included, because they reach past the
#   database (server files, programs, outbound connections), hide SQL from
#   rolegate's parser, or undo the role and parser settings rolegate pinned:
#     denied-function      data.catalog.denied_functions / denied_function_prefixes
#     dynamic-set-config   set_config() whose parameter is not a literal (or
#                          several calls naming different parameters)
#     copy-program         COPY … PROGRAM
#     copy-server-file     COPY to or from a file on the database server
#     role-switch          SET ROLE, SET SESSION AUTHORIZATION, DISCARD ALL,
#                          SET / RESET / set_config() of role or session_authorization
#     parser-differential  SET client_encoding / standard_conforming_strings
#     protected-parameter  other data.catalog.parameters entries
#     pg-settings-write    writes to pg_settings
#     forbidden-command    ALTER SYSTEM, LOAD, CREATE EXTENSION, …
#   and for every role but admin kinds:
#     admin-function       data.catalog.admin_functions (pg_terminate_backend, …)
# schemas:
#   - input: schema.statement_input
package rolegate.dangerous

import data.rolegate.text

denials contains {
	"priority": 20,
	"rule": "denied-function",
	"reason": concat("", [f.name, "() ", text.of(reason)]),
} if {
	some f in input.statement.functions
	reason := data.catalog.denied_functions[f.name]
}

denials contains {
	"priority": 20,
	"rule": "denied-function",
	"reason": concat("", [f.name, "() ", text.of(reason)]),
} if {
	some f in input.statement.functions
	some prefix, reason in data.catalog.denied_function_prefixes
	startswith(f.name, prefix)
}

denials contains {
	"priority": 21,
	"rule": "dynamic-set-config",
	"reason": "set_config() with a parameter name that is not a literal, or several set_config() calls naming different parameters: rolegate cannot tell what it changes",
} if {
	input.statement.parameter == null
	some f in input.statement.functions
	f.name == "set_config"
}

denials contains {
	"priority": 30,
	"rule": "copy-program",
	"reason": "COPY … PROGRAM runs a shell command on the database server",
} if {
	input.statement.flags.copy_program == true
}

denials contains {
	"priority": 31,
	"rule": "copy-server-file",
	"reason": "COPY to or from a file on the database server; use COPY … FROM STDIN / TO STDOUT",
} if {
	input.statement.flags.copy_file == true
}

# SET, RESET and set_config() of a protected parameter; SHOW only reads it.
denials contains {
	"priority": 40,
	"rule": text.field(entry, "rule", "forbidden-command"),
	"reason": text.field(entry, "reason", "denied by data.catalog"),
} if {
	input.statement.command != "SHOW"
	entry := data.catalog.parameters[input.statement.parameter]
}

denials contains {
	"priority": 41,
	"rule": text.field(entry, "rule", "forbidden-command"),
	"reason": text.field(entry, "reason", "denied by data.catalog"),
} if {
	entry := data.catalog.forbidden_commands[input.statement.command]
}

denials contains {
	"priority": 42,
	"rule": text.field(entry, "rule", "forbidden-command"),
	"reason": text.field(entry, "reason", "denied by data.catalog"),
} if {
	some table in input.statement.tables
	entry := data.catalog.protected_tables[table.name]
	"write" in table.access
}

admin if data.catalog.kinds[data.roles[input.session.role].kind].admin == true

denials contains {
	"priority": 25,
	"rule": "admin-function",
	"reason": concat("", [f.name, "() ", text.of(reason)]),
} if {
	some f in input.statement.functions
	reason := data.catalog.admin_functions[f.name]
	not admin
}
