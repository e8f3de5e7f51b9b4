//! Prometheus metrics of the proxy. Every handle used on the request path is resolved once
//! here, so recording a request is a few atomic operations and never a lock or a label lookup.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The proxy's metrics and the registry that exports them.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Responses by status class, indexed by `status / 100 - 1`.
    responses: [IntCounter; 5],
    /// Seconds from sending a request upstream to receiving its response head.
    pub upstream_latency: Histogram,
    /// Routes in the table.
    pub routes: IntGauge,
    /// WebSocket (and other upgraded) tunnels open now.
    pub open_websockets: IntGauge,
    /// Requests refused before routing because their path was ambiguous.
    pub rejected_paths: IntCounter,
    /// Upstream `Set-Cookie` headers removed because they named one of the front tier's own
    /// cookies.
    pub blocked_set_cookies: IntCounter,
    /// Requests to owned routes the gate refused.
    pub gate_refusals: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let by_class = IntCounterVec::new(
            Opts::new(
                "gantry_proxy_responses_total",
                "Responses sent to clients, by status class.",
            ),
            &["class"],
        )
        .expect("static metric definition");
        let responses =
            ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| by_class.with_label_values(&[class]));
        let upstream_latency = Histogram::with_opts(
            HistogramOpts::new(
                "gantry_proxy_upstream_latency_seconds",
                "Time from sending a request upstream to its response head, in seconds.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
        )
        .expect("static metric definition");
        let routes = IntGauge::new("gantry_proxy_routes", "Routes in the route table.")
            .expect("static metric definition");
        let open_websockets = IntGauge::new(
            "gantry_proxy_open_websockets",
            "WebSocket and other upgraded connections open now.",
        )
        .expect("static metric definition");
        let rejected_paths = IntCounter::new(
            "gantry_proxy_rejected_paths_total",
            "Requests answered 400 before routing because their path was ambiguous.",
        )
        .expect("static metric definition");
        let blocked_set_cookies = IntCounter::new(
            "gantry_proxy_blocked_set_cookies_total",
            "Upstream Set-Cookie headers removed because they named one of gantry's own cookies.",
        )
        .expect("static metric definition");
        let gate_refusals = IntCounter::new(
            "gantry_proxy_gate_refusals_total",
            "Requests to a user's server that the gate answered itself (login, 403 or 404).",
        )
        .expect("static metric definition");
        for collector in [
            Box::new(by_class) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(routes.clone()),
            Box::new(open_websockets.clone()),
            Box::new(rejected_paths.clone()),
            Box::new(blocked_set_cookies.clone()),
            Box::new(gate_refusals.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            responses,
            upstream_latency,
            routes,
            open_websockets,
            rejected_paths,
            blocked_set_cookies,
            gate_refusals,
        }
    }

    /// Counts one response by its status class.
    pub fn record_response(&self, status: http::StatusCode) {
        let index = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[index].inc();
    }

    /// The metrics in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
