package rolegate.write_windows_test

import data.rolegate.fixtures_test as f
import data.rolegate.write_windows

# orders-svc writes on weekdays 08:00-18:00 and Saturday night across midnight;
# batch-svc never writes (an empty list); reporting-svc has no windows.
services := {
	"orders-svc": object.union(f.services["orders-svc"], {"write_windows": [
		{"name": "office-hours", "weekdays": ["Monday", "Tuesday", "Wednesday", "Thursday", "friday"], "start": "08:00", "end": "18:00"},
		{"weekdays": ["Saturday"], "start": "22:00", "end": "02:00"},
	]}),
	"batch-svc": object.union(f.services["orders-svc"], {"write_windows": []}),
	"daily-svc": object.union(f.services["orders-svc"], {"write_windows": [{"start": "06:00", "end": "07:00"}]}),
	"reporting-svc": f.services["orders-svc"],
}

rules(doc) := result if {
	result := {d.rule | some d in write_windows.denials} with input as doc
		with data.services as services
		with data.roles as f.roles
}

reasons(doc) := result if {
	result := {d.reason | some d in write_windows.denials} with input as doc
		with data.services as services
		with data.roles as f.roles
}

write_at(weekday, hour, minute) := f.statement("app_writer", "DELETE", object.union(f.writes("orders"), f.at(weekday, hour, minute)))

as_service(doc, name) := object.union(doc, {"identity": {"name": name}})

test_writes_inside_a_window_pass if {
	rules(write_at("Monday", 8, 0)) == set()
	rules(write_at("Friday", 17, 59)) == set()
}

test_writes_outside_every_window_are_denied if {
	rules(write_at("Monday", 7, 59)) == {"service-write-window"}
	rules(write_at("Friday", 18, 0)) == {"service-write-window"}
	rules(write_at("Sunday", 12, 0)) == {"service-write-window"}
}

test_reason_names_the_windows_and_the_time if {
	reasons(write_at("Sunday", 9, 5)) == {concat("", [
		"orders-svc writes only inside its write windows ",
		"(office-hours: Monday/Tuesday/Wednesday/Thursday/friday 08:00-18:00, Saturday 22:00-02:00); ",
		"now is Sunday 09:05 UTC",
	])}
	reasons(object.union(write_at("Monday", 23, 30), {"identity": {"name": "daily-svc"}})) == {"daily-svc writes only inside its write windows (daily 06:00-07:00); now is Monday 23:30 UTC"}
}

test_window_across_midnight if {
	rules(write_at("Saturday", 21, 59)) == {"service-write-window"}
	rules(write_at("Saturday", 23, 0)) == set()
	rules(write_at("Sunday", 1, 59)) == set()
	rules(write_at("Sunday", 2, 0)) == {"service-write-window"}
}

test_window_without_weekdays_is_daily if {
	rules(as_service(write_at("Wednesday", 6, 30), "daily-svc")) == set()
	rules(as_service(write_at("Sunday", 6, 30), "daily-svc")) == set()
	rules(as_service(write_at("Sunday", 7, 0), "daily-svc")) == {"service-write-window"}
}

test_reads_go_on_outside_the_windows if {
	doc := f.statement("app_writer", "SELECT", object.union(f.reads("orders"), f.at("Sunday", 12, 0)))
	rules(doc) == set()
}

test_every_write_class_is_held_to_the_windows if {
	ddl := f.statement("app_admin", "CREATE TABLE", f.at("Sunday", 12, 0))
	rules(ddl) == {"service-write-window"}
	locking := f.statement("app_writer", "SELECT", object.union({"statement": {"flags": {"locking": true}}}, f.at("Sunday", 12, 0)))
	rules(locking) == {"service-write-window"}
}

test_an_empty_list_opens_no_window if {
	rules(as_service(write_at("Monday", 9, 0), "batch-svc")) == {"service-write-window"}
	reasons(as_service(write_at("Monday", 9, 0), "batch-svc")) == {"batch-svc writes only inside its write windows (); now is Monday 09:00 UTC"}
}

test_services_without_windows_write_at_any_time if {
	rules(as_service(write_at("Sunday", 3, 0), "reporting-svc")) == set()
	rules(as_service(write_at("Sunday", 3, 0), "nobody")) == set()
}

test_malformed_windows_fail_closed_with_a_reason if {
	odd := {"orders-svc": {"write_windows": ["always", {"name": 7, "weekdays": ["Monday"], "start": 8}]}}
	denied := {d.reason | some d in write_windows.denials} with input as write_at("Monday", 9, 0)
		with data.services as odd
		with data.roles as f.roles
	denied == {`orders-svc writes only inside its write windows (daily ?-?, 7: Monday 8-?); now is Monday 09:00 UTC`}
}

test_two_digits if {
	write_windows.two_digits(0) == "00"
	write_windows.two_digits(9) == "09"
	write_windows.two_digits(23) == "23"
}
