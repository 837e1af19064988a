//! The Prometheus text exposition format, version 0.0.4.

use std::fmt::Write as _;

use super::registry::HistogramSnapshot;
use super::{ERROR_CLASSES, LimitKind, Metrics};

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metric families: a `# HELP` and `# TYPE` line, then samples.
pub struct Encoder {
    out: String,
}

/// Label names and values of one sample.
type Labels<'a> = &'a [(&'a str, &'a str)];

impl Encoder {
    pub fn new() -> Self {
        Encoder { out: String::new() }
    }

    pub fn finish(self) -> String {
        self.out
    }

    pub fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.out, " {}", number(value));
    }

    pub fn count(&mut self, name: &str, labels: Labels<'_>, value: u64) {
        self.out.push_str(name);
        self.labels(labels);
        let _ = writeln!(self.out, " {value}");
    }

    /// `name_bucket{..,le=".."}` per bound (cumulative, ending with
    /// `+Inf`), then `name_sum` and `name_count`.
    pub fn histogram(&mut self, name: &str, labels: Labels<'_>, snapshot: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        let bounds = snapshot.bounds.iter().map(|&b| number(b));
        let bounds = bounds.chain(std::iter::once("+Inf".to_owned()));
        for (bound, count) in bounds.zip(&snapshot.cumulative) {
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &bound));
            self.count(&bucket, &with_le, *count);
        }
        self.sample(&format!("{name}_sum"), labels, snapshot.sum_seconds);
        self.count(&format!("{name}_count"), labels, snapshot.count);
    }

    fn labels(&mut self, labels: Labels<'_>) {
        if labels.is_empty() {
            return;
        }
        self.out.push('{');
        for (i, (name, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let _ = write!(self.out, "{name}=\"{}\"", escape_label(value));
        }
        self.out.push('}');
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Label values escape backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Help text escapes backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus spells it.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value == f64::INFINITY {
        "+Inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{value}")
    }
}

/// Every metric of `metrics`, ready to serve on `/metrics`.
pub fn render(metrics: &Metrics) -> String {
    let mut e = Encoder::new();
    let handlers = metrics.handlers();

    e.header(
        "logpipe_records_consumed_total",
        "counter",
        "Records read from the broker, per Kafka topic (retry topics included) or Kinesis stream.",
    );
    for (labels, counter) in metrics.consumed_topic.members() {
        e.count(
            "logpipe_records_consumed_total",
            &[("topic", &labels[0])],
            counter.get(),
        );
    }
    for (labels, counter) in metrics.consumed_stream.members() {
        e.count(
            "logpipe_records_consumed_total",
            &[("stream", &labels[0])],
            counter.get(),
        );
    }

    e.header(
        "logpipe_records_handled_total",
        "counter",
        "Handler calls that succeeded.",
    );
    for (name, m) in &handlers {
        e.count(
            "logpipe_records_handled_total",
            &[("handler", name)],
            m.handled.get(),
        );
    }

    e.header(
        "logpipe_records_failed_total",
        "counter",
        "Handler calls that did not succeed, by error class (every attempt counts), and records \
         no handler took (handler=\"\").",
    );
    for (name, m) in &handlers {
        for class in ERROR_CLASSES {
            e.count(
                "logpipe_records_failed_total",
                &[("handler", name), ("class", class.name())],
                m.failed(class).get(),
            );
        }
    }
    for (class, count) in metrics.unrouted_counts() {
        e.count(
            "logpipe_records_failed_total",
            &[("handler", ""), ("class", class)],
            count,
        );
    }

    e.header(
        "logpipe_records_ignored_total",
        "counter",
        "Records of an --ignore-type type, skipped without a handler call.",
    );
    e.count("logpipe_records_ignored_total", &[], metrics.ignored.get());

    e.header(
        "logpipe_handler_duration_seconds",
        "histogram",
        "Wall time of handler calls, whatever their outcome.",
    );
    for (name, m) in &handlers {
        e.histogram(
            "logpipe_handler_duration_seconds",
            &[("handler", name)],
            &m.duration.snapshot(),
        );
    }

    e.header(
        "logpipe_produced_records_total",
        "counter",
        "Records handlers produced (accepted for sending or for the outbox).",
    );
    for (name, m) in &handlers {
        e.count(
            "logpipe_produced_records_total",
            &[("handler", name)],
            m.produced.get(),
        );
    }
    e.header(
        "logpipe_produce_errors_total",
        "counter",
        "Handler produce calls answered with an error (unknown or forbidden topic, bad JSON, \
         queue error).",
    );
    for (name, m) in &handlers {
        e.count(
            "logpipe_produce_errors_total",
            &[("handler", name)],
            m.produce_errors.get(),
        );
    }
    e.header(
        "logpipe_produce_delivery_errors_total",
        "counter",
        "Produced records the Kafka broker did not acknowledge (the run then stops).",
    );
    e.count(
        "logpipe_produce_delivery_errors_total",
        &[],
        metrics.delivery_errors.get(),
    );

    e.header(
        "logpipe_consumer_lag_records",
        "gauge",
        "Kafka: high watermark minus the next offset to handle, per partition.",
    );
    for (labels, gauge) in metrics.lag.members() {
        e.sample(
            "logpipe_consumer_lag_records",
            &[("topic", &labels[0]), ("partition", &labels[1])],
            gauge.get(),
        );
    }
    e.header(
        "logpipe_kinesis_millis_behind_latest",
        "gauge",
        "Kinesis: MillisBehindLatest of the last GetRecords, per shard.",
    );
    for (labels, gauge) in metrics.millis_behind.members() {
        e.sample(
            "logpipe_kinesis_millis_behind_latest",
            &[("stream", &labels[0]), ("shard", &labels[1])],
            gauge.get(),
        );
    }

    e.header(
        "logpipe_handler_swaps_total",
        "counter",
        "Hot-swap events of the handlers folder: load, unload, reject.",
    );
    for (labels, counter) in metrics.swaps.members() {
        e.count(
            "logpipe_handler_swaps_total",
            &[("handler", &labels[0]), ("action", &labels[1])],
            counter.get(),
        );
    }
    e.header(
        "logpipe_instance_restarts_total",
        "counter",
        "Fresh handler instances created because the previous one trapped or hit a limit.",
    );
    for (name, m) in &handlers {
        e.count(
            "logpipe_instance_restarts_total",
            &[("handler", name)],
            m.restarts.get(),
        );
    }
    e.header(
        "logpipe_limit_hits_total",
        "counter",
        "Handler calls ended by a limit, by kind (deadline is the epoch-based time limit).",
    );
    for (name, m) in &handlers {
        for kind in LimitKind::ALL {
            e.count(
                "logpipe_limit_hits_total",
                &[("handler", name), ("kind", kind.name())],
                m.limit_hit(kind).get(),
            );
        }
    }

    e.header(
        "logpipe_commits_total",
        "counter",
        "Offset-store transactions committed.",
    );
    e.count("logpipe_commits_total", &[], metrics.commits.get());
    e.header(
        "logpipe_commits_failed_total",
        "counter",
        "Checkpoints that failed (store or delivery error).",
    );
    e.count(
        "logpipe_commits_failed_total",
        &[],
        metrics.commits_failed.get(),
    );
    e.header(
        "logpipe_last_commit_timestamp_seconds",
        "gauge",
        "Unix time of the last successful checkpoint (0 before the first).",
    );
    e.sample(
        "logpipe_last_commit_timestamp_seconds",
        &[],
        metrics.last_commit.get(),
    );
    e.header(
        "logpipe_ready",
        "gauge",
        "1 when /health answers 200, else 0.",
    );
    e.count(
        "logpipe_ready",
        &[],
        u64::from(metrics.health.report().ready),
    );
    e.finish()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::registry::Histogram;
    use crate::policy::ErrorClass;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        let mut e = Encoder::new();
        e.count("m_total", &[("topic", "we\"ird\\"), ("partition", "0")], 3);
        assert_eq!(
            e.finish(),
            "m_total{topic=\"we\\\"ird\\\\\",partition=\"0\"} 3\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf_sum_and_count() {
        let histogram = Histogram::new(&[0.001, 0.5]);
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(100));
        histogram.observe(Duration::from_secs(2));
        let mut e = Encoder::new();
        e.histogram("h_seconds", &[("handler", "x")], &histogram.snapshot());
        assert_eq!(
            e.finish(),
            "h_seconds_bucket{handler=\"x\",le=\"0.001\"} 1\n\
             h_seconds_bucket{handler=\"x\",le=\"0.5\"} 2\n\
             h_seconds_bucket{handler=\"x\",le=\"+Inf\"} 3\n\
             h_seconds_sum{handler=\"x\"} 2.1005\n\
             h_seconds_count{handler=\"x\"} 3\n"
        );
    }

    #[test]
    fn special_values_are_spelled_the_prometheus_way() {
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NEG_INFINITY), "-Inf");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(0.000_005), "0.000005");
        assert_eq!(number(3.0), "3");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let metrics = Metrics::default();
        let handler = metrics.handler("echo");
        handler.handled.add(2);
        handler.failed(ErrorClass::Reject).inc();
        metrics.consumed_topic.get(&["in"]).add(3);
        metrics.unrouted("unknown-type").unwrap().inc();
        let text = render(&metrics);
        assert!(text.contains("logpipe_records_handled_total{handler=\"echo\"} 2\n"));
        assert!(
            text.contains("logpipe_records_failed_total{handler=\"echo\",class=\"reject\"} 1\n")
        );
        assert!(
            text.contains("logpipe_records_failed_total{handler=\"\",class=\"unknown-type\"} 1\n")
        );
        assert!(text.contains("logpipe_records_consumed_total{topic=\"in\"} 3\n"));
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(declared.insert(name.to_owned()), "{name} declared twice");
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                .unwrap_or(name);
            assert!(declared.contains(family), "{name} has no # TYPE line");
        }
    }
}
