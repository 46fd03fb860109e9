package rolegate.session_test

import data.rolegate.fixtures_test as f
import data.rolegate.session

rules(doc) := result if {
	result := {d.rule | some d in session.denials} with input as doc
		with data.services as f.services
		with data.roles as f.roles
}

test_current_session_passes if {
	rules(f.statement("app_writer", "SELECT", {})) == set()
}

test_service_removed_by_a_reload if {
	rules(f.statement("app_reader", "SELECT", {"identity": {"name": "gone-svc"}})) == {"unknown-service"}
}

test_role_withdrawn_by_a_reload if {
	rules(f.statement("app_admin", "SELECT", {})) == {"role-not-allowed"}
}

test_database_withdrawn_by_a_reload if {
	rules(f.statement("app_reader", "SELECT", {"session": {"database": "analytics"}})) == {"database-not-allowed"}
}

test_role_without_kind if {
	rules(f.statement("ghost", "SELECT", {"identity": {"name": "ghost-role"}})) == {"unknown-role"}
}
