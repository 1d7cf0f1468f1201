//! The operator's `/metrics` (OpenMetrics text): scraping, parsing, differences.

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use sidecar_controller::metrics::PREFIX;

/// The exposed name of the operator's metric `name` (one of
/// [`sidecar_controller::metrics::name`]) with `suffix` (`_total` for counters,
/// `_count`/`_sum`/`_bucket` for histograms, `""` for gauges).
pub fn series(name: &str, suffix: &str) -> String {
    format!("{PREFIX}_{name}{suffix}")
}

/// One sample: metric name (with its `_total`/`_bucket`… suffix) and labels.
pub type SeriesKey = (String, BTreeMap<String, String>);

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    samples: BTreeMap<SeriesKey, f64>,
}

impl Snapshot {
    /// Parses OpenMetrics / Prometheus text exposition (comments and `# EOF` ignored).
    pub fn parse(text: &str) -> anyhow::Result<Snapshot> {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.find('{') {
                Some(open) => {
                    let close = line
                        .rfind('}')
                        .with_context(|| format!("unclosed labels in {line:?}"))?;
                    let name = &line[..open];
                    let labels = parse_labels(&line[open + 1..close])
                        .with_context(|| format!("labels of {line:?}"))?;
                    ((name.to_string(), labels), line[close + 1..].trim())
                }
                None => {
                    let (name, value) = line
                        .split_once(char::is_whitespace)
                        .with_context(|| format!("no value in {line:?}"))?;
                    ((name.to_string(), BTreeMap::new()), value.trim())
                }
            };
            // A timestamp may follow the value.
            let value = value.split_whitespace().next().unwrap_or("");
            let v: f64 = value
                .parse()
                .with_context(|| format!("value {value:?} of {line:?}"))?;
            samples.insert(series, v);
        }
        Ok(Snapshot { samples })
    }

    /// Sum of the samples named `name` whose labels include every pair of `filter`.
    pub fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|((n, labels), _)| {
                n == name
                    && filter
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, v)| *v)
            // An empty f64 sum is -0.0; reports should read 0.
            .sum::<f64>()
            + 0.0
    }

    /// The samples named `name`, with their labels.
    pub fn series<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples
            .iter()
            .filter(move |((n, _), _)| n == name)
            .map(|((_, l), v)| (l, *v))
    }

    /// The cumulative buckets `(upper bound, count)` of histogram series `bucket` (the
    /// `_bucket` name) whose labels `keep` accepts, in bound order; series with the same
    /// bound (one per other label value, such as several webhooks) are added up.
    pub fn buckets(
        &self,
        bucket: &str,
        keep: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Vec<(f64, f64)> {
        let mut cumulative: Vec<(f64, f64)> = self
            .series(bucket)
            .filter(|(labels, _)| keep(labels))
            .filter_map(|(labels, v)| {
                let le = labels.get("le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, v))
            })
            .collect();
        cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
        cumulative.dedup_by(|later, kept| {
            let same = later.0 == kept.0;
            if same {
                kept.1 += later.1;
            }
            same
        });
        cumulative
    }

    /// The `q`-quantile (0 < q ≤ 1) of histogram `name` (its `_bucket` series whose labels
    /// include `filter`), as the upper bound of the bucket holding it: an upper estimate
    /// no finer than the buckets. `None` without observations; `f64::INFINITY` when it lies
    /// past the last finite bucket.
    pub fn quantile(&self, name: &str, filter: &[(&str, &str)], q: f64) -> Option<f64> {
        let cumulative = self.buckets(&format!("{name}_bucket"), |labels| {
            filter
                .iter()
                .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        });
        let total = cumulative.last()?.1;
        if total <= 0.0 {
            return None;
        }
        cumulative
            .iter()
            .find(|(_, count)| *count >= q * total)
            .map(|(le, _)| *le)
    }

    /// `self − earlier`, sample by sample (samples missing earlier count from 0).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let samples = self
            .samples
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - earlier.samples.get(k).copied().unwrap_or(0.0),
                )
            })
            .collect();
        Snapshot { samples }
    }
}

fn parse_labels(s: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').context("label without '='")?;
        let after = after.strip_prefix('"').context("label value not quoted")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => bail!("dangling escape"),
                },
                Some((_, c)) => value.push(c),
                None => bail!("unterminated label value"),
            }
        };
        out.insert(key.trim().to_string(), value);
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Ok(out)
}

/// GET `http://127.0.0.1:<port><path>` (HTTP/1.0); `(status code, body)`.
pub async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP sidecar_operator_api_requests Requests sent to the Kubernetes API, by verb and resource.
# TYPE sidecar_operator_api_requests counter
sidecar_operator_api_requests_total{verb="create",resource="pods"} 10
sidecar_operator_api_requests_total{verb="create",resource="events"} 3
sidecar_operator_api_requests_total{verb="watch",resource="pods"} 1
sidecar_operator_cached_pods 20
sidecar_operator_reconcile_duration_seconds_bucket{le="+Inf",controller="pod"} 4
weird{a="x\"y,z",b="2"} 1.5e0
# EOF
"#;

    #[test]
    fn parses_and_sums() {
        let s = Snapshot::parse(TEXT).unwrap();
        assert_eq!(s.sum("sidecar_operator_api_requests_total", &[]), 14.0);
        assert_eq!(
            s.sum(
                "sidecar_operator_api_requests_total",
                &[("verb", "create"), ("resource", "pods")]
            ),
            10.0
        );
        assert_eq!(s.sum("sidecar_operator_cached_pods", &[]), 20.0);
        assert_eq!(s.sum("weird", &[("a", "x\"y,z")]), 1.5);
        assert_eq!(s.series("sidecar_operator_api_requests_total").count(), 3);
    }

    #[test]
    fn histogram_quantiles_are_bucket_bounds() {
        let h = |counts: [u32; 4]| {
            let les = ["0.001", "0.01", "0.1", "+Inf"];
            let lines: Vec<String> = les
                .iter()
                .zip(counts)
                .map(|(le, c)| format!("w_bucket{{controller=\"pod\",le=\"{le}\"}} {c}"))
                .collect();
            Snapshot::parse(
                &(lines.join("\n") + "\nw_bucket{controller=\"policy\",le=\"+Inf\"} 9\n"),
            )
            .unwrap()
        };
        let s = h([50, 99, 100, 100]);
        let pod = [("controller", "pod")];
        assert_eq!(s.quantile("w", &pod, 0.5), Some(0.001));
        assert_eq!(s.quantile("w", &pod, 0.99), Some(0.01));
        assert_eq!(s.quantile("w", &pod, 1.0), Some(0.1));
        // A difference of two scrapes: only what happened between them counts.
        let d = h([60, 109, 120, 130]).since(&s);
        // 30 new observations: 10 ≤ 1 ms, 10 more ≤ 100 ms, 10 more beyond.
        assert_eq!(d.quantile("w", &pod, 0.3), Some(0.001));
        assert_eq!(d.quantile("w", &pod, 0.5), Some(0.1));
        assert_eq!(d.quantile("w", &pod, 0.99), Some(f64::INFINITY));
        assert_eq!(h([0, 0, 0, 0]).quantile("w", &pod, 0.5), None);
    }

    #[test]
    fn buckets_with_the_same_bound_add_up() {
        // Two webhooks' series of one histogram: with both kept, each bound counts both.
        let s = Snapshot::parse(
            "h_bucket{name=\"a\",le=\"0.005\"} 3\nh_bucket{name=\"a\",le=\"+Inf\"} 4\n\
             h_bucket{name=\"b\",le=\"0.005\"} 1\nh_bucket{name=\"b\",le=\"+Inf\"} 6\n\
             h_bucket{name=\"c\",le=\"0.005\"} 100\n",
        )
        .unwrap();
        let ab = s.buckets("h_bucket", |l| l["name"] != "c");
        assert_eq!(ab, vec![(0.005, 4.0), (f64::INFINITY, 10.0)]);
        assert_eq!(
            s.buckets("h_bucket", |l| l["name"] == "b"),
            vec![(0.005, 1.0), (f64::INFINITY, 6.0)]
        );
        let a = [("name", "a")];
        assert_eq!(s.quantile("h", &a, 0.75), Some(0.005));
        assert_eq!(s.quantile("h", &a, 0.8), Some(f64::INFINITY));
        assert!(s.buckets("nothing_bucket", |_| true).is_empty());
    }

    #[test]
    fn differences() {
        let a = Snapshot::parse("x{v=\"a\"} 1\n").unwrap();
        let b = Snapshot::parse("x{v=\"a\"} 4\nx{v=\"b\"} 2\n").unwrap();
        let d = b.since(&a);
        assert_eq!(d.sum("x", &[("v", "a")]), 3.0);
        assert_eq!(d.sum("x", &[("v", "b")]), 2.0);
    }
}
