package rolegate.environment_test

import data.rolegate.environment
import data.rolegate.fixtures_test as f

rules(doc) := result if {
	result := {d.rule | some d in environment.denials} with input as doc
		with data.services as f.services
		with data.env_exceptions as f.env_exceptions
}

proxy(env) := {"proxy": {"env": env}}

test_same_environment_is_admitted if {
	rules(f.connect("orders-svc", proxy("prod"))) == set()
	rules(f.connect("dev-svc", proxy("dev"))) == set()
}

test_dev_service_is_refused_by_a_prod_proxy if {
	rules(f.connect("dev-svc", proxy("prod"))) == {"environment-mismatch"}
}

test_prod_service_is_refused_by_a_dev_proxy if {
	rules(f.connect("orders-svc", proxy("dev"))) == {"environment-mismatch"}
}

test_exception_admits_a_listed_environment if {
	rules(f.connect("dev-svc", proxy("staging"))) == set()
	rules(f.connect("orders-svc", proxy("staging"))) == {"environment-mismatch"}
}

test_service_without_env_is_refused if {
	rules(f.connect("no-env", proxy("prod"))) == {"environment-mismatch"}
	rules(f.connect("no-env", proxy(""))) == {"environment-mismatch"}
}
