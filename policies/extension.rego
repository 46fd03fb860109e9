# METADATA
# title: the extension point
# description: |
#   Reads the author's package rolegate.hooks, if any, so that a new concern is
#   a new file, never an edit of rolegate.rego. In package rolegate.hooks
#   (any number of files):
#     deny_connect    denials of the connection (input: connect input)
#     deny_statement  denials of the statement (input: statement input)
#   each a set whose elements are
#     {"rule": id, "reason": text}            optionally with "priority" (a number,
#                                             default 100: after every shipped denial)
#     "text"                                  rule hook-denied, reason text
#   or a partial object {rule id: reason}, or a boolean (true: rule hook-denied).
#   Anything else (an element without a rule, a number …) denies with rule
#   hook-malformed: a hook that cannot be read never fails open. Without a
#   rolegate.hooks package both are undefined and add nothing.
#
#   The hook values are passed through functions: a function's argument has no
#   static type, so the type checker accepts every shape here whatever type an
#   author's rule has (iterating a boolean rule directly would not compile).
package rolegate.extension

import data.rolegate.text

default_priority := 100

default connect_denials := set()

connect_denials := denials_of(data.rolegate.hooks.deny_connect, "deny_connect")

default statement_denials := set()

statement_denials := denials_of(data.rolegate.hooks.deny_statement, "deny_statement")

# A set or an array: one denial per element.
denials_of(hook, name) := {denial(element, name) | some element in hook} if {
	is_set(hook)
} else := {denial(element, name) | some element in hook} if {
	is_array(hook)
} else := {{"priority": default_priority, "rule": text.of(rule), "reason": text.of(reason)} | some rule, reason in hook} if {
	is_object(hook)
} else := set() if {
	hook == false
} else := {{
	"priority": default_priority,
	"rule": "hook-denied",
	"reason": concat("", ["data.rolegate.hooks.", name, " is true"]),
}} if {
	hook == true
} else := {denial(hook, name)}

denial(element, name) := {"priority": priority(element), "rule": element.rule, "reason": text.field(element, "reason", element.rule)} if {
	is_object(element)
	is_string(element.rule)
	element.rule != ""
} else := {"priority": default_priority, "rule": "hook-denied", "reason": element} if {
	is_string(element)
} else := {
	"priority": default_priority,
	"rule": "hook-malformed",
	"reason": concat("", [
		"data.rolegate.hooks.", name, " holds ", text.of(element),
		", which is neither a reason nor an object with a rule",
	]),
}

priority(element) := element.priority if {
	is_number(element.priority)
} else := default_priority
