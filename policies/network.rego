# METADATA
# title: network
# description: |
#   Where a service may connect from, and how. A service entry's cidrs lists
#   the IPv4 and IPv6 ranges its clients may come from (a missing or empty list
#   admits nobody); require_tls: true refuses clients without TLS.
#   input.client.addr arrives normalised: an IPv4-mapped IPv6 address
#   (::ffff:10.1.2.3) is already dotted IPv4, so IPv4 ranges match it.
# schemas:
#   - input: schema.connect_input
package rolegate.network

service := data.services[input.identity.name]

# True if one of the service's ranges holds the client address. An invalid
# range or address makes net.cidr_contains undefined: no match, so a deny.
address_allowed if {
	some cidr in service.cidrs
	net.cidr_contains(cidr, input.client.addr)
}

denials contains {
	"priority": 40,
	"rule": "client-address-not-allowed",
	"reason": concat("", ["client address ", input.client.addr, " is outside the ranges allowed for ", input.identity.name]),
} if {
	service
	not address_allowed
}

denials contains {
	"priority": 45,
	"rule": "tls-required",
	"reason": concat("", [input.identity.name, " must connect with TLS"]),
} if {
	service.require_tls == true
	not tls
}

tls if input.client.tls == true
