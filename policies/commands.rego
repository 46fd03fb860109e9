# METADATA
# title: commands by role kind
# description: |
#   What each kind of role may run. data.roles maps a PostgreSQL role to its
#   kind (reader, writer, admin); data.catalog.commands maps a command tag to
#   a class (read, session, write, ddl, dcl, code, maintenance, or copy);
#   data.catalog.kinds lists the classes each kind may run.
#   A read-class command that writes anywhere in its tree (a data-modifying
#   CTE, EXPLAIN ANALYZE or PREPARE of a DELETE, FOR UPDATE, a call of one of
#   data.catalog.write_functions such as setval) is a write;
#   SELECT INTO is DDL. COPY is a read only when every table it touches is
#   read (COPY … TO STDOUT); otherwise it is a write.
# schemas:
#   - input: schema.statement_input
package rolegate.commands

import data.rolegate.text

command := input.statement.command

# The command's class before looking at the tree; undefined for an unknown command.
base_class := data.catalog.commands[command]

kind := data.roles[input.session.role].kind

writes_table if {
	some table in input.statement.tables
	"write" in table.access
}

# Anything in the tree that a read-only transaction would refuse.
writes_in_tree if writes_table

writes_in_tree if input.statement.flags.data_modifying_cte == true

writes_in_tree if input.statement.flags.locking == true

# A call of a function that changes state (nextval, setval, pg_notify, …):
# `SELECT setval('s', 1)` is a write in SELECT's clothing.
writes_in_tree if {
	some f in input.statement.functions
	data.catalog.write_functions[f.name]
}

copy_reads_only if {
	count(input.statement.tables) > 0
	not writes_in_tree
}

# The effective class of the statement.
class := "read" if {
	base_class == "copy"
	copy_reads_only
} else := "write" if {
	base_class == "copy"
} else := "ddl" if {
	input.statement.flags.into == true
	data.catalog.classes[base_class].writes == false
} else := "write" if {
	writes_in_tree
	data.catalog.classes[base_class].writes == false
} else := base_class

# True if the statement changes anything: what a maintenance window pauses.
writes if data.catalog.classes[class].writes == true

allowed if class in data.catalog.kinds[kind].allows

denials contains {
	"priority": 70,
	"rule": "unknown-command",
	"reason": concat("", ["command ", command, " is not in data.catalog.commands"]),
} if {
	not base_class
}

denials contains {
	"priority": 80,
	"rule": text.field(data.catalog.classes[class], "deny_rule", "command-not-allowed"),
	"reason": concat("", [
		input.session.role, " is a ", text.of(kind), " role and ", command,
		" here is ", text.field(data.catalog.classes[class], "label", text.of(class)),
	]),
} if {
	kind
	not allowed
}

grant := {
	"allow": true,
	"rule": concat("", ["allow-", text.of(class)]),
	"reason": concat("", [input.session.role, " (", text.of(kind), ") may run ", command]),
} if {
	allowed
}
