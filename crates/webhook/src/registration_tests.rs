use super::*;

fn registration(endpoint: Endpoint, selector: &str) -> Registration {
    Registration {
        name: CONFIGURATION_NAME.into(),
        endpoint,
        namespace_selector: parse_namespace_selector(selector).unwrap(),
        operator_namespace: "sidecar-system".into(),
        timeout_seconds: 3,
    }
}

#[test]
fn the_configuration_fails_open_and_leaves_system_pods_alone() {
    let service = Endpoint::Service("sidecar-system".into(), "webhook".into(), 443);
    let c = configuration(&registration(service, ""), Some("PEM"));
    let hooks = c.webhooks.unwrap();
    assert_eq!(hooks.len(), 1);
    let w = &hooks[0];
    assert_eq!(w.name, WEBHOOK_NAME);
    assert_eq!(
        w.failure_policy.as_deref(),
        Some("Ignore"),
        "a Pod never waits for the operator"
    );
    assert_eq!(w.side_effects, "None", "dry runs show the injection");
    assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
    assert_eq!(w.timeout_seconds, Some(3));
    let rules = w.rules.clone().unwrap();
    assert_eq!(rules[0].operations, Some(vec!["CREATE".to_string()]));
    assert_eq!(rules[0].resources, Some(vec!["pods".to_string()]));
    let ns = w
        .namespace_selector
        .clone()
        .unwrap()
        .match_expressions
        .unwrap();
    let excluded = ns[0].values.clone().unwrap();
    for n in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "sidecar-system",
    ] {
        assert!(
            excluded.contains(&n.to_string()),
            "{n} left alone: {excluded:?}"
        );
    }
    let objects = w
        .object_selector
        .clone()
        .unwrap()
        .match_expressions
        .unwrap();
    assert_eq!(
        objects[0].key, LABEL_MANAGED_BY,
        "companion sidecars are not sent"
    );
    let service = w.client_config.service.clone().unwrap();
    assert_eq!(
        (service.name.as_str(), service.path.as_deref()),
        ("webhook", Some(PATH))
    );
    assert_eq!(
        w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
        Some(b"PEM".to_vec())
    );
    let conditions = w.match_conditions.clone().unwrap();
    assert!(
        conditions[0].expression.contains(ANNOTATION_INJECT),
        "opted-out Pods are not sent"
    );
}

#[test]
fn beside_a_cluster_it_points_at_a_url() {
    let r = registration(Endpoint::Url("https://127.0.0.1:9443/".into()), "team=web");
    let c = configuration(&r, None);
    let w = &c.webhooks.unwrap()[0];
    assert_eq!(
        w.client_config.url.as_deref(),
        Some("https://127.0.0.1:9443/mutate")
    );
    assert!(w.client_config.service.is_none() && w.client_config.ca_bundle.is_none());
    let ns = w
        .namespace_selector
        .clone()
        .unwrap()
        .match_expressions
        .unwrap();
    assert_eq!(ns.len(), 2, "the system namespaces, then the selector");
    assert_eq!(
        (ns[1].key.as_str(), ns[1].operator.as_str()),
        ("team", "In")
    );
}

#[test]
fn namespace_selector_terms() {
    let cases = [
        ("a=b", vec![("a", "In", Some("b"))]),
        (
            "a==b, c!=d",
            vec![("a", "In", Some("b")), ("c", "NotIn", Some("d"))],
        ),
        (
            "x,!y",
            vec![("x", "Exists", None), ("y", "DoesNotExist", None)],
        ),
        ("", vec![]),
        (
            "team in (a, b),env notin (dev),x",
            vec![
                ("team", "In", Some("a,b")),
                ("env", "NotIn", Some("dev")),
                ("x", "Exists", None),
            ],
        ),
    ];
    for (text, want) in cases {
        let got: Vec<(String, String, Option<String>)> = parse_namespace_selector(text)
            .unwrap()
            .into_iter()
            .map(|r| (r.key, r.operator, r.values.map(|v| v.join(","))))
            .collect();
        let want: Vec<(String, String, Option<String>)> = want
            .into_iter()
            .map(|(k, o, v)| (k.to_string(), o.to_string(), v.map(str::to_string)))
            .collect();
        assert_eq!(got, want, "{text}");
    }
    for (bad, says) in [
        ("a b", "key=value"),
        ("team in (a,", "parenthesis open"),
        ("team in a)", "never opened"),
        ("team in (a,,b)", "empty value"),
        ("team in ()", "empty value"),
        ("team is (a)", "key in (a,b)"),
    ] {
        let err = parse_namespace_selector(bad).unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
