# METADATA
# title: per-service write windows
# description: |
#   A service entry may limit its writes to windows of the week, as data:
#     "write_windows": [{"weekdays": ["Monday", "Friday"], "start": "08:00", "end": "18:00"}]
#   A statement that writes (see rolegate.commands.writes: DML, DDL, locking,
#   write functions …) outside every window is denied with rule
#   service-write-window; reads go on at any time. Windows read as maintenance
#   windows do (and are evaluated by the same code): weekdays optional (missing
#   means every day, names in any case), start inclusive, end exclusive,
#   "24:00" is midnight, an end before the start crosses midnight, all in the
#   proxy's configured zone (input.time). An optional name is shown in reasons.
#   An empty list opens no window: the service never writes.
# schemas:
#   - input: schema.statement_input
package rolegate.write_windows

import data.rolegate.commands
import data.rolegate.maintenance
import data.rolegate.text

service := data.services[input.identity.name]

windows := service.write_windows

open if {
	some window in windows
	maintenance.active(window)
}

# "Monday/Friday 08:00-18:00" or "daily 08:00-18:00", prefixed by the name if any.
describe(window) := concat("", [label(window), days(window), " ", text.field(window, "start", "?"), "-", text.field(window, "end", "?")])

label(window) := concat("", [text.of(window.name), ": "]) if {
	window.name
} else := ""

days(window) := concat("/", [text.of(day) | some day in window.weekdays]) if {
	is_array(window.weekdays)
} else := "daily"

# Two digits, for the time in reasons.
two_digits(n) := concat("", ["0", format_int(n, 10)]) if {
	n < 10
} else := format_int(n, 10)

denials contains {
	"priority": 88,
	"rule": "service-write-window",
	"reason": concat("", [
		input.identity.name, " writes only inside its write windows (",
		concat(", ", [describe(window) | some window in windows]), "); now is ",
		input.time.weekday, " ", two_digits(input.time.hour), ":", two_digits(input.time.minute), " ", input.time.tz,
	]),
} if {
	windows
	commands.writes
	not open
}
