# METADATA
# title: text helpers
# description: |
#   Denial reasons are built with concat, which is undefined if any part is not
#   a string; a denial whose reason cannot be built would silently vanish. So
#   every value that comes from data (and may be malformed there) goes through
#   text.of, and table entries through text.field.
package rolegate.text

# of(x) is x if x is a string, else x as JSON.
of(x) := x if {
	is_string(x)
} else := json.marshal(x)

# field(entry, key, fallback) is entry[key] as text, or fallback if it is missing.
field(entry, key, fallback) := of(value) if {
	value := entry[key]
} else := fallback
