# METADATA
# title: read-only maintenance windows
# description: |
#   Inside a window every statement that writes (see rolegate.commands.writes)
#   is denied with rule maintenance-window; reads go on. A window of
#   data.maintenance_windows:
#     name      shown in the reason
#     weekdays  optional: day names as in input.time.weekday ("Sunday"), any case;
#               missing means every day
#     start     "HH:MM", inclusive, in the proxy's configured zone (input.time)
#     end       "HH:MM", exclusive; "24:00" is midnight; an end before the start
#               crosses midnight into the next day
#     services  optional: identity names the window applies to (default: all)
#     databases optional: databases the window applies to (default: all)
#   The wasm target has no clock (time.now_ns): the time comes in input.time.
# schemas:
#   - input: schema.statement_input
package rolegate.maintenance

import data.rolegate.commands
import data.rolegate.text

# Minutes since midnight, local to the proxy's configured zone.
now_minute := (input.time.hour * 60) + input.time.minute

today := lower(input.time.weekday)

# The day before today, from a data table: a 7-entry object literal here would
# be rebuilt on every evaluation in wasm.
yesterday := data.catalog.previous_day[today]

# "HH:MM" → minutes since midnight.
clock(hhmm) := (to_number(parts[0]) * 60) + to_number(parts[1]) if {
	parts := split(hhmm, ":")
	count(parts) == 2
}

on_day(window, _) if not window.weekdays

on_day(window, day) if {
	some name in window.weekdays
	lower(name) == day
}

applies(window) if {
	applies_to_service(window)
	applies_to_database(window)
}

applies_to_service(window) if not window.services

applies_to_service(window) if input.identity.name in window.services

applies_to_database(window) if not window.databases

applies_to_database(window) if input.session.database in window.databases

# The day test comes first in each body: on the other days of the week no
# clock is parsed (measured: parsing first cost ~3 µs per write).

# A window that opened today: start <= now < end, or, across midnight, now >= start.
active(window) if {
	on_day(window, today)
	start := clock(window.start)
	end := clock(window.end)
	start <= now_minute
	opened_today_still_open(start, end)
}

# A window across midnight that opened yesterday: now < end.
active(window) if {
	on_day(window, yesterday)
	end := clock(window.end)
	clock(window.start) > end
	now_minute < end
}

opened_today_still_open(start, end) if {
	start < end
	now_minute < end
}

opened_today_still_open(start, end) if start > end

denials contains {
	"priority": 90,
	"rule": "maintenance-window",
	"reason": concat("", [
		"writes are paused during the maintenance window ", text.field(window, "name", "(unnamed)"),
		" (", window.start, "-", window.end, " ", input.time.tz, ")",
	]),
} if {
	commands.writes
	some window in data.maintenance_windows
	applies(window)
	active(window)
}
