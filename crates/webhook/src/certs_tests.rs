use super::*;

const T0: i64 = 1_800_000_000;

fn life() -> Lifetimes {
    Lifetimes {
        ca: Duration::from_secs(3000),
        serving: Duration::from_secs(300),
        overlap: Duration::from_secs(30),
    }
}

fn hosts() -> Hosts {
    Hosts {
        dns: vec!["webhook.sidecar-system.svc".into()],
        ips: vec!["127.0.0.1".parse().unwrap()],
    }
}

fn stored(next: bool, previous: bool, since: i64) -> Stored {
    let pem = |s: &str| Pair {
        cert: s.into(),
        key: s.into(),
    };
    Stored {
        ca: pem("ca"),
        next_ca: next.then(|| pem("next")),
        previous_ca: previous.then(|| "previous".into()),
        since,
        serving: pem("serving"),
    }
}

fn facts(ca: (i64, i64), serving: (i64, i64), fits: bool) -> Facts {
    let v = |(not_before, not_after)| Validity {
        not_before,
        not_after,
    };
    Facts {
        ca: v(ca),
        serving: v(serving),
        serving_fits: fits,
    }
}

#[test]
fn each_state_has_one_next_step() {
    let ca = (T0, T0 + 3000);
    let serving = (T0, T0 + 300);
    // (case, stored, facts, now, step)
    type Case<'a> = (&'a str, Option<Stored>, Facts, i64, Option<Step>);
    let cases: Vec<Case> = vec![
        (
            "nothing stored",
            None,
            facts(ca, serving, true),
            T0,
            Some(Step::Create),
        ),
        (
            "all fresh",
            Some(stored(false, false, T0)),
            facts(ca, serving, true),
            T0 + 10,
            None,
        ),
        (
            "serving a third from its end",
            Some(stored(false, false, T0)),
            facts(ca, serving, true),
            T0 + 200,
            Some(Step::RenewServing),
        ),
        (
            "serving for other names or another CA",
            Some(stored(false, false, T0)),
            facts(ca, serving, false),
            T0 + 10,
            Some(Step::RenewServing),
        ),
        (
            "CA a third from its end",
            Some(stored(false, false, T0)),
            facts(ca, (T0 + 2000, T0 + 2300), true),
            T0 + 2000,
            Some(Step::AddNextCa),
        ),
        (
            "next CA still in its overlap",
            Some(stored(true, false, T0 + 2000)),
            facts(ca, (T0 + 2000, T0 + 2300), true),
            T0 + 2029,
            None,
        ),
        (
            "next CA trusted long enough",
            Some(stored(true, false, T0 + 2000)),
            facts(ca, (T0 + 2000, T0 + 2300), true),
            T0 + 2030,
            Some(Step::PromoteNextCa),
        ),
        (
            "previous CA still in its overlap",
            Some(stored(false, true, T0 + 2030)),
            facts(ca, (T0 + 2030, T0 + 2330), true),
            T0 + 2059,
            None,
        ),
        (
            "previous CA retired long enough",
            Some(stored(false, true, T0 + 2030)),
            facts(ca, (T0 + 2030, T0 + 2330), true),
            T0 + 2060,
            Some(Step::DropPreviousCa),
        ),
        (
            "CA expired: nothing to keep",
            Some(stored(false, false, T0)),
            facts(ca, serving, true),
            T0 + 3000,
            Some(Step::Create),
        ),
    ];
    for (case, s, f, now, want) in cases {
        let got = plan(s.as_ref().map(|s| (s, f)), now, life());
        assert_eq!(got, want, "{case}");
    }
}

/// Issues real certificates and follows them through a whole CA lifetime, one check a
/// second: the serving certificate always fits, and every certificate served was signed
/// by a CA that the bundle of the step before already held (the API server trusts a CA
/// before any replica serves from it).
#[test]
fn a_whole_rotation_never_serves_from_an_untrusted_ca() {
    let life = Lifetimes {
        ca: Duration::from_secs(90),
        serving: Duration::from_secs(12),
        overlap: Duration::from_secs(5),
    };
    let hosts = hosts();
    let mut current: Option<Stored> = None;
    let mut bundle_before = String::new();
    let mut steps = Vec::new();
    for now in T0..T0 + 100 {
        loop {
            let with = current
                .as_ref()
                .map(|s| (s, super::facts(s, &hosts).unwrap()));
            let Some(step) = plan(with, now, life) else {
                break;
            };
            steps.push(step);
            current = Some(apply(step, current.as_ref(), now, life, &hosts).unwrap());
        }
        let s = current.as_ref().unwrap();
        let f = super::facts(s, &hosts).unwrap();
        assert!(f.serving_fits && !f.serving.due(now), "at +{}", now - T0);
        let signer = s.ca.cert.trim_end();
        if !bundle_before.is_empty() {
            assert!(
                bundle_before.contains(signer),
                "at +{}: served from a CA the API server did not trust yet ({steps:?})",
                now - T0
            );
        }
        bundle_before = s.bundle();
    }
    let count = |want: Step| steps.iter().filter(|s| **s == want).count();
    assert_eq!(count(Step::Create), 1, "{steps:?}");
    assert_eq!(count(Step::AddNextCa), 1, "{steps:?}");
    assert_eq!(count(Step::PromoteNextCa), 1, "{steps:?}");
    assert_eq!(count(Step::DropPreviousCa), 1, "{steps:?}");
    assert!(
        count(Step::RenewServing) >= 6,
        "every 8 s over 100 s: {steps:?}"
    );
}

#[test]
fn a_serving_certificate_names_what_it_is_for() {
    let ca = new_ca(T0, Duration::from_secs(3000)).unwrap();
    let s = Stored {
        serving: serving(&ca, &hosts(), T0, Duration::from_secs(300)).unwrap(),
        ca,
        next_ca: None,
        previous_ca: None,
        since: T0,
    };
    assert!(super::facts(&s, &hosts()).unwrap().serving_fits);
    let more = Hosts {
        dns: vec!["other.example".into()],
        ips: Vec::new(),
    };
    assert!(
        !super::facts(&s, &more).unwrap().serving_fits,
        "another host"
    );
    let other_ca = Stored {
        ca: new_ca(T0, Duration::from_secs(3000)).unwrap(),
        ..s.clone()
    };
    assert!(
        !super::facts(&other_ca, &hosts()).unwrap().serving_fits,
        "another CA"
    );
}

/// Lifetimes come from flags, `since` from a stored Secret: at their extremes no arithmetic
/// overflows (a panic in the certificate task, or a wrapped sum that reads "the overlap is
/// over" at once). An overlap too long to end never ends; a lifetime past what a certificate
/// can say is cut at its last second.
#[test]
fn extreme_lifetimes_and_times_never_overflow() {
    let longest = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(i64::MAX as u64),
        Duration::from_secs(i64::MAX as u64 + 1),
    ];
    let fresh = facts((T0, T0 + 3000), (T0, T0 + 300), true);
    for d in longest {
        let life = Lifetimes {
            ca: d,
            serving: d,
            overlap: d,
        };
        for since in [i64::MIN, -1, 0, T0, i64::MAX] {
            for now in [i64::MIN, 0, T0, i64::MAX] {
                for (next, previous) in [(true, false), (false, true), (false, false)] {
                    let _ = plan(Some((&stored(next, previous, since), fresh)), now, life);
                }
            }
        }
        // An overlap that never ends: the next CA waits, the previous one stays.
        assert_eq!(
            plan(Some((&stored(true, false, T0), fresh)), T0 + 10, life),
            None,
            "{d:?}"
        );
        assert_eq!(
            plan(Some((&stored(false, true, T0), fresh)), T0 + 10, life),
            None,
            "{d:?}"
        );
    }
    for (not_before, not_after, now) in [
        (i64::MIN, i64::MAX, 0),
        (i64::MAX, i64::MIN, 0),
        (0, i64::MAX, i64::MAX),
        (i64::MIN, i64::MIN, i64::MIN),
    ] {
        let _ = Validity {
            not_before,
            not_after,
        }
        .due(now);
    }
    // Issuing with the longest lifetime: valid until 9999-12-31T23:59:59Z, the last second a
    // certificate can say.
    let life = Lifetimes {
        ca: Duration::MAX,
        serving: Duration::MAX,
        overlap: Duration::MAX,
    };
    let s = apply(Step::Create, None, T0, life, &hosts()).expect("issued");
    let f = super::facts(&s, &hosts()).expect("facts");
    assert_eq!(f.ca.not_after, LAST_CERTIFICATE_SECOND);
    assert_eq!(f.serving.not_after, LAST_CERTIFICATE_SECOND);
    assert!(f.serving_fits && !f.serving.due(T0));
}
