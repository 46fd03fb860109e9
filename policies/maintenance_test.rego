package rolegate.maintenance_test

import data.rolegate.fixtures_test as f
import data.rolegate.maintenance

rules(doc) := result if {
	result := {d.rule | some d in maintenance.denials} with input as doc
		with data.roles as f.roles
		with data.maintenance_windows as f.windows
}

# A writer's DELETE at the given local time.
write_at(weekday, hour, minute) := f.statement("app_writer", "DELETE", object.union(f.writes("orders"), f.at(weekday, hour, minute)))

test_same_day_window_boundaries if {
	rules(write_at("Sunday", 1, 59)) == set()
	rules(write_at("Sunday", 2, 0)) == {"maintenance-window"}
	rules(write_at("Sunday", 3, 59)) == {"maintenance-window"}
	rules(write_at("Sunday", 4, 0)) == set()
}

test_window_only_on_its_weekdays if {
	rules(write_at("Monday", 2, 30)) == set()
}

test_reads_go_on_inside_a_window if {
	rules(f.statement("app_reader", "SELECT", object.union(f.reads("orders"), f.at("Sunday", 3, 0)))) == set()
}

test_every_write_class_is_paused if {
	doc := f.statement("app_admin", "CREATE TABLE", f.at("Sunday", 3, 0))
	rules(doc) == {"maintenance-window"}
	locked := f.statement("app_writer", "SELECT", object.union({"statement": {"flags": {"locking": true}}}, f.at("Sunday", 3, 0)))
	rules(locked) == {"maintenance-window"}
}

test_window_across_midnight if {
	rules(write_at("Saturday", 22, 59)) == set()
	rules(write_at("Saturday", 23, 0)) == {"maintenance-window"}
	rules(write_at("Sunday", 0, 59)) == {"maintenance-window"}
	rules(write_at("Sunday", 1, 0)) == set()
	rules(write_at("Friday", 23, 30)) == set()
	rules(write_at("Saturday", 0, 30)) == set()
}

test_window_limited_to_services_and_databases if {
	other_service := object.union(write_at("Saturday", 23, 30), {"identity": {"name": "dba"}})
	rules(other_service) == set()
	other_database := object.union(write_at("Saturday", 23, 30), {"session": {"database": "analytics"}})
	rules(other_database) == set()
}

test_window_without_weekdays_is_daily_and_24_00_ends_the_day if {
	windows := [{"name": "evening", "start": "20:00", "end": "24:00"}]
	late := write_at("Wednesday", 23, 59)
	{d.rule | some d in maintenance.denials} == {"maintenance-window"} with input as late
		with data.roles as f.roles
		with data.maintenance_windows as windows
	early := write_at("Wednesday", 19, 59)
	count(maintenance.denials) == 0 with input as early
		with data.roles as f.roles
		with data.maintenance_windows as windows
}

test_reason_names_the_window if {
	some d in maintenance.denials with input as write_at("Sunday", 2, 0)
		with data.roles as f.roles
		with data.maintenance_windows as f.windows
	d.reason == "writes are paused during the maintenance window sunday-drill (02:00-04:00 UTC)"
}

test_malformed_clock_never_opens if {
	windows := [{"name": "bad", "start": "2am", "end": "04:00"}]
	count(maintenance.denials) == 0 with input as write_at("Sunday", 3, 0)
		with data.roles as f.roles
		with data.maintenance_windows as windows
}
